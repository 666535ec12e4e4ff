#!/usr/bin/env bash
# Builds the guest root filesystem as a directory: the agent as /init and
# /sbin/init, the directories it needs, optionally busybox (for the debug
# console) and the kernel modules a distribution kernel needs (Debian's cloud
# kernel builds virtio, vsock, fuse, virtio-fs and the drivers of hot-plugged
# disks as modules).
#
# No root, no docker, no loop mount, no network. The result is fed to
# initrd.sh or image.sh, which fix timestamps and ownership.
#
# Environment (defaults in brackets):
#   AGENT         the static kata-agent binary
#                 [target/x86_64-unknown-linux-gnu/release/kata-agent]
#   ROOTFS_DIR    output directory, replaced whole [build/rootfs]
#   WITH_BUSYBOX  1 to add busybox and its applet links [0]
#   BUSYBOX       the static busybox to add [/bin/busybox]
#   MODULES_KVER  kernel release whose modules to add, e.g. 6.1.0-56-cloud-amd64;
#                 empty for a kernel with everything built in []
#   MODULES_ROOT  where that kernel's modules are [/lib/modules]
#   MODULES       modules to add with their dependencies, in wanted order; a
#                 trailing '?' marks one that may be absent
#                 [virtio_pci virtio_mmio? virtio_console? vsock vmw_vsock_virtio_transport_common
#                  vmw_vsock_virtio_transport fuse virtiofs overlay? virtio_net?
#                  virtio_blk? virtio_scsi? sd_mod? nfit? nd_pmem? ext4? 9pnet_virtio? 9p?]
#                 (the last line: hot-plugged disks, SCSI, NVDIMM/pmem and
#                 9p shares; Debian's cloud kernel has no 9p, its ext4 is built in)
#
# The modules are decompressed and listed, dependencies first (read from each
# module's depends= field), in /lib/modules/load-order; the agent's PID 1
# loads them from there with finit_module.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

AGENT="${AGENT:-$repo/target/x86_64-unknown-linux-gnu/release/kata-agent}"
ROOTFS_DIR="${ROOTFS_DIR:-$repo/build/rootfs}"
WITH_BUSYBOX="${WITH_BUSYBOX:-0}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
MODULES_KVER="${MODULES_KVER:-}"
MODULES_ROOT="${MODULES_ROOT:-/lib/modules}"
MODULES="${MODULES:-virtio_pci virtio_mmio? virtio_console? vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport fuse virtiofs overlay? virtio_net? virtio_blk? virtio_scsi? sd_mod? nfit? nd_pmem? ext4? 9pnet_virtio? 9p?}"

die() {
    echo "rootfs.sh: $*" >&2
    exit 1
}

[[ -f "$AGENT" ]] || die "agent $AGENT: not found (build it with 'make agent-static')"
if [[ "$WITH_BUSYBOX" == 1 ]]; then
    [[ -x "$BUSYBOX" ]] || die "busybox $BUSYBOX: not found (apt-get install busybox-static)"
fi
# The initrd has no libraries: refuse a dynamically linked binary.
bins=("$AGENT")
[[ "$WITH_BUSYBOX" != 1 ]] || bins+=("$BUSYBOX")
for bin in "${bins[@]}"; do
    if command -v ldd >/dev/null && ldd "$bin" 2>&1 | grep -q '=>'; then
        die "$bin: dynamically linked; the guest needs a static binary ('make agent-static', busybox-static)"
    fi
done

umask 022
mkdir -p "$(dirname "$ROOTFS_DIR")"
work="$(mktemp -d "$ROOTFS_DIR.tmp.XXXXXX")"
cleanup() {
    rm -rf "$work"
}
trap cleanup EXIT

root="$work/rootfs"
mkdir -p "$root"

# Directories: the kernel filesystems' mount points, /run's tree for the
# shim (also created again by PID 1 on its /run tmpfs), and the usual ones.
for d in bin sbin usr/bin usr/sbin lib/modules etc proc sys dev run tmp root mnt var/log \
    run/kata-containers run/kata-containers/shared/containers run/kata-containers/sandbox; do
    mkdir -p "$root/$d"
done
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

install -m 0755 "$AGENT" "$root/usr/bin/kata-agent"
ln -s usr/bin/kata-agent "$root/init"
ln -s ../usr/bin/kata-agent "$root/sbin/init"

: >"$root/etc/resolv.conf"
chmod 0644 "$root/etc/resolv.conf"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\ntty:x:5:\n' >"$root/etc/group"
printf 'localhost\n' >"$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"

if [[ "$WITH_BUSYBOX" == 1 ]]; then
    install -m 0755 "$BUSYBOX" "$root/bin/busybox"
    # One link per applet, where busybox says it belongs; never over the agent.
    while read -r applet; do
        [[ -n "$applet" && ! -e "$root/$applet" && ! -L "$root/$applet" ]] || continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -s /bin/busybox "$root/$applet"
    done < <("$BUSYBOX" --list-full | LC_ALL=C sort)
fi

# --- kernel modules -------------------------------------------------------

declare -A mod_file=()  # module name -> path relative to $kdir
declare -A builtin=()   # module name -> 1
declare -A done_mod=()  # module name -> 1 once listed (or builtin)
declare -A visiting=()  # cycle guard
order=()                # relative paths (decompressed), load order

mod_name() {
    local b
    b="$(basename "$1")"
    b="${b%%.ko*}"
    echo "${b//-/_}"
}

# Dependencies of a decompressed module, one per line.
mod_depends() {
    local deps
    if command -v modinfo >/dev/null; then
        deps="$(modinfo -F depends "$1")"
    else
        deps="$(tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | head -n 1)"
    fi
    tr ',' '\n' <<<"$deps" | sed '/^$/d'
}

decompress() {
    case "$1" in
    *.ko) cat "$1" ;;
    *.ko.xz) xz -dc "$1" ;;
    *.ko.zst) zstd -q -dc "$1" ;;
    *.ko.gz) gzip -dc "$1" ;;
    *) die "module $1: unknown compression" ;;
    esac
}

add_module() {
    local name="$1" optional="$2" rel out dep
    [[ -z "${done_mod[$name]:-}" ]] || return 0
    if [[ -n "${builtin[$name]:-}" ]]; then
        done_mod[$name]=1
        return 0
    fi
    [[ -z "${visiting[$name]:-}" ]] || die "module $name: dependency cycle"
    rel="${mod_file[$name]:-}"
    if [[ -z "$rel" ]]; then
        if [[ "$optional" == 1 ]]; then
            echo "rootfs.sh: module $name: not in $kdir, skipped" >&2
            done_mod[$name]=1
            return 0
        fi
        die "module $name: not found in $kdir (neither a module nor built in)"
    fi
    visiting[$name]=1
    out="$root/lib/modules/$MODULES_KVER/${rel%.ko*}.ko"
    mkdir -p "$(dirname "$out")"
    decompress "$kdir/$rel" >"$out"
    chmod 0644 "$out"
    while read -r dep; do
        add_module "$(mod_name "$dep")" 0
    done < <(mod_depends "$out")
    unset "visiting[$name]"
    done_mod[$name]=1
    order+=("$MODULES_KVER/${rel%.ko*}.ko")
}

if [[ -n "$MODULES_KVER" ]]; then
    kdir="$MODULES_ROOT/$MODULES_KVER"
    [[ -d "$kdir" ]] || die "modules $kdir: not found (apt-get install linux-image-cloud-amd64?)"
    while read -r rel; do
        mod_file[$(mod_name "$rel")]="$rel"
    done < <(cd "$kdir" && find kernel -name '*.ko*' | LC_ALL=C sort)
    if [[ -f "$kdir/modules.builtin" ]]; then
        while read -r rel; do
            builtin[$(mod_name "$rel")]=1
        done <"$kdir/modules.builtin"
    fi
    for m in $MODULES; do
        if [[ "$m" == *\? ]]; then
            add_module "${m%\?}" 1
        else
            add_module "$m" 0
        fi
    done
    {
        echo "# Kernel modules PID 1 loads, in order (written by rootfs-builder/rootfs.sh)."
        printf '%s\n' "${order[@]}"
    } >"$root/lib/modules/load-order"
    echo "rootfs.sh: ${#order[@]} modules for $MODULES_KVER: $(for p in "${order[@]}"; do mod_name "$p"; done | tr '\n' ' ')" >&2
fi

rm -rf "$ROOTFS_DIR"
mv "$root" "$ROOTFS_DIR"
echo "rootfs.sh: $ROOTFS_DIR ($(du -sk "$ROOTFS_DIR" | cut -f1) KiB)" >&2

#!/usr/bin/env bash
# Packs the guest as Kata Containers ships its own in the static tarball
# (kata-static-<version>-<arch>.tar.xz, unpacked into /opt/kata), so that an
# existing installation can boot it by pointing its configuration.toml at
# these files, or by unpacking it over /opt/kata:
#
#   opt/kata/bin/agent-ctl
#   opt/kata/share/kata-containers/
#     vmlinux-<kver>          the kernel, uncompressed (QEMU's -kernel boots it
#     vmlinux.container       through its PVH entry), and the link Kata's
#                             configuration names
#     vmlinuz-<kver>          the same kernel as a bzImage (when given),
#     vmlinuz.container       and its link
#     config-<kver>           the kernel's .config
#     kata-containers-<version>.img         partitioned image (disk.sh)
#     kata-containers.img                   its link
#     kata-containers-initrd-<version>.img  initrd (initrd.sh)
#     kata-containers-initrd.img            its link
#     guest-agent-<version>.sha256  SHA-256 of every file above, by path
#                             from the tarball's root (`cd / && sha256sum -c`)
#
# and beside the tarball, <tarball>.sha256. Reproducible: entries sorted,
# owner 0:0, every mtime SOURCE_DATE_EPOCH, no atime/ctime records, xz on
# one thread.
#
# Environment (defaults in brackets):
#   VMLINUX            the kernel ELF [build/kernel/vmlinux]
#   BZIMAGE            the kernel bzImage; empty for none [build/kernel/bzImage]
#   KERNEL_CONFIG      the kernel's .config [build/kernel/config]
#   KERNEL_VERSION     <kver> [the release in the kernel's build tree,
#                      $(dirname VMLINUX)/obj/include/config/kernel.release]
#   DISK               the partitioned image [build/kata-containers.img]
#   INITRD             the initrd [build/kata-initrd-bare.img]
#   AGENT_CTL          agent-ctl, preferably static
#                      [target/x86_64-unknown-linux-gnu/release/agent-ctl]
#   VERSION            <version> of the image and initrd [the workspace's, Cargo.toml]
#   ARCH               in the tarball's name [x86_64]
#   DIST_DIR           where the tarball goes [build/dist]
#   SOURCE_DATE_EPOCH  timestamp of every entry [0]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

VMLINUX="${VMLINUX:-$repo/build/kernel/vmlinux}"
BZIMAGE="${BZIMAGE-$repo/build/kernel/bzImage}"
KERNEL_CONFIG="${KERNEL_CONFIG:-$(dirname "$VMLINUX")/config}"
KERNEL_VERSION="${KERNEL_VERSION:-}"
DISK="${DISK:-$repo/build/kata-containers.img}"
INITRD="${INITRD:-$repo/build/kata-initrd-bare.img}"
AGENT_CTL="${AGENT_CTL:-$repo/target/x86_64-unknown-linux-gnu/release/agent-ctl}"
VERSION="${VERSION:-}"
ARCH="${ARCH:-x86_64}"
DIST_DIR="${DIST_DIR:-$repo/build/dist}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"

die() {
    echo "dist.sh: $*" >&2
    exit 1
}

[[ "$SOURCE_DATE_EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH: not a number"
if [[ -z "$KERNEL_VERSION" ]]; then
    release="$(dirname "$VMLINUX")/obj/include/config/kernel.release"
    [[ -f "$release" ]] || die "kernel release $release: not found (set KERNEL_VERSION)"
    KERNEL_VERSION="$(cat "$release")"
fi
if [[ -z "$VERSION" ]]; then
    VERSION="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")"
    [[ -n "$VERSION" ]] || die "no [workspace.package] version in $repo/Cargo.toml (set VERSION)"
fi
for v in KERNEL_VERSION VERSION ARCH; do
    [[ "${!v}" =~ ^[A-Za-z0-9._+-]+$ ]] || die "$v=${!v}: not a plain version"
done
# A static ELF can go on any host; the guest's files must exist.
check() {
    [[ -f "$2" ]] || die "$1 $2: not found${3:+ ($3)}"
}
check kernel "$VMLINUX" "make -f image.mk kernel"
head -c 4 "$VMLINUX" | cmp -s - <(printf '\177ELF') || die "kernel $VMLINUX: not an ELF file (vmlinux, not bzImage)"
[[ -z "$BZIMAGE" ]] || check bzImage "$BZIMAGE"
check "kernel config" "$KERNEL_CONFIG"
check image "$DISK" "make -f image.mk disk"
check initrd "$INITRD" "make -f image.mk initrd-bare"
check agent-ctl "$AGENT_CTL" "make agent-ctl-static"
# What booting the way Kata's runtime does takes from the kernel (built in:
# the image has no modules). A kernel without one of these would package
# fine and fail at boot.
required=(
    CONFIG_PVH                # QEMU -kernel vmlinux: the PVH entry point
    CONFIG_ACPI_NFIT          # the NVDIMM QEMU describes (machine nvdimm=on)
    CONFIG_LIBNVDIMM CONFIG_BLK_DEV_PMEM
    CONFIG_NVDIMM_PFN         # the PFN info block: fsdax mode
    CONFIG_ZONE_DEVICE CONFIG_FS_DAX # rootflags=dax
    CONFIG_MSDOS_PARTITION    # root=/dev/pmem0p1
    CONFIG_EXT4_FS            # rootfstype=ext4
    CONFIG_DEVTMPFS_MOUNT     # /dev before init when the kernel mounts the root
    CONFIG_BLK_DEV_INITRD CONFIG_RD_ZSTD # the initrd, zstd-compressed
    CONFIG_VIRTIO_PCI CONFIG_VIRTIO_CONSOLE # console=hvc0
    CONFIG_VIRTIO_VSOCKETS CONFIG_VIRTIO_FS CONFIG_VIRTIO_NET
    CONFIG_SCSI_VIRTIO CONFIG_HW_RANDOM_VIRTIO
)
wanted=(
    CONFIG_HOTPLUG_PCI_SHPC   # devices hot-plugged behind Kata's pci-bridge (shpc=on)
)
lacking=()
for opt in "${required[@]}"; do
    grep -qx "$opt=y" "$KERNEL_CONFIG" || lacking+=("$opt")
done
((${#lacking[@]} == 0)) ||
    die "kernel config $KERNEL_CONFIG: ${lacking[*]} not built in (needed to boot as Kata's runtime does)"
for opt in "${wanted[@]}"; do
    grep -qx "$opt=y" "$KERNEL_CONFIG" ||
        echo "dist.sh: warning: kernel config $KERNEL_CONFIG: $opt not built in" >&2
done
command -v xz >/dev/null || die "xz: not installed (apt-get install xz-utils)"
tar --version 2>/dev/null | grep -q 'GNU tar' || die "tar: GNU tar needed (--sort, --mtime)"

name="guest-agent-static-$VERSION-$ARCH"
tarball="$DIST_DIR/$name.tar.xz"
mkdir -p "$DIST_DIR"
stage="$(mktemp -d "${TMPDIR:-/tmp}/dist.XXXXXX")"
partial="$tarball.tmp.$$"
cleanup() {
    rm -rf "$stage" "$stage.sha256" "$partial"
}
trap cleanup EXIT

umask 022
share="opt/kata/share/kata-containers"
mkdir -p "$stage/opt/kata/bin" "$stage/$share"
install -m 0755 "$AGENT_CTL" "$stage/opt/kata/bin/agent-ctl"
# `put SOURCE NAME [LINK]`: SOURCE as share/NAME, LINK pointing at it.
put() {
    install -m 0644 "$1" "$stage/$share/$2"
    [[ -z "${3:-}" ]] || ln -s "$2" "$stage/$share/$3"
}
put "$VMLINUX" "vmlinux-$KERNEL_VERSION" vmlinux.container
[[ -z "$BZIMAGE" ]] || put "$BZIMAGE" "vmlinuz-$KERNEL_VERSION" vmlinuz.container
put "$KERNEL_CONFIG" "config-$KERNEL_VERSION"
put "$DISK" "kata-containers-$VERSION.img" kata-containers.img
put "$INITRD" "kata-containers-initrd-$VERSION.img" kata-containers-initrd.img
sums="$share/guest-agent-$VERSION.sha256"
(cd "$stage" && find opt -type f | LC_ALL=C sort | xargs sha256sum) >"$stage.sha256"
install -m 0644 "$stage.sha256" "$stage/$sums"
rm -f "$stage.sha256"

(
    cd "$stage"
    tar --create --sort=name --format=posix \
        --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
        opt
) | xz -T1 -6 -c >"$partial"
mv "$partial" "$tarball"
(cd "$DIST_DIR" && sha256sum "$name.tar.xz" >"$name.tar.xz.sha256")

echo "dist.sh: $tarball ($(stat -c %s "$tarball") bytes, sha256 $(cut -c1-16 "$tarball.sha256")):" >&2
(cd "$stage" && find opt ! -type d | LC_ALL=C sort) | while read -r f; do
    if [[ -L "$stage/$f" ]]; then
        echo "  $f -> $(readlink "$stage/$f")"
    else
        echo "  $f ($(stat -c %s "$stage/$f") bytes)"
    fi
done >&2

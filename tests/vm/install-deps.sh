#!/usr/bin/env bash
# Installs what the micro-VM targets need on a fresh Debian machine (as
# root): QEMU, busybox, cpio and zstd, socat, the image tools (mkfs.ext4 and
# debugfs, mkswap, sfdisk), python3 (the QMP client of the device test), the
# kernel source and build tools for our kernel (kernel-config/build-kernel.sh),
# and the two vhost-user backends from crates.io; then fetches Debian's cloud kernel
# into build/debian-kernel (downloaded and unpacked, not installed: the
# host's /boot and /lib/modules stay as they are). Idempotent: what is there
# stays. Each long phase says when it starts and how long it took.
# Inputs: SKIP_APT=1 skips the Debian packages; CARGO (default cargo).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
CARGO=${CARGO:-cargo}
PACKAGES=(qemu-system-x86 busybox-static cpio zstd lz4 xz-utils socat kmod fdisk
    e2fsprogs erofs-utils util-linux python3 libseccomp-dev libcap-ng-dev pkg-config
    linux-source-6.1 flex bison bc libelf-dev)

# phase LABEL CMD...: runs CMD between a start line and an end line with
# the seconds it took; quiet CMD...: CMD with its stdout dropped.
phase() {
    local label="$1" start=$SECONDS
    shift
    echo "install-deps: $label ..."
    "$@"
    echo "install-deps: $label: done in $((SECONDS - start)) s"
}

quiet() {
    "$@" >/dev/null
}

if [ "${SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        phase "apt-get update" apt-get update -qq
        phase "apt-get install ${missing[*]}" \
            quiet apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
fi
for tool in vhost-device-vsock virtiofsd; do
    if ! command -v "$tool" >/dev/null; then
        phase "cargo install $tool (a few minutes)" "$CARGO" install --locked --quiet "$tool"
    fi
done
phase "Debian's cloud kernel into build/debian-kernel" \
    env OUT_DIR="${DEBIAN_KERNEL_DIR:-$repo/build/debian-kernel}" "$repo/rootfs-builder/debian-kernel.sh"
echo "install-deps: ready"

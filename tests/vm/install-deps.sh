#!/usr/bin/env bash
# Installs what the micro-VM targets need on a fresh Debian machine (as
# root): QEMU, Debian's cloud kernel, busybox, cpio and zstd, socat, and the
# two vhost-user backends from crates.io. Idempotent: what is there stays.
# Inputs: SKIP_APT=1 skips the Debian packages; CARGO (default cargo).
set -euo pipefail

CARGO=${CARGO:-cargo}
PACKAGES=(qemu-system-x86 linux-image-cloud-amd64 busybox-static cpio zstd xz-utils socat kmod
    e2fsprogs erofs-utils libseccomp-dev libcap-ng-dev pkg-config)

if [ "${SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
    missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi
for tool in vhost-device-vsock virtiofsd; do
    if ! command -v "$tool" >/dev/null; then
        echo "install-deps: cargo install $tool (a few minutes)"
        "$CARGO" install --locked --quiet "$tool"
    fi
done
echo "install-deps: ready"

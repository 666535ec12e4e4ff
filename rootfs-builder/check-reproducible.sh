#!/usr/bin/env bash
# Builds the initrd (zstd and gzip), the ext4 and erofs images and the
# partitioned disk (Kata's image format) of one rootfs twice each, a second
# apart, and fails unless each pair is byte-identical. With DIST=1 it also
# packs the dist tarball twice from the same inputs (dist.sh reads them
# from its environment: VMLINUX, DISK, INITRD, AGENT_CTL, ...). Prints each
# output's size and SHA-256.
#
# Environment (defaults in brackets):
#   ROOTFS_DIR  the rootfs directory from rootfs.sh [build/rootfs]
#   DIST        1 to check the dist tarball too [0]
#   SOURCE_DATE_EPOCH  passed on [0]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
export ROOTFS_DIR="${ROOTFS_DIR:-$repo/build/rootfs}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"
DIST="${DIST:-0}"

out="$(mktemp -d "${TMPDIR:-/tmp}/reproducible.XXXXXX")"
cleanup() {
    rm -rf "$out"
}
trap cleanup EXIT

build() {
    local run="$1"
    COMPRESS=zstd INITRD="$out/$run/initrd.zst" "$here/initrd.sh" 2>/dev/null
    COMPRESS=gzip INITRD="$out/$run/initrd.gz" "$here/initrd.sh" 2>/dev/null
    IMAGE_FORMAT=ext4 IMAGE="$out/$run/rootfs.ext4" "$here/image.sh" 2>/dev/null
    IMAGE_FORMAT=erofs IMAGE="$out/$run/rootfs.erofs" "$here/image.sh" 2>/dev/null
    FS_IMAGE="$out/$run/rootfs.ext4" DISK="$out/$run/disk.img" "$here/disk.sh" 2>/dev/null
    if [[ "$DIST" == 1 ]]; then
        DIST_DIR="$out/$run/dist" "$here/dist.sh" 2>/dev/null
        mv "$out/$run"/dist/*.tar.xz "$out/$run/dist.tar.xz"
    fi
}

build a
sleep 1
build b
failed=0
files=(initrd.zst initrd.gz rootfs.ext4 rootfs.erofs disk.img)
[[ "$DIST" != 1 ]] || files+=(dist.tar.xz)
for f in "${files[@]}"; do
    sum="$(sha256sum "$out/a/$f" | cut -c1-16)"
    if cmp -s "$out/a/$f" "$out/b/$f"; then
        echo "reproducible: $f $(stat -c %s "$out/a/$f") bytes sha256 $sum: identical"
    else
        echo "reproducible: $f: the two builds differ" >&2
        failed=1
    fi
done
((failed == 0))

#!/usr/bin/env bash
# Packs a root filesystem directory (from rootfs.sh) into a compressed cpio
# "newc" initrd, reproducibly: entries sorted by name, every mtime set to
# SOURCE_DATE_EPOCH, owner and group 0, inode and device numbers from
# `cpio --reproducible`, compressors without timestamps. The same inputs give
# the same bytes. No root needed.
#
# Environment (defaults in brackets):
#   ROOTFS_DIR         the directory to pack [build/rootfs]
#   INITRD             the output file [build/kata-initrd.img]
#   COMPRESS           gzip, lz4, zstd or none [zstd]
#   SOURCE_DATE_EPOCH  timestamp of every entry, seconds since 1970 [0]
#
# Device nodes cannot be packed from a directory without root, so /dev/null
# and /dev/console come in a second, tiny archive written here (the kernel
# unpacks concatenated archives in order). They must be there before the
# agent mounts devtmpfs at /dev: a kernel without a console yet (Kata's
# `console=hvc0`, whose driver is a module) starts init with fds 0-2
# closed, and the Rust runtime then opens /dev/null for them before main,
# aborting if it cannot: with PID 1 that is a kernel panic.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

ROOTFS_DIR="${ROOTFS_DIR:-$repo/build/rootfs}"
INITRD="${INITRD:-$repo/build/kata-initrd.img}"
COMPRESS="${COMPRESS:-zstd}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"

die() {
    echo "initrd.sh: $*" >&2
    exit 1
}

[[ -d "$ROOTFS_DIR" ]] || die "rootfs $ROOTFS_DIR: not a directory (run rootfs.sh first)"
[[ -x "$ROOTFS_DIR/init" ]] || die "rootfs $ROOTFS_DIR: no executable /init"
[[ "$SOURCE_DATE_EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH: not a number"
case "$COMPRESS" in
gzip) compress=(gzip -n -9 -c) ;;
zstd) compress=(zstd -q -19 -T1 -c) ;;
# -l: the legacy frame format, the only one the kernel's unpacker reads
lz4) compress=(lz4 -q -l -12 -c) ;;
none) compress=(cat) ;;
*) die "COMPRESS=$COMPRESS: expected gzip, lz4, zstd or none" ;;
esac
command -v cpio >/dev/null || die "cpio: not installed (apt-get install cpio)"

mkdir -p "$(dirname "$INITRD")"
stage="$(mktemp -d "${TMPDIR:-/tmp}/initrd.XXXXXX")"
partial="$INITRD.tmp.$$"
cleanup() {
    rm -rf "$stage" "$partial"
}
trap cleanup EXIT

# Work on a copy, so the timestamps of the input are left alone.
cp -a "$ROOTFS_DIR/." "$stage/"
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# One "newc" entry: name, mode (octal, with the type bits), rdev major and
# minor; inode numbers count from 1 in this archive, mtime SOURCE_DATE_EPOCH.
newc_ino=0
newc_entry() {
    local name="$1" mode="$2" major="$3" minor="$4" size pad
    newc_ino=$((newc_ino + 1))
    size=$((${#name} + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$newc_ino" "$((8#$mode))" 0 0 1 "$SOURCE_DATE_EPOCH" 0 0 0 "$major" "$minor" "$size" 0
    printf '%s\0' "$name"
    # Header (110 bytes) and name padded to a multiple of 4.
    pad=$(((4 - (110 + size) % 4) % 4))
    head -c "$pad" /dev/zero
}

{
    (
        cd "$stage"
        find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
            cpio --quiet -o -H newc --reproducible --owner=0:0
    )
    newc_entry dev 040755 0 0
    newc_entry dev/console 020600 5 1
    newc_entry dev/null 020666 1 3
    newc_entry 'TRAILER!!!' 0 0 0
} | "${compress[@]}" >"$partial"
mv "$partial" "$INITRD"

echo "initrd.sh: $INITRD ($(stat -c %s "$INITRD") bytes, $COMPRESS, sha256 $(sha256sum "$INITRD" | cut -c1-16))" >&2

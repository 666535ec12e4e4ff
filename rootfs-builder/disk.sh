#!/usr/bin/env bash
# Makes Kata's guest image from a filesystem image (image.sh's ext4 or
# erofs): a partitioned raw disk whose partition 1 holds the filesystem,
# laid out so that the same file boots both ways Kata's runtime maps it:
#
#   - as an NVDIMM (QEMU `-device nvdimm` over a memory-backend-file,
#     `root=/dev/pmem0p1 rootflags=dax`): the kernel finds an NVDIMM PFN
#     info block 4 KiB into the namespace, puts the namespace in fsdax mode
#     and exposes the disk from the block's data offset (2 MiB) on; there,
#     a second MBR places partition 1 at 1 MiB, so /dev/pmem0p1 is the
#     filesystem and can be mounted with DAX;
#   - as a plain disk (virtio-blk, virtio-scsi: `root=/dev/vda1`): the MBR
#     at byte 0 places partition 1 at 3 MiB, the same bytes.
#
#   0        4 KiB     8 KiB       2 MiB    2 MiB+512   3 MiB             end
#   | MBR #1 | PFN info |   zeros   | MBR #2 |   zeros   | filesystem ...   |
#             (fsdax)               <------ /dev/pmem0: data from 2 MiB --->
#
# The total size is rounded up to DISK_ALIGN_MB (Kata's 128 MiB: memory is
# hot-plugged in 128 MiB sections and the NVDIMM sits in that region);
# partition 1 runs to the end. The PFN info block follows the layout of
# struct nd_pfn_sb in Linux's drivers/nvdimm/pfn.h (version 1.4, the one
# the kernel itself writes): mode "ram" (the page map lives in guest RAM,
# the image stays read-only), data offset and alignment 2 MiB, and the
# Fletcher-64 checksum of the kernel's nd_sb_checksum().
#
# No root, no loop device: sfdisk writes the MBRs into files and dd places
# them and the filesystem at their offsets. Reproducible: fixed disk
# identifiers and PFN uuid, no timestamps.
#
# Environment (defaults in brackets):
#   FS_IMAGE       the filesystem image to place in partition 1 [build/kata-rootfs.ext4]
#   DISK           the output file [build/kata-containers.img]
#   DISK_ALIGN_MB  the total size is a multiple of this many MiB [128]
#   DISK_ID        MBR disk identifier, 8 hex digits [6b617461]
#   PFN_UUID       uuid of the PFN info block [6b617461-6e76-6469-6d6d-2d6673646178]
#   PART_TYPE      MBR partition type of partition 1 [83]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

FS_IMAGE="${FS_IMAGE:-$repo/build/kata-rootfs.ext4}"
DISK="${DISK:-$repo/build/kata-containers.img}"
DISK_ALIGN_MB="${DISK_ALIGN_MB:-128}"
DISK_ID="${DISK_ID:-6b617461}"
PFN_UUID="${PFN_UUID:-6b617461-6e76-6469-6d6d-2d6673646178}"
PART_TYPE="${PART_TYPE:-83}"

die() {
    echo "disk.sh: $*" >&2
    exit 1
}

MIB=$((1024 * 1024))
# Where /dev/pmem0's data starts (the PFN block's data offset; also the
# mapping's alignment, a huge page) and where partition 1 starts in the file.
DATA_OFFSET=$((2 * MIB))
PART_OFFSET=$((DATA_OFFSET + MIB))
PFN_OFFSET=4096

[[ -f "$FS_IMAGE" ]] || die "filesystem image $FS_IMAGE: not found (rootfs-builder/image.sh)"
[[ "$DISK_ALIGN_MB" =~ ^[1-9][0-9]*$ && $((DISK_ALIGN_MB % 2)) == 0 ]] ||
    die "DISK_ALIGN_MB=$DISK_ALIGN_MB: expected a positive even number"
[[ "$DISK_ID" =~ ^[0-9a-fA-F]{8}$ ]] || die "DISK_ID=$DISK_ID: expected 8 hex digits"
[[ "$PFN_UUID" =~ ^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$ ]] ||
    die "PFN_UUID=$PFN_UUID: expected a uuid"
[[ "$PART_TYPE" =~ ^[0-9a-fA-F]{1,2}$ ]] || die "PART_TYPE=$PART_TYPE: expected a hex byte"
for tool in sfdisk dd od truncate; do
    command -v "$tool" >/dev/null || die "$tool: not installed (apt-get install fdisk coreutils)"
done

fs_bytes="$(stat -L -c %s "$FS_IMAGE")"
((fs_bytes > 0 && fs_bytes % 4096 == 0)) ||
    die "filesystem image $FS_IMAGE: $fs_bytes bytes, not a positive multiple of 4096 (DAX maps pages)"
align=$((DISK_ALIGN_MB * MIB))
size=$(((PART_OFFSET + fs_bytes + align - 1) / align * align))

mkdir -p "$(dirname "$DISK")"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/disk.XXXXXX")"
partial="$DISK.tmp.$$"
cleanup() {
    rm -rf "$tmp" "$partial"
}
trap cleanup EXIT

# `mbr FILE START`: a DOS label with one partition from sector START to the
# end of FILE.
mbr() {
    printf 'label: dos\nlabel-id: 0x%s\nunit: sectors\nstart=%s, type=%s\n' \
        "$DISK_ID" "$2" "$PART_TYPE" |
        sfdisk --quiet --no-reread --no-tell-kernel --wipe never "$1" >"$tmp/sfdisk.log" 2>&1 ||
        die "sfdisk $1: $(cat "$tmp/sfdisk.log")"
}

# `le VALUE BYTES`: VALUE as BYTES little-endian bytes.
le() {
    local v="$1" n="$2" i out=""
    for ((i = 0; i < n; i++)); do
        out+="$(printf '\\x%02x' $(((v >> (8 * i)) & 0xff)))"
    done
    printf '%b' "$out"
}

# `hexbytes HEX`: the bytes a string of hex digits spells, in order.
hexbytes() {
    local hex="$1" i out=""
    for ((i = 0; i < ${#hex}; i += 2)); do
        out+="\\x${hex:i:2}"
    done
    printf '%b' "$out"
}

# The PFN info block (struct nd_pfn_sb, 4096 bytes), checksum last.
pfn_block() {
    local out="$1" npfns words w lo=0 hi=0
    npfns=$(((size - DATA_OFFSET) / 4096))
    {
        printf 'NVDIMM_PFN_INFO\0'         # signature[16]
        hexbytes "${PFN_UUID//-/}"         # uuid[16]
        head -c 16 /dev/zero               # parent_uuid[16]: none (a label-less namespace)
        le 0 4                             # flags
        le 1 2                             # version_major
        le 4 2                             # version_minor
        le "$DATA_OFFSET" 8                # dataoff: from the namespace's start
        le "$npfns" 8                      # npfns: pages from dataoff to the end
        le 1 4                             # mode: PFN_MODE_RAM
        le 0 4                             # start_pad
        le 0 4                             # end_trunc: the size is 2 MiB aligned
        le "$DATA_OFFSET" 4                # align: 2 MiB, the data offset's
        le 4096 4                          # page_size
        le 64 2                            # page_struct_size
        head -c $((4096 - 94 - 8)) /dev/zero # padding
    } >"$out"
    (($(stat -c %s "$out") == 4088)) || die "PFN info block: $(stat -c %s "$out") bytes before the checksum, expected 4088"
    # Fletcher-64 over the block's 1024 little-endian 32-bit words, the
    # checksum field counted as zero: lo is the 32-bit sum of the words,
    # hi the sum of the running lo values.
    words="$(od -An -v -t u4 --endian=little "$out")"
    for w in $words 0 0; do
        lo=$(((lo + w) & 0xffffffff))
        hi=$((hi + lo))
    done
    le $(((hi << 32) | lo)) 8 >>"$out"
}

truncate -s "$size" "$partial"
# MBR #1 at byte 0: partition 1 where the filesystem is in the file.
mbr "$partial" $((PART_OFFSET / 512))
# MBR #2 at the data offset: partition 1 at the same bytes, seen from there.
# Written into a scratch file of /dev/pmem0's size, then its first sector
# copied.
truncate -s $((size - DATA_OFFSET)) "$tmp/pmem"
mbr "$tmp/pmem" $(((PART_OFFSET - DATA_OFFSET) / 512))
dd if="$tmp/pmem" of="$partial" bs=512 count=1 seek=$((DATA_OFFSET / 512)) conv=notrunc status=none
pfn_block "$tmp/pfn"
dd if="$tmp/pfn" of="$partial" bs=4096 seek=$((PFN_OFFSET / 4096)) conv=notrunc status=none
dd if="$FS_IMAGE" of="$partial" bs=1M seek=$((PART_OFFSET / MIB)) conv=notrunc,sparse status=none

# What the kernel will read: partition 1 of each MBR lands on the filesystem.
start1="$(sfdisk --dump "$partial" 2>/dev/null | sed -n 's/.*start= *\([0-9]*\),.*/\1/p')"
((start1 * 512 == PART_OFFSET)) || die "MBR #1: partition 1 at sector ${start1:-none}, expected $((PART_OFFSET / 512))"
cmp -s -n "$fs_bytes" -i "$PART_OFFSET:0" "$partial" "$FS_IMAGE" || die "the filesystem did not land at byte $PART_OFFSET"

mv "$partial" "$DISK"
echo "disk.sh: $DISK ($size bytes; partition 1 at $PART_OFFSET, $fs_bytes bytes of $(basename "$FS_IMAGE"); PFN info block: fsdax, data at $DATA_OFFSET; sha256 $(sha256sum "$DISK" | cut -c1-16))" >&2

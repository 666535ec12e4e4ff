#!/usr/bin/env bash
# Makes a disk image of a root filesystem directory (from rootfs.sh): ext4
# with `mkfs.ext4 -d`, or erofs with `mkfs.erofs`. No root and no loop mount:
# both tools write the filesystem straight from the directory. Reproducible:
# fixed UUID and directory hash seed, every timestamp SOURCE_DATE_EPOCH,
# every file owned by 0:0, entries created in sorted order. An ext4 image
# also gets the /dev/null and /dev/console nodes (written with debugfs) and
# data=ordered among its default mount options, so it mounts with the
# rootflags Kata's runtime gives (`dax,data=ordered,errors=remount-ro`)
# although it has no journal. An erofs image has no device nodes (mkfs.erofs
# copies only what the directory holds): the kernel mounts devtmpfs on /dev
# before starting init (CONFIG_DEVTMPFS_MOUNT) when it mounts the root itself.
#
# Environment (defaults in brackets):
#   ROOTFS_DIR         the directory to put in the image [build/rootfs]
#   IMAGE_FORMAT       ext4 or erofs [ext4]
#   IMAGE              the output file [build/kata-rootfs.<format>]
#   IMAGE_SIZE_MB      ext4 size in MiB; 0 sizes it from the content [0]
#   IMAGE_UUID         filesystem UUID (ext4 also uses it as hash seed)
#                      [6b617461-6167-656e-742d-726f6f746673]
#   IMAGE_LABEL        ext4 volume label [kata-rootfs]
#   EROFS_COMPRESS     erofs compressor, e.g. lz4hc; empty for none []
#   SOURCE_DATE_EPOCH  timestamp of every inode and of the filesystem [0]
#                      (ext4's own times use 1 for 0: e2fsprogs reads 0 as unset)
#
# Boot it with e.g. `root=/dev/vda rootfstype=ext4 ro` (the agent is
# /sbin/init); the kernel must have the filesystem built in. disk.sh makes
# a partitioned disk of it, laid out as Kata's guest image.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

ROOTFS_DIR="${ROOTFS_DIR:-$repo/build/rootfs}"
IMAGE_FORMAT="${IMAGE_FORMAT:-ext4}"
IMAGE="${IMAGE:-$repo/build/kata-rootfs.$IMAGE_FORMAT}"
IMAGE_SIZE_MB="${IMAGE_SIZE_MB:-0}"
IMAGE_UUID="${IMAGE_UUID:-6b617461-6167-656e-742d-726f6f746673}"
IMAGE_LABEL="${IMAGE_LABEL:-kata-rootfs}"
EROFS_COMPRESS="${EROFS_COMPRESS:-}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"

die() {
    echo "image.sh: $*" >&2
    exit 1
}

[[ -d "$ROOTFS_DIR" ]] || die "rootfs $ROOTFS_DIR: not a directory (run rootfs.sh first)"
[[ "$SOURCE_DATE_EPOCH" =~ ^[0-9]+$ ]] || die "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH: not a number"
[[ "$IMAGE_SIZE_MB" =~ ^[0-9]+$ ]] || die "IMAGE_SIZE_MB=$IMAGE_SIZE_MB: not a number"
case "$IMAGE_FORMAT" in
ext4)
    for tool in mkfs.ext4 debugfs e2fsck; do
        command -v "$tool" >/dev/null || die "$tool: not installed (apt-get install e2fsprogs)"
    done
    ;;
erofs) command -v mkfs.erofs >/dev/null || die "mkfs.erofs: not installed (apt-get install erofs-utils)" ;;
*) die "IMAGE_FORMAT=$IMAGE_FORMAT: expected ext4 or erofs" ;;
esac

mkdir -p "$(dirname "$IMAGE")"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/image.XXXXXX")"
stage="$tmp/root"
mkdir "$stage"
partial="$IMAGE.tmp.$$"
cleanup() {
    rm -rf "$tmp" "$partial"
}
trap cleanup EXIT

# A copy made in sorted order (so directory order does not depend on how the
# input was written), with every timestamp fixed.
(cd "$ROOTFS_DIR" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort | cpio --quiet -pdm "$stage")
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

make_ext4() {
    local size="$IMAGE_SIZE_MB" bytes files script
    # e2fsprogs reads E2FSPROGS_FAKE_TIME=0 as "not set" and uses the clock.
    export E2FSPROGS_FAKE_TIME="$SOURCE_DATE_EPOCH"
    [[ "$SOURCE_DATE_EPOCH" != 0 ]] || E2FSPROGS_FAKE_TIME=1
    if [[ "$size" == 0 ]]; then
        bytes="$(du -sb --apparent-size "$stage" | cut -f1)"
        files="$(find "$stage" | wc -l)"
        # Content plus a quarter, a 4 KiB block per entry, 8 MiB of headroom.
        size=$(((bytes * 5 / 4 + files * 4096) / 1048576 + 8))
    fi
    mkfs.ext4 -q -F -t ext4 \
        -L "$IMAGE_LABEL" -U "$IMAGE_UUID" -m 0 -b 4096 -O ^has_journal \
        -E "hash_seed=$IMAGE_UUID,root_owner=0:0,lazy_itable_init=0,nodiscard" \
        -d "$stage" "$partial" "${size}M" >/dev/null
    # mkfs.ext4 -d copies each file's owner and change time from the stage:
    # set them (and the other times) on every inode, so the image does not
    # depend on who built it or when.
    script="$tmp/debugfs"
    {
        # /dev/null and /dev/console, which a directory cannot hold without
        # root (see initrd.sh for why init needs them before devtmpfs).
        printf 'cd /dev\n'
        for node in "null c 1 3 020666" "console c 5 1 020600"; do
            read -r name type major minor mode <<<"$node"
            [[ -e "$stage/dev/$name" ]] || printf 'mknod %s %s %s %s\nsif %s mode %s\n' \
                "$name" "$type" "$major" "$minor" "$name" "$mode"
        done
        printf 'cd /\n'
        # data=ordered as a default mount option: Kata's runtime mounts the
        # root with rootflags=data=ordered, which a filesystem without a
        # journal refuses unless it is its default (user_xattr 0x4, acl 0x8,
        # journal_data_ordered 0x40).
        printf 'ssv default_mount_opts 0x4c\n'
        (cd "$stage" && find . -printf '/%P\n'; printf '/dev/null\n/dev/console\n') |
            LC_ALL=C sort -u | while read -r p; do
            printf 'sif "%s" uid 0\nsif "%s" gid 0\n' "$p" "$p"
            for t in atime mtime ctime crtime; do
                printf 'sif "%s" %s @%s\n' "$p" "$t" "$SOURCE_DATE_EPOCH"
            done
        done
    } >"$script"
    debugfs -w -f "$script" "$partial" >/dev/null 2>"$script.err" ||
        die "debugfs: $(cat "$script.err")"
    if grep -v '^debugfs ' "$script.err" | grep -q .; then
        die "debugfs: $(grep -v '^debugfs ' "$script.err" | head -n 5)"
    fi
    e2fsck -fn "$partial" >/dev/null 2>&1 ||
        die "e2fsck: $IMAGE_FORMAT image is not clean"
}

make_erofs() {
    local args=(--quiet -U "$IMAGE_UUID" -T "$SOURCE_DATE_EPOCH" --all-root)
    [[ -z "$EROFS_COMPRESS" ]] || args+=("-z$EROFS_COMPRESS")
    mkfs.erofs "${args[@]}" "$partial" "$stage" >/dev/null
}

"make_$IMAGE_FORMAT"
mv "$partial" "$IMAGE"
echo "image.sh: $IMAGE ($(stat -c %s "$IMAGE") bytes, $IMAGE_FORMAT, sha256 $(sha256sum "$IMAGE" | cut -c1-16))" >&2

#!/usr/bin/env bash
# Builds the guest kernel: a small base config (tinyconfig) with the
# fragments of this folder merged over it by the kernel's own
# scripts/kconfig/merge_config.sh, then olddefconfig. Fails, naming each one,
# when an option a fragment asks for is not in the final .config (a missing
# dependency or a typo would otherwise be dropped silently). Then builds
# bzImage and vmlinux. Everything the guest needs is built in: no modules.
#
# Environment (defaults in brackets):
#   KERNEL_SRC    kernel source: a tarball (.tar.xz/.tar.gz, Debian's
#                 linux-source-6.1 or kernel.org's) or an unpacked tree
#                 [/usr/src/linux-source-6.1.tar.xz]
#   OUT_DIR       build directory; bzImage, vmlinux and config land here
#                 [build/kernel]
#   ARCH          kernel architecture [x86_64]
#   BASE_CONFIG   tinyconfig or allnoconfig [tinyconfig]
#   FRAGMENTS     fragment names in this folder, merged in order [common $ARCH]
#   EXTRA_FRAGMENTS  more names of this folder or paths to .conf files []
#   JOBS          make -j [2]
#   NICE          niceness of the compile [19]
#   CONFIG_ONLY   1 to stop after the config check (no compile) [0]
#   IF_CHANGED    1 to do nothing when OUT_DIR's bzImage and vmlinux were built
#                 from the same inputs: this script, the fragments (names and
#                 contents), BASE_CONFIG, ARCH, SOURCE_DATE_EPOCH, the source
#                 tarball's sha256 and the compiler's and linker's versions
#                 (each build records them in OUT_DIR/inputs.sha256); a source
#                 directory always builds [0]
#   SOURCE_DATE_EPOCH  build timestamp recorded in the kernel [0]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

KERNEL_SRC="${KERNEL_SRC:-/usr/src/linux-source-6.1.tar.xz}"
OUT_DIR="${OUT_DIR:-$repo/build/kernel}"
ARCH="${ARCH:-x86_64}"
BASE_CONFIG="${BASE_CONFIG:-tinyconfig}"
FRAGMENTS="${FRAGMENTS:-common $ARCH}"
EXTRA_FRAGMENTS="${EXTRA_FRAGMENTS:-}"
JOBS="${JOBS:-2}"
NICE="${NICE:-19}"
CONFIG_ONLY="${CONFIG_ONLY:-0}"
IF_CHANGED="${IF_CHANGED:-0}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-0}"

die() {
    echo "build-kernel.sh: $*" >&2
    exit 1
}
log() { echo "build-kernel.sh: $*" >&2; }

case "$BASE_CONFIG" in
tinyconfig | allnoconfig) ;;
*) die "BASE_CONFIG=$BASE_CONFIG: expected tinyconfig or allnoconfig" ;;
esac
for tool in make gcc flex bison bc; do
    command -v "$tool" >/dev/null ||
        die "$tool: not installed (apt-get install build-essential flex bison bc libelf-dev libssl-dev)"
done

mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/build-kernel.XXXXXX")"
cleanup() {
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- the inputs ------------------------------------------------------------

frags=()
for f in $FRAGMENTS $EXTRA_FRAGMENTS; do
    if [[ -f "$f" ]]; then
        frags+=("$(cd "$(dirname "$f")" && pwd)/$(basename "$f")")
    elif [[ -f "$here/$f.conf" ]]; then
        frags+=("$here/$f.conf")
    else
        die "fragment $f: neither $here/$f.conf nor a file"
    fi
done

# What the kernel in OUT_DIR was built from (IF_CHANGED): one digest of
# everything that decides the output; none for a source directory.
stamp_file="$OUT_DIR/inputs.sha256"
inputs_digest() {
    local frag
    [[ -f "$KERNEL_SRC" ]] || return 0
    {
        echo "base=$BASE_CONFIG arch=$ARCH epoch=$SOURCE_DATE_EPOCH"
        sha256sum <"${BASH_SOURCE[0]}"
        for frag in "${frags[@]}"; do
            echo "fragment $(basename "$frag")"
            sha256sum <"$frag"
        done
        echo "source $(sha256sum <"$KERNEL_SRC")"
        gcc --version | sed -n 1p
        ld --version | sed -n 1p
    } | sha256sum | cut -d' ' -f1
}
digest=""
if [[ "$IF_CHANGED" == 1 && "$CONFIG_ONLY" != 1 ]]; then
    digest="$(inputs_digest)"
    if [[ -z "$digest" ]]; then
        log "IF_CHANGED=1: KERNEL_SRC is a directory, building anyway"
    elif [[ -f "$OUT_DIR/bzImage" && -f "$OUT_DIR/vmlinux" && -f "$stamp_file" &&
        "$(cat "$stamp_file")" == "$digest" ]]; then
        log "bzImage $OUT_DIR/bzImage is up to date (same inputs), nothing to do"
        exit 0
    fi
fi
# From here on OUT_DIR's config and kernel may change: no stamp until a build succeeds.
rm -f "$stamp_file"

# --- the source tree -------------------------------------------------------

if [[ -d "$KERNEL_SRC" ]]; then
    src="$(cd "$KERNEL_SRC" && pwd)"
elif [[ -f "$KERNEL_SRC" ]]; then
    src="$OUT_DIR/src"
    stamp="$OUT_DIR/src.from"
    # Unpack once per tarball (name, size and mtime); reuse it afterwards.
    want="$(stat -c '%n %s %Y' "$KERNEL_SRC")"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        log "unpacking $KERNEL_SRC"
        rm -rf "$src" "$stamp"
        mkdir -p "$src.partial"
        tar -xf "$KERNEL_SRC" -C "$src.partial" --strip-components=1
        mv "$src.partial" "$src"
        echo "$want" >"$stamp"
    fi
else
    die "KERNEL_SRC=$KERNEL_SRC: not found (apt-get install linux-source-6.1)"
fi
[[ -x "$src/scripts/kconfig/merge_config.sh" ]] || die "$src: not a kernel source tree"

# --- the configuration -----------------------------------------------------

obj="$OUT_DIR/obj"
mkdir -p "$obj"
kmake() {
    make -C "$src" O="$obj" ARCH="$ARCH" \
        KBUILD_BUILD_TIMESTAMP="@$SOURCE_DATE_EPOCH" KBUILD_BUILD_USER=kata KBUILD_BUILD_HOST=guest \
        "$@"
}

log "config: $BASE_CONFIG + ${frags[*]}"
kmake -s "$BASE_CONFIG" >"$tmp/base.log" 2>&1 || die "make $BASE_CONFIG: $(tail -n 20 "$tmp/base.log")"
# merge_config.sh -m: merge the fragments over the base without expanding;
# -O: where .config is. Then olddefconfig resolves dependencies.
(cd "$src" && ARCH="$ARCH" scripts/kconfig/merge_config.sh -m -O "$obj" "$obj/.config" "${frags[@]}") \
    >"$tmp/merge.log" 2>&1 || die "merge_config.sh: $(tail -n 20 "$tmp/merge.log")"
kmake -s olddefconfig >"$tmp/olddef.log" 2>&1 || die "make olddefconfig: $(tail -n 20 "$tmp/olddef.log")"

# Every requested option must be in the final .config with the requested value.
config_line() {
    grep -E "^(# )?$1[= ]" "$obj/.config" || echo "$1 absent"
}
missing=()
for frag in "${frags[@]}"; do
    name="$(basename "$frag")"
    while IFS= read -r line; do
        if [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
            opt="${BASH_REMATCH[1]}"
            grep -qxF -- "$line" "$obj/.config" || missing+=("$line ($name), got: $(config_line "$opt")")
        elif [[ "$line" =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            opt="${BASH_REMATCH[1]}"
            if grep -qE "^$opt=" "$obj/.config"; then
                missing+=("$line ($name), got: $(config_line "$opt")")
            fi
        fi
    done < <(cat "$frag")
done
if ((${#missing[@]})); then
    printf 'build-kernel.sh: requested but not in the final .config (%s):\n' "$obj/.config" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi
cp "$obj/.config" "$OUT_DIR/config"
log "config ok: every requested option is set ($OUT_DIR/config)"
[[ "$CONFIG_ONLY" != 1 ]] || exit 0

# --- the build -------------------------------------------------------------

log "building bzImage and vmlinux (nice -n $NICE make -j$JOBS), this takes a while"
start="$(date +%s)"
nice -n "$NICE" make -C "$src" O="$obj" ARCH="$ARCH" -j"$JOBS" \
    KBUILD_BUILD_TIMESTAMP="@$SOURCE_DATE_EPOCH" KBUILD_BUILD_USER=kata KBUILD_BUILD_HOST=guest \
    bzImage vmlinux >"$OUT_DIR/build.log" 2>&1 ||
    die "kernel build failed, see $OUT_DIR/build.log: $(tail -n 20 "$OUT_DIR/build.log")"
cp "$obj/arch/x86/boot/bzImage" "$OUT_DIR/bzImage"
cp "$obj/vmlinux" "$OUT_DIR/vmlinux"
[[ -n "$digest" ]] || digest="$(inputs_digest)"
[[ -z "$digest" ]] || echo "$digest" >"$stamp_file"
size="$(stat -c %s "$OUT_DIR/bzImage")"
log "bzImage $OUT_DIR/bzImage: $size bytes ($((size / 1024)) KiB), built in $(($(date +%s) - start)) s"
if ((size > 4 * 1024 * 1024)); then
    log "warning: bzImage is over the 4 MiB target"
fi

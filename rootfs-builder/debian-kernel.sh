#!/usr/bin/env bash
# Fetches Debian's cloud kernel for the guest without installing it on the
# host: the package is downloaded (`apt-get download`) and unpacked
# (`dpkg -x`) into $OUT_DIR. Nothing goes to /boot or /lib/modules, no
# initramfs is made, no boot-loader entry is written.
#
# Result, in $OUT_DIR:
#   vmlinuz          the kernel image
#   release          its release, e.g. 6.1.0-44-cloud-amd64
#   lib/modules/<release>/   its modules (rootfs.sh takes them from here)
#
# Idempotent: a complete $OUT_DIR is left as it is.
#
# Environment (defaults in brackets):
#   OUT_DIR    where to unpack [build/debian-kernel]
#   PACKAGE    the metapackage naming the current kernel [linux-image-cloud-amd64]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
OUT_DIR="${OUT_DIR:-$repo/build/debian-kernel}"
PACKAGE="${PACKAGE:-linux-image-cloud-amd64}"

die() {
    echo "debian-kernel.sh: $*" >&2
    exit 1
}

if [[ -f "$OUT_DIR/release" && -f "$OUT_DIR/vmlinuz" &&
    -d "$OUT_DIR/lib/modules/$(cat "$OUT_DIR/release")" ]]; then
    echo "debian-kernel.sh: $(cat "$OUT_DIR/release") already in $OUT_DIR"
    exit 0
fi
command -v apt-get >/dev/null || die "apt-get not found: give a kernel with KERNEL= instead"

# The metapackage depends on the versioned image package.
image_pkg() {
    apt-cache depends "$PACKAGE" 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
pkg="$(image_pkg)"
if [[ -z "$pkg" ]]; then
    apt-get update -qq
    pkg="$(image_pkg)"
fi
[[ -n "$pkg" ]] || die "$PACKAGE: no linux-image-<release> package among its dependencies"
release="${pkg#linux-image-}"

start=$SECONDS
echo "debian-kernel.sh: downloading $pkg (about 25 MB; 100 MB unpacked) into $OUT_DIR"
mkdir -p "$(dirname "$OUT_DIR")"
work="$(mktemp -d "$OUT_DIR.tmp.XXXXXX")"
cleanup() {
    rm -rf "$work"
}
trap cleanup EXIT

# apt-get download writes into the current directory; the _apt user may
# write there, so that the download runs sandboxed.
chmod 0755 "$work"
mkdir -m 0777 "$work/dl"
(cd "$work/dl" && apt-get download -qq "$pkg")
deb=("$work/dl/${pkg}"_*.deb)
[[ -f "${deb[0]}" ]] || die "apt-get download $pkg: no package file"
dpkg -x "${deb[0]}" "$work/root"

vmlinuz="$work/root/boot/vmlinuz-$release"
[[ -f "$vmlinuz" ]] || die "$pkg: no boot/vmlinuz-$release inside"
modules=""
for d in "$work/root/lib/modules/$release" "$work/root/usr/lib/modules/$release"; do
    [[ -d "$d" ]] && modules="$d"
done
[[ -n "$modules" ]] || die "$pkg: no modules directory for $release inside"

out="$work/out"
mkdir -p "$out/lib/modules"
install -m 0644 "$vmlinuz" "$out/vmlinuz"
mv "$modules" "$out/lib/modules/$release"
echo "$release" >"$out/release"
rm -rf "$OUT_DIR"
mv "$out" "$OUT_DIR"
echo "debian-kernel.sh: $release ready in $OUT_DIR ($((SECONDS - start)) s)"

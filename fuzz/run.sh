#!/usr/bin/env bash
# Runs one fuzz target in a private world: new mount, UTS, network and IPC
# namespaces; fresh tmpfs on /run, /sys and /dev (with null, zero, full and
# urandom only), so that storages, bundles, sandbox files, cgroups, device
# writes (OnlineCPUMem, MemHotplugByProbe) and links stay in the namespace;
# and no CAP_SYS_TIME, CAP_SYS_MODULE or CAP_SYS_BOOT, so that
# SetGuestDateTime, kernel modules and reboots are refused by the kernel.
#
# Usage: fuzz/run.sh TARGET [libFuzzer arguments...]
# Environment: FUZZ_BIN_DIR, where the targets are built
# (fuzz/target/x86_64-unknown-linux-gnu/release).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
bin_dir="${FUZZ_BIN_DIR:-$here/target/x86_64-unknown-linux-gnu/release}"
target="${1:?usage: fuzz/run.sh TARGET [libFuzzer arguments...]}"
shift
exe="$bin_dir/$target"
if [[ ! -x "$exe" ]]; then
    echo "fuzz/run.sh: $exe not found: build the targets first (make fuzz-build)" >&2
    exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "fuzz/run.sh: needs root (namespaces, mounts)" >&2
    exit 2
fi

# shellcheck disable=SC2016 # expanded by the inner shell
exec unshare --mount --uts --net --ipc --propagation private -- bash -euo pipefail -c '
    mount -t tmpfs -o mode=0755 fuzz-run /run
    mount -t tmpfs -o mode=0755 fuzz-sys /sys
    mount -t tmpfs -o mode=0755 fuzz-dev /dev
    mknod -m 0666 /dev/null c 1 3
    mknod -m 0666 /dev/zero c 1 5
    mknod -m 0666 /dev/full c 1 7
    mknod -m 0666 /dev/urandom c 1 9
    ip link set lo up 2>/dev/null || true
    exec setpriv --bounding-set -sys_time,-sys_module,-sys_boot -- "$@"
' fuzz-run "$exe" "$@"

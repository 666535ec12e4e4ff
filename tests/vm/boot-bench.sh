#!/usr/bin/env bash
# Boot-to-agent-ready figures of the micro-VM, printed as a table: for
# Debian's cloud kernel and for ours (kernel-config/), BOOT_RUNS boots each
# under QEMU (TCG) with our initrd, and for each boot:
#   to Check     QEMU's start to the first successful Check over hybrid vsock
#                (host clock; Check is retried every 20-80 ms while it boots)
#   agent start  guest uptime when the agent (PID 1) started, from its log
#   listening    guest uptime when its ttrpc server listened, from its log
#                (agent start + PID 1 setup + the time between the two log lines)
#   setup        PID 1's mounts, modules and cgroups, from its log
# Medians, with the range over the runs. Speed is measured, not asserted:
# this never fails on a time, only when a boot fails.
#
# Environment: as lib.sh (INITRD, AGENT_CTL, MEM_MB, ...), and
#   BOOT_RUNS      boots per kernel [3]
#   DEBIAN_KERNEL  [build/debian-kernel/vmlinuz]
#   OUR_KERNEL     [build/kernel/bzImage; `make -f image.mk kernel`]; skipped if absent
#   OUR_INITRD     initrd booted with our kernel, e.g. one built without
#                  modules (MODULES_KVER= ) [INITRD]
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BOOT_RUNS="${BOOT_RUNS:-3}"
DEBIAN_KERNEL="${DEBIAN_KERNEL:-$vm_repo/build/debian-kernel/vmlinuz}"
OUR_KERNEL="${OUR_KERNEL:-$vm_repo/build/kernel/bzImage}"
AGENT_LOG="${AGENT_LOG:-info}"
KERNEL="${KERNEL:-$DEBIAN_KERNEL}"
INITRD="${INITRD:-$vm_repo/build/kata-initrd.img}"
OUR_INITRD="${OUR_INITRD:-$INITRD}"

vm_init

# Milliseconds since the epoch of an RFC 3339 time (GNU date).
ts_ms() { date -d "$1" +%s%3N; }

# `log_field REGEX`: the first capture of REGEX (sed -E) in the console log.
log_field() { sed -nE "s/.*$1.*/\\1/p" "$VM_CONSOLE" | head -n 1; }

# Retries Check with short client deadlines, so the first answer is seen
# within tens of ms; sets CHECK_MS.
wait_check() {
    local deadline=$(($(date +%s) + BOOT_TIMEOUT))
    until timeout 5 "$AGENT_CTL" --addr "$VM_ADDR" --timeout 0.25s call Check >/dev/null 2>&1; do
        vm_alive "$vm_qemu_pid" || vm_fail "QEMU exited before the agent answered Check"
        (($(date +%s) < deadline)) || vm_fail "no answer to Check within ${BOOT_TIMEOUT}s"
    done
    CHECK_MS=$(($(vm_now_ms) - VM_START_MS))
}

# One boot; appends "check start listen setup" (ms) to the file $1.
boot_once() {
    local out="$1" start setup listen_us t_init t_listen listen
    VM_CONSOLE="$VM_DIR/console-bench.log"
    vm_start_backends
    # shellcheck disable=SC2119 # no extra kernel parameters
    vm_boot
    wait_check
    # The log lines are on the console by the time Check answers.
    start="$(log_field '"msg":"init: guest uptime ([0-9]+) ms at start')"
    setup="$(log_field '"msg":"init: guest uptime [0-9]+ ms at start, setup took ([0-9]+) ms')"
    listen_us="$(log_field '"msg":"listening on [^"]* \(([0-9]+) us after start\)')"
    t_init="$(log_field '"ts":"([^"]+)","level":"[a-z]+","msg":"init: guest uptime')"
    t_listen="$(log_field '"ts":"([^"]+)","level":"[a-z]+","msg":"listening on')"
    if [[ -z "$start" || -z "$setup" || -z "$t_init" || -z "$t_listen" ]]; then
        vm_fail "agent log: no start-up figures (init: guest uptime / listening on) on the console"
    fi
    listen=$((start + setup + $(ts_ms "$t_listen") - $(ts_ms "$t_init")))
    echo "$CHECK_MS $start $listen $setup ${listen_us:-0}" >>"$out"
    vm_stop_all
}

# `column FILE N`: "median [min-max]" of column N.
column() {
    local values n
    mapfile -t values < <(cut -d' ' -f"$2" "$1" | sort -n)
    n=${#values[@]}
    printf '%s [%s-%s]' "${values[$((n / 2))]}" "${values[0]}" "${values[$((n - 1))]}"
}

bench_kernel() {
    local name="$1" kernel="$2" initrd="$3" out i
    if [[ ! -f "$kernel" ]]; then
        printf '%-42s skipped: %s not found (make -f image.mk kernel)\n' "$name" "$kernel"
        return 0
    fi
    KERNEL="$kernel"
    INITRD="$initrd"
    out="$VM_DIR/bench-$name"
    : >"$out"
    for ((i = 1; i <= BOOT_RUNS; i++)); do
        vm_step="$name: boot $i"
        boot_once "$out"
    done
    printf '%-42s %-20s %-20s %-20s %-16s %s\n' \
        "$name ($(($(stat -c %s "$kernel") / 1024)) KiB)" \
        "$(column "$out" 1)" "$(column "$out" 2)" "$(column "$out" 3)" "$(column "$out" 4)" \
        "$(basename "$initrd") $(($(stat -c %s "$initrd") / 1024)) KiB"
}

echo "boot to agent-ready: QEMU $ACCEL, ${MEM_MB} MiB, $SMP vCPU, $BOOT_RUNS boots per kernel, ms: median [min-max]"
printf '%-42s %-20s %-20s %-20s %-16s %s\n' kernel "to Check" "agent start" listening "PID 1 setup" initrd
debian_release="$(cat "$(dirname "$DEBIAN_KERNEL")/release" 2>/dev/null || basename "$DEBIAN_KERNEL" | sed 's/^vmlinuz-//')"
bench_kernel "debian $debian_release" "$DEBIAN_KERNEL" "$INITRD"
bench_kernel "ours $(basename "$OUR_KERNEL")" "$OUR_KERNEL" "$OUR_INITRD"

#!/usr/bin/env bash
# Boot and memory figures of the micro-VM, in one run, printed as tables:
# the reference (Debian's cloud kernel on q35, today's default path) and the
# fast path (our kernel-fast vmlinux through its PVH entry on QEMU's microvm,
# the module-less initrd), BOOT_RUNS boots each under QEMU (TCG). Each boot:
#   to Check      QEMU's start to the first Check answered over hybrid vsock
#                 (host clock)
#   to output     QEMU's start to the host reading a busybox container's
#                 output (CreateSandbox, CreateContainer, StartContainer,
#                 ReadStdout after that first Check), less the time the idle
#                 memory figures took
#   /init at      guest uptime when the kernel handed over to /init (the
#                 agent as PID 1), from the agent's log
#   PID 1 setup   the agent's mounts, modules and cgroups, from its log
# and memory, idle (after the first Check) and with the container running:
#   guest used    MemTotal - MemAvailable (GetMetrics idle; the container's
#                 /proc/meminfo with it)
#   agent RSS/PSS the agent's (PID 1) VmRSS (GetMetrics idle; with the
#                 container, its /proc/1/status and /proc/1/smaps_rollup,
#                 read by the container in the guest's PID namespace)
#   QEMU RSS/PSS  QEMU's, from the host's /proc/PID/smaps_rollup; "VMM PSS"
#                 adds virtiofsd's and vhost-device-vsock's
# Medians, with the range over the runs. Speed is measured, not asserted:
# this never fails on a time, only when a boot fails.
#
# Environment: as lib.sh (AGENT_CTL, MEM_MB, SMP, ...), and
#   BOOT_RUNS        boots per path [10]
#   DEBIAN_KERNEL    the reference's kernel [build/debian-kernel/vmlinuz]
#   DEBIAN_INITRD    its initrd, with Debian's modules [build/kata-initrd.img]
#   FAST_KERNEL      the fast path's kernel [build/kernel-fast/vmlinux]
#   FAST_INITRD      its initrd [build/kata-initrd-fast.img]
#   FAST_MACHINE     its machine [$VM_FAST_MACHINE from lib.sh]
#   EXTRA_PATHS      more paths to measure, space separated, each
#                    NAME=KERNEL:INITRD[:MACHINE[:KERNEL PARAMETERS, comma
#                    separated]], e.g. to compare initrd compressions []
#   PATHS            which of debian, fast and the EXTRA_PATHS names to run
#                    [debian fast, then the extra ones]
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BOOT_RUNS="${BOOT_RUNS:-10}"
DEBIAN_KERNEL="${DEBIAN_KERNEL:-$vm_repo/build/debian-kernel/vmlinuz}"
DEBIAN_INITRD="${DEBIAN_INITRD:-$vm_repo/build/kata-initrd.img}"
FAST_KERNEL="${FAST_KERNEL:-$vm_repo/build/kernel-fast/vmlinux}"
FAST_INITRD="${FAST_INITRD:-$vm_repo/build/kata-initrd-fast.img}"
FAST_MACHINE="${FAST_MACHINE:-$VM_FAST_MACHINE}"
EXTRA_PATHS="${EXTRA_PATHS:-}"
AGENT_LOG="${AGENT_LOG:-info}"
KERNEL="${KERNEL:-$DEBIAN_KERNEL}"
INITRD="${INITRD:-$DEBIAN_INITRD}"

declare -A path_kernel=([debian]="$DEBIAN_KERNEL" [fast]="$FAST_KERNEL")
declare -A path_initrd=([debian]="$DEBIAN_INITRD" [fast]="$FAST_INITRD")
declare -A path_machine=([debian]=q35 [fast]="$FAST_MACHINE")
declare -A path_append=([debian]="" [fast]="")
extra_names=()
for p in $EXTRA_PATHS; do
    name="${p%%=*}"
    IFS=: read -r k i m a <<<"${p#*=}"
    [[ -n "$name" && -n "$k" && -n "$i" ]] || {
        echo "boot-bench: EXTRA_PATHS entry '$p': expected NAME=KERNEL:INITRD[:MACHINE[:PARAMS]]" >&2
        exit 1
    }
    path_kernel[$name]="$k"
    path_initrd[$name]="$i"
    path_machine[$name]="${m:-q35}"
    path_append[$name]="${a:-}"
    extra_names+=("$name")
done
PATHS="${PATHS:-debian fast ${extra_names[*]}}"

vm_init

ts_ms() { date -d "$1" +%s%3N; }

# `log_field REGEX`: the first capture of REGEX (sed -E) in the console log.
log_field() { sed -nE "s/.*$1.*/\\1/p" "$VM_CONSOLE" | head -n 1; }

# `kb FIELD FILE`: a "Field: N kB" value of a /proc file.
kb() { awk -v f="$1:" '$1 == f { print $2; exit }' "$2"; }

# Polls with a Check until one is answered, from one process, so that the
# figure is the agent's and not a client's start-up: a new hybrid vsock
# connection (CONNECT 1024, then one ttrpc request frame for
# grpc.Health/Check, the answer's status read back) 20 ms after the last,
# the pause growing to 200 ms, each attempt bounded by 5 s (with 2 s
# bounds and polls every 20 ms, vhost-device-vsock died in 2 of 4 boots:
# see vm_backend_check in lib.sh). Prints the milliseconds
# since $2 (QEMU's start, epoch ms) at the first answer.
CHECK_POLL='
import socket, struct, sys, time
path, start, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
# ttrpc Request{service, method, payload (an empty CheckRequest)}
req = b"\x0a\x0bgrpc.Health\x12\x05Check\x1a\x00"
frame = struct.pack(">IIBB", len(req), 1, 1, 0) + req
def recv(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise OSError("closed")
        b += c
    return b
def attempt():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Hang up on a handshake only when it has been lost (5 s without an
    # answer): one the guest answers after the hang-up kills
    # vhost-device-vsock 0.3.0 (see vm_backend_check in lib.sh).
    s.settimeout(5)
    try:
        s.connect(path)
        s.sendall(b"CONNECT 1024\n")
        line = b""
        while not line.endswith(b"\n"):
            line += recv(s, 1)
        if not line.startswith(b"OK "):
            return False
        s.sendall(frame)
        n, sid, typ, _ = struct.unpack(">IIBB", recv(s, 10))
        body = recv(s, n)
        # Response{status = 1, payload = 2}: no status, or one whose code
        # (field 1) is absent or 0
        if typ != 2:
            return False
        if body[:1] != b"\x0a":
            return True
        status = body[2:2 + body[1]]
        return not (len(status) >= 2 and status[0] == 0x08 and status[1] != 0)
    except OSError:
        return False
    finally:
        s.close()
deadline = time.time() + limit
pause = 0.02
while time.time() < deadline:
    if attempt():
        print(int(time.time() * 1000) - start)
        sys.exit(0)
    time.sleep(pause)
    pause = min(pause * 1.5, 0.2)
sys.exit(1)
'

# Waits for the first Check answered; sets CHECK_MS.
wait_check() {
    CHECK_MS="$("$PYTHON" -c "$CHECK_POLL" "$VM_DIR/hvsock.sock" "$VM_START_MS" "$BOOT_TIMEOUT")" ||
        vm_backend_check
    [[ -n "$CHECK_MS" ]] ||
        vm_fail "no answer to Check within ${BOOT_TIMEOUT}s (QEMU $(vm_alive "$vm_qemu_pid" && echo running || echo exited))"
}

# `host_mem PID...`: "RSS PSS" in KiB of the first PID and the PSS sum of all.
host_mem() {
    local pid rss pss sum=0
    for pid in "$@"; do
        pss="$(kb Pss "/proc/$pid/smaps_rollup")"
        sum=$((sum + ${pss:-0}))
    done
    rss="$(kb Rss "/proc/$1/smaps_rollup")"
    pss="$(kb Pss "/proc/$1/smaps_rollup")"
    echo "${rss:-0} ${pss:-0} $sum"
}

# `metric NAME JSON`: a sample's value from agent-ctl's GetMetrics answer.
metric() {
    "$PYTHON" -c 'import json, sys
for line in json.loads(sys.argv[2]).get("metrics", "").splitlines():
    f = line.split()
    if len(f) == 2 and f[0] == sys.argv[1]:
        print(int(float(f[1])))
        break' "$1" "$2"
}

# One boot; appends one line of figures (see the columns below) to $1.
boot_once() {
    local out="$1" start setup t_out idle_ms t0 m idle_used idle_rss qemu_idle qemu_ctr
    local f="$VM_DIR/stdout-bench-bench" used rss pss
    VM_CONSOLE="$VM_DIR/console-bench.log"
    : >"$VM_CONSOLE"
    rm -rf "$VM_DIR/shared/bench"
    vm_make_rootfs bench
    vm_start_backends
    # shellcheck disable=SC2086 # the path's parameters, one word each
    vm_boot ${BENCH_APPEND//,/ }
    wait_check

    # Idle: the guest's and the agent's memory, QEMU's and the backends'.
    t0="$(vm_now_ms)"
    vm_call GetMetrics "$CALL_TIMEOUT" GetMetrics '{}'
    m="$VM_OUT"
    idle_used=$((($(metric 'kata_guest_meminfo{item="mem_total"}' "$m") - \
        $(metric 'kata_guest_meminfo{item="mem_available"}' "$m")) / 1024))
    idle_rss=$(($(metric kata_agent_process_resident_memory_bytes "$m") / 1024))
    qemu_idle="$(host_mem "${vm_pids[2]}" "${vm_pids[0]}" "${vm_pids[1]}")"
    idle_ms=$(($(vm_now_ms) - t0))

    # A container that sees the guest's /proc (bound at /gproc: it has a PID
    # namespace of its own) and may read PID 1's smaps_rollup
    # (CAP_SYS_PTRACE) prints its figures and stays.
    vm_create_sandbox bench-sandbox
    local req caps='"Capabilities": {"Bounding": ["CAP_SYS_PTRACE"], "Effective": ["CAP_SYS_PTRACE"], "Permitted": ["CAP_SYS_PTRACE"]}'
    req="$(vm_create_request bench 'cat /proc/meminfo /gproc/1/smaps_rollup /gproc/1/status; echo END; exec sleep 600' \
        '' 'mount pid ipc uts cgroup' \
        '{"destination": "/gproc", "type": "bind", "source": "/proc", "options": ["rbind", "ro"]}' | sed "s|\"Cwd\": \"/\"}|\"Cwd\": \"/\", $caps}|")"
    vm_call CreateContainer "$CALL_TIMEOUT" CreateContainer "$req"
    vm_call StartContainer "$CALL_TIMEOUT" StartContainer '{"container_id": "bench"}'
    vm_read_stdout bench bench END
    t_out=$(($(vm_now_ms) - VM_START_MS - idle_ms))
    qemu_ctr="$(host_mem "${vm_pids[2]}" "${vm_pids[0]}" "${vm_pids[1]}")"
    used=$(($(kb MemTotal "$f") - $(kb MemAvailable "$f")))
    rss="$(kb VmRSS "$f")"
    pss="$(kb Pss "$f")"

    start="$(log_field '"msg":"init: guest uptime ([0-9]+) ms at start')"
    setup="$(log_field '"msg":"init: guest uptime [0-9]+ ms at start, setup took ([0-9]+) ms')"
    if [[ -z "$start" || -z "$setup" ]]; then
        vm_fail "agent log: no start-up figures (init: guest uptime ...) in $VM_CONSOLE"
    fi
    # Columns: 1 check, 2 output, 3 /init, 4 setup (ms); idle, in KiB: 5
    # guest used, 6 agent RSS, 7-9 QEMU RSS, PSS, VMM PSS; with the
    # container, in KiB: 10 guest used, 11 agent RSS, 12 PSS, 13-15 QEMU
    # RSS, PSS, VMM PSS.
    echo "$CHECK_MS $t_out $start $setup $idle_used $idle_rss $qemu_idle $used $rss $pss $qemu_ctr" >>"$out"
    vm_stop_all
}

# `column FILE N [DIV]`: "median [min-max]" of column N (divided by DIV).
column() {
    local values n div="${3:-1}"
    mapfile -t values < <(cut -d' ' -f"$2" "$1" | sort -n)
    n=${#values[@]}
    if ((div == 1)); then
        printf '%s [%s-%s]' "${values[$((n / 2))]}" "${values[0]}" "${values[$((n - 1))]}"
    else
        awk -v a="${values[$((n / 2))]}" -v b="${values[0]}" -v c="${values[$((n - 1))]}" -v d="$div" \
            'BEGIN { printf "%.1f [%.1f-%.1f]", a / d, b / d, c / d }'
    fi
}

results=()
bench_path() {
    local name="$1" kernel="${path_kernel[$1]:-}" initrd="${path_initrd[$1]:-}" out i
    if [[ -z "$kernel" ]]; then
        echo "boot-bench: unknown path $name" >&2
        exit 1
    fi
    if [[ ! -f "$kernel" || ! -f "$initrd" ]]; then
        echo "boot-bench: $name skipped: $kernel or $initrd not found (make -f image.mk kernel-fast initrd-fast)" >&2
        return 0
    fi
    KERNEL="$kernel"
    INITRD="$initrd"
    VM_MACHINE="${path_machine[$name]}"
    BENCH_APPEND="${path_append[$name]}"
    out="$VM_DIR/bench-$name"
    : >"$out"
    for ((i = 1; i <= BOOT_RUNS; i++)); do
        vm_step="$name: boot $i"
        boot_once "$out"
        vm_log "$name boot $i: $(cut -d' ' -f1-4 <<<"$(tail -n 1 "$out")") ms"
    done
    results+=("$name")
}

for p in $PATHS; do
    bench_path "$p"
done

echo "boot: QEMU $ACCEL, ${MEM_MB} MiB, $SMP vCPU, $BOOT_RUNS boots per path, median [min-max]"
for name in "${results[@]}"; do
    printf '  %-8s %s (%d KiB), %s (%d KiB), -machine %s\n' "$name" \
        "$(basename "${path_kernel[$name]}")" "$(($(stat -c %s "${path_kernel[$name]}") / 1024))" \
        "$(basename "${path_initrd[$name]}")" "$(($(stat -c %s "${path_initrd[$name]}") / 1024))" \
        "${path_machine[$name]}"
done
printf '%-8s %-22s %-22s %-22s %s\n' path "to Check, ms" "to output, ms" "/init at, ms" "PID 1 setup, ms"
for name in "${results[@]}"; do
    f="$VM_DIR/bench-$name"
    printf '%-8s %-22s %-22s %-22s %s\n' "$name" "$(column "$f" 1)" "$(column "$f" 2)" \
        "$(column "$f" 3)" "$(column "$f" 4)"
done
echo "memory, MiB: idle (after the first Check) / with a busybox container"
printf '%-8s %-5s %-18s %-18s %-18s %-20s %s\n' path "" "guest used" "agent RSS" "agent PSS" \
    "QEMU RSS / PSS" "VMM PSS (+backends)"
for name in "${results[@]}"; do
    f="$VM_DIR/bench-$name"
    printf '%-8s %-5s %-18s %-18s %-18s %-20s %s\n' "$name" idle "$(column "$f" 5 1024)" \
        "$(column "$f" 6 1024)" "-" "$(column "$f" 7 1024) / $(column "$f" 8 1024 | cut -d' ' -f1)" \
        "$(column "$f" 9 1024)"
    printf '%-8s %-5s %-18s %-18s %-18s %-20s %s\n' "" "+ctr" "$(column "$f" 10 1024)" \
        "$(column "$f" 11 1024)" "$(column "$f" 12 1024)" \
        "$(column "$f" 13 1024) / $(column "$f" 14 1024 | cut -d' ' -f1)" "$(column "$f" 15 1024)"
done

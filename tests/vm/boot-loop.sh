#!/usr/bin/env bash
# Boot reliability: LOOP_RUNS boots in a row of each path (the reference,
# Debian's kernel on q35, and the fast path, kernel-fast on microvm), each
# answering Check over hybrid vsock and running a busybox container whose
# output the host reads. A boot that does not answer within BOOT_TIMEOUT is
# counted as lost, diagnosed (which side stopped, see diagnose) and kept in
# $VM_DIR/lost-PATH-N; the loop goes on. Fails when any boot was lost. Not
# in CI: on 2 loaded cores, 100 boots take about 12 minutes on the fast path
# (7 s each, the container included) and 35 on q35 with Debian's kernel.
#
# Environment: as lib.sh (AGENT_CTL, MEM_MB, BOOT_TIMEOUT, ...), and
#   LOOP_RUNS      boots per path [100]
#   LOOP_PATHS     paths to run, of debian and fast [debian fast]
#   DEBIAN_KERNEL, DEBIAN_INITRD, FAST_KERNEL, FAST_INITRD, FAST_MACHINE:
#                  as boot-bench.sh
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOOP_RUNS="${LOOP_RUNS:-100}"
LOOP_PATHS="${LOOP_PATHS:-debian fast}"
DEBIAN_KERNEL="${DEBIAN_KERNEL:-$vm_repo/build/debian-kernel/vmlinuz}"
DEBIAN_INITRD="${DEBIAN_INITRD:-$vm_repo/build/kata-initrd.img}"
FAST_KERNEL="${FAST_KERNEL:-$vm_repo/build/kernel-fast/vmlinux}"
FAST_INITRD="${FAST_INITRD:-$vm_repo/build/kata-initrd-fast.img}"
FAST_MACHINE="${FAST_MACHINE:-$VM_FAST_MACHINE}"
AGENT_LOG="${AGENT_LOG:-info}"
KERNEL="${KERNEL:-$DEBIAN_KERNEL}"
INITRD="${INITRD:-$DEBIAN_INITRD}"

vm_init

# `hv_probe PORT SECS`: one hybrid vsock handshake to guest PORT; prints
# what came back within SECS: "OK ..." (the guest accepted), "closed" (the
# guest refused: the backend and the guest's vsock both work), or
# "no reply" (nothing: the backend or the guest's vsock is stuck).
hv_probe() {
    "$PYTHON" - "$VM_DIR/hvsock.sock" "$1" "$2" <<'PY'
import socket, sys
path, port, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(secs)
try:
    s.connect(path)
    s.sendall(b"CONNECT %s\n" % port.encode())
    line = b""
    while not line.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            print("closed" if not line else "closed after %r" % line)
            sys.exit(0)
        line += b
    print(line.decode().strip())
except socket.timeout:
    print("no reply within %ss" % secs)
except OSError as e:
    print("error: %s" % e)
PY
}

# Which side stopped, for a boot that gave no Check answer: QEMU, the
# handshake to the agent's port (the backend forwards it, the guest's vsock
# accepts it), a port nobody listens on (the guest must refuse it at once),
# and a Check on a fresh connection.
diagnose() {
    local dir="$1"
    {
        echo "QEMU alive: $(vm_alive "$vm_qemu_pid" && echo yes || echo no)"
        echo "vhost-device-vsock: $(grep -m 1 -A 1 panicked "$VM_DIR/vhost-vsock.log" | tr '\n' ' ' || echo "no panic logged")"
        echo "handshake to port 1024: $(hv_probe 1024 5)"
        echo "handshake to port 9999 (nobody listens): $(hv_probe 9999 5)"
        echo "Check on a new connection: $(vm_ctl 10 Check 2>&1 | tr '\n' ' ')"
    } >"$dir/diagnosis" 2>&1
    cp "$VM_CONSOLE" "$VM_DIR/vhost-vsock.log" "$VM_DIR/virtiofsd.log" "$dir/" 2>/dev/null || true
    [[ ! -f "$VM_DIR/qemu.log" ]] || cp "$VM_DIR/qemu.log" "$dir/"
    vm_log "lost boot, kept in $dir: $(tr '\n' ';' <"$dir/diagnosis")"
}

# One boot: Check, then a container's output. Returns 1 when it was lost.
loop_once() {
    local name="$1" n="$2" pid
    VM_CONSOLE="$VM_DIR/console-loop.log"
    : >"$VM_CONSOLE"
    rm -rf "$VM_DIR/shared/loop"
    vm_make_rootfs loop
    vm_start_backends
    # shellcheck disable=SC2119 # no extra kernel parameters
    vm_boot
    # As vm_wait_ready: clients of 30 s each (see there why).
    local deadline=$(($(date +%s) + BOOT_TIMEOUT)) ok=0
    while :; do
        "$AGENT_CTL" --addr "$VM_ADDR" --timeout 30s call Check >"$VM_DIR/check.out" 2>&1 </dev/null &
        pid=$!
        vm_pids+=("$pid")
        while vm_alive "$pid" && vm_alive "$vm_qemu_pid" && ! grep -qs panicked "$VM_DIR/vhost-vsock.log"; do
            sleep 0.05
        done
        if ! vm_alive "$pid" && wait "$pid"; then
            ok=1
            break
        fi
        vm_stop_pid "$pid"
        if ! vm_alive "$vm_qemu_pid" || grep -qs panicked "$VM_DIR/vhost-vsock.log" ||
            (($(date +%s) >= deadline)); then
            break
        fi
    done
    if ((ok == 0)); then
        mkdir -p "$VM_DIR/lost-$name-$n"
        echo "Check: $(cat "$VM_DIR/check.out")" >"$VM_DIR/lost-$name-$n/check"
        diagnose "$VM_DIR/lost-$name-$n"
        vm_stop_all
        return 1
    fi
    LOOP_CHECK_MS=$(($(vm_now_ms) - VM_START_MS))
    vm_create_sandbox loop-sandbox
    vm_call CreateContainer "$CALL_TIMEOUT" CreateContainer "$(vm_create_request loop 'echo boot-loop-ok')"
    vm_call StartContainer "$CALL_TIMEOUT" StartContainer '{"container_id": "loop"}'
    vm_read_stdout loop loop boot-loop-ok
    vm_stop_all
}

lost_total=0
summary=()
for name in $LOOP_PATHS; do
    case "$name" in
    debian) KERNEL="$DEBIAN_KERNEL" INITRD="$DEBIAN_INITRD" VM_MACHINE=q35 ;;
    fast) KERNEL="$FAST_KERNEL" INITRD="$FAST_INITRD" VM_MACHINE="$FAST_MACHINE" ;;
    *)
        echo "boot-loop: unknown path $name (expected debian or fast)" >&2
        exit 1
        ;;
    esac
    [[ -f "$KERNEL" && -f "$INITRD" ]] || vm_fail "$name: $KERNEL or $INITRD not found"
    lost=0 start=$SECONDS checks=()
    for ((i = 1; i <= LOOP_RUNS; i++)); do
        vm_step="$name: boot $i"
        if loop_once "$name" "$i"; then
            checks+=("$LOOP_CHECK_MS")
        else
            lost=$((lost + 1))
        fi
        if ((i % 10 == 0)); then
            vm_log "$name: $i boots, $lost lost, $((SECONDS - start)) s"
        fi
    done
    mapfile -t sorted < <(printf '%s\n' "${checks[@]}" | sort -n)
    n=${#sorted[@]}
    line="$name: $((LOOP_RUNS - lost)) of $LOOP_RUNS boots answered Check and ran a container"
    line+=" in $((SECONDS - start)) s"
    if ((n > 0)); then
        line+="; to Check median ${sorted[$((n / 2))]} ms [${sorted[0]}-${sorted[$((n - 1))]}]"
    fi
    summary+=("$line")
    lost_total=$((lost_total + lost))
done
vm_step=""
printf '%s\n' "${summary[@]}"
if ((lost_total > 0)); then
    KEEP=1
    vm_fail "$lost_total boots lost (kept in $VM_DIR/lost-*)"
fi

#!/usr/bin/env bash
# Micro-VM end-to-end test: boots our initrd (the agent as /init) under QEMU
# with vsock through vhost-device-vsock and a virtio-fs share (tag
# kataShared) through virtiofsd, then drives the agent over hybrid vsock with
# agent-ctl: Check and Version. Prints the time from QEMU's start to the
# first successful Check.
#
# Every step has a timeout; every process started here is ended by PID on
# exit; the guest console log is kept in the test directory and printed when
# a step fails.
#
# Environment (defaults in brackets):
#   KERNEL          guest kernel [newest /boot/vmlinuz-*-cloud-amd64]
#   INITRD          guest initrd from rootfs-builder [build/kata-initrd.img]
#   AGENT_CTL       the debugging client [target/debug/agent-ctl]
#   QEMU            [qemu-system-x86_64]
#   ACCEL           QEMU accelerator [tcg]
#   MEM_MB          guest memory, also the memfd backend's size [512]
#   SMP             guest vCPUs [1]
#   KERNEL_APPEND   extra kernel parameters, e.g. cgroup_no_v1=all []
#   AGENT_LOG       agent.log level [debug]
#   BOOT_TIMEOUT    seconds from QEMU start to the first Check [120]
#   CALL_TIMEOUT    seconds for each later request [60]
#   VM_TEST_DIR     working directory (sockets, console log, share) [mktemp]
#   KEEP            1 to keep VM_TEST_DIR afterwards [0]
#   VHOST_VSOCK     [vhost-device-vsock]   VIRTIOFSD [virtiofsd]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

default_kernel() {
    find /boot -maxdepth 1 -name 'vmlinuz-*-cloud-amd64' | sort -V | tail -n 1
}
KERNEL="${KERNEL:-$(default_kernel)}"
INITRD="${INITRD:-$repo/build/kata-initrd.img}"
AGENT_CTL="${AGENT_CTL:-$repo/target/debug/agent-ctl}"
QEMU="${QEMU:-qemu-system-x86_64}"
ACCEL="${ACCEL:-tcg}"
MEM_MB="${MEM_MB:-512}"
SMP="${SMP:-1}"
KERNEL_APPEND="${KERNEL_APPEND:-}"
AGENT_LOG="${AGENT_LOG:-debug}"
BOOT_TIMEOUT="${BOOT_TIMEOUT:-120}"
CALL_TIMEOUT="${CALL_TIMEOUT:-60}"
KEEP="${KEEP:-0}"
VHOST_VSOCK="${VHOST_VSOCK:-vhost-device-vsock}"
VIRTIOFSD="${VIRTIOFSD:-virtiofsd}"

log() { echo "vm-test: $*" >&2; }

[[ -n "$KERNEL" && -f "$KERNEL" ]] ||
    { log "kernel '${KERNEL}': not found (apt-get install linux-image-cloud-amd64, or KERNEL=)"; exit 1; }
[[ -f "$INITRD" ]] || { log "initrd $INITRD: not found (make -f image.mk initrd)"; exit 1; }
[[ -x "$AGENT_CTL" ]] || { log "agent-ctl $AGENT_CTL: not found (cargo build --bins)"; exit 1; }
for tool in "$QEMU" "$VHOST_VSOCK" "$VIRTIOFSD"; do
    command -v "$tool" >/dev/null ||
        { log "$tool: not installed (apt-get install qemu-system-x86; cargo install --locked vhost-device-vsock virtiofsd)"; exit 1; }
done

if [[ -n "${VM_TEST_DIR:-}" ]]; then
    DIR="$VM_TEST_DIR"
    mkdir -p "$DIR"
else
    DIR="$(mktemp -d "${TMPDIR:-/tmp}/kata-vm-test.XXXXXX")"
fi
mkdir -p "$DIR/shared"
CONSOLE="$DIR/console.log"
: >"$CONSOLE"

pids=()        # every process started here, ended by PID on exit
qemu_pid=""
failed_step=""

stop_pid() {
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    local i
    # Reverse order: QEMU first, then the backends it used.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        stop_pid "${pids[i]}"
    done
    if [[ $rc -ne 0 ]]; then
        log "FAILED${failed_step:+ at: $failed_step}; guest console ($CONSOLE):"
        sed 's/^/  | /' "$CONSOLE" >&2 || true
        for f in "$DIR"/virtiofsd.log "$DIR"/vhost-vsock.log; do
            [[ -s "$f" ]] && { log "$f:"; sed 's/^/  | /' "$f" >&2; }
        done
    fi
    if [[ "$KEEP" == 1 || $rc -ne 0 ]]; then
        log "kept $DIR"
    else
        rm -rf "$DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    failed_step="$1"
    exit 1
}

# Waits up to $2 seconds for socket $1 to appear; fails naming $3 otherwise.
wait_socket() {
    local sock="$1" secs="$2" what="$3" pid="$4" i
    for ((i = 0; i < secs * 10; i++)); do
        [[ -S "$sock" ]] && return 0
        kill -0 "$pid" 2>/dev/null || fail "$what exited before creating $sock"
        sleep 0.1
    done
    fail "$what: no socket $sock after ${secs}s"
}

now_ms() { date +%s%3N; }

# --- backends -------------------------------------------------------------

"$VIRTIOFSD" --socket-path "$DIR/vfs.sock" --shared-dir "$DIR/shared" --tag kataShared \
    --sandbox none --cache auto >"$DIR/virtiofsd.log" 2>&1 </dev/null &
pids+=("$!")
wait_socket "$DIR/vfs.sock" 10 virtiofsd "$!"

"$VHOST_VSOCK" --vm "guest-cid=3,socket=$DIR/vhost.sock,uds-path=$DIR/hvsock.sock" \
    >"$DIR/vhost-vsock.log" 2>&1 </dev/null &
pids+=("$!")
wait_socket "$DIR/vhost.sock" 10 vhost-device-vsock "$!"

# --- the VM ---------------------------------------------------------------

append="console=ttyS0 quiet panic=-1 agent.log=$AGENT_LOG $KERNEL_APPEND"
log "kernel $KERNEL, initrd $INITRD ($(stat -c %s "$INITRD") bytes), append '$append'"
start_ms="$(now_ms)"
"$QEMU" -accel "$ACCEL" -machine q35 -cpu max -smp "$SMP" -m "$MEM_MB" \
    -object "memory-backend-memfd,id=mem,size=${MEM_MB}M,share=on" -numa node,memdev=mem \
    -chardev "socket,id=vsock0,path=$DIR/vhost.sock" -device vhost-user-vsock-pci,chardev=vsock0 \
    -chardev "socket,id=vfs,path=$DIR/vfs.sock" -device vhost-user-fs-pci,chardev=vfs,tag=kataShared \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$append" \
    -nographic -no-reboot -nodefaults -serial stdio \
    >"$CONSOLE" 2>&1 </dev/null &
qemu_pid="$!"
pids+=("$qemu_pid")

ADDR="hvsock://$DIR/hvsock.sock:1024"
ctl() {
    timeout --kill-after=5 "$1" "$AGENT_CTL" --addr "$ADDR" --timeout "${2}s" call "${@:3}"
}

# First Check: retry until the agent listens, the VM dies, or time is up.
deadline=$(($(date +%s) + BOOT_TIMEOUT))
until out="$(ctl 15 2 Check 2>&1)"; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU exited before the agent answered Check: $out"
    (($(date +%s) < deadline)) || fail "no answer to Check within ${BOOT_TIMEOUT}s: $out"
    sleep 0.2
done
ready_ms="$(now_ms)"
log "Check: $(tr -d '\n ' <<<"$out")"
boot_ms=$((ready_ms - start_ms))
log "boot to first Check: $((boot_ms / 1000)).$(printf '%03d' $((boot_ms % 1000))) s"

out="$(ctl $((CALL_TIMEOUT + 5)) "$CALL_TIMEOUT" Version 2>&1)" || fail "Version: $out"
log "Version: $(tr -d '\n ' <<<"$out")"
grep -q '"agent_version"' <<<"$out" || fail "Version: no agent_version in $out"

# The agent's own notes from PID 1 setup (modules, cgroups, lo), if any.
if grep -q '"msg":"init: ' "$CONSOLE"; then
    log "agent init notes:"
    grep '"msg":"init: ' "$CONSOLE" | sed 's/^/  | /' >&2
fi

# Until DestroySandbox powers the VM off, end it by PID.
stop_pid "$qemu_pid"
log "PASS (${boot_ms} ms to first Check)"

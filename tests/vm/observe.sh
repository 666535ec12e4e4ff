#!/usr/bin/env bash
# Micro-VM test of the agent's observability over hybrid vsock:
# - logs: booted with agent.log_vport=LOG_PORT, the agent keeps its log
#   lines until a reader connects; a host reader that connects once the
#   agent answers Check still gets the boot lines (configuration, PID 1's
#   figures, "listening on"), then live ones up to "powering off";
# - debug console: with agent.debug_console agent.debug_console_vport=
#   CONSOLE_PORT, a shell on a PTY answers `echo hi` and ends with `exit`;
#   after a second boot with agent.debug_console alone, a shell on the
#   serial console answers, and another starts after `exit`.
# The initrd must have a shell: `make -f image.mk initrd-debug` (busybox).
#
# Every step has a timeout; every process started here is ended by PID on
# exit; the console log is printed on failure. Environment: as lib.sh, and
#   LOG_PORT      [1025]   CONSOLE_PORT [1026]   (Kata's ports)
#   SOCAT         the host's end of a vsock port [socat]
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

INITRD="${INITRD:-$vm_repo/build/kata-initrd-debug.img}"
LOG_PORT="${LOG_PORT:-1025}"
CONSOLE_PORT="${CONSOLE_PORT:-1026}"
SOCAT="${SOCAT:-socat}"

vm_init
command -v "$SOCAT" >/dev/null || vm_fail "$SOCAT: not installed (apt-get install socat)"

# `open_port NAME PORT`: a socat connected to the hybrid vsock socket, its
# input a FIFO held open on descriptor 3 or 4 (so it never sees EOF), its
# output in $VM_DIR/NAME.out; sends the CONNECT line. PID in $VM_BG_PID.
open_port() {
    local name="$1" port="$2" fifo="$VM_DIR/$1.in"
    mkfifo "$fifo"
    VM_BG_STDIN="$fifo" vm_bg "$VM_DIR/$name.out" "$SOCAT" - "UNIX-CONNECT:$VM_DIR/hvsock.sock"
    # The FIFO's reader (socat) opens it as it starts; open our end read-write
    # so that neither side blocks on open.
    case "$name" in
    log) exec 3<>"$fifo" ;;
    console) exec 4<>"$fifo" ;;
    esac
    printf 'CONNECT %s\n' "$port" >"$fifo"
}

# `wait_for FILE PATTERN SECS WHAT`: until FILE holds PATTERN (fixed string).
wait_for() {
    local file="$1" pattern="$2" secs="$3" what="$4" i
    for ((i = 0; i < secs * 10; i++)); do
        grep -qF -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    vm_fail "$what: no '$pattern' after ${secs}s in: $(head -c 2000 "$file" 2>/dev/null)"
}

vm_start_backends
vm_boot "agent.log_vport=$LOG_PORT" agent.debug_console "agent.debug_console_vport=$CONSOLE_PORT"
vm_wait_ready

# --- logs: the boot lines were kept for this late reader --------------------
vm_step="log reader"
open_port log "$LOG_PORT"
log_pid="$VM_BG_PID"
wait_for "$VM_DIR/log.out" "OK " 10 "hybrid vsock CONNECT $LOG_PORT"
wait_for "$VM_DIR/log.out" '"msg":"listening on vsock://-1:1024' "$CALL_TIMEOUT" "log port"
for line in '"msg":"configuration: ' '"msg":"init: guest uptime ' '"msg":"log forwarding: listening on vsock port'; do
    grep -qF -- "$line" "$VM_DIR/log.out" || vm_fail "log port: no boot line '$line' in: $(cat "$VM_DIR/log.out")"
done
vm_log "log port $LOG_PORT: $(grep -c '"name":"kata-agent"' "$VM_DIR/log.out") lines kept from boot, first: $(sed -n 2p "$VM_DIR/log.out" | cut -c 1-100)..."
if grep -q '"name":"kata-agent"' "$VM_CONSOLE"; then
    vm_fail "with agent.log_vport the agent still logged to the console"
fi

# --- the debug console --------------------------------------------------------
vm_step="debug console"
open_port console "$CONSOLE_PORT"
console_pid="$VM_BG_PID"
wait_for "$VM_DIR/console.out" "OK " 10 "hybrid vsock CONNECT $CONSOLE_PORT"
# h''i: the terminal's echo of the command line does not match "hi".
printf "echo h''i from \$(hostname) pid \$\$; tty\n" >&4
wait_for "$VM_DIR/console.out" "hi from" "$CALL_TIMEOUT" "debug console"
wait_for "$VM_DIR/console.out" "/dev/pts/" "$CALL_TIMEOUT" "debug console tty"
vm_log "debug console: $(grep -a 'hi from' "$VM_DIR/console.out" | grep -v echo | tr -d '\r')"
printf 'exit\n' >&4
vm_wait_pid "$console_pid" "$CALL_TIMEOUT" "debug console: session end after exit" ||
    vm_fail "debug console: socat failed: $(cat "$VM_DIR/console.out")"
exec 4>&-
# The session's end reached the log, live.
wait_for "$VM_DIR/log.out" "debug console: session of shell pid" "$CALL_TIMEOUT" "log port (live)"

# --- the end ------------------------------------------------------------------
vm_call DestroySandbox "$CALL_TIMEOUT" DestroySandbox '{}'
vm_step="power off"
vm_wait_exit 30
wait_for "$VM_DIR/log.out" '"msg":"powering off"' 5 "log port: last line"
vm_wait_pid "$log_pid" 10 "log reader: end after power off" || true
exec 3>&-
log_lines="$(grep -c '"name":"kata-agent"' "$VM_DIR/log.out")"
vm_stop_all

# --- second boot: agent.debug_console without a port: the serial console ------
VM_CONSOLE="$VM_DIR/console-serial.log"
VM_SERIAL=socket
vm_start_backends
vm_boot agent.debug_console
vm_wait_ready
vm_step="serial debug console"
mkfifo "$VM_DIR/serial.in"
VM_BG_STDIN="$VM_DIR/serial.in" vm_bg "$VM_DIR/serial.out" "$SOCAT" - "UNIX-CONNECT:$VM_DIR/serial.sock"
exec 5<>"$VM_DIR/serial.in"
printf "echo h''i on the serial console\n" >&5
wait_for "$VM_DIR/serial.out" "hi on the serial console" "$CALL_TIMEOUT" "serial debug console"
# After exit, another shell.
printf 'exit\n' >&5
wait_for "$VM_CONSOLE" "exited; starting another" "$CALL_TIMEOUT" "serial debug console restart"
printf "echo h''i again\n" >&5
wait_for "$VM_DIR/serial.out" "hi again" "$CALL_TIMEOUT" "serial debug console after restart"
vm_log "serial debug console: answered, restarted after exit, answered again"
vm_call DestroySandbox "$CALL_TIMEOUT" DestroySandbox '{}'
vm_step="power off (serial)"
vm_wait_exit 30
exec 5>&-
vm_log "PASS (log port $LOG_PORT: $log_lines lines; debug console on vsock port $CONSOLE_PORT and on the serial console)"

#!/usr/bin/env bash
# Micro-VM end-to-end container test: the Kata shim's call sequence over
# hybrid vsock, against our initrd booted under QEMU, with the container
# rootfs shared from the host by virtiofsd (tag kataShared).
#
# For each cgroup layout of the guest (v1: the default; v2: cgroup_no_v1=all)
# it boots a fresh VM and runs:
#   Check; CreateSandbox with the virtio-fs storage the shim sends;
#   container "limits" (memory and pids limits, rootfs placed by the host at
#   <shared>/<cid>/rootfs): CreateContainer, StartContainer, ReadStdout (the
#   limits as the container sees them in its cgroup mount; the default
#   device cgroup: /dev/null opens, a bound-in /dev/fuse does not), ExecProcess (a
#   process that starts more processes than pids.max allows, then reads
#   pids.current and pids.events: forks were refused), WaitProcess,
#   StatsContainer (the limits again), SignalProcess, WaitProcess (137),
#   RemoveContainer;
#   container "oom" (32 MiB limit, dd with a 256 MiB buffer): GetOOMEvent
#   waiting before StartContainer, WaitProcess (137), the event names it;
#   RemoveContainer;
#   container "inspect" (the guest's cgroup namespace, its /run/kata-containers
#   bound in): no cgroup or bundle of the removed containers is left;
#   DestroySandbox; the guest powers off by itself.
#
# Every step has a timeout; every process started here is ended by PID on
# exit; the guest console log of the failing boot is printed on failure.
# Environment: as lib.sh (KERNEL, INITRD, AGENT_CTL, KERNEL_APPEND, ...), and
#   LAYOUTS        which guest cgroup layouts to test ["v1 v2"]
#   MEM_LIMIT_MB   memory limit of the "limits" container [48]
#   PIDS_LIMIT     pids limit of the "limits" container [12]
#   OOM_LIMIT_MB   memory limit of the "oom" container [32]
#   POWEROFF_TIMEOUT  seconds from DestroySandbox to QEMU's exit [30]
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LAYOUTS="${LAYOUTS:-v1 v2}"
MEM_LIMIT_MB="${MEM_LIMIT_MB:-48}"
PIDS_LIMIT="${PIDS_LIMIT:-12}"
OOM_LIMIT_MB="${OOM_LIMIT_MB:-32}"
POWEROFF_TIMEOUT="${POWEROFF_TIMEOUT:-30}"

vm_init

run_layout() {
    local layout="$1" append=() cid oom_out oom_pid mem pids
    VM_PHASE="$layout"
    local mem_bytes=$((MEM_LIMIT_MB << 20)) oom_bytes=$((OOM_LIMIT_MB << 20))
    if [[ "$layout" == v2 ]]; then
        append=(cgroup_no_v1=all)
    fi
    vm_step="$VM_PHASE: rootfs"
    vm_make_rootfs "limits-$layout"
    vm_make_rootfs "oom-$layout"
    vm_make_rootfs "inspect-$layout"
    vm_step="$VM_PHASE: boot"
    VM_CONSOLE="$VM_DIR/console-$layout.log"
    vm_start_backends
    vm_boot "${append[@]}"
    vm_wait_ready

    vm_create_sandbox "sb-$layout"

    # --- limits, seen from inside ---------------------------------------
    cid="limits-$layout"
    # shellcheck disable=SC2016 # expanded by the container's shell
    local script='if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  echo "cgroup=v2 mem=$(cat /sys/fs/cgroup/memory.max) pids=$(cat /sys/fs/cgroup/pids.max)"
else
  echo "cgroup=v1 mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes) pids=$(cat /sys/fs/cgroup/pids/pids.max)"
fi
echo "hello from $(hostname)"
head -c 0 </dev/null && echo null=open
if head -c 0 </dev/probe 2>/dev/null; then echo fuse=open; else echo fuse=denied; fi
echo ready
exec sleep 600'
    local resources="{\"Memory\": {\"Limit\": $mem_bytes}, \"Pids\": {\"Limit\": $PIDS_LIMIT}}"
    # The guest's /dev/fuse bound in: only the default device cgroup (v1's
    # files, v2's device program) keeps the container from opening it.
    local fuse='{"destination": "/dev/probe", "type": "bind", "source": "/dev/fuse", "options": ["bind"]}'
    vm_call CreateContainer "$CALL_TIMEOUT" CreateContainer \
        "$(vm_create_request "$cid" "$script" "$resources" "mount pid ipc uts cgroup" "$fuse")"
    vm_call StartContainer "$CALL_TIMEOUT" StartContainer "{\"container_id\": \"$cid\"}"
    vm_read_stdout "$cid" "$cid" ready
    vm_log "$layout: container says: $(head -n 2 <<<"$VM_TEXT" | tr '\n' ';')"
    [[ "$VM_TEXT" == *"cgroup=$layout mem=$mem_bytes pids=$PIDS_LIMIT"* ]] ||
        vm_fail "limits seen in the container: $VM_TEXT; expected cgroup=$layout mem=$mem_bytes pids=$PIDS_LIMIT"
    [[ "$VM_TEXT" == *"hello from vm-test"* ]] || vm_fail "hostname: $VM_TEXT"
    [[ "$VM_TEXT" == *"null=open"*"fuse=denied"* ]] ||
        vm_fail "device cgroup: /dev/null must open and /dev/fuse must not: $VM_TEXT"

    # The pids limit holds: a subshell starts background sleeps until fork
    # fails; then, with shell builtins only (no fork left), the counters.
    local exec_script="d=/sys/fs/cgroup/pids; [ -f /sys/fs/cgroup/cgroup.controllers ] && d=/sys/fs/cgroup
( i=0; while [ \$i -lt $((2 * PIDS_LIMIT)) ]; do sleep 30 & i=\$((i+1)); done ) 2>/dev/null
read cur <\$d/pids.current; read ev <\$d/pids.events
echo \"pids.current=\$cur pids.events=\$ev\"
kill -9 -1
echo exec-done"
    vm_call ExecProcess "$CALL_TIMEOUT" ExecProcess "$(
        printf '{"container_id": "%s", "exec_id": "probe", "process": {"Args": ["sh", "-c", %s], "Env": ["PATH=/bin"], "Cwd": "/"}}' \
            "$cid" "$(vm_json_str "$exec_script")"
    )"
    vm_call "WaitProcess probe" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"probe\"}"
    vm_expect_status 0 "exec probe"
    vm_read_stdout "$cid" probe exec-done
    vm_log "$layout: exec: $(head -n 1 <<<"$VM_TEXT")"
    pids="$(sed -n 's/^pids.current=\([0-9]*\) .*/\1/p' <<<"$VM_TEXT")"
    [[ -n "$pids" ]] || vm_fail "exec probe: no pids.current in $VM_TEXT"
    ((pids <= PIDS_LIMIT)) || vm_fail "pids limit $PIDS_LIMIT not enforced: pids.current=$pids"
    [[ "$VM_TEXT" =~ pids.events=max\ [1-9] ]] || vm_fail "pids limit $PIDS_LIMIT never refused a fork: $VM_TEXT"

    vm_call StatsContainer "$CALL_TIMEOUT" StatsContainer "{\"container_id\": \"$cid\"}"
    # 64-bit integers are JSON strings; the first "limit" is memory_stats.usage's.
    mem="$(grep -o '"limit": *"[0-9]*"' <<<"$VM_OUT" | head -n 1 | tr -dc 0-9)" || true
    pids="$(grep -o '"pids_stats": *{[^}]*}' <<<"$VM_OUT" | tr -d ' ')" || true
    vm_log "$layout: StatsContainer: memory limit ${mem:-none}, $pids"
    [[ "$mem" == "$mem_bytes" ]] || vm_fail "StatsContainer: memory limit ${mem:-none}, expected $mem_bytes: $VM_OUT"
    vm_call SignalProcess "$CALL_TIMEOUT" SignalProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\", \"signal\": 9}"
    vm_call "WaitProcess $cid" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\"}"
    vm_expect_status 137 "container $cid after SIGKILL"
    vm_call RemoveContainer "$CALL_TIMEOUT" RemoveContainer "{\"container_id\": \"$cid\", \"timeout\": 10}"

    # --- OOM kill, reported by GetOOMEvent -------------------------------
    cid="oom-$layout"
    # Swap = limit: no swap on top of the memory limit.
    resources="{\"Memory\": {\"Limit\": $oom_bytes, \"Swap\": $oom_bytes}}"
    vm_call "CreateContainer $cid" "$CALL_TIMEOUT" CreateContainer "$(
        vm_create_request "$cid" "exec dd if=/dev/zero of=/dev/null bs=256M count=1" "$resources"
    )"
    oom_out="$VM_DIR/oom-$layout.json"
    vm_bg "$oom_out" timeout --kill-after=5 "$((CALL_TIMEOUT + 5))" \
        "$AGENT_CTL" --addr "$VM_ADDR" --timeout "${CALL_TIMEOUT}s" call GetOOMEvent '{}'
    oom_pid="$VM_BG_PID"
    vm_call "StartContainer $cid" "$CALL_TIMEOUT" StartContainer "{\"container_id\": \"$cid\"}"
    vm_call "WaitProcess $cid" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\"}"
    vm_expect_status 137 "dd under a ${OOM_LIMIT_MB} MiB limit"
    vm_step="$VM_PHASE: GetOOMEvent"
    vm_wait_pid "$oom_pid" "$((CALL_TIMEOUT + 10))" GetOOMEvent ||
        vm_fail "GetOOMEvent: $(cat "$oom_out")"
    [[ "$(vm_field container_id "$(cat "$oom_out")")" == "$cid" ]] ||
        vm_fail "GetOOMEvent: expected $cid, got $(cat "$oom_out")"
    vm_log "$layout: GetOOMEvent: $(cat "$oom_out")"
    vm_call "RemoveContainer $cid" "$CALL_TIMEOUT" RemoveContainer "{\"container_id\": \"$cid\"}"

    # --- nothing left: a container in the guest's cgroup namespace, with
    # the guest's /run/kata-containers bound in, looks at what remains -----
    cid="inspect-$layout"
    # shellcheck disable=SC2016 # expanded by the container's shell
    script='for c in /sys/fs/cgroup/vm-test /sys/fs/cgroup/memory/vm-test /sys/fs/cgroup/pids/vm-test; do
  [ -d $c ] && for d in $c/*/; do echo "cgroup: $d"; done
done
for d in /guest-run/*; do echo "run: $d"; done
echo inspected'
    vm_call "CreateContainer $cid" "$CALL_TIMEOUT" CreateContainer "$(
        vm_create_request "$cid" "$script" '{}' "mount pid ipc uts" \
            '{"destination": "/guest-run", "type": "bind", "source": "/run/kata-containers", "options": ["rbind", "ro"]}'
    )"
    vm_call "StartContainer $cid" "$CALL_TIMEOUT" StartContainer "{\"container_id\": \"$cid\"}"
    vm_call "WaitProcess $cid" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\"}"
    vm_expect_status 0 "inspector"
    vm_read_stdout "$cid" "$cid" inspected
    vm_log "$layout: left in the guest: $(grep -v inspected <<<"$VM_TEXT" | tr '\n' ' ')"
    if grep -E "limits-$layout|oom-$layout" <<<"$VM_TEXT"; then
        vm_fail "removed containers left cgroups or bundles behind: $VM_TEXT"
    fi
    grep -q "cgroup: .*/inspect-$layout/" <<<"$VM_TEXT" || vm_fail "inspector: its own cgroup not seen: $VM_TEXT"
    vm_call "RemoveContainer $cid" "$CALL_TIMEOUT" RemoveContainer "{\"container_id\": \"$cid\"}"

    # --- the end: the VM powers itself off --------------------------------
    vm_call DestroySandbox "$CALL_TIMEOUT" DestroySandbox '{}'
    vm_step="$VM_PHASE: power off"
    vm_wait_exit "$POWEROFF_TIMEOUT"
    vm_log "$layout: guest powered off $(($(vm_now_ms) - VM_START_MS)) ms after QEMU started"
    vm_stop_all
}

for layout in $LAYOUTS; do
    case "$layout" in
    v1 | v2)
        if [[ "$layout" == v1 && " $KERNEL_APPEND " =~ \ (cgroup_no_v1=all|systemd.unified_cgroup_hierarchy=1)\  ]]; then
            vm_log "v1: skipped: KERNEL_APPEND='$KERNEL_APPEND' asks for cgroup v2"
            continue
        fi
        run_layout "$layout"
        ;;
    *) vm_fail "LAYOUTS: unknown layout '$layout' (v1, v2)" ;;
    esac
done
vm_log "PASS (containers in guest cgroup layouts: $LAYOUTS)"

#!/usr/bin/env bash
# Micro-VM test of the agent's OOM protection as PID 1 (the host tests can
# check it only where the test's root has CAP_SYS_RESOURCE): boots our
# initrd, runs a container with the guest's /proc/1 (the agent) bound in,
# and expects the agent's oom_score_adj to be -997 and the container's 0.
#
# Every step has a timeout; every process started here is ended by PID on
# exit; the guest console log is printed when a step fails. The environment
# is described in lib.sh (KERNEL, INITRD, AGENT_CTL, KERNEL_APPEND, ...);
# arguments are extra kernel parameters.
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

vm_init
cid=score
vm_step="rootfs"
vm_make_rootfs "$cid"
vm_step="boot"
VM_CONSOLE="$VM_DIR/console.log"
vm_start_backends
vm_boot "$@"
vm_wait_ready
vm_create_sandbox "sb-$cid"

# shellcheck disable=SC2016 # expanded by the container's shell
script='echo "agent=$(cat /agent/oom_score_adj) container=$(cat /proc/self/oom_score_adj) end"'
vm_call "CreateContainer $cid" "$CALL_TIMEOUT" CreateContainer "$(
    vm_create_request "$cid" "$script" '{}' "mount pid ipc uts" \
        '{"destination": "/agent", "type": "bind", "source": "/proc/1", "options": ["rbind", "ro"]}'
)"
vm_call "StartContainer $cid" "$CALL_TIMEOUT" StartContainer "{\"container_id\": \"$cid\"}"
vm_read_stdout "$cid" "$cid" end
vm_log "oom_score_adj: $VM_TEXT"
[[ "$VM_TEXT" == "agent=-997 container=0 end" ]] ||
    vm_fail "expected the agent at -997 and the container at 0: $VM_TEXT"
vm_call "WaitProcess $cid" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\"}"
vm_expect_status 0 "$cid"
vm_call "RemoveContainer $cid" "$CALL_TIMEOUT" RemoveContainer "{\"container_id\": \"$cid\"}"
vm_call DestroySandbox "$CALL_TIMEOUT" DestroySandbox '{}'
vm_step="power off"
vm_wait_exit 30
vm_stop_all
vm_log "PASS (oom_score_adj: agent -997, container 0)"

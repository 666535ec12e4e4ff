#!/usr/bin/env bash
# The demo: boot the micro-VM (our initrd, the agent as PID 1), run
# `echo hello from the guest; uname -a` in a busybox container whose rootfs
# the host shares over virtio-fs, print what it wrote, and let the guest
# power itself off after DestroySandbox.
#
# The container's output goes to stdout; progress and timings to stderr.
# Arguments are extra guest kernel parameters (e.g. cgroup_no_v1=all).
# Environment: as lib.sh (KERNEL, INITRD, AGENT_CTL, KERNEL_APPEND, ...), and
#   DEMO_CMD          the container's command [echo hello from the guest; uname -a]
#   POWEROFF_TIMEOUT  seconds from DestroySandbox to QEMU's exit [30]
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEMO_CMD="${DEMO_CMD:-echo hello from the guest; uname -a}"
POWEROFF_TIMEOUT="${POWEROFF_TIMEOUT:-30}"

vm_init
cid=demo
vm_step="rootfs"
vm_make_rootfs "$cid"
vm_start_backends
vm_boot "$@"
vm_wait_ready

vm_create_sandbox demo-sandbox
vm_call CreateContainer "$CALL_TIMEOUT" CreateContainer "$(vm_create_request "$cid" "$DEMO_CMD")"
vm_call StartContainer "$CALL_TIMEOUT" StartContainer "{\"container_id\": \"$cid\"}"
vm_call WaitProcess "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\"}"
status="$(vm_field status "$VM_OUT")"
vm_read_stdout "$cid" "$cid"
vm_log "the container wrote (exit status ${status:-0}):"
cat "$VM_DIR/stdout-$cid-$cid"
vm_call RemoveContainer "$CALL_TIMEOUT" RemoveContainer "{\"container_id\": \"$cid\"}"
vm_call DestroySandbox "$CALL_TIMEOUT" DestroySandbox '{}'
vm_step="power off"
vm_wait_exit "$POWEROFF_TIMEOUT"
vm_log "the guest powered itself off; $(($(vm_now_ms) - VM_START_MS)) ms from QEMU's start to its exit"
[[ "${status:-0}" == 0 ]] || vm_fail "the container exited with status $status"

#!/usr/bin/env bash
# Micro-VM end-to-end test: boots our initrd (the agent as /init) under QEMU
# with vsock through vhost-device-vsock and a virtio-fs share (tag
# kataShared) through virtiofsd, then drives the agent over hybrid vsock with
# agent-ctl: Check and Version. Prints the time from QEMU's start to the
# first successful Check, and the agent's PID 1 notes if it had any.
#
# Every step has a timeout; every process started here is ended by PID on
# exit; the guest console log is kept and printed when a step fails. The
# environment is described in lib.sh (KERNEL, INITRD, KERNEL_APPEND, ...);
# arguments are extra kernel parameters, e.g. `tests/vm/run.sh cgroup_no_v1=all`.
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

vm_init
vm_start_backends
vm_boot "$@"
vm_wait_ready

out="$(vm_ctl "$CALL_TIMEOUT" Version 2>&1)" || vm_fail "Version: $out"
vm_log "Version: $(tr -d '\n ' <<<"$out")"
grep -q '"agent_version"' <<<"$out" || vm_fail "Version: no agent_version in $out"

# The agent's own start-up figure, from its log on the console.
listening="$(grep -o '"msg":"listening on [^"]*"' "$VM_CONSOLE" | head -n 1 | cut -d'"' -f4)" || true
[[ -z "$listening" ]] || vm_log "agent: $listening"

# What PID 1 logged about its setup: boot figures, and problems it met and
# survived (a module, a cgroup controller, lo).
grep -o '"level":"[a-z]*","msg":"init: [^"]*"' "$VM_CONSOLE" | cut -d'"' -f4,8 | tr '"' ' ' |
    sed 's/^/vm-test: agent /' >&2 || true

# Until DestroySandbox powers the guest off (then: vm_wait_exit), end it by PID.
vm_stop
vm_log "PASS (${VM_BOOT_MS} ms to first Check)"

#!/usr/bin/env bash
# The console as Kata's runtime gives it: no serial port, only a virtio
# console (virtio-serial-pci + virtconsole, `console=hvc0 console=hvc1`),
# with `panic=1` and --no-reboot as the runtime boots. Debian's kernel has
# the virtio console as a module, so init starts with no console at all
# (fds 0-2 closed) until the agent loads it: the agent must come up, answer
# Check, and its logs must reach hvc0 (QEMU writes it to $VM_DIR/hvc.log).
#
# Environment as in lib.sh (KERNEL, INITRD, ...).
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

vm_init
vm_start_backends
hvc_log="$VM_DIR/hvc.log"
VM_START_MS="$(vm_now_ms)"
vm_log "kernel $KERNEL, initrd $INITRD, console hvc0 only"
# The console on a virtio port only; nothing on a serial port.
"$QEMU" -accel "$ACCEL" -machine q35 -cpu max -smp "$SMP" -m "$MEM_MB" \
    -object "memory-backend-memfd,id=mem,size=${MEM_MB}M,share=on" -numa node,memdev=mem \
    -chardev "socket,id=vsock0,path=$VM_DIR/vhost.sock" -device vhost-user-vsock-pci,chardev=vsock0 \
    -chardev "socket,id=vfs,path=$VM_DIR/vfs.sock" -device vhost-user-fs-pci,chardev=vfs,tag=kataShared \
    -device virtio-serial-pci,disable-modern=true,id=serial0 \
    -device virtconsole,chardev=charconsole0,id=console0 \
    -chardev "file,id=charconsole0,path=$hvc_log" \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "tsc=reliable no_timer_check console=hvc0 console=hvc1 quiet panic=1 agent.log=debug $KERNEL_APPEND" \
    -nographic -no-reboot -nodefaults -serial none >"$VM_DIR/qemu.log" 2>&1 </dev/null &
vm_qemu_pid=$!
vm_pids+=("$vm_qemu_pid")
# The failure shows on hvc0 if anywhere: print it with the console log.
VM_CONSOLE="$hvc_log"
vm_wait_ready

vm_step="the agent's logs on hvc0"
grep -q '"msg":"listening on vsock' "$hvc_log" ||
    vm_fail "no 'listening on vsock' line from the agent on hvc0"

vm_create_sandbox console-test
vm_call DestroySandbox "$CALL_TIMEOUT" DestroySandbox '{}'
vm_wait_exit 30
vm_log "PASS (${VM_BOOT_MS} ms to first Check, agent logs on hvc0)"

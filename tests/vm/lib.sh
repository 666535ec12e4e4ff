#!/usr/bin/env bash
# Micro-VM test library, sourced by the tests in this folder (not run).
#
#   vm_init              read the environment, check the tools, make $VM_DIR,
#                        install the EXIT trap that ends every process by PID
#   vm_start_backends    virtiofsd (share $VM_DIR/shared, tag kataShared) and
#                        vhost-device-vsock (hybrid vsock on $VM_DIR/hvsock.sock)
#   vm_stop_all          end QEMU, the backends and background jobs by PID
#                        (between boots: then vm_start_backends again)
#   vm_boot [PARAMS]     start QEMU with our initrd; extra kernel parameters;
#                        the console goes to $VM_CONSOLE (set it per boot);
#                        VM_SERIAL=socket: also to $VM_DIR/serial.sock, for input;
#                        the array VM_QEMU_EXTRA adds QEMU arguments (a NIC);
#                        VM_MACHINE (-machine) [q35], VM_MEM_OPTS (appended to
#                        -m, e.g. slots=2,maxmem=2G) []; VM_QMP=1: a QMP socket
#                        at $VM_DIR/qmp.sock, for vm_qmp; a VM_MACHINE of
#                        microvm (fast: the fast path's, $VM_FAST_MACHINE) gets the
#                        virtio-mmio devices and the console on hvc0 (see
#                        vm_fast_args)
#   vm_qmp [--wait EVENT[:KEY=VALUE,...]] COMMAND [JSON]   one QMP command
#                        (tests/vm/qmp.py), bounded by QMP_TIMEOUT; its answer
#                        (and the event waited for) in $VM_QMP_OUT; fails the test
#                        on an error; vm_qmp_try: the same, returns the status
#   vm_bg OUT CMD...     run CMD in the background, stdout+stderr to OUT, stdin
#                        from $VM_BG_STDIN [/dev/null]; its PID is in $VM_BG_PID
#                        and is ended by the trap
#   vm_wait_pid PID SECS WHAT   wait for a vm_bg job to end; fails after SECS
#   vm_wait_ready        retry Check until the agent answers; sets VM_BOOT_MS
#   vm_ctl SECS METHOD [JSON]   one agent-ctl call, bounded by SECS
#   vm_wait_exit SECS    wait for QEMU to exit by itself (after DestroySandbox)
#   vm_stop              end QEMU by PID
#   vm_fail MESSAGE      fail the current step (the trap prints the console log)
#
# Containers (the shim's requests; see each function): vm_make_rootfs CID,
# vm_call NAME SECS METHOD [JSON], vm_create_sandbox ID,
# vm_create_request CID SCRIPT [RESOURCES], vm_read_stdout CID EXEC_ID [PATTERN],
# vm_expect_status CODE WHAT, vm_field FIELD JSON, vm_json_str STRING.
#
# Environment (defaults in brackets):
#   KERNEL          guest kernel [build/debian-kernel/vmlinuz: Debian's cloud kernel,
#                   unpacked by rootfs-builder/debian-kernel.sh]
#   INITRD          guest initrd from rootfs-builder [build/kata-initrd.img]
#   AGENT_CTL       the debugging client [target/debug/agent-ctl]
#   QEMU            [qemu-system-x86_64]
#   ACCEL           QEMU accelerator [tcg]
#   MEM_MB          guest memory, also the memfd backend's size [512]
#   SMP             guest vCPUs [1]
#   ROOT_IMAGE      boot this ext4/erofs image from rootfs-builder/image.sh as the
#                   root disk (virtio-blk, read-only) instead of INITRD; needs a
#                   kernel with virtio-blk and the filesystem built in (ours) []
#   KERNEL_APPEND   extra kernel parameters for every boot, e.g. cgroup_no_v1=all []
#   AGENT_LOG       agent.log level [debug]
#   BOOT_TIMEOUT    seconds from QEMU's start to the first Check [120]
#   CALL_TIMEOUT    seconds for each later request [60]
#   QMP_TIMEOUT     seconds for each QMP command and the event it waits for [30]
#   PYTHON          Python 3 for qmp.py [python3]
#   VM_TEST_DIR     working directory (sockets, logs, share) [mktemp]
#   KEEP            1 keeps the working directory after success too [0]
#   VHOST_VSOCK     [vhost-device-vsock]   VIRTIOFSD [virtiofsd]
#   BUSYBOX         static busybox for container rootfs trees [/bin/busybox]

vm_lib_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
vm_repo="$(cd "$vm_lib_dir/../.." && pwd)"

vm_log() { echo "vm-test: $*" >&2; }

vm_init() {
    KERNEL="${KERNEL:-$vm_repo/build/debian-kernel/vmlinuz}"
    INITRD="${INITRD:-$vm_repo/build/kata-initrd.img}"
    ROOT_IMAGE="${ROOT_IMAGE:-}"
    AGENT_CTL="${AGENT_CTL:-$vm_repo/target/debug/agent-ctl}"
    QEMU="${QEMU:-qemu-system-x86_64}"
    ACCEL="${ACCEL:-tcg}"
    MEM_MB="${MEM_MB:-512}"
    SMP="${SMP:-1}"
    KERNEL_APPEND="${KERNEL_APPEND:-}"
    AGENT_LOG="${AGENT_LOG:-debug}"
    BOOT_TIMEOUT="${BOOT_TIMEOUT:-120}"
    CALL_TIMEOUT="${CALL_TIMEOUT:-60}"
    QMP_TIMEOUT="${QMP_TIMEOUT:-30}"
    PYTHON="${PYTHON:-python3}"
    KEEP="${KEEP:-0}"
    VHOST_VSOCK="${VHOST_VSOCK:-vhost-device-vsock}"
    VIRTIOFSD="${VIRTIOFSD:-virtiofsd}"
    BUSYBOX="${BUSYBOX:-/bin/busybox}"

    if [[ -z "$KERNEL" || ! -f "$KERNEL" ]]; then
        vm_log "kernel '$KERNEL': not found (rootfs-builder/debian-kernel.sh fetches Debian's, or KERNEL=)"
        exit 1
    fi
    if [[ -n "$ROOT_IMAGE" && ! -f "$ROOT_IMAGE" ]]; then
        vm_log "root image $ROOT_IMAGE: not found (make -f image.mk image)"
        exit 1
    fi
    if [[ -z "$ROOT_IMAGE" && ! -f "$INITRD" ]]; then
        vm_log "initrd $INITRD: not found (make -f image.mk initrd)"
        exit 1
    fi
    if [[ ! -x "$AGENT_CTL" ]]; then
        vm_log "agent-ctl $AGENT_CTL: not found (cargo build -p agent-ctl)"
        exit 1
    fi
    local tool
    for tool in "$QEMU" "$VHOST_VSOCK" "$VIRTIOFSD" timeout; do
        if ! command -v "$tool" >/dev/null; then
            vm_log "$tool: not installed (apt-get install qemu-system-x86; cargo install --locked vhost-device-vsock virtiofsd)"
            exit 1
        fi
    done

    if [[ -n "${VM_TEST_DIR:-}" ]]; then
        VM_DIR="$VM_TEST_DIR"
        mkdir -p "$VM_DIR"
    else
        VM_DIR="$(mktemp -d "${TMPDIR:-/tmp}/kata-vm-test.XXXXXX")"
    fi
    mkdir -p "$VM_DIR/shared"
    VM_CONSOLE="$VM_DIR/console.log"
    VM_ADDR="hvsock://$VM_DIR/hvsock.sock:1024"
    : >"$VM_CONSOLE"
    vm_pids=()
    vm_qemu_pid=""
    vm_step=""
    trap vm_cleanup EXIT
    trap 'exit 130' INT TERM
}

# Ends every process started here, newest first (QEMU before its backends).
vm_stop_all() {
    local i
    for ((i = ${#vm_pids[@]} - 1; i >= 0; i--)); do
        vm_stop_pid "${vm_pids[i]}"
    done
    vm_pids=()
}

# Ends one process: TERM, up to 5 s, then KILL; always reaps it.
vm_stop_pid() {
    local pid="$1" i
    if vm_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            vm_alive "$pid" || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

vm_cleanup() {
    local rc=$? f
    vm_stop_all
    # A backend that died unnoticed fails the test too.
    if [[ $rc -eq 0 && -f "$VM_DIR/vhost-vsock.log" ]] && grep -q panicked "$VM_DIR/vhost-vsock.log"; then
        vm_log "vhost-device-vsock panicked during the test"
        rc=1
    fi
    if [[ $rc -ne 0 ]]; then
        vm_log "FAILED${vm_step:+ at: $vm_step}; guest console ($VM_CONSOLE):"
        sed 's/^/  | /' "$VM_CONSOLE" >&2 || true
        for f in "$VM_DIR/qemu.log" "$VM_DIR/virtiofsd.log" "$VM_DIR/vhost-vsock.log"; do
            if [[ -s "$f" ]]; then
                vm_log "$f:"
                sed 's/^/  | /' "$f" >&2
            fi
        done
    fi
    if [[ "$KEEP" == 1 || $rc -ne 0 ]]; then
        vm_log "kept $VM_DIR"
    else
        rm -rf "$VM_DIR"
    fi
    exit "$rc"
}

vm_fail() {
    vm_step="$1"
    exit 1
}

vm_now_ms() { date +%s%3N; }

# True while process PID runs (a zombie counts as ended).
vm_alive() {
    local state
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# Waits up to SECS for socket PATH made by process PID (named WHAT).
vm_wait_socket() {
    local sock="$1" secs="$2" what="$3" pid="$4" i
    for ((i = 0; i < secs * 10; i++)); do
        [[ -S "$sock" ]] && return 0
        vm_alive "$pid" || vm_fail "$what exited before creating $sock"
        sleep 0.1
    done
    vm_fail "$what: no socket $sock after ${secs}s"
}

vm_start_backends() {
    local pid
    # Sockets of a previous boot's backends would look ready.
    rm -f "$VM_DIR/vfs.sock" "$VM_DIR/vhost.sock" "$VM_DIR/hvsock.sock"
    "$VIRTIOFSD" --socket-path "$VM_DIR/vfs.sock" --shared-dir "$VM_DIR/shared" --tag kataShared \
        --sandbox none --cache auto >"$VM_DIR/virtiofsd.log" 2>&1 </dev/null &
    pid=$!
    vm_pids+=("$pid")
    vm_wait_socket "$VM_DIR/vfs.sock" 10 virtiofsd "$pid"

    "$VHOST_VSOCK" --vm "guest-cid=3,socket=$VM_DIR/vhost.sock,uds-path=$VM_DIR/hvsock.sock" \
        >"$VM_DIR/vhost-vsock.log" 2>&1 </dev/null &
    pid=$!
    vm_pids+=("$pid")
    vm_wait_socket "$VM_DIR/vhost.sock" 10 vhost-device-vsock "$pid"
}

# The fast path's machine: QEMU's microvm (virtio-mmio, no PCI), without
# the UART (the console is hvc0) and without ACPI (the devices are named on
# the command line, which QEMU extends itself; kernel-config/fast.conf says
# why). The PIT and the PIC stay: under TCG the LAPIC timer fails its
# calibration, and without the PIT the guest has no clock event at all.
export VM_FAST_MACHINE="microvm,isa-serial=off,rtc=on,acpi=off"

# The host's TSC rate in kHz: under TCG the guest's TSC is the host's, and
# on microvm the kernel fails to calibrate it (no HPET or PM timer, and the
# PIT is too irregular under TCG), marks it unstable and stalls on a jiffies
# clock. From /proc/cpuinfo when the host's TSC is constant.
vm_host_tsc_khz() {
    grep -q constant_tsc /proc/cpuinfo || return 0
    awk -F': *' '/^cpu MHz/ { printf "%d\n", $2 * 1000; exit }' /proc/cpuinfo
}

# For a microvm machine: QEMU's arguments (into the array vm_machine_args)
# and the kernel parameters (vm_machine_append) that replace q35's: guest
# memory as the machine's memory backend (shared: the vhost-user backends map
# it), the vhost-user devices and a virtio console on virtio-mmio, the
# console (hvc0) into $VM_CONSOLE, no serial port.
vm_fast_args() {
    local khz
    khz="$(vm_host_tsc_khz)"
    vm_machine_args=(-machine "${VM_MACHINE},memory-backend=mem"
        -object "memory-backend-memfd,id=mem,size=${MEM_MB}M,share=on"
        -chardev "socket,id=vsock0,path=$VM_DIR/vhost.sock" -device "vhost-user-vsock-device,chardev=vsock0"
        -chardev "socket,id=vfs,path=$VM_DIR/vfs.sock" -device "vhost-user-fs-device,chardev=vfs,tag=kataShared"
        -device virtio-serial-device -device "virtconsole,chardev=con0")
    # tsc=reliable: no clocksource watchdog (there is nothing to check the
    # TSC against; under TCG its jitter would demote it to jiffies).
    # reboot=t: without ACPI PID 1 ends the VM with a reset; a triple fault
    # is the one way microvm has, and the kernel's default tries the absent
    # keyboard controller first, for seconds.
    vm_machine_append="tsc=reliable${khz:+ tsc_early_khz=$khz} reboot=t"
    # A machine given its UART back (isa-serial=on, to measure it) has the
    # console there; the virtio console stays, unused.
    if [[ "$VM_MACHINE" == *isa-serial=on* ]]; then
        vm_machine_args+=(-chardev "file,id=con0,path=$VM_DIR/hvc0.log" -serial "file:$VM_CONSOLE")
        vm_machine_append="console=ttyS0 $vm_machine_append"
    else
        vm_machine_args+=(-chardev "file,id=con0,path=$VM_CONSOLE" -serial none)
        vm_machine_append="console=hvc0 $vm_machine_append"
    fi
}

vm_boot() {
    local machine="${VM_MACHINE:-q35}" console=console=ttyS0 blk_transport=pci
    [[ "$machine" != fast ]] || machine="$VM_FAST_MACHINE"
    vm_machine_args=()
    vm_machine_append=""
    if [[ "${machine%%,*}" == microvm ]]; then
        VM_MACHINE="$machine" vm_fast_args
        console="$vm_machine_append"
        blk_transport=device
    fi
    local append="$console quiet panic=-1 agent.log=$AGENT_LOG $KERNEL_APPEND $*"
    local root=(-initrd "$INITRD") what="initrd $INITRD"
    if [[ -n "$ROOT_IMAGE" ]]; then
        root=(-drive "file=$ROOT_IMAGE,if=none,id=root,format=raw,readonly=on"
            -device "virtio-blk-$blk_transport,drive=root")
        append="root=/dev/vda rootfstype=${ROOT_IMAGE##*.} ro $append"
        what="root image $ROOT_IMAGE"
    fi
    # The serial console: QEMU's stdout, or (VM_SERIAL=socket) a socket a
    # test can type into, $VM_DIR/serial.sock, logged to the same file.
    local serial=(-serial stdio) qemu_out="$VM_CONSOLE"
    if [[ "${VM_SERIAL:-stdio}" == socket ]]; then
        serial=(-chardev "socket,id=ser0,path=$VM_DIR/serial.sock,server=on,wait=off,logfile=$VM_CONSOLE"
            -serial chardev:ser0)
        qemu_out="$VM_DIR/qemu.log"
    fi
    # QMP, for tests that hot-plug devices into the running guest.
    local qmp=()
    if [[ "${VM_QMP:-0}" == 1 ]]; then
        rm -f "$VM_DIR/qmp.sock"
        qmp=(-qmp "unix:$VM_DIR/qmp.sock,server=on,wait=off")
    fi
    if ((${#vm_machine_args[@]} == 0)); then
        vm_machine_args=(-machine "$machine"
            -object "memory-backend-memfd,id=mem,size=${MEM_MB}M,share=on" -numa "node,memdev=mem"
            -chardev "socket,id=vsock0,path=$VM_DIR/vhost.sock" -device "vhost-user-vsock-pci,chardev=vsock0"
            -chardev "socket,id=vfs,path=$VM_DIR/vfs.sock" -device "vhost-user-fs-pci,chardev=vfs,tag=kataShared"
            "${serial[@]}")
    else
        qemu_out="$VM_DIR/qemu.log"
    fi
    vm_log "kernel $KERNEL, $what ($(stat -c %s "${ROOT_IMAGE:-$INITRD}") bytes), machine $machine, append '$append'"
    VM_START_MS="$(vm_now_ms)"
    "$QEMU" -accel "$ACCEL" -cpu max -smp "$SMP" \
        -m "$MEM_MB${VM_MEM_OPTS:+,$VM_MEM_OPTS}" "${qmp[@]}" "${vm_machine_args[@]}" \
        -kernel "$KERNEL" "${root[@]}" -append "$append" \
        -nographic -no-reboot -nodefaults ${VM_QEMU_EXTRA[@]+"${VM_QEMU_EXTRA[@]}"} \
        >"$qemu_out" 2>&1 </dev/null &
    vm_qemu_pid=$!
    vm_pids+=("$vm_qemu_pid")
}

# `vm_qmp_try [--wait EVENT[:KEY=VALUE,...]] COMMAND [JSON]`: one QMP
# command; its answer (and the event) in $VM_QMP_OUT, errors included.
vm_qmp_try() {
    # qmp.py keeps its own deadline; timeout(1) only guards against a hang.
    VM_QMP_OUT="$(timeout --kill-after=5 "$((QMP_TIMEOUT + 5))" \
        "$PYTHON" "$vm_lib_dir/qmp.py" --timeout "$QMP_TIMEOUT" "$VM_DIR/qmp.sock" "$@" 2>&1)"
}

# The same as a step of the test: an error fails it.
vm_qmp() {
    local cmd=("$@")
    [[ "${cmd[0]}" != --wait ]] || cmd=("${cmd[@]:2}")
    vm_step="${VM_PHASE:+$VM_PHASE: }QMP ${cmd[*]}"
    vm_qmp_try "$@" || vm_fail "QMP ${cmd[*]}: $VM_QMP_OUT"
}

# One request; stdout is the JSON answer. Fails (non-zero) on an error status.
vm_ctl() {
    local secs="$1"
    shift
    timeout --kill-after=5 "$((secs + 5))" "$AGENT_CTL" --addr "$VM_ADDR" --timeout "${secs}s" call "$@"
}

# Fails the test when vhost-device-vsock's worker thread has panicked: the
# process lives on and accepts connections, but nothing reaches the guest
# any more. Its 0.3.0 writes the "OK <port>" reply of a host-initiated
# connection with unwrap(): a client that hung up before the guest accepted
# kills it (BrokenPipe), so a Check retried with short deadlines while the
# agent starts to listen can cut the guest's vsock off for good.
vm_backend_check() {
    local log="$VM_DIR/vhost-vsock.log"
    if [[ -f "$log" ]] && grep -q panicked "$log"; then
        vm_fail "vhost-device-vsock panicked, the guest's vsock is cut off: $(grep -m 1 panicked -A 1 "$log" | tr '\n' ' ')"
    fi
}

# Waits for the first Check answered, QEMU's exit or BOOT_TIMEOUT. Each
# client runs 30 s: agent-ctl retries a refused handshake itself, so it
# hangs up on one in flight (which the guest may still answer: see
# vm_backend_check) only when a boot takes 30 s (with 10 s, a q35 boot whose
# agent started listening at 10 s killed the backend), and a handshake the
# backend lost (it happens: one can stay unanswered for good while the
# agent listens) costs 30 s, not the boot.
vm_wait_ready() {
    local pid out="$VM_DIR/check.out" deadline=$(($(date +%s) + BOOT_TIMEOUT))
    while :; do
        "$AGENT_CTL" --addr "$VM_ADDR" --timeout 30s call Check >"$out" 2>&1 </dev/null &
        pid=$!
        vm_pids+=("$pid")
        while vm_alive "$pid"; do
            vm_backend_check
            if ! vm_alive "$vm_qemu_pid"; then
                vm_stop_pid "$pid"
                vm_fail "QEMU exited before the agent answered Check: $(cat "$out")"
            fi
            sleep 0.05
        done
        wait "$pid" && break
        vm_backend_check
        (($(date +%s) < deadline)) || vm_fail "no answer to Check within ${BOOT_TIMEOUT}s: $(cat "$out")"
    done
    local out_text
    out_text="$(cat "$out")"
    VM_BOOT_MS=$(($(vm_now_ms) - VM_START_MS))
    vm_log "Check: $(tr -d '\n ' <<<"$out_text")"
    vm_log "boot to first Check: $((VM_BOOT_MS / 1000)).$(printf '%03d' $((VM_BOOT_MS % 1000))) s"
}

# Waits for QEMU to exit by itself (the guest powered off), up to SECS.
vm_wait_exit() {
    local secs="$1" i
    for ((i = 0; i < secs * 10; i++)); do
        if ! vm_alive "$vm_qemu_pid"; then
            wait "$vm_qemu_pid" 2>/dev/null || true
            return 0
        fi
        sleep 0.1
    done
    vm_fail "the guest did not power off within ${secs}s"
}

vm_stop() {
    vm_stop_pid "$vm_qemu_pid"
}

vm_bg() {
    local out="$1"
    shift
    "$@" >"$out" 2>&1 <"${VM_BG_STDIN:-/dev/null}" &
    VM_BG_PID=$!
    vm_pids+=("$VM_BG_PID")
}

vm_wait_pid() {
    local pid="$1" secs="$2" what="$3" i
    for ((i = 0; i < secs * 10; i++)); do
        if ! vm_alive "$pid"; then
            wait "$pid" 2>/dev/null && return 0
            return 1
        fi
        sleep 0.1
    done
    vm_fail "$what: not done after ${secs}s"
}

# --- containers: the shim's requests ---------------------------------------

# Where the shim's virtio-fs share is mounted in the guest.
VM_SHARED_MP=/run/kata-containers/shared/containers

# A busybox rootfs, made once, copied to where the shim puts a container's:
# <shared dir>/<cid>/rootfs.
vm_make_rootfs() {
    local tpl="$VM_DIR/rootfs-template" applet
    if [[ ! -d "$tpl" ]]; then
        [[ -x "$BUSYBOX" ]] || vm_fail "busybox $BUSYBOX: not found (apt-get install busybox-static)"
        mkdir -p "$tpl"/{bin,etc,proc,sys,dev,tmp,root}
        cp "$BUSYBOX" "$tpl/bin/busybox"
        for applet in $("$BUSYBOX" --list); do
            [[ "$applet" == busybox ]] || ln -s busybox "$tpl/bin/$applet"
        done
        printf 'root:x:0:0:root:/root:/bin/sh\n' >"$tpl/etc/passwd"
        printf 'root:x:0:\n' >"$tpl/etc/group"
    fi
    mkdir -p "$VM_DIR/shared/$1"
    cp -a "$tpl" "$VM_DIR/shared/$1/rootfs"
}

# `vm_call NAME SECS METHOD [JSON]`: one request as step NAME (prefixed
# with $VM_PHASE); its answer in $VM_OUT; fails the test on an error.
vm_call() {
    local name="$1"
    shift
    vm_step="${VM_PHASE:+$VM_PHASE: }$name"
    VM_OUT="$(vm_ctl "$@" 2>&1)" || vm_fail "$name: $VM_OUT"
}

# A string as a JSON string literal.
vm_json_str() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    s="${s//$'\n'/\\n}"
    s="${s//$'\t'/\\t}"
    printf '"%s"' "$s"
}

# The value of a top-level scalar FIELD in agent-ctl's one-line JSON.
vm_field() {
    sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$2"
}

# CreateSandbox with the storage Kata's shim sends for its virtio-fs share
# (runtime-rs share_fs: driver virtio-fs, source kataShared, fstype
# virtiofs, options nodev, mount point the guest's shared directory).
vm_create_sandbox() {
    vm_call CreateSandbox "$CALL_TIMEOUT" CreateSandbox "$(
        cat <<JSON
{"hostname": "vm-test", "sandbox_id": "$1", "sandbox_pidns": false,
 "storages": [{"driver": "virtio-fs", "source": "kataShared", "fstype": "virtiofs",
               "options": ["nodev"], "mount_point": "$VM_SHARED_MP/"}]}
JSON
    )"
}

# A CreateContainerRequest the way the shim writes one: rootfs under the
# shared mount, the usual kernel filesystems, a cgroup mount and namespace.
# Args: CID SCRIPT (run by sh -c) [RESOURCES_JSON [NAMESPACES [EXTRA_MOUNTS_JSON
# [STORAGES_JSON]]]]
# NAMESPACES: space-separated types [mount pid ipc uts cgroup]; STORAGES_JSON:
# the request's storages, comma-separated objects [none].
vm_create_request() {
    local cid="$1" script="$2" resources="${3:-}" nss="${4:-mount pid ipc uts cgroup}" extra="${5:-}"
    local storages="${6:-}"
    local ns namespaces="" storages_field=""
    # Only when given: pod.sh adds its own "storages" to the request.
    [[ -z "$storages" ]] || storages_field="\"storages\": [$storages], "
    [[ -n "$resources" ]] || resources='{}'
    for ns in $nss; do
        namespaces+="${namespaces:+, }{\"Type\": \"$ns\"}"
    done
    cat <<JSON
{"container_id": "$cid", "exec_id": "$cid", $storages_field"OCI": {
  "Process": {"Args": ["sh", "-c", $(vm_json_str "$script")], "Env": ["PATH=/bin"], "Cwd": "/"},
  "Root": {"Path": "$VM_SHARED_MP/$cid/rootfs"},
  "Hostname": "vm-test",
  "Mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}${extra:+, $extra}
  ],
  "Linux": {
    "CgroupsPath": "/vm-test/$cid",
    "Resources": $resources,
    "Namespaces": [$namespaces]
  }
}}
JSON
}

# `vm_read_stdout CID EXEC_ID [PATTERN]`: ReadStdout until the text holds
# PATTERN, or (no PATTERN) until the stream ends: ReadStdout fails at EOF.
# The text is in $VM_TEXT and in the file $VM_DIR/stdout-CID-EXEC_ID.
vm_read_stdout() {
    local cid="$1" eid="$2" pattern="${3:-}" file="$VM_DIR/stdout-$1-$2"
    : >"$file"
    VM_TEXT=""
    while [[ -z "$pattern" || "$VM_TEXT" != *"$pattern"* ]]; do
        vm_step="${VM_PHASE:+$VM_PHASE: }ReadStdout $eid"
        VM_OUT="$(vm_ctl "$CALL_TIMEOUT" ReadStdout \
            "{\"container_id\": \"$cid\", \"exec_id\": \"$eid\", \"len\": 65536}" 2>&1)" || break
        vm_field data "$VM_OUT" | base64 -d >>"$file"
        VM_TEXT="$(cat "$file")"
    done
    if [[ -n "$pattern" && "$VM_TEXT" != *"$pattern"* ]]; then
        vm_fail "ReadStdout $eid: no '$pattern' in: $VM_TEXT ($VM_OUT)"
    fi
}

# `vm_expect_status CODE WHAT`: the WaitProcess answer in $VM_OUT has CODE.
vm_expect_status() {
    local got
    got="$(vm_field status "$VM_OUT")"
    got="${got:-0}"
    [[ "$got" == "$1" ]] || vm_fail "$2: exit status $got, expected $1 ($VM_OUT)"
}

#!/usr/bin/env bash
# The dist tarball booted the way Kata's runtime boots its guest: the QEMU
# command line of a Kata 2.x node, argument for argument, given to
# kata-qemu.sh, which changes only what this machine lacks (KVM, a
# vhost-vsock fd, tap fds, see there). The placeholders of that line are
# filled in: the sandbox's id, uuid and directory, the guest CID, a MAC,
# the kernel and image from the unpacked tarball (links resolved, as the
# runtime passes them) and the image's size.
#
# Three boots, as Kata's configuration.toml can ask for them:
#   image   `image =`: vmlinux + kata-containers.img on an NVDIMM
#           (root=/dev/pmem0p1, rootflags=dax), the recorded line: the
#           container reads the guest's /proc/1/mountinfo (bound in
#           read-only) and sysfs: the root is ext4 from pmem0p1, read-only,
#           with dax=always, the namespace in fsdax mode;
#   initrd  `initrd =`: vmlinux + kata-containers-initrd.img (no NVDIMM, no
#           root= or systemd parameters): the root is the initramfs;
#   blk     `image =` with `disable_image_nvdimm = true`: the image as a
#           read-only virtio-blk disk (root=/dev/vda1), the devices as the
#           runtime writes them for it: the root is ext4 from vda1, read-only.
# Each: Check; CreateSandbox with the virtio-fs share (vhost-user-fs-pci,
# tag kataShared); a busybox container from the share; its output; the
# agent's log lines for it on hvc0 (the console socket of the command line,
# read as the runtime reads it); DestroySandbox; the guest powers off.
#
# Environment: as lib.sh (AGENT_CTL, QEMU, ACCEL, BOOT_TIMEOUT, CALL_TIMEOUT,
# KEEP, VM_TEST_DIR, ...; KERNEL and INITRD come from the tarball), and
#   DIST_TARBALL      the tarball from `make dist`
#                     [build/dist/guest-agent-static-<version>-x86_64.tar.xz]
#   VARIANTS          which boots ["image initrd blk"]
#   POWEROFF_TIMEOUT  seconds from DestroySandbox to QEMU's exit [30]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=tests/vm/lib.sh
source "$here/lib.sh"

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")"
DIST_TARBALL="${DIST_TARBALL:-$repo/build/dist/guest-agent-static-$version-x86_64.tar.xz}"
VARIANTS="${VARIANTS:-image initrd blk}"
POWEROFF_TIMEOUT="${POWEROFF_TIMEOUT:-30}"

if [[ ! -f "$DIST_TARBALL" ]]; then
    vm_log "dist tarball $DIST_TARBALL: not found (make dist)"
    exit 1
fi
for v in $VARIANTS; do
    [[ "$v" == image || "$v" == initrd || "$v" == blk ]] || {
        vm_log "VARIANTS: $v: expected image, initrd or blk"
        exit 1
    }
done

# Unpacked where vm_init's working directory will be, so that its trap
# removes it; until then, this one does.
VM_TEST_DIR="${VM_TEST_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/kata-boot.XXXXXX")}"
trap 'rm -rf "$VM_TEST_DIR"' EXIT
kata="$VM_TEST_DIR/kata"
mkdir -p "$kata"
tar -xJf "$DIST_TARBALL" -C "$kata"
share="$kata/opt/kata/share/kata-containers"
# The paths configuration.toml names, resolved as the runtime passes them.
KERNEL="$(readlink -f "$share/vmlinux.container")"
kata_image="$(readlink -f "$share/kata-containers.img")"
INITRD="$(readlink -f "$share/kata-containers-initrd.img")"
export VM_TEST_DIR KERNEL INITRD

vm_init
command -v socat >/dev/null || vm_fail "socat: not installed (apt-get install socat): it reads the console socket"
vm_step="the tarball's checksums"
(cd "$(dirname "$DIST_TARBALL")" && sha256sum --quiet -c "$(basename "$DIST_TARBALL").sha256") ||
    vm_fail "$DIST_TARBALL does not match its .sha256"
(cd "$kata" && sha256sum --quiet -c opt/kata/share/kata-containers/guest-agent-*.sha256) ||
    vm_fail "the unpacked files do not match guest-agent-*.sha256"
vm_log "kernel $(basename "$KERNEL"), image $(basename "$kata_image") ($(stat -c %s "$kata_image") bytes), initrd $(basename "$INITRD")"

# The kernel command line of the image boot, as the runtime wrote it.
KATA_APPEND="tsc=reliable no_timer_check rcupdate.rcu_expedited=1 i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 noreplace-smp reboot=k console=hvc0 console=hvc1 cryptomgr.notests net.ifnames=0 pci=lastbus=0 root=/dev/pmem0p1 rootflags=dax,data=ordered,errors=remount-ro ro rootfstype=ext4 quiet systemd.show_status=false panic=1 nr_cpus=2 systemd.unit=kata-containers.target systemd.mask=systemd-networkd.service systemd.mask=systemd-networkd.socket scsi_mod.scan=none"

# Kata's QEMU command line for VARIANT, in the array `kata_args`, with its
# placeholders filled; kata-qemu.sh changes the rest. image: the runtime's
# default (the image on an NVDIMM). initrd: what the Go runtime does with
# `initrd =` instead: -initrd; no NVDIMM device and no nvdimm=on; none of
# the parameters it adds only for an image (the root= ones, and the systemd
# ones, as it expects systemd only in an image). blk: the image as the
# runtime attaches it without an NVDIMM (a virtio-blk disk and its -drive,
# no nvdimm=on, its virtio-blk root parameters).
# shellcheck disable=SC2054 # QEMU's properties are comma-separated, in one word
kata_line() {
    local variant="$1" dir="$2" id="$3"
    local cid=3 mac=02:42:ac:11:00:02 uuid=0a5c4e27-2c8b-4b8e-9d7a-6b617461626f
    local image_size machine=q35,accel=kvm,kernel_irqchip=on nvdimm=() initrd=() append="" word
    image_size="$(stat -c %s "$kata_image")"
    case "$variant" in
    image)
        machine+=,nvdimm=on
        nvdimm=(-device nvdimm,id=nv0,memdev=mem0,unarmed=on
            -object "memory-backend-file,id=mem0,mem-path=$kata_image,size=$image_size,readonly=on")
        append="$KATA_APPEND"
        ;;
    initrd)
        initrd=(-initrd "$INITRD")
        for word in $KATA_APPEND; do
            case "$word" in
            root=* | rootflags=* | ro | rootfstype=* | systemd.*) ;;
            *) append+="${append:+ }$word" ;;
            esac
        done
        ;;
    blk)
        nvdimm=(-device "virtio-blk-pci,disable-modern=true,drive=image-$id,scsi=off,config-wce=off,share-rw=on,serial=image-$id"
            -drive "id=image-$id,file=$kata_image,aio=threads,format=raw,if=none,readonly=on")
        append="${KATA_APPEND/root=\/dev\/pmem0p1 rootflags=dax,data=ordered/root=/dev/vda1 rootflags=data=ordered}"
        ;;
    esac
    kata_args=(
        -name "sandbox-$id" -uuid "$uuid" -machine "$machine" -cpu host,pmu=off
        -qmp "unix:$dir/qmp.sock,server=on,wait=off" -m 2048M,slots=10,maxmem=3011M
        -device pci-bridge,bus=pcie.0,id=pci-bridge-0,chassis_nr=1,shpc=on,addr=2
        -device virtio-serial-pci,disable-modern=true,id=serial0 -device virtconsole,chardev=charconsole0,id=console0
        -chardev "socket,id=charconsole0,path=$dir/console.sock,server=on,wait=off"
        "${nvdimm[@]}"
        -device virtio-scsi-pci,id=scsi0,disable-modern=true -object rng-random,id=rng0,filename=/dev/urandom -device virtio-rng-pci,rng=rng0
        -device "vhost-vsock-pci,disable-modern=true,vhostfd=3,id=vsock-$cid,guest-cid=$cid"
        -chardev "socket,id=char-$cid,path=$VM_DIR/vfs.sock" -device "vhost-user-fs-pci,chardev=char-$cid,tag=kataShared"
        -netdev tap,id=network-0,vhost=on,vhostfds=4,fds=5 -device "driver=virtio-net-pci,netdev=network-0,mac=$mac,disable-modern=true,mq=on,vectors=4"
        -rtc base=utc,driftfix=slew,clock=host -global kvm-pit.lost_tick_policy=discard -vga none -no-user-config -nodefaults -nographic --no-reboot -daemonize
        -object memory-backend-file,id=dimm1,size=2048M,mem-path=/dev/shm,share=on -numa node,memdev=dimm1
        -kernel "$KERNEL" "${initrd[@]}"
        -append "$append"
        -pidfile "$dir/pid" -smp 1,cores=1,threads=1,sockets=2,maxcpus=2
    )
}

# What the container prints: the guest's root mount (from the agent's
# mountinfo, bound in), the devices it may be on, and the NVDIMM's mode.
# shellcheck disable=SC2016 # expanded by the container's shell
probe='while read -r id parent majmin root mp opts rest; do
  [ "$mp" = / ] && echo "root-mount: $majmin $opts ${rest#*- }"
done </guest/mountinfo
for d in /sys/class/block/pmem* /sys/class/block/vd*; do [ -e "$d/dev" ] && echo "block: ${d##*/} $(cat "$d/dev")"; done
for n in /sys/bus/nd/devices/namespace*; do [ -e "$n/mode" ] && echo "nd: ${n##*/} $(cat "$n/mode")"; done
for p in /sys/bus/nd/devices/pfn*; do
  [ -e "$p/namespace" ] && echo "pfn: ${p##*/} $(cat "$p/namespace") $(cat "$p/mode") $(cat "$p/align")"
done
[ -e /sys/block/pmem0/queue/dax ] && echo "pmem0-dax: $(cat /sys/block/pmem0/queue/dax)"
echo "kernel: $(uname -r)"
echo probe-done'

# `check_image TEXT`: the root is partition 1 of the NVDIMM, ext4,
# read-only, mapped with DAX from a namespace in fsdax mode.
check_image() {
    local text="$1" line majmin dev
    line="$(grep '^root-mount: ' <<<"$text" | tail -n 1)" || vm_fail "no root mount in: $text"
    read -r _ majmin _ <<<"$line"
    dev="$(sed -n 's/^block: pmem0p1 //p' <<<"$text")"
    [[ -n "$dev" ]] || vm_fail "no /dev/pmem0p1 in the guest: $text"
    [[ "$majmin" == "$dev" ]] || vm_fail "the root is on $majmin, pmem0p1 is $dev: $line"
    # Per-mount options first (ro), then: - ext4 <source> <superblock options>.
    [[ "$line" =~ ^root-mount:\ [0-9:]+\ ro[,\ ].*\ ext4\ [^\ ]+\ ro[,\ ].*dax=always ]] ||
        vm_fail "the root is not ext4 mounted read-only with dax=always: $line"
    # fsdax, in the kernel's words: the namespace's mode is "memory" and a
    # PFN device (from the image's info block) claims it, its page map in
    # RAM, 2 MiB aligned.
    grep -qx 'nd: namespace0.0 memory' <<<"$text" || vm_fail "the NVDIMM's namespace is not in fsdax mode: $text"
    grep -qE '^pfn: pfn0\.[0-9]+ namespace0\.0 ram 2097152$' <<<"$text" ||
        vm_fail "no PFN device claims namespace0.0 (the image's info block): $text"
    grep -qx 'pmem0-dax: 1' <<<"$text" || vm_fail "pmem0 does not support DAX: $text"
    vm_log "image: $line (pmem0p1 $dev; $(grep ' namespace0\.0 ' <<<"$text" | grep '^pfn: ' | cut -d' ' -f2-))"
}

# `check_blk TEXT`: the root is partition 1 of the virtio-blk disk, ext4,
# read-only (MBR #1 of the image, at 3 MiB).
check_blk() {
    local text="$1" line majmin dev
    line="$(grep '^root-mount: ' <<<"$text" | tail -n 1)" || vm_fail "no root mount in: $text"
    read -r _ majmin _ <<<"$line"
    dev="$(sed -n 's/^block: vda1 //p' <<<"$text")"
    [[ -n "$dev" ]] || vm_fail "no /dev/vda1 in the guest: $text"
    [[ "$majmin" == "$dev" ]] || vm_fail "the root is on $majmin, vda1 is $dev: $line"
    [[ "$line" =~ ^root-mount:\ [0-9:]+\ ro[,\ ].*\ ext4\ [^\ ]+\ ro[,\ ] ]] ||
        vm_fail "the root is not ext4 mounted read-only: $line"
    vm_log "blk: $line (vda1 $dev)"
}

check_initrd() {
    local text="$1" line
    line="$(grep '^root-mount: ' <<<"$text" | tail -n 1)" || vm_fail "no root mount in: $text"
    [[ "$line" == *" rootfs "* ]] || vm_fail "the root is not the initramfs: $line"
    vm_log "initrd: $line"
}

run_variant() {
    local variant="$1" dir="$VM_DIR/$1" cid="kata-$1" hvc_log
    VM_PHASE="$variant"
    mkdir -p "$dir"
    hvc_log="$dir/hvc.log"
    vm_step="$variant: boot"
    vm_make_rootfs "$cid"
    mkdir -p "$VM_DIR/shared/$cid/rootfs/guest"
    vm_start_backends
    kata_line "$variant" "$dir" "$variant"
    VM_START_MS="$(vm_now_ms)"
    ACCEL="$ACCEL" QEMU="$QEMU" VSOCK_SOCKET="$VM_DIR/vhost.sock" KATA_QEMU_LOG="$dir/qemu-args" \
        "$here/kata-qemu.sh" "${kata_args[@]}" >"$VM_DIR/qemu.log" 2>&1 </dev/null &
    vm_qemu_pid=$!
    vm_pids+=("$vm_qemu_pid")
    # hvc0, read as the runtime reads it: QEMU serves the console on a
    # socket (server=on,wait=off) and drops what is written while nobody is
    # connected; QEMU makes the socket before the guest runs.
    vm_wait_socket "$dir/console.sock" 30 QEMU "$vm_qemu_pid"
    vm_log "$variant: $(paste -sd ' ' "$dir/qemu-args")"
    vm_bg "$dir/socat.log" socat -u "UNIX-CONNECT:$dir/console.sock" "CREATE:$hvc_log"
    VM_CONSOLE="$hvc_log"
    vm_wait_ready
    local boot_ms="$VM_BOOT_MS"

    vm_create_sandbox "sb-$variant"
    local mountinfo='{"destination": "/guest/mountinfo", "type": "bind", "source": "/proc/1/mountinfo", "options": ["bind", "ro"]}'
    vm_call CreateContainer "$CALL_TIMEOUT" CreateContainer \
        "$(vm_create_request "$cid" "$probe" "" "mount pid ipc uts cgroup" "$mountinfo")"
    vm_call StartContainer "$CALL_TIMEOUT" StartContainer "{\"container_id\": \"$cid\"}"
    vm_read_stdout "$cid" "$cid"
    vm_call "WaitProcess $cid" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\"}"
    vm_expect_status 0 "container $cid"
    [[ "$VM_TEXT" == *probe-done* ]] || vm_fail "container $cid: output ends early: $VM_TEXT"
    "check_$variant" "$VM_TEXT"
    vm_call RemoveContainer "$CALL_TIMEOUT" RemoveContainer "{\"container_id\": \"$cid\"}"

    # The agent's lines for this container on hvc0 (logged after the
    # console was connected, so they must be there).
    vm_step="$variant: the agent's logs on hvc0"
    local want
    for want in "container \\\"$cid\\\" created" "container \\\"$cid\\\" started"; do
        grep -qF "$want" "$hvc_log" || vm_fail "no '$want' line from the agent on hvc0"
    done
    if grep -q '"level":"error"' "$hvc_log"; then
        vm_fail "error lines from the agent on hvc0: $(grep '"level":"error"' "$hvc_log")"
    fi
    vm_log "$variant: hvc0: $(grep -c '"msg"' "$hvc_log") agent log lines$(grep -q 'listening on vsock' "$hvc_log" && echo ", from 'listening on vsock' on")"

    vm_call DestroySandbox "$CALL_TIMEOUT" DestroySandbox '{}'
    vm_wait_exit "$POWEROFF_TIMEOUT"
    vm_stop_all
    vm_log "$variant: PASS ($((boot_ms / 1000)).$(printf '%03d' $((boot_ms % 1000))) s from QEMU's start to the first Check; kernel $(sed -n 's/^kernel: //p' <<<"$VM_TEXT"))"
}

for variant in $VARIANTS; do
    run_variant "$variant"
done
vm_log "PASS: Kata's command line booted $(wc -w <<<"$VARIANTS") way(s): $VARIANTS"

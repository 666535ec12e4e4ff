#!/usr/bin/env bash
# Micro-VM test of hot-plugged devices: each scenario plugs a device into
# the running guest through QEMU's QMP socket, then sends the request the
# Kata shim sends for it, in upstream Kata's wire format, and checks the
# result from inside a container and from the host.
#
# One boot (q35 with NVDIMM support and memory slots; PCIe root ports rp1-rp7
# at pcie.0 slots 05-0b, each an empty hot-plug slot; a virtio-scsi adapter
# scsi0 at slot 04; the kernel with scsi_mod.scan=none as Kata boots it and
# agent.hotplug_timeout=$HOTPLUG_TIMEOUT), then CreateSandbox with the
# virtio-fs share and a long-lived "guest" container in the guest's PID
# namespace (/proc, /sys) through which the test looks at the guest: its
# block devices, the agent's mounts (/proc/1/mountinfo), swaps. Scenarios,
# in SCENARIOS order (a PCI path is "slot/slot", from pcie.0 down, in hex):
#   blk      a raw ext4 image (a file from the host in it) as virtio-blk on
#            rp1 (05/00); CreateContainer right after device_add, with a
#            "blk" storage at 05/00 and /data bound to its mount point: the
#            container reads the host's file and writes one; RemoveContainer
#            unmounts it; device_del (DEVICE_DELETED, the guest lets go of
#            it); the host reads the container's file from the image (debugfs)
#   rootfs   the container's rootfs as an ext4 image (busybox) on rp4
#            (08/00), mounted by a "blk" storage at <shared>/<cid>/rootfs,
#            as the devicemapper snapshotter's rootfs arrives: it runs and
#            prints a file only the image holds
#   scsi     the image as scsi-hd 1:0 on scsi0: a "scsi" storage "1:0";
#            then LUN 2:0, there since boot but unseen (scsi_mod.scan=none):
#            a "scsi" storage "2:0" only the agent's own scan can find
#   nvdimm   the image as an NVDIMM (memory-backend-file, share=on),
#            hot-plugged (ACPI NFIT hot-plug); an "nvdimm" storage
#            /dev/pmem0; without dax: a plain QEMU NVDIMM is a raw namespace,
#            which has no DAX
#   9p       only with WITH_9P=1 (a kernel with 9p; Debian's cloud kernel has
#            none): a host directory (its -fsdev given at boot: QMP cannot
#            add one) as virtio-9p-pci on rp7 (0b/00), tag vm9p, a "9p"
#            storage; the host sees what the container wrote
#   nic      a virtio-net NIC (QEMU user networking) on rp2 (06/00);
#            UpdateInterface with its MAC and devicePath 06/00 names it eth1
#            with 10.0.3.15/24; the answer, ListInterfaces and `ip addr` in a
#            container show it
#   resize   an ext4 image on rp1 again (05/00: the slot "blk" emptied, so a
#            device removed and another added at one PCI path), used by a
#            running container; the host grows the image (truncate, QMP
#            block_resize); ResizeVolume grows the filesystem; GetVolumeStats
#            and df in the container show the new size
#   late     CreateContainer with a "blk" storage at 09/00 (rp5) first, the
#            disk plugged half agent.hotplug_timeout later: the agent's wait
#            sees it come
#   swap     a swap image (mkswap) as virtio-blk on rp6 (0a/00), seen by the
#            guest first (the device is there before the request); AddSwap
#            with PCIPath [10, 0]; /proc/swaps in a container shows it
#   timeout  a "blk" storage at 07/00, where nothing is plugged (rp3 stays
#            empty): CreateContainer fails after agent.hotplug_timeout, the
#            error names 07/00; Check still answers; nothing is left mounted,
#            and the container ID can be used again
# Then DestroySandbox; the guest powers off by itself.
#
# Kernels: Debian's cloud kernel (the default) with the initrd's modules;
# ours (KERNEL=build/kernel/bzImage with the bare initrd, WITH_9P=1) has
# NVDIMM support only when built with the nvdimm fragment: otherwise leave
# nvdimm out of SCENARIOS.
#
# HOTPLUG_ONLY=1 runs only the device side of each scenario: plug, see the
# device in the guest (sysfs, from the "guest" container), unplug; no
# storage request. It needs no agent support beyond containers.
#
# Every step is bounded (QMP_TIMEOUT, CALL_TIMEOUT, DEVICE_TIMEOUT); every
# process started here is ended by PID on exit; on failure the guest console
# is printed. Host tools: mkfs.ext4 and debugfs (e2fsprogs), mkswap
# (util-linux), python3 (qmp.py).
# Environment: as lib.sh (KERNEL, INITRD, AGENT_CTL, KERNEL_APPEND,
# QMP_TIMEOUT, ...), and
#   SCENARIOS        which scenarios, in order [blk rootfs scsi nvdimm 9p nic
#                    resize late swap timeout]
#   WITH_9P          1: the kernel has 9p, run the 9p scenario [0]
#   HOTPLUG_ONLY     1: only plug, look and unplug (see above) [0]
#   HOTPLUG_TIMEOUT  agent.hotplug_timeout, seconds [2]
#   DEVICE_TIMEOUT   seconds the test waits for the guest to see (or drop) a
#                    device [30]
#   NVDIMM_COLD      1: the NVDIMM is given at boot instead of hot-plugged [0]
#   POWEROFF_TIMEOUT seconds from DestroySandbox to QEMU's exit [30]
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SCENARIOS="${SCENARIOS:-blk rootfs scsi nvdimm 9p nic resize late swap timeout}"
WITH_9P="${WITH_9P:-0}"
HOTPLUG_ONLY="${HOTPLUG_ONLY:-0}"
HOTPLUG_TIMEOUT="${HOTPLUG_TIMEOUT:-2}"
DEVICE_TIMEOUT="${DEVICE_TIMEOUT:-30}"
NVDIMM_COLD="${NVDIMM_COLD:-0}"
POWEROFF_TIMEOUT="${POWEROFF_TIMEOUT:-30}"

for tool in mkfs.ext4 debugfs mkswap truncate "${PYTHON:-python3}"; do
    command -v "$tool" >/dev/null || {
        vm_log "$tool: not installed (apt-get install e2fsprogs util-linux python3)"
        exit 1
    }
done

vm_init

SANDBOX_STORAGE=/run/kata-containers/sandbox/storage
NIC_MAC=52:54:00:6b:61:06
NIC_IP=10.0.3.15
NVDIMM_MB=128

# --- helpers ------------------------------------------------------------

# `elapsed START_MS`: seconds since START_MS, with milliseconds.
elapsed() {
    local ms=$(($(vm_now_ms) - $1))
    printf '%d.%03d' $((ms / 1000)) $((ms % 1000))
}

# `json_get JSON KEY`: a top-level string of agent-ctl's JSON answer.
json_get() {
    "$PYTHON" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$@"
}

# `volume_bytes JSON`: the total bytes in a GetVolumeStats answer (the
# usage entry in BYTES; 64-bit numbers are JSON strings).
volume_bytes() {
    "$PYTHON" -c '
import json, sys
for u in json.loads(sys.argv[1]).get("usage", []):
    if u.get("unit", "BYTES") == "BYTES":
        print(int(u["total"]))
        break
else:
    sys.exit(1)' "$1"
}

# `make_ext4 IMG SIZE DIR`: an ext4 image holding DIR's tree, made without
# root or a loop mount.
make_ext4() {
    mkfs.ext4 -q -F -E root_owner=0:0 -d "$3" "$1" "$2" >/dev/null 2>&1 ||
        vm_fail "mkfs.ext4 $1: $(mkfs.ext4 -q -F -d "$3" "$1" "$2" 2>&1)"
}

# `host_cat IMG PATH`: a file of an ext4 image, read without mounting it.
host_cat() {
    debugfs -R "cat $2" "$1" 2>/dev/null
}

# `blk_plug ID IMG BUS`: the raw image IMG as a virtio-blk disk ID (its
# block node ID-node) in root port BUS.
blk_plug() {
    vm_qmp blockdev-add "{\"driver\": \"raw\", \"node-name\": \"$1-node\",
        \"file\": {\"driver\": \"file\", \"filename\": \"$2\"}}"
    vm_qmp device_add "{\"driver\": \"virtio-blk-pci\", \"id\": \"$1\", \"drive\": \"$1-node\", \"bus\": \"$3\"}"
}

# `dev_unplug ID [NODE]`: device_del, then the DEVICE_DELETED event, which
# QEMU sends once the guest has let go of the device (for PCIe: after the
# guest's hot-plug driver powered the slot off); then the block node.
dev_unplug() {
    local t0
    t0="$(vm_now_ms)"
    QMP_TIMEOUT="$DEVICE_TIMEOUT" vm_qmp --wait "DEVICE_DELETED:device=$1" device_del "{\"id\": \"$1\"}"
    vm_log "$VM_PHASE: $1 unplugged in $(elapsed "$t0") s"
    [[ -z "${2:-}" ]] || vm_qmp blockdev-del "{\"node-name\": \"$2\"}"
}

# `pci_sysfs PATH`: the guest's sysfs glob of the device at Kata PCI path
# PATH ("05/00": slot 5 of pcie.0, then slot 0 of the bus behind it).
pci_sysfs() {
    local slot slots dir="/sys/devices/pci0000:00" bus="0000:00"
    IFS=/ read -ra slots <<<"$1"
    for slot in "${slots[@]}"; do
        dir+="/$bus:$slot.0"
        bus="0000:*"
    done
    echo "$dir"
}

# The "guest" container: in the guest's PID namespace (its /proc shows the
# agent as PID 1), with the guest's sysfs; the test runs shell snippets in
# it (guest_sh) to see what the guest kernel and the agent did.
GUEST_EXECS=0
start_guest_container() {
    vm_make_rootfs guest
    vm_call "CreateContainer guest" "$CALL_TIMEOUT" CreateContainer \
        "$(vm_create_request guest 'echo ready; exec sleep 100000' '{}' "mount ipc uts")"
    vm_call "StartContainer guest" "$CALL_TIMEOUT" StartContainer '{"container_id": "guest"}'
    vm_read_stdout guest guest ready
}

# `guest_sh WHAT SCRIPT`: SCRIPT in the "guest" container; its output in
# $VM_TEXT; fails the test (naming WHAT) unless it exits 0.
guest_sh() {
    local eid="g$((GUEST_EXECS += 1))"
    vm_call "$1" "$CALL_TIMEOUT" ExecProcess "$(
        printf '{"container_id": "guest", "exec_id": "%s", "process": {"Args": ["sh", "-c", %s], "Env": ["PATH=/bin"], "Cwd": "/"}}' \
            "$eid" "$(vm_json_str "$2")"
    )"
    vm_call "$1: WaitProcess" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"guest\", \"exec_id\": \"$eid\"}"
    local status
    status="$(vm_field status "$VM_OUT")"
    vm_read_stdout guest "$eid"
    [[ "${status:-0}" == 0 ]] || vm_fail "$1: exit status $status: $VM_TEXT"
}

# `guest_wait WHAT CONDITION [REPORT]`: polls the shell CONDITION in the
# guest every 0.1 s until it holds, for up to DEVICE_TIMEOUT seconds; then
# runs REPORT (its output in $VM_TEXT).
guest_wait() {
    guest_sh "$1" "n=0
until $2; do
  n=\$((n + 1)); [ \$n -le $((DEVICE_TIMEOUT * 10)) ] || { echo 'not within ${DEVICE_TIMEOUT}s'; exit 1; }
  sleep 0.1
done
${3:-true}"
}

# `guest_block PCI_PATH`: waits until the guest has a block device for the
# virtio device at PCI_PATH; its sysfs path in $VM_TEXT.
guest_block() {
    local glob
    glob="$(pci_sysfs "$1")/virtio*/block/*"
    # shellcheck disable=SC2016 # expanded by the guest's shell
    guest_wait "guest sees a disk at $1" "[ -e $glob ]" "readlink -f $glob"
}

# `guest_no_block PCI_PATH`: waits until it is gone.
guest_no_block() {
    guest_wait "guest drops the disk at $1" "! [ -e $(pci_sysfs "$1") ]"
}

# `agent_mounts_has PATH`: exit 0 when the agent's mount table has PATH.
agent_mounts() {
    guest_sh "the agent's mounts" "cat /proc/1/mountinfo"
    AGENT_MOUNTS="$VM_TEXT"
}

# `storage_json DRIVER SOURCE FSTYPE OPTIONS MOUNT_POINT`: a Storage as the
# shim writes one.
storage_json() {
    printf '{"driver": "%s", "source": "%s", "fstype": "%s", "options": %s, "mount_point": "%s"}' "$@"
}

# `bind_data MOUNT_POINT`: the OCI mount that shows a storage at /data.
bind_data() {
    printf '{"destination": "/data", "type": "bind", "source": "%s", "options": ["rbind", "rw"]}' "$1"
}

# `one_shot CID SCRIPT STORAGES MOUNTS [ROOTFS]`: a container that runs
# SCRIPT to the end (exit 0), its output in $VM_TEXT, then RemoveContainer.
# Its rootfs: a busybox tree the host puts in the share, or (ROOTFS=storage)
# what a storage mounts at the same place.
one_shot() {
    local cid="$1"
    [[ "${5:-share}" == storage ]] || vm_make_rootfs "$cid"
    vm_call "CreateContainer $cid" "$CALL_TIMEOUT" CreateContainer \
        "$(vm_create_request "$cid" "$2" '{}' "mount pid ipc uts" "$4" "$3")"
    vm_call "StartContainer $cid" "$CALL_TIMEOUT" StartContainer "{\"container_id\": \"$cid\"}"
    vm_call "WaitProcess $cid" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\"}"
    local status
    status="$(vm_field status "$VM_OUT")"
    vm_read_stdout "$cid" "$cid"
    [[ "${status:-0}" == 0 ]] || vm_fail "container $cid: exit status $status: $VM_TEXT"
    vm_call "RemoveContainer $cid" "$CALL_TIMEOUT" RemoveContainer "{\"container_id\": \"$cid\"}"
}

# `data_image NAME SIZE`: $VM_DIR/NAME.img, ext4, holding /hello.txt.
data_image() {
    local dir="$VM_DIR/$1.tree"
    mkdir -p "$dir"
    echo "written by the host into $1" >"$dir/hello.txt"
    make_ext4 "$VM_DIR/$1.img" "$2" "$dir"
}

# The container side of blk, scsi, nvdimm and 9p: read the host's file,
# write one, both through /data.
DATA_SCRIPT='cat /data/hello.txt
echo "written by the container" >/data/from-guest.txt
sync
echo wrote'

# `data_check WHAT`: what DATA_SCRIPT printed.
data_check() {
    [[ "$VM_TEXT" == *"written by the host into $1"*wrote* ]] ||
        vm_fail "$1: the container did not read the host's file: $VM_TEXT"
}

# `unmounted_check MOUNT_POINT [BLOCK]`: the agent no longer has it
# mounted; with BLOCK (the guest's sysfs glob of the disk's block device),
# also waits until the guest lets go of the disk's ext4 filesystem (its
# /sys/fs/ext4/<disk> goes with the last mount, which may be the removed
# container's namespace for a moment): only then has the guest written all
# of it back, journal included, for the host to read or the disk to go.
unmounted_check() {
    agent_mounts
    if grep -qF " $1 " <<<"$AGENT_MOUNTS"; then
        vm_fail "$VM_PHASE: $1 still mounted in the guest after RemoveContainer: $(grep -F " $1 " <<<"$AGENT_MOUNTS")"
    fi
    [[ -n "${2:-}" ]] || return 0
    local disk t0
    guest_sh "the disk of $1" "ls -d $2"
    disk="${VM_TEXT##*/}"
    t0="$(vm_now_ms)"
    guest_wait "the guest lets go of the filesystem on $disk" "[ ! -e /sys/fs/ext4/$disk ]"
    vm_log "$VM_PHASE: the filesystem on $disk released $(elapsed "$t0") s after the check began"
}

# --- scenarios ------------------------------------------------------------

scenario_blk() {
    local img="$VM_DIR/blk.img" mp="$SANDBOX_STORAGE/blk-data" t0
    data_image blk 64M
    blk_plug blk1 "$img" rp1
    if [[ "$HOTPLUG_ONLY" == 1 ]]; then
        guest_block 05/00
        vm_log "blk: the guest sees $VM_TEXT"
        [[ "$VM_TEXT" == /sys/devices/pci0000:00/0000:00:05.0/0000:*:00.0/virtio*/block/vd* ]] ||
            vm_fail "blk: the disk at 05/00 is not a vd* behind 00:05.0: $VM_TEXT"
    else
        # Right after device_add: the agent waits for the disk itself.
        t0="$(vm_now_ms)"
        one_shot blk "$DATA_SCRIPT" "$(storage_json blk 05/00 ext4 '[]' "$mp")" "$(bind_data "$mp")"
        vm_log "blk: the container (created $(elapsed "$t0") s after the plug) says: $(tr '\n' ';' <<<"$VM_TEXT")"
        data_check blk
        unmounted_check "$mp" "$(pci_sysfs 05/00)/virtio*/block/*"
    fi
    dev_unplug blk1 blk1-node
    guest_no_block 05/00
    if [[ "$HOTPLUG_ONLY" != 1 ]]; then
        [[ "$(host_cat "$img" /from-guest.txt)" == "written by the container" ]] ||
            vm_fail "blk: the image lacks the container's file: $(host_cat "$img" /from-guest.txt)"
        vm_log "blk: the host reads back the container's file from $img"
    fi
}

scenario_rootfs() {
    local cid=blkroot img="$VM_DIR/rootfs.img" tree="$VM_DIR/blkroot.tree"
    rm -rf "$tree"
    cp -a "$VM_DIR/rootfs-template" "$tree"
    echo "a rootfs on a hot-plugged disk" >"$tree/etc/marker"
    make_ext4 "$img" 64M "$tree"
    blk_plug blk4 "$img" rp4
    if [[ "$HOTPLUG_ONLY" == 1 ]]; then
        guest_block 08/00
    else
        local mp="$VM_SHARED_MP/$cid/rootfs"
        # The root's filesystem type and source: the fields after the "-".
        # shellcheck disable=SC2016 # expanded by the container's shell
        one_shot "$cid" 'cat /etc/marker
awk '\''$5 == "/" { for (i = 7; $i != "-"; i++) ; print "root is", $(i + 1), $(i + 2) }'\'' /proc/self/mountinfo' \
            "$(storage_json blk 08/00 ext4 '[]' "$mp")" "" storage
        vm_log "rootfs: the container says: $(tr '\n' ';' <<<"$VM_TEXT")"
        [[ "$VM_TEXT" == *"a rootfs on a hot-plugged disk"* ]] ||
            vm_fail "rootfs: the container did not run from the disk: $VM_TEXT"
        [[ "$VM_TEXT" == *"root is ext4 /dev/vd"* ]] || vm_fail "rootfs: / is not the ext4 disk: $VM_TEXT"
        unmounted_check "$mp" "$(pci_sysfs 08/00)/virtio*/block/*"
    fi
    dev_unplug blk4 blk4-node
}

scenario_scsi() {
    local img="$VM_DIR/scsi.img" mp="$SANDBOX_STORAGE/scsi-data"
    # First, before anything asks for a scan: LUN 2:0, there since boot, is
    # unseen. Kata boots with scsi_mod.scan=none so that the guest attaches
    # only the LUNs the shim names; with a modular scsi_mod, that holds only
    # if PID 1 loads it with the command line's scsi_mod.* parameters, as
    # modprobe does.
    guest_sh "scsi_mod.scan in the guest" 'cat /sys/module/scsi_mod/parameters/scan'
    [[ "$VM_TEXT" == none ]] ||
        vm_fail "scsi: scsi_mod.scan is '$VM_TEXT' in the guest, not 'none' as the kernel command line says (scsi_mod loaded without its parameters from the command line?)"
    # shellcheck disable=SC2016 # expanded by the guest's shell
    guest_sh "guest has no SCSI 2:0" 'for d in /sys/bus/scsi/devices/*:0:2:0; do [ ! -e $d ] || { echo "$d"; exit 1; }; done'

    data_image scsi 64M
    vm_qmp blockdev-add "{\"driver\": \"raw\", \"node-name\": \"sd1-node\",
        \"file\": {\"driver\": \"file\", \"filename\": \"$img\"}}"
    vm_qmp device_add '{"driver": "scsi-hd", "id": "sd1", "bus": "scsi0.0", "scsi-id": 1, "lun": 0, "drive": "sd1-node"}'
    if [[ "$HOTPLUG_ONLY" == 1 ]]; then
        # Even with scsi_mod.scan=none, virtio-scsi's hot-plug event makes
        # the kernel add the LUN the host announces.
        # shellcheck disable=SC2016 # expanded by the guest's shell
        guest_wait "guest sees SCSI 1:0" '[ -e /sys/bus/scsi/devices/*:0:1:0/block ]' \
            'ls /sys/bus/scsi/devices/*:0:1:0/block'
        vm_log "scsi: the guest sees $VM_TEXT"
    else
        one_shot scsi "$DATA_SCRIPT" "$(storage_json scsi 1:0 ext4 '[]' "$mp")" "$(bind_data "$mp")"
        vm_log "scsi: the container says: $(tr '\n' ';' <<<"$VM_TEXT")"
        data_check scsi
        unmounted_check "$mp" "/sys/bus/scsi/devices/*:0:1:0/block/*"
    fi
    dev_unplug sd1 sd1-node
    if [[ "$HOTPLUG_ONLY" != 1 ]]; then
        [[ "$(host_cat "$img" /from-guest.txt)" == "written by the container" ]] ||
            vm_fail "scsi: the image lacks the container's file"
        vm_log "scsi: the host reads back the container's file from $img"
    fi

    # LUN 2:0, unseen so far: only the agent's own scan of the adapters
    # finds it.
    img="$VM_DIR/scsi-boot.img" mp="$SANDBOX_STORAGE/scsi-boot-data"
    [[ "$HOTPLUG_ONLY" != 1 ]] || return 0
    one_shot scsi-boot "$DATA_SCRIPT" "$(storage_json scsi 2:0 ext4 '[]' "$mp")" "$(bind_data "$mp")"
    vm_log "scsi: LUN 2:0 (cold-plugged): the container says: $(tr '\n' ';' <<<"$VM_TEXT")"
    data_check scsi-boot
    unmounted_check "$mp" "/sys/bus/scsi/devices/*:0:2:0/block/*"
    # Still attached: unmounted, the guest flushed its writes to QEMU.
    [[ "$(host_cat "$img" /from-guest.txt)" == "written by the container" ]] ||
        vm_fail "scsi: the image of LUN 2:0 lacks the container's file"
}

scenario_nvdimm() {
    local img="$VM_DIR/nvdimm.img" mp="$SANDBOX_STORAGE/pmem-data"
    if [[ "$NVDIMM_COLD" != 1 ]]; then
        data_image nvdimm "${NVDIMM_MB}M"
        vm_qmp object-add "{\"qom-type\": \"memory-backend-file\", \"id\": \"nv1-mem\",
            \"mem-path\": \"$img\", \"size\": $((NVDIMM_MB << 20)), \"share\": true}"
        vm_qmp device_add '{"driver": "nvdimm", "id": "nv1", "memdev": "nv1-mem"}'
    fi
    if [[ "$HOTPLUG_ONLY" == 1 ]]; then
        guest_wait "guest sees /dev/pmem0" "[ -e /sys/block/pmem0 ]" \
            "readlink -f /sys/block/pmem0; echo dax=\$(cat /sys/block/pmem0/queue/dax)"
        vm_log "nvdimm: the guest sees $(tr '\n' ' ' <<<"$VM_TEXT")"
        return
    fi
    one_shot pmem "$DATA_SCRIPT" "$(storage_json nvdimm /dev/pmem0 ext4 '[]' "$mp")" "$(bind_data "$mp")"
    vm_log "nvdimm: the container says: $(tr '\n' ';' <<<"$VM_TEXT")"
    data_check nvdimm
    unmounted_check "$mp" /sys/block/pmem0
    # QEMU cannot unplug an NVDIMM; the file is mapped shared, so the host
    # reads what the guest wrote through it.
    [[ "$(host_cat "$img" /from-guest.txt)" == "written by the container" ]] ||
        vm_fail "nvdimm: the image lacks the container's file"
    vm_log "nvdimm: the host reads back the container's file from $img"
}

scenario_9p() {
    local dir="$VM_DIR/9p" mp="$SANDBOX_STORAGE/9p-data"
    echo "written by the host into 9p" >"$dir/hello.txt"
    vm_qmp device_add '{"driver": "virtio-9p-pci", "id": "ninep", "fsdev": "fs9p", "mount_tag": "vm9p", "bus": "rp7"}'
    if [[ "$HOTPLUG_ONLY" == 1 ]]; then
        guest_wait "guest sees 9p tag vm9p" "grep -qx vm9p $(pci_sysfs 0b/00)/virtio*/mount_tag"
        return
    fi
    one_shot ninep "$DATA_SCRIPT" \
        "$(storage_json 9p vm9p 9p '["trans=virtio", "version=9p2000.L"]' "$mp")" "$(bind_data "$mp")"
    vm_log "9p: the container says: $(tr '\n' ';' <<<"$VM_TEXT")"
    data_check 9p
    unmounted_check "$mp"
    [[ "$(cat "$dir/from-guest.txt" 2>&1)" == "written by the container" ]] ||
        vm_fail "9p: the host's directory lacks the container's file"
    vm_log "9p: the host reads the container's file in $dir"
}

scenario_nic() {
    vm_qmp netdev_add '{"type": "user", "id": "nic1-net", "net": "10.0.3.0/24"}'
    vm_qmp device_add "{\"driver\": \"virtio-net-pci\", \"id\": \"nic1\", \"netdev\": \"nic1-net\", \"bus\": \"rp2\", \"mac\": \"$NIC_MAC\"}"
    if [[ "$HOTPLUG_ONLY" == 1 ]]; then
        guest_wait "guest sees a NIC at 06/00" "[ -e $(pci_sysfs 06/00)/virtio*/net ]" \
            "cat $(pci_sysfs 06/00)/virtio*/net/*/address"
        [[ "$VM_TEXT" == *"$NIC_MAC"* ]] || vm_fail "nic: the NIC at 06/00 has not MAC $NIC_MAC: $VM_TEXT"
        return
    fi
    # Right after device_add: the agent waits for the NIC at devicePath.
    vm_call UpdateInterface "$CALL_TIMEOUT" UpdateInterface "$(
        cat <<JSON
{"interface": {"name": "eth1", "hwAddr": "$NIC_MAC", "devicePath": "06/00", "mtu": 1500,
  "IPAddresses": [{"family": 0, "address": "$NIC_IP", "mask": "24"}]}}
JSON
    )"
    vm_log "nic: UpdateInterface: $VM_OUT"
    [[ "$(json_get "$VM_OUT" name)" == eth1 ]] || vm_fail "UpdateInterface: not named eth1: $VM_OUT"
    [[ "$VM_OUT" == *"\"$NIC_IP\""* && "$VM_OUT" == *"$NIC_MAC"* ]] ||
        vm_fail "UpdateInterface: the answer lacks $NIC_IP or $NIC_MAC: $VM_OUT"
    vm_call ListInterfaces "$CALL_TIMEOUT" ListInterfaces '{}'
    "$PYTHON" -c '
import json, sys
ifs = json.loads(sys.argv[1]).get("Interfaces", [])
ok = any(i.get("name") == "eth1" and i.get("hwAddr") == sys.argv[2]
         and any(a.get("address") == sys.argv[3] for a in i.get("IPAddresses", [])) for i in ifs)
sys.exit(0 if ok else 1)' "$VM_OUT" "$NIC_MAC" "$NIC_IP" ||
        vm_fail "ListInterfaces: no eth1 with $NIC_MAC and $NIC_IP: $VM_OUT"
    # A container in the guest's network namespace sees it too.
    guest_sh "ip addr in a container" "ip -o addr show dev eth1; cat /sys/class/net/eth1/address"
    vm_log "nic: in the container: $(tr '\n' ';' <<<"$VM_TEXT")"
    [[ "$VM_TEXT" == *"inet $NIC_IP/24"*"$NIC_MAC"* ]] || vm_fail "nic: eth1 in the container: $VM_TEXT"
}

scenario_resize() {
    local cid=resize img="$VM_DIR/resize.img" mp="$SANDBOX_STORAGE/resize-data" grown=$((256 << 20))
    data_image resize 64M
    blk_plug blk5 "$img" rp1
    if [[ "$HOTPLUG_ONLY" == 1 ]]; then
        guest_block 05/00
        vm_qmp block_resize "{\"node-name\": \"blk5-node\", \"size\": $grown}"
        guest_wait "guest sees the disk grow" \
            "[ \$(cat $(pci_sysfs 05/00)/virtio*/block/*/size) -eq $((grown / 512)) ]"
        dev_unplug blk5 blk5-node
        return
    fi
    vm_make_rootfs "$cid"
    vm_call "CreateContainer $cid" "$CALL_TIMEOUT" CreateContainer "$(
        vm_create_request "$cid" 'echo ready; exec sleep 100000' '{}' "mount pid ipc uts" \
            "$(bind_data "$mp")" "$(storage_json blk 05/00 ext4 '[]' "$mp")"
    )"
    vm_call "StartContainer $cid" "$CALL_TIMEOUT" StartContainer "{\"container_id\": \"$cid\"}"
    vm_read_stdout "$cid" "$cid" ready
    local before after df_kb
    vm_call GetVolumeStats "$CALL_TIMEOUT" GetVolumeStats "{\"volume_guest_path\": \"$mp\"}"
    before="$(volume_bytes "$VM_OUT")" || vm_fail "GetVolumeStats: no total bytes: $VM_OUT"

    # The host grows the volume (as a CSI driver's expansion does), QEMU
    # tells the guest the disk's new size, the agent grows the filesystem.
    truncate -s "$grown" "$img"
    vm_qmp block_resize "{\"node-name\": \"blk5-node\", \"size\": $grown}"
    vm_call ResizeVolume "$CALL_TIMEOUT" ResizeVolume "{\"volume_guest_path\": \"$mp\", \"size\": $grown}"
    vm_call GetVolumeStats "$CALL_TIMEOUT" GetVolumeStats "{\"volume_guest_path\": \"$mp\"}"
    after="$(volume_bytes "$VM_OUT")" || vm_fail "GetVolumeStats: no total bytes: $VM_OUT"
    vm_log "resize: GetVolumeStats total $before -> $after bytes (disk 64 MiB -> $((grown >> 20)) MiB)"
    # ext4 keeps some of the disk for itself: 80 % of it is plenty.
    ((after > grown * 8 / 10 && before < (64 << 20))) ||
        vm_fail "resize: the filesystem did not grow to about $grown bytes: $before -> $after"

    vm_call "ExecProcess df" "$CALL_TIMEOUT" ExecProcess "$(
        printf '{"container_id": "%s", "exec_id": "df", "process": {"Args": ["df", "-k", "/data"], "Env": ["PATH=/bin"], "Cwd": "/"}}' "$cid"
    )"
    vm_call "WaitProcess df" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"df\"}"
    vm_expect_status 0 "df in the container"
    vm_read_stdout "$cid" df
    df_kb="$(awk 'NR == 2 { print $2 }' <<<"$VM_TEXT")"
    vm_log "resize: df in the container: ${df_kb:-?} KiB"
    ((${df_kb:-0} * 1024 > grown * 8 / 10)) || vm_fail "resize: df in the container: $VM_TEXT"

    vm_call "SignalProcess $cid" "$CALL_TIMEOUT" SignalProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\", \"signal\": 9}"
    vm_call "WaitProcess $cid" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\"}"
    vm_call "RemoveContainer $cid" "$CALL_TIMEOUT" RemoveContainer "{\"container_id\": \"$cid\"}"
    unmounted_check "$mp" "$(pci_sysfs 05/00)/virtio*/block/*"
    dev_unplug blk5 blk5-node
}

scenario_late() {
    local cid=late img="$VM_DIR/late.img" mp="$SANDBOX_STORAGE/late-data" out="$VM_DIR/late.json" pid
    data_image late 64M
    if [[ "$HOTPLUG_ONLY" == 1 ]]; then
        return
    fi
    vm_make_rootfs "$cid"
    vm_bg "$out" timeout --kill-after=5 "$((CALL_TIMEOUT + 5))" "$AGENT_CTL" --addr "$VM_ADDR" \
        --timeout "${CALL_TIMEOUT}s" call CreateContainer "$(vm_create_request "$cid" "$DATA_SCRIPT" '{}' \
        "mount pid ipc uts" "$(bind_data "$mp")" "$(storage_json blk 09/00 ext4 '[]' "$mp")")"
    pid="$VM_BG_PID"
    # Half the agent's hot-plug timeout: the request is (almost surely)
    # waiting by then; it must succeed whether it is or not.
    sleep "$(awk -v t="$HOTPLUG_TIMEOUT" 'BEGIN { print t / 2 }')"
    blk_plug blk7 "$img" rp5
    vm_step="late: CreateContainer"
    vm_wait_pid "$pid" "$((CALL_TIMEOUT + 10))" "CreateContainer $cid" ||
        vm_fail "late: CreateContainer with a disk plugged $((HOTPLUG_TIMEOUT * 500)) ms later: $(cat "$out")"
    vm_call "StartContainer $cid" "$CALL_TIMEOUT" StartContainer "{\"container_id\": \"$cid\"}"
    vm_call "WaitProcess $cid" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\"}"
    vm_expect_status 0 "container $cid"
    vm_read_stdout "$cid" "$cid"
    vm_log "late: the container says: $(tr '\n' ';' <<<"$VM_TEXT")"
    data_check late
    vm_call "RemoveContainer $cid" "$CALL_TIMEOUT" RemoveContainer "{\"container_id\": \"$cid\"}"
    unmounted_check "$mp" "$(pci_sysfs 09/00)/virtio*/block/*"
    dev_unplug blk7 blk7-node
}

scenario_swap() {
    local img="$VM_DIR/swap.img" dev kb
    truncate -s 32M "$img"
    mkswap -q "$img" >/dev/null
    blk_plug blk6 "$img" rp6
    # The disk is in the guest before the request: the agent must find a
    # device that is already there, not only wait for new ones.
    guest_block 0a/00
    dev="$(basename "$VM_TEXT")"
    if [[ "$HOTPLUG_ONLY" == 1 ]]; then
        dev_unplug blk6 blk6-node
        return
    fi
    vm_call AddSwap "$CALL_TIMEOUT" AddSwap '{"PCIPath": [10, 0]}'
    one_shot swaps 'cat /proc/swaps' "" ""
    vm_log "swap: /proc/swaps in a container: $(tr '\n' ';' <<<"$VM_TEXT")"
    kb="$(awk -v d="/dev/$dev" '$1 == d { print $3 }' <<<"$VM_TEXT")"
    [[ -n "$kb" ]] || vm_fail "swap: /dev/$dev (at 0a/00) not in /proc/swaps: $VM_TEXT"
    ((kb > 30000)) || vm_fail "swap: /dev/$dev is only $kb KiB: $VM_TEXT"
    # An active swap disk stays: the guest powers off with it.
}

scenario_timeout() {
    local mp="$SANDBOX_STORAGE/never" t0 took
    if [[ "$HOTPLUG_ONLY" == 1 ]]; then
        return
    fi
    vm_make_rootfs never
    t0="$(vm_now_ms)"
    vm_step="timeout: CreateContainer"
    if VM_OUT="$(vm_ctl "$CALL_TIMEOUT" CreateContainer "$(vm_create_request never 'true' '{}' "mount pid ipc uts" \
        "$(bind_data "$mp")" "$(storage_json blk 07/00 ext4 '[]' "$mp")")" 2>&1)"; then
        vm_fail "CreateContainer with a disk at 07/00 that is not there succeeded: $VM_OUT"
    fi
    took="$(elapsed "$t0")"
    vm_log "timeout: CreateContainer failed after $took s: $VM_OUT"
    [[ "$VM_OUT" == *07/00* ]] || vm_fail "timeout: the error does not name 07/00: $VM_OUT"
    # Failing before the hot-plug timeout would mean it did not wait.
    ((${took%.*} >= HOTPLUG_TIMEOUT - 1)) || vm_fail "timeout: failed after $took s, before agent.hotplug_timeout=$HOTPLUG_TIMEOUT"
    vm_call "Check after the timeout" "$CALL_TIMEOUT" Check
    # The refused container left nothing: not its mount point, not its
    # name (the same ID is free again).
    unmounted_check "$mp"
    one_shot never 'echo created again' "" "" storage
    [[ "$VM_TEXT" == *"created again"* ]] || vm_fail "timeout: the container ID after the failure: $VM_TEXT"
}

# --- the boot -------------------------------------------------------------

run_scenarios=()
for s in $SCENARIOS; do
    case "$s" in
    9p)
        if [[ "$WITH_9P" != 1 ]]; then
            vm_log "9p: skipped (WITH_9P=1 with a kernel that has 9p; Debian's cloud kernel has none)"
            continue
        fi
        ;;
    blk | rootfs | scsi | nvdimm | nic | resize | late | swap | timeout) ;;
    *) vm_fail "SCENARIOS: unknown scenario '$s'" ;;
    esac
    run_scenarios+=("$s")
done

VM_QMP=1
# NVDIMMs need nvdimm=on and memory slots above the boot memory.
VM_MACHINE=q35,nvdimm=on
VM_MEM_OPTS=slots=2,maxmem=2G
VM_QEMU_EXTRA=(-device "virtio-scsi-pci,id=scsi0,bus=pcie.0,addr=0x4")
for i in 1 2 3 4 5 6 7; do
    VM_QEMU_EXTRA+=(-device "pcie-root-port,id=rp$i,bus=pcie.0,chassis=$i,addr=$(printf '0x%x' $((i + 4)))")
done
if [[ "$WITH_9P" == 1 ]]; then
    mkdir -p "$VM_DIR/9p"
    VM_QEMU_EXTRA+=(-fsdev "local,id=fs9p,path=$VM_DIR/9p,security_model=none")
fi
if [[ " ${run_scenarios[*]} " == *" scsi "* ]]; then
    data_image scsi-boot 64M
    VM_QEMU_EXTRA+=(-blockdev "driver=raw,node-name=sd2-node,file.driver=file,file.filename=$VM_DIR/scsi-boot.img"
        -device "scsi-hd,id=sd2,bus=scsi0.0,scsi-id=2,lun=0,drive=sd2-node")
fi
if [[ "$NVDIMM_COLD" == 1 ]]; then
    data_image nvdimm "${NVDIMM_MB}M"
    VM_QEMU_EXTRA+=(-object "memory-backend-file,id=nv1-mem,mem-path=$VM_DIR/nvdimm.img,size=${NVDIMM_MB}M,share=on"
        -device "nvdimm,id=nv1,memdev=nv1-mem")
fi

VM_PHASE=boot
vm_step=boot
vm_start_backends
vm_boot scsi_mod.scan=none "agent.hotplug_timeout=$HOTPLUG_TIMEOUT" "$@"
vm_wait_ready
VM_PHASE=sandbox
vm_create_sandbox devices
start_guest_container

for s in "${run_scenarios[@]}"; do
    VM_PHASE="$s"
    t0="$(vm_now_ms)"
    "scenario_$s"
    vm_log "$s: passed in $(elapsed "$t0") s"
done

VM_PHASE=end
vm_call "SignalProcess guest" "$CALL_TIMEOUT" SignalProcess '{"container_id": "guest", "exec_id": "guest", "signal": 9}'
vm_call "WaitProcess guest" "$CALL_TIMEOUT" WaitProcess '{"container_id": "guest", "exec_id": "guest"}'
vm_call "RemoveContainer guest" "$CALL_TIMEOUT" RemoveContainer '{"container_id": "guest"}'
vm_call DestroySandbox "$CALL_TIMEOUT" DestroySandbox '{}'
vm_step="power off"
vm_wait_exit "$POWEROFF_TIMEOUT"
vm_stop_all
what="${run_scenarios[*]}"
[[ "$HOTPLUG_ONLY" != 1 ]] || what="hot-plug only: $what"
vm_log "PASS ($what)"

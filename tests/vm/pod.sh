#!/usr/bin/env bash
# The scenario users start from, an nginx-like pod on Kata, in the micro-VM
# on cgroup v2, replaying what Kata's Go runtime sends for it:
#   CreateSandbox with the virtio-fs share and the pod's /dev/shm (an
#   ephemeral tmpfs storage); the pod network on a virtio-net NIC (QEMU user
#   networking, the guest's port 80 forwarded to 127.0.0.1:$POD_PORT):
#   UpdateInterface with the NIC's MAC and the pod's address, UpdateRoutes
#   with the connected and the default route, AddARPNeighbors for the
#   gateway; the pause container, an init container and a web server
#   (busybox httpd), all with the kubelet's systemd-form cgroups path in the
#   pod's slice, each create followed by OnlineCPUMem and
#   UpdateEphemeralMounts; a ConfigMap (watchable-bind) and a memory
#   emptyDir the init container fills and the web server serves, the
#   ConfigMap's update (the kubelet's ..data swap) seen by the running
#   container; exec probes (stdout
#   and stderr to EOF, then WaitProcess); a `kubectl exec` without
#   capabilities (it gets the container's); the host fetching the page,
#   which holds the container's `uname -r` (the guest's kernel, not the
#   host's); the stop (SIGTERM, WaitProcess, RemoveContainer) and
#   DestroySandbox, after which the guest powers off.
# With POD_SHIM=runtime-rs, runtime-rs's shapes instead: rootfs and volumes
# under the share's passthrough/ directory (the ConfigMap at
# passthrough/watchable/), /dev/shm as a storage of every container, no
# OnlineCPUMem or UpdateEphemeralMounts after a create, and no
# DestroySandbox: the VM is stopped once the containers are removed.
#
# Arguments are extra guest kernel parameters.
# Environment: as lib.sh (KERNEL, INITRD, AGENT_CTL, KERNEL_APPEND, ...), and
#   POD_SHIM      whose message shapes: go or runtime-rs [go]
#   POD_CGROUPS   guest kernel parameters for the cgroup layout [cgroup_no_v1=all]
#   POD_PORT      host port forwarded to the guest's port 80 [a free one]
#   FETCH_TIMEOUT seconds to wait for the page [60]
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FETCH_TIMEOUT="${FETCH_TIMEOUT:-60}"
POD_CGROUPS="${POD_CGROUPS-cgroup_no_v1=all}"
POD_SHIM="${POD_SHIM:-go}"
case "$POD_SHIM" in
go) PASS="" ;;
runtime-rs) PASS=passthrough/ ;;
*)
    echo "pod.sh: POD_SHIM=$POD_SHIM: expected go or runtime-rs" >&2
    exit 2
    ;;
esac
POD_SLICE=kubepods-besteffort-pod0c1d2e3f.slice
# QEMU user networking: the guest is 10.0.2.15/24, the gateway 10.0.2.2
# with this MAC.
POD_IP=10.0.2.15
GATEWAY=10.0.2.2
GATEWAY_MAC=52:55:0a:00:02:02
NIC_MAC=52:54:00:6b:61:01

# A port nobody listens on now (bash's /dev/tcp fails to connect).
free_port() {
    local p
    for p in $(shuf -i 20000-60000 -n 50); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# GET / from 127.0.0.1:$1; the body on stdout (no curl or wget needed).
http_get() {
    local reply
    # shellcheck disable=SC2016 # $1 is the inner shell's argument
    reply="$(timeout 10 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "GET / HTTP/1.0\r\nHost: pod\r\n\r\n" >&3
        cat <&3' _ "$1" 2>/dev/null)" || return 1
    [[ "$reply" == "HTTP/1."*" 200 "* ]] || return 1
    sed '1,/^\r\{0,1\}$/d' <<<"$reply"
}

vm_init
POD_PORT="${POD_PORT:-$(free_port)}" || vm_fail "no free host port"
VM_QEMU_EXTRA=(-netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$POD_PORT-:80"
    -device "virtio-net-pci,netdev=net0,mac=$NIC_MAC")
vm_step="rootfs"
for cid in pause web-init web; do
    vm_make_rootfs "$cid"
    if [[ -n "$PASS" ]]; then
        mkdir -p "$VM_DIR/shared/$PASS"
        mv "$VM_DIR/shared/$cid" "$VM_DIR/shared/$PASS$cid"
    fi
done
# The ConfigMap as the kubelet writes it, in the shared directory where the
# shim puts a container's volumes: files are links through ..data.
CONFIG_DIR="${PASS}sandbox-3a4b5c6d-config"
write_configmap() {
    local dir="$VM_DIR/shared/$CONFIG_DIR" ts="..$1"
    mkdir -p "$dir/$ts"
    printf '%s\n' "$2" >"$dir/$ts/greeting"
    ln -sfn "$ts" "$dir/..data.tmp"
    mv -T "$dir/..data.tmp" "$dir/..data"
    [[ -L "$dir/greeting" ]] || ln -s ..data/greeting "$dir/greeting"
}
write_configmap 2026_12_01_00_00_00.1 "hello from a ConfigMap"
vm_start_backends
# shellcheck disable=SC2086 # POD_CGROUPS is a list of parameters
vm_boot $POD_CGROUPS "$@"
vm_wait_ready
VM_PHASE=pod

SHM_STORAGE='{"driver": "ephemeral", "source": "shm", "fstype": "tmpfs",
   "options": ["noexec", "nosuid", "nodev", "mode=1777", "size=67108864"],
   "mount_point": "/run/kata-containers/sandbox/shm"}'
# The Go runtime sends /dev/shm with the sandbox, runtime-rs with each
# container.
sandbox_shm=""
[[ "$POD_SHIM" != go ]] || sandbox_shm=", $SHM_STORAGE"
vm_call CreateSandbox "$CALL_TIMEOUT" CreateSandbox "$(
    cat <<JSON
{"hostname": "web-pod", "sandbox_id": "pod-sandbox", "sandbox_pidns": false,
 "dns": ["nameserver 10.0.2.3", "search default.svc.cluster.local svc.cluster.local", "options ndots:5"],
 "storages": [
  {"driver": "virtio-fs", "source": "kataShared", "fstype": "virtiofs", "options": ["nodev"],
   "mount_point": "$VM_SHARED_MP/"}$sandbox_shm]}
JSON
)"
vm_call UpdateInterface "$CALL_TIMEOUT" UpdateInterface "$(
    cat <<JSON
{"interface": {"device": "eth0", "name": "eth0", "mtu": 1500, "hwAddr": "$NIC_MAC",
  "IPAddresses": [{"family": "v4", "address": "$POD_IP", "mask": "24"}]}}
JSON
)"
[[ "$VM_OUT" == *"\"$POD_IP\""* ]] || vm_fail "UpdateInterface: the answer lacks $POD_IP: $VM_OUT"
vm_call UpdateRoutes "$CALL_TIMEOUT" UpdateRoutes "$(
    cat <<JSON
{"routes": {"Routes": [
  {"dest": "10.0.2.0/24", "device": "eth0", "source": "$POD_IP", "scope": 253, "family": "v4"},
  {"dest": "", "gateway": "$GATEWAY", "device": "eth0", "family": "v4"}]}}
JSON
)"
vm_call AddARPNeighbors "$CALL_TIMEOUT" AddARPNeighbors "$(
    cat <<JSON
{"neighbors": {"ARPNeighbors": [{"toIPAddress": {"family": "v4", "address": "$GATEWAY"},
  "device": "eth0", "lladdr": "$GATEWAY_MAC", "state": 128}]}}
JSON
)"
vm_call ListRoutes "$CALL_TIMEOUT" ListRoutes '{}'
[[ "$VM_OUT" == *"\"$GATEWAY\""* ]] || vm_fail "ListRoutes: no default route via $GATEWAY: $VM_OUT"

# A container request as the Go runtime sends it for this pod: the
# kubelet's systemd cgroups path, the pod's /dev/shm bound in; VOLUMES adds
# the pod's volumes (the www emptyDir, the ConfigMap) with their storages.
WWW_MP=/run/kata-containers/sandbox/ephemeral/www
WATCH_MP="$VM_SHARED_MP/${PASS}watchable/${CONFIG_DIR#"$PASS"}"
pod_request() {
    local cid="$1" script="$2" volumes="${3:-}" mounts req
    mounts='{"destination": "/dev/shm", "type": "bind", "source": "/run/kata-containers/sandbox/shm", "options": ["rbind"]}'
    if [[ -n "$volumes" ]]; then
        mounts+=", {\"destination\": \"/www\", \"type\": \"bind\", \"source\": \"$WWW_MP\", \"options\": [\"rbind\"]}"
        mounts+=", {\"destination\": \"/etc/web\", \"type\": \"bind\", \"source\": \"$WATCH_MP\", \"options\": [\"rbind\", \"ro\"]}"
    fi
    req="$(vm_create_request "$cid" "$script" '{}' "mount pid ipc uts" "$mounts")"
    local storages=()
    [[ "$POD_SHIM" == go ]] || storages+=("$SHM_STORAGE")
    if [[ -n "$volumes" ]]; then
        storages+=("{\"driver\": \"ephemeral\", \"source\": \"tmpfs\", \"fstype\": \"tmpfs\", \"options\": [], \"mount_point\": \"$WWW_MP\"}")
        storages+=("{\"driver\": \"watchable-bind\", \"source\": \"$VM_SHARED_MP/$CONFIG_DIR\", \"fstype\": \"bind\", \"options\": [\"bind\"], \"mount_point\": \"$WATCH_MP\"}")
    fi
    if ((${#storages[@]})); then
        local joined
        joined="$(printf '%s, ' "${storages[@]}")"
        req="${req/\"container_id\":/\"storages\": [${joined%, }], \"container_id\":}"
    fi
    if [[ -n "$PASS" ]]; then
        local old="\"Path\": \"$VM_SHARED_MP/$cid/rootfs\"" new="\"Path\": \"$VM_SHARED_MP/$PASS$cid/rootfs\""
        req="${req/"$old"/"$new"}"
        [[ "$req" == *"$PASS$cid/rootfs"* ]] || vm_fail "could not set the rootfs path of $cid"
    fi
    req="${req/\"CgroupsPath\": \"\/vm-test\/$cid\"/\"CgroupsPath\": \"$POD_SLICE:cri-containerd:$cid\"}"
    [[ "$req" == *"$POD_SLICE:cri-containerd:$cid"* ]] || vm_fail "could not set the cgroups path of $cid"
    printf '%s' "$req"
}

# What follows every create: CPUs and memory online, the pod's memory
# emptyDirs resized (none after the pause container).
after_create() {
    # runtime-rs sends neither after a create.
    [[ "$POD_SHIM" == go ]] || return 0
    local resize='{"storages": []}'
    if [[ "$1" != pause ]]; then
        resize="{\"storages\": [{\"driver\": \"ephemeral\", \"source\": \"tmpfs\", \"fstype\": \"tmpfs\", \"options\": [\"remount\", \"size=64M\"], \"mount_point\": \"$WWW_MP\"}]}"
    fi
    vm_call "OnlineCPUMem after $1" "$CALL_TIMEOUT" OnlineCPUMem '{"wait": false, "nb_cpus": 0}'
    vm_call "UpdateEphemeralMounts after $1" "$CALL_TIMEOUT" UpdateEphemeralMounts "$resize"
}

# The pod: its pause container, then the web server. Neither has a network
# namespace of its own: the pod's is the VM's, as with Kata.
vm_call "CreateContainer pause" "$CALL_TIMEOUT" CreateContainer "$(pod_request pause 'exec sleep 100000')"
after_create pause
vm_call "StartContainer pause" "$CALL_TIMEOUT" StartContainer '{"container_id": "pause"}'
# The init container fills the emptyDir from the ConfigMap, then is gone.
vm_call "CreateContainer web-init" "$CALL_TIMEOUT" CreateContainer \
    "$(pod_request web-init '{ echo "pod page"; uname -r; cat /etc/web/greeting; } >/www/index.html' volumes)"
after_create web-init
vm_call "StartContainer web-init" "$CALL_TIMEOUT" StartContainer '{"container_id": "web-init"}'
vm_call "WaitProcess web-init" "$CALL_TIMEOUT" WaitProcess '{"container_id": "web-init", "exec_id": "web-init"}'
vm_expect_status 0 "init container"
vm_call "RemoveContainer web-init" "$CALL_TIMEOUT" RemoveContainer '{"container_id": "web-init"}'
web_script='echo serving && exec httpd -f -p 80 -h /www'
# containerd's default capabilities, as the shim passes them on: port 80
# needs CAP_NET_BIND_SERVICE.
caps='"Capabilities": {"Bounding": CAPS, "Effective": CAPS, "Permitted": CAPS}'
caps="${caps//CAPS/[\"CAP_CHOWN\", \"CAP_DAC_OVERRIDE\", \"CAP_FSETID\", \"CAP_FOWNER\", \"CAP_MKNOD\", \"CAP_NET_RAW\", \"CAP_SETGID\", \"CAP_SETUID\", \"CAP_SETFCAP\", \"CAP_SETPCAP\", \"CAP_NET_BIND_SERVICE\", \"CAP_SYS_CHROOT\", \"CAP_KILL\", \"CAP_AUDIT_WRITE\"]}"
web_request="$(pod_request web "$web_script" volumes)"
web_request="${web_request/\"Cwd\": \"\/\"\}/\"Cwd\": \"\/\", $caps\}}"
[[ "$web_request" == *CAP_NET_BIND_SERVICE* ]] || vm_fail "could not add capabilities to the request"
vm_call "CreateContainer web" "$CALL_TIMEOUT" CreateContainer "$web_request"
after_create web
vm_call "StartContainer web" "$CALL_TIMEOUT" StartContainer '{"container_id": "web"}'
vm_read_stdout web web serving

# Reads a stream of an exec to its end (ReadStdout/ReadStderr fail there);
# the text in $VM_TEXT.
read_to_eof() {
    local method="$1" eid="$2" file="$VM_DIR/$1-$2"
    : >"$file"
    while VM_OUT="$(vm_ctl "$CALL_TIMEOUT" "$method" "{\"container_id\": \"web\", \"exec_id\": \"$eid\", \"len\": 32768}" 2>&1)"; do
        vm_field data "$VM_OUT" | base64 -d >>"$file"
    done
    [[ "$VM_OUT" == *OUT_OF_RANGE* ]] || vm_fail "$method $eid: $VM_OUT"
    VM_TEXT="$(cat "$file")"
}

# An exec as the Go runtime runs one: no capabilities of its own, stdout
# and stderr to EOF, then WaitProcess.
go_exec() {
    local eid="$1" script="$2"
    vm_call "ExecProcess $eid" "$CALL_TIMEOUT" ExecProcess "$(
        printf '{"container_id": "web", "exec_id": "%s", "process": {"Args": ["sh", "-c", %s], "Env": ["PATH=/bin"], "Cwd": "/"}}' \
            "$eid" "$(vm_json_str "$script")"
    )"
    read_to_eof ReadStderr "$eid"
    [[ -z "$VM_TEXT" ]] || vm_fail "exec $eid wrote to stderr: $VM_TEXT"
    read_to_eof ReadStdout "$eid"
    local out="$VM_TEXT"
    vm_call "WaitProcess $eid" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"web\", \"exec_id\": \"$eid\"}"
    vm_expect_status 0 "exec $eid"
    VM_TEXT="$out"
}

# Readiness probes; the second reuses nothing of the first.
for i in 1 2; do
    go_exec "probe-$i" 'head -n 1 /www/index.html'
    [[ "$VM_TEXT" == "pod page" ]] || vm_fail "probe $i: $VM_TEXT"
done
# The kubelet updates the ConfigMap (a new ..data): the running container
# sees it, the agent polling the share (virtio-fs carries no inotify).
write_configmap 2026_12_01_00_05_00.2 "updated greeting"
deadline=$(($(date +%s) + 20))
for ((i = 3; ; i++)); do
    go_exec "probe-$i" 'cat /etc/web/greeting'
    [[ "$VM_TEXT" != "updated greeting" ]] || break
    (($(date +%s) < deadline)) || vm_fail "the ConfigMap update did not reach the container: $VM_TEXT"
    sleep 0.5
done
vm_log "ConfigMap update seen by the container after $((i - 2)) probes"
# kubectl exec: the container's capabilities, its cgroup (the pod's slice,
# cgroup v2), and a background child that must not hold the stream open.
go_exec kubectl-exec 'grep CapEff /proc/self/status; cat /proc/self/cgroup; sleep 600 &'
vm_log "kubectl exec: $(tr '\n' ' ' <<<"$VM_TEXT")"
# containerd's default set: CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,
# SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD,
# AUDIT_WRITE, SETFCAP.
[[ "$VM_TEXT" == *"CapEff:"*"00000000a80425fb"* ]] || vm_fail "kubectl exec capabilities: $VM_TEXT"
[[ "$VM_TEXT" == *"/kubepods.slice/kubepods-besteffort.slice/$POD_SLICE/cri-containerd-web.scope"* ]] ||
    vm_fail "kubectl exec cgroup: $VM_TEXT"

vm_step="$VM_PHASE: GET http://127.0.0.1:$POD_PORT/"
deadline=$(($(date +%s) + FETCH_TIMEOUT))
until page="$(http_get "$POD_PORT")"; do
    if (($(date +%s) >= deadline)); then
        vm_ctl 5 ReadStderr '{"container_id": "web", "exec_id": "web", "len": 4096}' >&2 || true
        vm_fail "no page from 127.0.0.1:$POD_PORT within ${FETCH_TIMEOUT}s"
    fi
    sleep 0.5
done
vm_log "the pod's page: $(tr '\n' ' ' <<<"$page")"
[[ "$(head -n 1 <<<"$page")" == "pod page" ]] || vm_fail "unexpected page: $page"
[[ "$(sed -n 3p <<<"$page")" == "hello from a ConfigMap" ]] || vm_fail "the page lacks the ConfigMap's greeting: $page"
guest_release="$(sed -n 2p <<<"$page")"
kernel_release="$(cat "$(dirname "$KERNEL")/release" 2>/dev/null || true)"
if [[ -n "$kernel_release" ]]; then
    [[ "$guest_release" == "$kernel_release" ]] ||
        vm_fail "uname -r in the container is '$guest_release', the guest kernel is $kernel_release"
else
    # Without the guest's release to compare with (a kernel of our own),
    # at least not the host's.
    [[ "$guest_release" != "$(uname -r)" ]] || vm_fail "uname -r in the container is the host's ($guest_release)"
fi

# The kubelet's stop: SIGTERM to each init, then WaitProcess and removal.
for cid in web pause; do
    vm_call "SignalProcess $cid" "$CALL_TIMEOUT" SignalProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\", \"signal\": 15}"
    vm_call "WaitProcess $cid" "$CALL_TIMEOUT" WaitProcess "{\"container_id\": \"$cid\", \"exec_id\": \"$cid\"}"
    vm_call "RemoveContainer $cid" "$CALL_TIMEOUT" RemoveContainer "{\"container_id\": \"$cid\", \"timeout\": 10}"
done
if [[ "$POD_SHIM" == go ]]; then
    vm_call DestroySandbox "$CALL_TIMEOUT" DestroySandbox '{}'
    vm_step="$VM_PHASE: power off"
    vm_wait_exit 30
else
    # runtime-rs ends the VM without DestroySandbox.
    vm_stop
fi
vm_log "pod ($POD_SHIM): passed (page served from the guest's kernel $guest_release)"

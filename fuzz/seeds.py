#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/):
well-formed inputs of each kind, hand-encoded as protobuf and ttrpc
frames, from which libFuzzer mutates. Rerun after changing the formats:
    python3 fuzz/seeds.py
"""
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(n):
    if n < 0:
        n += 1 << 64
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def f_int(num, v):
    return varint(num << 3) + varint(v) if v else b""


def f_bytes(num, v):
    if isinstance(v, str):
        v = v.encode()
    return varint(num << 3 | 2) + varint(len(v)) + v


def f_strs(num, vs):
    return b"".join(f_bytes(num, v) for v in vs)


def msg(*fields):
    return b"".join(fields)


# oci.proto
def oci_process(args, env=("PATH=/bin",), cwd="/", uid=0):
    user = msg(f_int(1, uid), f_int(2, uid), f_strs(3, []))
    caps = msg(f_strs(1, ["CAP_CHOWN", "CAP_KILL"]), f_strs(2, ["CAP_KILL"]))
    rlimit = msg(f_bytes(1, "RLIMIT_NOFILE"), f_int(2, 1024), f_int(3, 1024))
    return msg(f_bytes(3, user), f_strs(4, args), f_strs(5, env), f_bytes(6, cwd),
               f_bytes(7, caps), f_bytes(8, rlimit), f_int(9, 1), f_int(11, 100))


def oci_spec(cid="c1", rootfs="/run/kata-containers/shared/containers/c1/rootfs"):
    mount = msg(f_bytes(1, "/proc"), f_bytes(2, "proc"), f_bytes(3, "proc"),
                f_strs(4, ["nosuid", "noexec"]))
    tmp = msg(f_bytes(1, "/tmp"), f_bytes(2, "tmpfs"), f_bytes(3, "tmpfs"),
              f_strs(4, ["size=64m", "mode=1777"]))
    hook = msg(f_bytes(1, "/bin/true"), f_strs(2, ["true", "prestart"]), f_int(4, 5))
    hooks = msg(f_bytes(1, hook), f_bytes(6, hook))
    ns = b"".join(f_bytes(6, msg(f_bytes(1, t))) for t in ["mount", "pid", "ipc", "uts", "network"])
    memory = msg(f_int(1, 256 << 20), f_int(6, 10))
    cpu = msg(f_int(1, 1024), f_int(2, 50000), f_int(3, 100000))
    pids = msg(f_int(1, 100))
    resources = msg(f_bytes(2, memory), f_bytes(3, cpu), f_bytes(4, pids))
    sysctl = f_bytes(3, msg(f_bytes(1, "net.ipv4.ip_forward"), f_bytes(2, "1")))
    linux = msg(sysctl, f_bytes(4, resources), f_bytes(5, f"/kubepods/{cid}"), ns,
                f_strs(10, ["/proc/kcore"]), f_strs(11, ["/proc/sys"]))
    annotation = f_bytes(7, msg(f_bytes(1, "io.kubernetes.cri.container-type"), f_bytes(2, "sandbox")))
    return msg(f_bytes(1, "1.0.2"), f_bytes(2, oci_process(["sh", "-c", "echo hi"])),
               f_bytes(3, msg(f_bytes(1, rootfs))), f_bytes(4, "box"), f_bytes(5, mount),
               f_bytes(5, tmp), f_bytes(6, hooks), annotation, f_bytes(8, linux))


# agent.proto
def storage(driver, source, fstype, options, mount_point, driver_options=()):
    return msg(f_bytes(1, driver), f_strs(2, driver_options), f_bytes(3, source),
               f_bytes(4, fstype), f_strs(5, options), f_bytes(6, mount_point))


STORAGES = [
    storage("ephemeral", "tmpfs", "tmpfs", ["size=1m", "nosuid", "nodev", "mode=1777"],
            "/run/kata-containers/sandbox/ephemeral/vol"),
    storage("local", "local", "local", ["mode=0777", "fsgid=1000"],
            "/run/kata-containers/sandbox/local/vol"),
    storage("bind", "/run/kata-containers/sandbox", "bind", ["rbind", "ro", "rprivate"],
            "/run/kata-containers/c1/bind"),
    storage("overlayfs", "overlay", "overlay",
            ["lowerdir=/run/kata-containers/l", "upperdir=/run/kata-containers/u",
             "workdir=/run/kata-containers/w"], "/run/kata-containers/c1/rootfs"),
    storage("virtio-fs", "kataShared", "virtiofs", ["nodev"],
            "/run/kata-containers/shared/containers"),
    storage("blk", "0000:00:02.0", "ext4", ["ro"], "/run/kata-containers/sandbox/blk",
            ["encryption_key=ephemeral"]),
    storage("watchable-bind", "/run/kata-containers/sandbox", "bind", ["bind"],
            "/run/kata-containers/c1/watched"),
    storage("9p", "kataShared", "9p", ["trans=virtio", "version=9p2000.L"],
            "/run/kata-containers/shared/9p"),
]


def copy_file(path, data, mode=0o100644, offset=0, size=None):
    return msg(f_bytes(1, path), f_int(2, len(data) if size is None else size), f_int(3, mode),
               f_int(4, 0o755), f_int(5, 0), f_int(6, 0), f_int(7, offset), f_bytes(8, data))


SHARED = "/run/kata-containers/shared/containers"
COPIES = [
    copy_file(f"{SHARED}/c1/hosts", b"127.0.0.1 localhost\n"),
    copy_file(f"{SHARED}/c1/dir", b"", mode=0o040755),
    copy_file(f"{SHARED}/c1/link", b"../hosts", mode=0o120777),
    copy_file(f"{SHARED}/c1/big", b"chunk", offset=5, size=10),
    copy_file(f"{SHARED}/link/x", b"through a planted link"),
    copy_file(f"{SHARED}/../../../etc/x", b"dot-dot"),
]

# Wire order of the agent's methods (rpc/mod.rs), then grpc.Health's.
METHODS = """CreateContainer StartContainer RemoveContainer ExecProcess SignalProcess
WaitProcess UpdateContainer UpdateEphemeralMounts StatsContainer PauseContainer
ResumeContainer RemoveStaleVirtiofsShareMounts GetDiagnosticData WriteStdin ReadStdout
ReadStderr CloseStdin TtyWinResize UpdateInterface UpdateRoutes ListInterfaces ListRoutes
AddARPNeighbors GetIPTables SetIPTables GetMetrics MemAgentMemcgSet MemAgentCompactSet
CreateSandbox DestroySandbox OnlineCPUMem ReseedRandomDev GetGuestDetails
MemHotplugByProbe SetGuestDateTime CopyFile GetOOMEvent AddSwap AddSwapPath
GetVolumeStats ResizeVolume SetPolicy Check Version""".split()


def record(method, payload):
    return bytes([METHODS.index(method)]) + struct.pack("<H", len(payload)) + payload


def create_sandbox(storages=(), hook_path=""):
    return msg(f_bytes(1, "pod"), f_strs(2, ["nameserver 10.0.0.1", "search svc.local"]),
               b"".join(f_bytes(3, s) for s in storages), f_int(4, 1), f_bytes(5, "sb1"),
               f_bytes(6, hook_path))


def create_container(cid="c1", storages=()):
    return msg(f_bytes(1, cid), f_bytes(2, cid), b"".join(f_bytes(5, s) for s in storages),
               f_bytes(6, oci_spec(cid)))


def interface():
    ip = msg(f_int(1, 0), f_bytes(2, "10.0.0.2"), f_bytes(3, "24"))
    return msg(f_bytes(1, "eth0"), f_bytes(2, "eth0"), f_bytes(3, ip), f_int(4, 1500),
               f_bytes(5, "02:00:00:00:00:01"))


def route():
    return msg(f_bytes(1, "0.0.0.0/0"), f_bytes(2, "10.0.0.1"), f_bytes(3, "eth0"))


REQUESTS = [record(m, b"") for m in METHODS] + [
    record("CreateSandbox", create_sandbox(STORAGES[:2], "/usr/share/oci/hooks")),
    record("CreateSandbox", create_sandbox()) + record("CreateContainer", create_container())
    + record("StartContainer", f_bytes(1, "c1"))
    + record("ExecProcess", msg(f_bytes(1, "c1"), f_bytes(2, "e1"), f_bytes(4, oci_process(["ls"]))))
    + record("WaitProcess", msg(f_bytes(1, "c1"), f_bytes(2, "e1")))
    + record("RemoveContainer", msg(f_bytes(1, "c1"), f_int(2, 1)))
    + record("DestroySandbox", b""),
    record("CopyFile", COPIES[0]) + record("GetVolumeStats", f_bytes(1, f"{SHARED}/c1")),
    record("UpdateInterface", f_bytes(1, interface())),
    record("UpdateRoutes", f_bytes(1, f_bytes(1, route()))),
    record("AddARPNeighbors", f_bytes(1, f_bytes(1, msg(f_bytes(1, msg(f_bytes(2, "10.0.0.9"))),
                                                        f_bytes(2, "eth0"),
                                                        f_bytes(3, "02:00:00:00:00:09"))))),
    record("UpdateEphemeralMounts", f_bytes(1, STORAGES[0])),
    record("ResizeVolume", msg(f_bytes(1, "/run/kata-containers/sandbox/blk"), f_int(2, 1 << 30))),
    record("AddSwapPath", f_bytes(1, "/run/kata-containers/swap")),
    record("OnlineCPUMem", msg(f_int(1, 1), f_int(2, 2), f_int(3, 1))),
    record("SetGuestDateTime", msg(f_int(1, 1700000000), f_int(2, 5))),
    record("ReseedRandomDev", f_bytes(1, b"\x01" * 32)),
    record("MemHotplugByProbe", f_bytes(1, varint(0x100000000))),
    record("WriteStdin", msg(f_bytes(1, "c1"), f_bytes(2, "c1"), f_bytes(3, b"input\n"))),
    record("ReadStdout", msg(f_bytes(1, "c1"), f_bytes(2, "c1"), f_int(3, 1024))),
    record("TtyWinResize", msg(f_bytes(1, "c1"), f_bytes(2, "c1"), f_int(3, 24), f_int(4, 80))),
    record("SignalProcess", msg(f_bytes(1, "c1"), f_int(3, 15))),
    record("UpdateContainer", msg(f_bytes(1, "c1"), f_bytes(2, msg(f_bytes(4, f_int(1, 10)))))),
    record("SetIPTables", msg(f_int(1, 0), f_bytes(2, "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"))),
]


def ttrpc_request(service, method, payload, stream=1, timeout=0):
    body = msg(f_bytes(1, service), f_bytes(2, method), f_bytes(3, payload), f_int(4, timeout))
    return struct.pack(">IIBB", len(body), stream, 1, 0) + body


FRAMES = [
    ttrpc_request("grpc.Health", "Check", b""),
    ttrpc_request("grpc.Health", "Version", f_bytes(1, "1")),
    ttrpc_request("grpc.AgentService", "GetGuestDetails", msg(f_int(1, 1), f_int(2, 1)), 3),
    ttrpc_request("grpc.AgentService", "CreateSandbox", create_sandbox(STORAGES[:1]), 5),
    ttrpc_request("grpc.AgentService", "CopyFile", COPIES[0], 7, 10**9),
    ttrpc_request("grpc.AgentService", "ListInterfaces", b"", 9)
    + ttrpc_request("grpc.Health", "Check", b"", 11),
    ttrpc_request("grpc.AgentService", "NoSuchMethod", b"", 13),
    struct.pack(">IIBB", 0, 15, 1, 0),
    struct.pack(">IIBB", 5 << 20, 17, 1, 0) + b"x" * 64,
    struct.pack(">IIBB", 4, 19, 3, 1) + b"\x00\x00\x00\x00",
]

CONFIG = [
    b"\x00agent.log=debug agent.server_addr=vsock://-1:1024 agent.hotplug_timeout=10 "
    b"agent.container_pipe_size=1048576 agent.devmode agent.debug_console "
    b"agent.debug_console_vport=1026 agent.log_vport=1025 agent.trace=true "
    b"agent.config_file=/etc/agent.toml systemd.unified_cgroup_hierarchy=1 quiet",
    b"\x01# agent\nserver_addr = \"unix:///run/agent.sock\"\nlog_level = \"info\"\n"
    b"dev_mode = false\nhotplug_timeout = 3\ncontainer_pipe_size = 0\ndebug_console = true\n",
    b"\x02--server-addr\x00unix:///run/a.sock\x00--log-level=debug\x00--config\x00/etc/a.toml",
    b"\x03vsock://3:1024",
    b"\x03unix:///run/kata-agent.sock",
    b"\x04# modules\n6.1.0/kernel/drivers/block/virtio_blk.ko\n6.1.0/kernel/fs/fuse/virtiofs.ko\n"
    b"5.10.0/old.ko\n6.1.0",
    b"\x05console=ttyS0 scsi_mod.scan=none virtio-blk.queue_depth=\"64 x\" -- init\nvirtio_blk",
    b"\x06\x7fELF\x00license=GPL\x00depends=virtio,virtio_ring\x00vermagic=6.1.0\x00",
    b"\x07cgroup_no_v1=memory,net_cls\n#subsys_name\thierarchy\tnum_cgroups\tenabled\n"
    b"cpuset\t0\t1\t1\ncpu\t0\t1\t1\ncpuacct\t0\t1\t1\nmemory\t0\t1\t1\npids\t0\t1\t1\n",
]

OCI = [b"\x00" + oci_spec(), b"\x01" + oci_process(["ls", "-l"], cwd="/tmp", uid=1000)]


def write(target, items):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        os.remove(os.path.join(d, old))
    for item in items:
        name = hashlib.sha1(item).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(item)


write("config", CONFIG)
write("oci_spec", OCI)
write("mount_options", STORAGES)
write("copy_file", COPIES)
write("requests", REQUESTS)
write("ttrpc_frame", FRAMES)

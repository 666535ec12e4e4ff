//! The re-exec'd side: the init helper and the container init.
//!
//! The caller (a multi-threaded agent) never runs Rust code after fork. It
//! spawns its own executable with [`INIT_ARG`]; that fresh, single-threaded
//! process is the *init helper*. Its stdin is a socket to the caller, which
//! sends the stdio descriptors (`SCM_RIGHTS`) and a JSON request.
//!
//! * Create: the helper joins the namespaces the spec names by path, clones
//!   the container init into the new ones (so it is PID 1 of a new pid
//!   namespace), writes its uid/gid maps, reports its pid and exits. The
//!   init sets up the rootfs and the process, reports `Created`, then blocks
//!   until the caller sends `Start`, and execs. Exec closes the socket
//!   (close-on-exec): end of stream tells the caller that exec succeeded.
//! * Exec: the helper joins every namespace of the running container, forks
//!   the process, reports its pid and exits; the child finalizes and execs.
//!
//! Errors travel back as text (`Msg::Error`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::{umask, Mode};
use nix::sys::wait::waitpid;
use nix::unistd::{chdir, dup2, execve, fork, pipe2, read, setresgid, setresuid, setsid, write};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, LinuxSeccomp, Process, Spec};
use seccompiler::BpfProgram;

use crate::error::{Context, SetupError, SetupResult};
use crate::hooks;
// The container init waits for its own hooks: it reaps nothing else.
use crate::process;
use crate::protocol::{self, CreateRequest, ExecRequest, Msg, Request};
use crate::reap::DirectReap;
use crate::rootfs::{self, RootfsConfig};
use crate::seccomp;
use crate::tty;

/// The first argument that makes an executable act as the init helper.
pub const INIT_ARG: &str = "init";

/// Runs the init helper and exits if the first argument is [`INIT_ARG`]
/// (and we are not PID 1); returns otherwise. Call it first thing in `main`, before any thread or
/// async runtime starts:
///
/// ```no_run
/// rustjail::helper::run_if_requested();
/// // ... the program proper: threads, async runtime
/// ```
pub fn run_if_requested() {
    // Never as PID 1: the kernel passes unknown command-line words to
    // init, and PID 1 must not turn into a helper and exit.
    if std::process::id() != 1
        && std::env::args_os().nth(1).as_deref() == Some(OsStr::new(INIT_ARG))
    {
        std::process::exit(main());
    }
}

/// The init helper's main: returns the exit code.
pub fn main() -> i32 {
    let sock = match take_socket() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rustjail init: {e}");
            return 1;
        }
    };
    match helper(&sock) {
        Ok(()) => 0,
        Err(e) => {
            let _ = protocol::send(&sock, &Msg::Error(e.to_string()));
            1
        }
    }
}

/// Moves the socket from fd 0 to a close-on-exec descriptor and puts
/// /dev/null on fd 0.
fn take_socket() -> SetupResult<UnixStream> {
    let fd = fcntl(0, FcntlArg::F_DUPFD_CLOEXEC(3)).ctx(|| "duplicate the sync socket")?;
    // SAFETY: fcntl just returned this new descriptor; we are its only owner.
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .ctx(|| "open /dev/null")?;
    dup2(null, 0).ctx(|| "replace stdin")?;
    let _ = nix::unistd::close(null);
    Ok(UnixStream::from(owned))
}

fn helper(sock: &UnixStream) -> SetupResult<()> {
    // A helper re-exec'd from the agent inherited its OOM protection; a
    // container's processes must not keep it.
    crate::oom::drop_agent_protection().ctx(|| "reset oom_score_adj")?;
    let fds = protocol::recv_fds(sock).ctx(|| "receive stdio")?;
    let req: Request = protocol::recv(sock)
        .ctx(|| "receive request")?
        .ok_or_else(|| SetupError::new("receive request", "connection closed"))?;
    let [stdin, stdout, stderr]: [OwnedFd; 3] = fds
        .try_into()
        .map_err(|_| SetupError::new("receive stdio", "expected 3 descriptors"))?;
    let stdio = [stdin, stdout, stderr];
    match req {
        Request::Create(c) => create_helper(sock, *c, stdio),
        Request::Exec(e) => exec_helper(sock, *e, stdio),
    }
}

/// Order in which namespaces are joined: the user namespace first, so the
/// others are joined with its privileges; mount last, as it changes root.
const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Mount,
];

pub(crate) fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // CLONE_NEWTIME, not in nix's CloneFlags.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(0x80),
    }
}

/// Name of a namespace under /proc/<pid>/ns/.
pub(crate) fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

fn join_ns(t: LinuxNamespaceType, path: &std::path::Path) -> SetupResult<()> {
    let what = || format!("join {} namespace {}", ns_name(t), path.display());
    let fd = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).ctx(what)?;
    // SAFETY: `open` returned a fresh descriptor that nothing else owns.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    setns(fd.as_fd(), ns_flag(t)).ctx(what)
}

/// fork(2) with namespace flags: the child starts in the new namespaces.
fn clone_fork(flags: CloneFlags) -> nix::Result<Pid> {
    // SAFETY: clone without CLONE_VM and with a NULL stack behaves like
    // fork(2): the child runs on a copy of the address space and stack.
    // The helper is single threaded, so no other thread holds a lock the
    // child could need. The extra arguments are unused without the
    // CLONE_*TID/SETTLS flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    Errno::result(ret).map(|pid| Pid::from_raw(pid as i32))
}

fn create_helper(sock: &UnixStream, req: CreateRequest, stdio: [OwnedFd; 3]) -> SetupResult<()> {
    let linux = req
        .spec
        .linux()
        .as_ref()
        .ok_or_else(|| SetupError::new("spec", "no linux section"))?;
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    let by_type: HashMap<LinuxNamespaceType, Option<PathBuf>> = namespaces
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect();
    let mut flags = CloneFlags::empty();
    for t in JOIN_ORDER {
        match by_type.get(&t) {
            Some(Some(path)) => join_ns(t, path)?,
            Some(None) => flags |= ns_flag(t),
            None => {}
        }
    }
    let new_userns = flags.contains(CloneFlags::CLONE_NEWUSER);
    let in_userns = by_type.contains_key(&LinuxNamespaceType::User);
    let time_flag = ns_flag(LinuxNamespaceType::Time);
    if flags.contains(time_flag) {
        // clone(2) reads the low byte as the exit signal, so a new time
        // namespace is unshared here; our children are born in it.
        flags.remove(time_flag);
        new_time_ns(linux.time_offsets().as_ref())?;
    }

    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).ctx(|| "create pipe")?;
    let child = clone_fork(flags).ctx(|| "clone container init")?;
    if child.as_raw() == 0 {
        drop(go_w);
        let mut b = [0u8; 1];
        if !matches!(read(go_r.as_raw_fd(), &mut b), Ok(1)) {
            // The helper failed and said so; nothing to add.
            // SAFETY: _exit is always safe to call; it ends this process.
            unsafe { libc::_exit(1) };
        }
        drop(go_r);
        let ctx = InitCtx {
            in_userns,
            cgroupns: by_type.contains_key(&LinuxNamespaceType::Cgroup),
            new_uts: by_type.contains_key(&LinuxNamespaceType::Uts),
        };
        let err = match container_init(sock, &req, &ctx, stdio) {
            Ok(never) => match never {},
            Err(e) => e,
        };
        let _ = protocol::send(sock, &Msg::Error(err.to_string()));
        // SAFETY: _exit is always safe to call; it ends this process
        // without running the parent's atexit handlers twice.
        unsafe { libc::_exit(1) };
    }
    drop(go_r);
    let result = (|| {
        if new_userns {
            write_id_map(child, "uid_map", linux.uid_mappings().as_deref())?;
            write_id_map(child, "gid_map", linux.gid_mappings().as_deref())?;
        }
        protocol::send(sock, &Msg::Pid(child.as_raw())).ctx(|| "report pid")?;
        write(&go_w, &[1]).ctx(|| "release container init")?;
        Ok(())
    })();
    if result.is_err() {
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
    }
    result
}

fn new_time_ns(
    offsets: Option<&HashMap<String, oci_spec::runtime::LinuxTimeOffset>>,
) -> SetupResult<()> {
    nix::sched::unshare(ns_flag(LinuxNamespaceType::Time)).ctx(|| "unshare time namespace")?;
    let text: String = offsets
        .into_iter()
        .flatten()
        .map(|(clock, o)| {
            format!(
                "{clock} {} {}\n",
                o.secs().unwrap_or(0),
                o.nanosecs().unwrap_or(0)
            )
        })
        .collect();
    if !text.is_empty() {
        fs::write("/proc/self/timens_offsets", text).ctx(|| "write time offsets")?;
    }
    Ok(())
}

fn write_id_map(pid: Pid, file: &str, map: Option<&[LinuxIdMapping]>) -> SetupResult<()> {
    let map = map.unwrap_or_default();
    if map.is_empty() {
        return Err(SetupError::new(
            format!("user namespace {file}"),
            "a new user namespace needs uid and gid mappings",
        ));
    }
    let text: String = map
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    fs::write(format!("/proc/{pid}/{file}"), text).ctx(|| format!("write {file}"))
}

struct InitCtx {
    in_userns: bool,
    cgroupns: bool,
    new_uts: bool,
}

/// Becomes root of a user namespace we just entered.
fn become_ns_root() -> SetupResult<()> {
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .ctx(|| "set gid 0 in the user namespace")?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .ctx(|| "set uid 0 in the user namespace")
}

fn container_init(
    sock: &UnixStream,
    req: &CreateRequest,
    ctx: &InitCtx,
    stdio: [OwnedFd; 3],
) -> SetupResult<Infallible> {
    let spec = &req.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| SetupError::new("spec", "no process"))?;
    if ctx.in_userns {
        become_ns_root()?;
    }
    setsid().ctx(|| "setsid")?;
    umask(Mode::empty());
    let filters = compile_seccomp(spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()))?;

    if ctx.new_uts {
        if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            nix::unistd::sethostname(h).ctx(|| format!("set hostname {h:?}"))?;
        }
        if let Some(d) = spec.domainname().as_deref().filter(|d| !d.is_empty()) {
            set_domainname(d)?;
        }
    }
    if let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        for (k, v) in sysctl {
            let path = format!("/proc/sys/{}", k.replace('.', "/"));
            fs::write(&path, v).ctx(|| format!("sysctl {k}={v}"))?;
        }
    }
    if let Some(adj) = process.oom_score_adj() {
        fs::write("/proc/self/oom_score_adj", adj.to_string())
            .ctx(|| format!("set oom_score_adj {adj}"))?;
    }

    let hooks = spec.hooks().as_ref();
    let before_pivot = || -> SetupResult<()> {
        if !has_create_hooks(spec) {
            return Ok(());
        }
        protocol::send(sock, &Msg::CreateRuntime).ctx(|| "request createRuntime hooks")?;
        match protocol::recv::<Msg>(sock) {
            Ok(Some(Msg::Continue(state))) => hooks::run(
                &DirectReap,
                "createContainer",
                hooks.and_then(|h| h.create_container().as_ref()),
                &state,
            ),
            // SAFETY: _exit is always safe to call; the caller gave up.
            _ => unsafe { libc::_exit(1) },
        }
    };
    rootfs::setup(&RootfsConfig {
        rootfs: &req.rootfs,
        spec,
        in_userns: ctx.in_userns,
        cgroupns: ctx.cgroupns,
        no_pivot: req.no_pivot,
        before_pivot: &before_pivot,
    })?;

    let target = finalize(sock, process, stdio, &filters)?;
    protocol::send(sock, &Msg::Created).ctx(|| "report created")?;
    let state = match protocol::recv::<Msg>(sock) {
        Ok(Some(Msg::Start(state))) => state,
        // The caller went away or sent junk: do not run the process.
        // SAFETY: _exit is always safe to call; it ends this process.
        _ => unsafe { libc::_exit(1) },
    };
    hooks::run(
        &DirectReap,
        "startContainer",
        hooks.and_then(|h| h.start_container().as_ref()),
        &state,
    )?;
    install_late_seccomp(process, &filters)?;
    exec(&target)
}

fn compile_seccomp(profile: Option<&LinuxSeccomp>) -> SetupResult<Vec<BpfProgram>> {
    profile.map_or(Ok(Vec::new()), seccomp::compile)
}

/// With no_new_privs the filters go in last, right before exec, so the
/// profile need not allow our own setup syscalls. Without it, installing
/// needs CAP_SYS_ADMIN, so they went in before the capabilities dropped.
fn install_late_seccomp(process: &Process, filters: &[BpfProgram]) -> SetupResult<()> {
    if process.no_new_privileges() == Some(true) {
        seccomp::install(filters)?;
    }
    Ok(())
}

/// Whether the caller must be asked to run hooks before `pivot_root`.
#[allow(deprecated)]
pub(crate) fn has_create_hooks(spec: &Spec) -> bool {
    spec.hooks().as_ref().is_some_and(|h| {
        [h.prestart(), h.create_runtime(), h.create_container()]
            .iter()
            .any(|v| v.as_ref().is_some_and(|v| !v.is_empty()))
    })
}

fn set_domainname(name: &str) -> SetupResult<()> {
    // SAFETY: the pointer and length describe `name`, valid for the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    Errno::result(ret).ctx(|| format!("set domainname {name:?}"))?;
    Ok(())
}

/// Steps shared by the container init and exec'd processes, after the
/// rootfs is in place: cwd, lookup, rlimits, user, capabilities,
/// no_new_privs, umask and stdio.
fn finalize(
    sock: &UnixStream,
    process: &Process,
    stdio: [OwnedFd; 3],
    filters: &[BpfProgram],
) -> SetupResult<process::ExecTarget> {
    let cwd = process.cwd();
    chdir(cwd).ctx(|| format!("chdir to cwd {}", cwd.display()))?;
    let user = process::resolve_user(process.user())?;
    let target = process::exec_target(process, &user)?;
    let stdio = if process.terminal() == Some(true) {
        let (master, slave) = tty::open_pty()?;
        if let Some(size) = process.console_size() {
            let rows = u16::try_from(size.height()).unwrap_or(u16::MAX);
            let cols = u16::try_from(size.width()).unwrap_or(u16::MAX);
            tty::set_window_size(master.as_fd(), rows, cols).ctx(|| "set console size")?;
        }
        protocol::send(sock, &Msg::Console).ctx(|| "send console")?;
        protocol::send_fds(sock, &[master.as_raw_fd()]).ctx(|| "send console")?;
        drop(master);
        tty::set_controlling(slave.as_fd())?;
        let uid = Uid::from_raw(user.uid);
        nix::unistd::fchown(slave.as_raw_fd(), Some(uid), None).ctx(|| "chown console")?;
        let dup = |fd: &OwnedFd| fd.try_clone().ctx(|| "duplicate console");
        [dup(&slave)?, dup(&slave)?, slave]
    } else {
        stdio
    };
    process::set_rlimits(process)?;
    if process.no_new_privileges() != Some(true) {
        seccomp::install(filters)?;
    }
    process::set_user_and_caps(process, &user)?;
    process::set_no_new_privs(process)?;
    let mask = process.user().umask().unwrap_or(0o022);
    umask(Mode::from_bits_truncate(mask));
    for (i, fd) in stdio.iter().enumerate() {
        dup2(fd.as_raw_fd(), i as RawFd).ctx(|| format!("set up stdio fd {i}"))?;
    }
    drop(stdio);
    close_other_fds_on_exec();
    Ok(target)
}

/// Marks every descriptor above stderr close-on-exec, so nothing the
/// caller leaked reaches the container.
fn close_other_fds_on_exec() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOEXEC only changes descriptor flags; it
    // takes no pointers. Old kernels answer ENOSYS, which we ignore.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        );
    }
}

fn exec(target: &process::ExecTarget) -> SetupResult<Infallible> {
    crate::utils::default_signals();
    let err = execve(&target.path, &target.args, &target.env)
        .map(|never| match never {})
        .unwrap_or_else(|e| e);
    Err(SetupError::new(
        format!("exec {}", target.path.to_string_lossy()),
        crate::utils::errno_text(err),
    ))
}

fn exec_helper(sock: &UnixStream, req: ExecRequest, stdio: [OwnedFd; 3]) -> SetupResult<()> {
    let pid = req.init_pid;
    let mut fds = Vec::new();
    let mut joined_user = false;
    for t in JOIN_ORDER {
        if !req.namespaces.contains(&t) {
            continue;
        }
        let path = format!("/proc/{pid}/ns/{}", ns_name(t));
        let self_path = format!("/proc/self/ns/{}", ns_name(t));
        let (theirs, ours) = match (fs::metadata(&path), fs::metadata(&self_path)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) => return Err(e).ctx(|| format!("container namespace {path}")),
            // The kernel lacks this namespace type: nothing to join.
            (_, Err(_)) => continue,
        };
        use std::os::unix::fs::MetadataExt;
        if theirs.ino() == ours.ino() && theirs.dev() == ours.dev() {
            continue;
        }
        let fd = open(
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ctx(|| format!("open {path}"))?;
        // SAFETY: `open` returned a fresh descriptor that nothing else owns.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        fds.push((t, fd));
    }
    for (t, fd) in &fds {
        setns(fd.as_fd(), ns_flag(*t)).ctx(|| format!("join {} namespace", ns_name(*t)))?;
        if *t == LinuxNamespaceType::User {
            joined_user = true;
        }
    }
    drop(fds);
    // SAFETY: the helper is single threaded, so the child may run any code.
    match unsafe { fork() }.ctx(|| "fork exec process")? {
        ForkResult::Child => {
            let err = match exec_child(sock, &req, joined_user, stdio) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let _ = protocol::send(sock, &Msg::Error(err.to_string()));
            // SAFETY: _exit is always safe to call; it ends this process.
            unsafe { libc::_exit(1) };
        }
        ForkResult::Parent { child } => {
            drop(stdio);
            protocol::send(sock, &Msg::Pid(child.as_raw())).ctx(|| "report pid")
        }
    }
}

fn exec_child(
    sock: &UnixStream,
    req: &ExecRequest,
    joined_user: bool,
    stdio: [OwnedFd; 3],
) -> SetupResult<Infallible> {
    if joined_user {
        become_ns_root()?;
    }
    setsid().ctx(|| "setsid")?;
    let process = &req.process;
    let filters = compile_seccomp(req.seccomp.as_ref())?;
    let target = finalize(sock, process, stdio, &filters)?;
    install_late_seccomp(process, &filters)?;
    exec(&target)
}

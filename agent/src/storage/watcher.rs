//! Mirrors of `watchable-bind` sources and the thread that keeps them
//! current. virtio-fs carries no inotify events into the guest, so a
//! ConfigMap or Secret update on the host is only seen by polling: every
//! [`POLL`] the sources are walked (a stat per entry) and what changed is
//! copied into the targets.
//!
//! Cost is bounded as upstream Kata bounds it: a source of more than
//! [`MAX_ENTRIES`] entries (directories, the source itself included) or
//! more than [`MAX_BYTES`] in files and symlinks is not mirrored (the walk
//! stops at the limit); the driver then bind-mounts the source instead,
//! as upstream does.
//!
//! The targets are written through directory file descriptors opened with
//! `O_NOFOLLOW`, never through a path that could hold a symlink: a symlink
//! copied from the source (Kubernetes' `..data`) or planted by a container
//! cannot redirect a write or a removal. Files and symlinks are replaced by
//! renaming a temporary over them, so readers see the old or the new
//! version; new entries are written before vanished ones are removed, so
//! Kubernetes' `..data` symlink swap never leaves a dangling `..data`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use nix::fcntl::{AtFlags, OFlag};
use nix::mount::MsFlags;
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

/// Entries watched per storage at most, as upstream.
pub(super) const MAX_ENTRIES: usize = 16;
/// Bytes (files and symlinks) watched per storage at most, as upstream.
pub(super) const MAX_BYTES: u64 = 1024 * 1024;
/// How often the sources are checked (upstream: 2 s; ours keeps changes
/// visible within 2 s).
pub(super) const POLL: Duration = Duration::from_millis(500);
/// Name of the temporary that is renamed over a file or symlink.
const TMP_NAME: &str = ".kata-watch.tmp";
/// Directory depth removed at most (a container could nest deeper in a
/// writable target; the rest is left, not recursed into without end).
const MAX_DEPTH: usize = 32;

/// Why a source could not be mirrored.
#[derive(Debug, thiserror::Error)]
pub(super) enum SyncError {
    /// Past [`MAX_ENTRIES`] or [`MAX_BYTES`]: not watchable.
    #[error("{0}")]
    Limit(String),
    #[error("{op} {path}: {}", super::describe_io(.cause))]
    Io {
        op: &'static str,
        path: String,
        cause: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SyncError + 'a {
    move |cause| SyncError::Io {
        op,
        path: path.display().to_string(),
        cause,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    /// Fifos, sockets, devices: counted, not mirrored.
    Other,
}

/// What tells a changed entry from an unchanged one: any rewrite changes
/// ctime, any replacement the inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    kind: Kind,
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Stamp {
    fn of(md: &fs::Metadata) -> Self {
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            Kind::Other
        };
        Stamp {
            kind,
            dev: md.dev(),
            ino: md.ino(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            size: md.len(),
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
        }
    }
}

/// Walks `source` without following symlinks, within the limits.
fn walk(source: &Path) -> Result<BTreeMap<PathBuf, Stamp>, SyncError> {
    let mut out = BTreeMap::new();
    let mut bytes = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = if rel.as_os_str().is_empty() {
            source.to_path_buf()
        } else {
            source.join(&rel)
        };
        let md = fs::symlink_metadata(&path).map_err(io_err("stat", &path))?;
        let stamp = Stamp::of(&md);
        if matches!(stamp.kind, Kind::File | Kind::Symlink) {
            bytes += stamp.size;
        }
        let is_dir = stamp.kind == Kind::Dir;
        out.insert(rel.clone(), stamp);
        if out.len() > MAX_ENTRIES {
            return Err(SyncError::Limit(format!(
                "{}: more than {MAX_ENTRIES} entries",
                source.display()
            )));
        }
        if bytes > MAX_BYTES {
            return Err(SyncError::Limit(format!(
                "{}: more than {MAX_BYTES} bytes",
                source.display()
            )));
        }
        if is_dir {
            for (n, entry) in fs::read_dir(&path)
                .map_err(io_err("read", &path))?
                .enumerate()
            {
                // Never more than the limit in memory, however large.
                if n > MAX_ENTRIES {
                    return Err(SyncError::Limit(format!(
                        "{}: more than {MAX_ENTRIES} entries",
                        source.display()
                    )));
                }
                let entry = entry.map_err(io_err("read", &path))?;
                stack.push(rel.join(entry.file_name()));
            }
        }
    }
    Ok(out)
}

/// Opens directory `name` in `parent` (or the path `name` when `parent`
/// is `None`) without following a symlink.
fn open_dir(parent: Option<&OwnedFd>, name: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        parent.map(AsRawFd::as_raw_fd),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn kind_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<Kind>> {
    match nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File,
            libc::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        })),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes `name` from `dir`, a directory with its contents.
fn remove_at(dir: &OwnedFd, name: &OsStr, depth: usize) -> io::Result<()> {
    let fd = Some(dir.as_raw_fd());
    match kind_at(dir, name)? {
        None => Ok(()),
        Some(Kind::Dir) => {
            if depth >= MAX_DEPTH {
                return Err(io::Error::other("nested too deep"));
            }
            let sub = open_dir(Some(dir), Path::new(name))?;
            // The magic link names exactly the directory opened.
            let listing = format!("/proc/self/fd/{}", sub.as_raw_fd());
            for entry in fs::read_dir(listing)? {
                remove_at(&sub, &entry?.file_name(), depth + 1)?;
            }
            nix::unistd::unlinkat(fd, name, UnlinkatFlags::RemoveDir).map_err(Into::into)
        }
        Some(_) => match nix::unistd::unlinkat(fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        },
    }
}

fn chown_fd(fd: &OwnedFd, st: &Stamp) -> io::Result<()> {
    std::os::unix::fs::fchown(fd, Some(st.uid), Some(st.gid))
}

fn chmod_fd(fd: &OwnedFd, st: &Stamp) -> io::Result<()> {
    nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(st.mode)).map_err(Into::into)
}

/// Reads a source file (not through a symlink), at most [`MAX_BYTES`].
fn read_source(path: &Path) -> Result<Vec<u8>, SyncError> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("open", path))?;
    let mut data = Vec::new();
    f.take(MAX_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(io_err("read", path))?;
    if data.len() as u64 > MAX_BYTES {
        return Err(SyncError::Limit(format!(
            "{}: more than {MAX_BYTES} bytes",
            path.display()
        )));
    }
    Ok(data)
}

/// One watched source and its copy.
pub(super) struct Mirror {
    source: PathBuf,
    target: PathBuf,
    /// What the target was created as: a directory or a file.
    root_is_dir: bool,
    mirrored: BTreeMap<PathBuf, Stamp>,
}

impl Mirror {
    pub(super) fn new(source: PathBuf, target: PathBuf, root_is_dir: bool) -> Self {
        Mirror {
            source,
            target,
            root_is_dir,
            mirrored: BTreeMap::new(),
        }
    }

    pub(super) fn source(&self) -> &Path {
        &self.source
    }

    pub(super) fn target(&self) -> &Path {
        &self.target
    }

    /// Brings the target up to date; returns how many entries changed.
    /// Entries that failed are retried on the next call; the first error
    /// is returned after the others were tried.
    pub(super) fn sync(&mut self) -> Result<usize, SyncError> {
        let now = walk(&self.source)?;
        if let Some(root) = now.get(Path::new("")) {
            if (root.kind == Kind::Dir) != self.root_is_dir {
                return Err(SyncError::Io {
                    op: "mirror",
                    path: self.source.display().to_string(),
                    cause: io::Error::other("source changed between file and directory"),
                });
            }
        }
        if !self.root_is_dir {
            return self.sync_file(&now);
        }
        let root = open_dir(None, &self.target).map_err(io_err("open", &self.target))?;
        let mut first_err = None;
        let mut changed = 0;
        // Kind changes first: the new entry takes the old one's name.
        let replaced: Vec<PathBuf> = self
            .mirrored
            .iter()
            .filter(|(rel, old)| now.get(*rel).is_some_and(|n| n.kind != old.kind))
            .map(|(rel, _)| rel.clone())
            .collect();
        self.remove(&root, replaced, &mut first_err);
        // New and changed entries, parents before children.
        for (rel, st) in &now {
            if self.mirrored.get(rel) == Some(st) {
                continue;
            }
            match self.copy(&root, rel, st) {
                Ok(()) => {
                    self.mirrored.insert(rel.clone(), st.clone());
                    changed += 1;
                }
                Err(e) => {
                    self.mirrored.remove(rel);
                    first_err.get_or_insert(e);
                }
            }
        }
        // Then what vanished, deepest first.
        let gone: Vec<PathBuf> = self
            .mirrored
            .keys()
            .filter(|rel| !now.contains_key(*rel))
            .cloned()
            .collect();
        changed += gone.len();
        self.remove(&root, gone, &mut first_err);
        match first_err {
            Some(e) => Err(e),
            None => Ok(changed),
        }
    }

    fn remove(&mut self, root: &OwnedFd, mut rels: Vec<PathBuf>, err: &mut Option<SyncError>) {
        rels.sort_by_key(|r| std::cmp::Reverse(r.components().count()));
        for rel in rels {
            self.mirrored.remove(&rel);
            let target = self.target.join(&rel);
            let r = self
                .parent_of(root, &rel)
                .and_then(|(dir, name)| match dir {
                    Some(dir) => remove_at(&dir, &name, 0),
                    None => remove_at(root, &name, 0),
                });
            match r {
                Ok(()) => {}
                // Its directory went first (or was replaced by a file).
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(e) => {
                    err.get_or_insert(io_err("remove", &target)(e));
                }
            }
        }
    }

    /// The directory holding `rel` (`None`: the root) and its last name.
    fn parent_of(&self, root: &OwnedFd, rel: &Path) -> io::Result<(Option<OwnedFd>, OsString)> {
        let mut names: Vec<&OsStr> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => names.push(n),
                _ => return Err(io::Error::other("unexpected path component")),
            }
        }
        let Some(last) = names.pop() else {
            return Err(io::Error::other("no name"));
        };
        let mut dir: Option<OwnedFd> = None;
        for n in names {
            let next = open_dir(Some(dir.as_ref().unwrap_or(root)), Path::new(n))?;
            dir = Some(next);
        }
        Ok((dir, last.to_owned()))
    }

    fn copy(&self, root: &OwnedFd, rel: &Path, st: &Stamp) -> Result<(), SyncError> {
        let target = self.target.join(rel);
        let source = self.source.join(rel);
        let e = |op| io_err(op, &target);
        if rel.as_os_str().is_empty() {
            // The root: only its mode and owner.
            chmod_fd(root, st).map_err(e("set mode on"))?;
            return chown_fd(root, st).map_err(e("set owner on"));
        }
        let (dir, name) = self.parent_of(root, rel).map_err(e("open parent of"))?;
        let dir = dir.as_ref().unwrap_or(root);
        let dfd = Some(dir.as_raw_fd());
        match st.kind {
            Kind::Other => Ok(()),
            Kind::Dir => {
                match kind_at(dir, &name).map_err(e("stat"))? {
                    Some(Kind::Dir) => {}
                    Some(_) => {
                        remove_at(dir, &name, 0).map_err(e("replace"))?;
                        nix::sys::stat::mkdirat(
                            dfd,
                            name.as_os_str(),
                            Mode::from_bits_truncate(0o700),
                        )
                        .map_err(|x| e("create directory")(x.into()))?;
                    }
                    None => nix::sys::stat::mkdirat(
                        dfd,
                        name.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(|x| e("create directory")(x.into()))?,
                }
                let sub = open_dir(Some(dir), Path::new(&name)).map_err(e("open"))?;
                chmod_fd(&sub, st).map_err(e("set mode on"))?;
                chown_fd(&sub, st).map_err(e("set owner on"))
            }
            Kind::File => {
                let data = read_source(&source)?;
                let _ = nix::unistd::unlinkat(dfd, TMP_NAME, UnlinkatFlags::NoRemoveDir);
                let fd = nix::fcntl::openat(
                    dfd,
                    TMP_NAME,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|x| e("create")(x.into()))?;
                // SAFETY: openat just returned this descriptor; nothing else
                // owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let written = (|| {
                    let mut f = fs::File::from(fd.try_clone()?);
                    f.write_all(&data)?;
                    chmod_fd(&fd, st)?;
                    chown_fd(&fd, st)
                })();
                if let Err(x) = written {
                    let _ = nix::unistd::unlinkat(dfd, TMP_NAME, UnlinkatFlags::NoRemoveDir);
                    return Err(e("write")(x));
                }
                self.rename_into(dir, &name).map_err(e("replace"))
            }
            Kind::Symlink => {
                let link = fs::read_link(&source).map_err(io_err("read link", &source))?;
                let _ = nix::unistd::unlinkat(dfd, TMP_NAME, UnlinkatFlags::NoRemoveDir);
                nix::unistd::symlinkat(&link, dfd, TMP_NAME)
                    .map_err(|x| e("create symlink")(x.into()))?;
                let owned = nix::unistd::fchownat(
                    dfd,
                    TMP_NAME,
                    Some(nix::unistd::Uid::from_raw(st.uid)),
                    Some(nix::unistd::Gid::from_raw(st.gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                );
                if let Err(x) = owned {
                    let _ = nix::unistd::unlinkat(dfd, TMP_NAME, UnlinkatFlags::NoRemoveDir);
                    return Err(e("set owner on")(x.into()));
                }
                self.rename_into(dir, &name).map_err(e("replace"))
            }
        }
    }

    /// Renames the temporary over `name`, replacing a directory there.
    fn rename_into(&self, dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
        let dfd = Some(dir.as_raw_fd());
        if kind_at(dir, name)? == Some(Kind::Dir) {
            remove_at(dir, name, 0)?;
        }
        let r = nix::fcntl::renameat(dfd, TMP_NAME, dfd, name);
        if r.is_err() {
            let _ = nix::unistd::unlinkat(dfd, TMP_NAME, UnlinkatFlags::NoRemoveDir);
        }
        r.map_err(Into::into)
    }

    /// A file source: its content rewritten in place, so a bind mount of
    /// the target keeps seeing it.
    fn sync_file(&mut self, now: &BTreeMap<PathBuf, Stamp>) -> Result<usize, SyncError> {
        let Some(st) = now.get(Path::new("")) else {
            return Ok(0);
        };
        if self.mirrored.get(Path::new("")) == Some(st) {
            return Ok(0);
        }
        let target = self.target.clone();
        let e = |op| io_err(op, &target);
        let data = read_source(&self.source)?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.target)
            .map_err(e("open"))?;
        f.write_all(&data).map_err(e("write"))?;
        f.set_permissions(fs::Permissions::from_mode(st.mode))
            .map_err(e("set mode on"))?;
        std::os::unix::fs::fchown(&f, Some(st.uid), Some(st.gid)).map_err(e("set owner on"))?;
        self.mirrored.insert(PathBuf::new(), st.clone());
        Ok(1)
    }
}

/// A mirror as the poll thread sees it.
struct Watched {
    mirror: Mirror,
    /// The mount point as the host sent it, for logs.
    mount_point: String,
    /// Still registered (cleared by [`Watcher::unwatch`]).
    active: bool,
    /// The source outgrew the limits and is bind-mounted on the target.
    bind_mounted: bool,
    read_only: bool,
}

#[derive(Default)]
struct State {
    watched: HashMap<PathBuf, Arc<Mutex<Watched>>>,
    thread: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The registry of mirrors and its poll thread, which runs while anything
/// is watched and ends when the last mirror goes.
#[derive(Default)]
pub(super) struct Watcher {
    shared: Arc<Shared>,
}

use crate::lock::lock;

/// Bind-mounts the source on the target: the fallback past the limits.
pub(super) fn bind_fallback(source: &Path, target: &Path, read_only: bool) -> nix::Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )?;
    if read_only {
        let r = nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        );
        if let Err(e) = r {
            let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
            return Err(e);
        }
    }
    Ok(())
}

impl Watcher {
    /// Keeps `mirror` (already synced once) current until [`Self::unwatch`].
    pub(super) fn watch(
        &self,
        key: PathBuf,
        mirror: Mirror,
        mount_point: &str,
        read_only: bool,
    ) -> io::Result<()> {
        let mut st = lock(&self.shared.state);
        if !st.thread {
            let shared = Arc::clone(&self.shared);
            std::thread::Builder::new()
                .name("storage-watch".into())
                .spawn(move || poll(&shared))?;
            st.thread = true;
        }
        st.watched.insert(
            key,
            Arc::new(Mutex::new(Watched {
                mirror,
                mount_point: mount_point.to_owned(),
                active: true,
                bind_mounted: false,
                read_only,
            })),
        );
        Ok(())
    }

    /// Stops watching `key`, waiting for a sync in progress. Returns whether
    /// the poll thread had to bind-mount the source there (the caller
    /// unmounts it).
    pub(super) fn unwatch(&self, key: &Path) -> bool {
        let w = lock(&self.shared.state).watched.remove(key);
        self.shared.wake.notify_all();
        match w {
            Some(w) => {
                let mut w = lock(&w);
                w.active = false;
                w.bind_mounted
            }
            None => false,
        }
    }

    /// Whether the poll thread runs (for tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(super) fn polling(&self) -> bool {
        lock(&self.shared.state).thread
    }
}

fn poll(shared: &Shared) {
    loop {
        let list: Vec<Arc<Mutex<Watched>>> = {
            let st = lock(&shared.state);
            let (mut st, _) = shared
                .wake
                .wait_timeout(st, POLL)
                .unwrap_or_else(PoisonError::into_inner);
            if st.watched.is_empty() {
                st.thread = false;
                return;
            }
            st.watched.values().cloned().collect()
        };
        for w in list {
            let mut w = lock(&w);
            if !w.active || w.bind_mounted {
                continue;
            }
            match w.mirror.sync() {
                Ok(0) => {}
                Ok(n) => log::debug!("storage \"{}\": {n} entries updated", w.mount_point),
                Err(SyncError::Limit(why)) => {
                    let (source, target) = (w.mirror.source(), w.mirror.target());
                    match bind_fallback(source, target, w.read_only) {
                        Ok(()) => {
                            log::warn!(
                                "storage \"{}\": {why}: no longer watched, source bind-mounted",
                                w.mount_point
                            );
                            w.bind_mounted = true;
                        }
                        Err(e) => log::warn!(
                            "storage \"{}\": {why}; bind mount instead: {}",
                            w.mount_point,
                            super::lower_first(e.desc())
                        ),
                    }
                }
                Err(e) => log::warn!("storage \"{}\": {e}", w.mount_point),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::configmap;
    use std::os::unix::fs::symlink;

    fn tree(dir: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                let path = e.path();
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                let md = fs::symlink_metadata(&path).unwrap();
                let what = if md.file_type().is_symlink() {
                    format!("-> {}", fs::read_link(&path).unwrap().display())
                } else if md.is_dir() {
                    stack.push(path.clone());
                    "/".to_owned()
                } else {
                    fs::read_to_string(&path).unwrap()
                };
                out.push((rel, what));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn kubernetes_atomic_update_is_mirrored() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        configmap(src.path(), "..2026_01", &[("a", "1"), ("b", "2")]);
        let mut m = Mirror::new(src.path().into(), dst.path().into(), true);
        assert!(m.sync().unwrap() > 0);
        assert_eq!(tree(dst.path()), tree(src.path()));
        assert_eq!(fs::read_to_string(dst.path().join("a")).unwrap(), "1");
        assert_eq!(m.sync().unwrap(), 0, "nothing changed");

        // The kubelet's update: new dir, swap ..data, drop the old dir.
        configmap(src.path(), "..2026_02", &[("a", "10"), ("b", "2")]);
        fs::remove_dir_all(src.path().join("..2026_01")).unwrap();
        m.sync().unwrap();
        assert_eq!(tree(dst.path()), tree(src.path()));
        assert_eq!(fs::read_to_string(dst.path().join("a")).unwrap(), "10");
        assert!(!dst.path().join(TMP_NAME).exists());
    }

    #[test]
    fn changes_kinds_and_removals() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::write(src.path().join("f"), "x").unwrap();
        fs::create_dir(src.path().join("d")).unwrap();
        fs::write(src.path().join("d/in"), "y").unwrap();
        let mut m = Mirror::new(src.path().into(), dst.path().into(), true);
        m.sync().unwrap();
        assert_eq!(tree(dst.path()), tree(src.path()));
        // Same size, same second: still seen (ctime, inode).
        fs::write(src.path().join("f"), "z").unwrap();
        // A directory becomes a file, a file a directory.
        fs::remove_dir_all(src.path().join("d")).unwrap();
        fs::write(src.path().join("d"), "now a file").unwrap();
        fs::remove_file(src.path().join("f")).unwrap();
        fs::create_dir(src.path().join("f")).unwrap();
        m.sync().unwrap();
        assert_eq!(tree(dst.path()), tree(src.path()));
        fs::remove_dir(src.path().join("f")).unwrap();
        fs::remove_file(src.path().join("d")).unwrap();
        m.sync().unwrap();
        assert!(tree(dst.path()).is_empty());
    }

    #[test]
    fn a_planted_symlink_does_not_redirect_writes() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let victim = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("d")).unwrap();
        fs::write(src.path().join("d/f"), "x").unwrap();
        let mut m = Mirror::new(src.path().into(), dst.path().into(), true);
        m.sync().unwrap();
        // Someone with access to the target swaps its directory for a
        // symlink to elsewhere; the next update must not write there.
        fs::remove_dir_all(dst.path().join("d")).unwrap();
        symlink(victim.path(), dst.path().join("d")).unwrap();
        fs::write(src.path().join("d/f"), "changed").unwrap();
        assert!(m.sync().is_err());
        assert_eq!(fs::read_dir(victim.path()).unwrap().count(), 0);
        // Removals neither.
        fs::write(victim.path().join("f"), "keep").unwrap();
        fs::remove_dir_all(src.path().join("d")).unwrap();
        let _ = m.sync();
        assert_eq!(fs::read_to_string(victim.path().join("f")).unwrap(), "keep");
    }

    #[test]
    fn limits_as_upstream() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        // The source directory and 15 files: 16 entries, watchable.
        for i in 1..MAX_ENTRIES {
            fs::write(src.path().join(format!("{i}")), "x").unwrap();
        }
        let mut m = Mirror::new(src.path().into(), dst.path().into(), true);
        assert_eq!(m.sync().unwrap(), MAX_ENTRIES);
        fs::write(src.path().join("one-more"), "x").unwrap();
        let err = m.sync().unwrap_err();
        assert!(matches!(err, SyncError::Limit(_)), "{err}");
        assert!(err.to_string().contains("more than 16 entries"), "{err}");

        let big = tempfile::tempdir().unwrap();
        let f = fs::File::create(big.path().join("big")).unwrap();
        f.set_len(MAX_BYTES).unwrap();
        let mut m = Mirror::new(big.path().into(), dst.path().into(), true);
        m.sync().unwrap();
        fs::write(big.path().join("x"), "1").unwrap();
        let err = m.sync().unwrap_err();
        assert!(err.to_string().contains("more than 1048576 bytes"), "{err}");
    }

    #[test]
    fn a_file_source_is_rewritten_in_place() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let (s, t) = (src.path().join("key"), dst.path().join("key"));
        fs::write(&s, "v1").unwrap();
        fs::write(&t, "").unwrap();
        let ino = fs::metadata(&t).unwrap().ino();
        let mut m = Mirror::new(s.clone(), t.clone(), false);
        m.sync().unwrap();
        assert_eq!(fs::read_to_string(&t).unwrap(), "v1");
        fs::write(&s, "v2").unwrap();
        m.sync().unwrap();
        assert_eq!(fs::read_to_string(&t).unwrap(), "v2");
        assert_eq!(fs::metadata(&t).unwrap().ino(), ino);
    }
}

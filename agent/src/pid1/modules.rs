//! Kernel modules the initrd carries for a distribution kernel (Debian's
//! cloud kernel builds virtio, vsock, fuse and virtio-fs as modules).
//!
//! `rootfs-builder/rootfs.sh` resolves the dependency order at build time,
//! decompresses the modules, and writes [`LOAD_ORDER`]: one path a line,
//! relative to `/lib/modules`, starting with the kernel release the module
//! was built for. PID 1 loads them in that order with `finit_module`, so the
//! agent needs neither `modprobe` nor a decompressor. Lines for another
//! release are skipped: the same initrd boots a kernel that has all of it
//! built in.

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{delete_module, finit_module, DeleteModuleFlags, ModuleInitFlags};

use super::InitError;

/// Where the list is.
pub const LOAD_ORDER: &str = "/lib/modules/load-order";
const MODULES_DIR: &str = "/lib/modules";
const OSRELEASE: &str = "/proc/sys/kernel/osrelease";

/// The modules to load for kernel `release`, in order, as paths relative to
/// `/lib/modules`. Blank lines and `#` comments are skipped.
pub fn entries(text: &str, release: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Path::new)
        .filter(|p| {
            p.components()
                .next()
                .is_some_and(|c| c.as_os_str() == release)
        })
        .map(Path::to_path_buf)
        .collect()
}

/// The words of a kernel command line; double quotes group words (as the
/// kernel reads `param="a b"`) and are dropped.
fn cmdline_words(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// The parameters the kernel command line gives module `name`
/// (`scsi_mod.scan=none` -> `scan=none`), as modprobe would pass them: the
/// kernel applies `module.param` itself only to built-in modules. `-` and
/// `_` are the same in module names.
pub fn cmdline_params(cmdline: &str, name: &str) -> String {
    params_for(&cmdline_words(cmdline), name)
}

/// [`cmdline_params`] on the command line's words, split once.
fn params_for(words: &[String], name: &str) -> String {
    let norm = |s: &str| s.replace('-', "_");
    let name = norm(name);
    words
        .iter()
        .filter_map(|w| {
            let (module, param) = w.split_once('.')?;
            (norm(module) == name && !param.is_empty()).then(|| param.to_owned())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Loads every module `list` names for the running kernel, each with the
/// parameters `cmdline` gives it. A missing list means there is nothing to
/// load. Returns the modules that failed; one that is already loaded or
/// built in is not a failure.
pub fn load_listed(list: &Path, cmdline: &str) -> Vec<InitError> {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(source) => {
            return vec![InitError::Read {
                path: list.to_path_buf(),
                source,
            }]
        }
    };
    let release = match std::fs::read_to_string(OSRELEASE) {
        Ok(r) => r.trim().to_string(),
        Err(source) => {
            return vec![InitError::Read {
                path: PathBuf::from(OSRELEASE),
                source,
            }]
        }
    };
    let words = cmdline_words(cmdline);
    let mut errors = Vec::new();
    for rel in entries(&text, &release) {
        let path = Path::new(MODULES_DIR).join(rel);
        let name = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Err(e) = load(&path, &params_for(&words, &name)) {
            errors.push(e);
        }
    }
    errors
}

/// Loads one uncompressed `.ko` with `params` (space-separated).
pub fn load(path: &Path, params: &str) -> Result<(), InitError> {
    let err = |source| InitError::Module {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    let params = CString::new(params).map_err(|_| err(Errno::EINVAL))?;
    if !params.is_empty() {
        log::debug!("module {}: {}", path.display(), params.to_string_lossy());
    }
    match finit_module(&file, &params, ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses the file.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;
/// `MODULE_NAME_LEN` less the terminating nul.
const MAX_MODULE_NAME: usize = 55;
/// Dependency chains are short; a longer one is a cycle.
const MAX_DEPTH: usize = 16;
/// Where loaded (and built-in, with parameters) modules appear.
const SYS_MODULE: &str = "/sys/module";

/// Why a module CreateSandbox names could not be loaded; each message
/// names the module.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("kernel module {name:?}: invalid name: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("kernel module {name:?}: invalid parameter {param:?}: contains a nul byte")]
    InvalidParam { name: String, param: String },
    #[error("kernel module {name:?}: not found in {}", dir.display())]
    NotFound { name: String, dir: PathBuf },
    #[error("kernel module {name:?}: {op} {}: {source}", path.display())]
    Io {
        name: String,
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("kernel module {name:?}: load {}: {}", path.display(), source.desc())]
    Load {
        name: String,
        path: PathBuf,
        source: Errno,
    },
    #[error("kernel module {name:?}: dependencies nested more than {MAX_DEPTH} deep")]
    TooDeep { name: String },
}

impl ModuleError {
    /// The status this error answers with.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            ModuleError::InvalidName { .. } | ModuleError::InvalidParam { .. } => {
                ttrpc::Code::INVALID_ARGUMENT
            }
            ModuleError::NotFound { .. } => ttrpc::Code::NOT_FOUND,
            ModuleError::Io { .. } | ModuleError::Load { .. } | ModuleError::TooDeep { .. } => {
                ttrpc::Code::INTERNAL
            }
        }
    }
}

crate::error::into_status!(ModuleError);

/// The kernel's name of a module: `-` and `_` are the same to it.
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

fn check_name(name: &str) -> Result<(), ModuleError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > MAX_MODULE_NAME {
        Some("longer than 55 bytes")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Some("only letters, digits, '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ModuleError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Whether the module is loaded or built in (a built-in module with
/// parameters shows there too; one without needs no loading either way,
/// and `finit_module` then answers EEXIST).
fn is_loaded(name: &str) -> bool {
    Path::new(SYS_MODULE).join(canonical(name)).exists()
}

/// The file of module `name` under `dir`, searched recursively; symlinks
/// (`build`, `source`) are not followed.
fn find_module(dir: &Path, name: &str) -> Option<PathBuf> {
    let want = canonical(name);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let file = e.file_name();
            let file = file.to_string_lossy();
            let stem = file
                .split_once(".ko")
                .filter(|(_, ext)| ["", ".xz", ".zst", ".gz"].contains(ext))
                .map(|(stem, _)| stem);
            if stem.is_some_and(|s| canonical(s) == want) {
                return Some(e.path());
            }
        }
    }
    None
}

/// The `depends=` list of a module's modinfo, read from the raw file.
pub fn depends_of(data: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = data.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &data[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Loads module `name` with `params` (`key=value` each), its dependencies
/// first, as modprobe would. A module that is already loaded is left as
/// it is. Returns the modules this call loaded, dependencies first, so
/// that a caller that fails later can [`unload`] them.
pub fn load_named(name: &str, params: &[String]) -> Result<Vec<String>, ModuleError> {
    check_name(name)?;
    for p in params {
        if p.contains('\0') {
            return Err(ModuleError::InvalidParam {
                name: name.to_string(),
                param: p.clone(),
            });
        }
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| ModuleError::Io {
            name: name.to_string(),
            op: "uname",
            path: PathBuf::from("/proc/sys/kernel/osrelease"),
            source: e.into(),
        })?;
    let dir = Path::new(MODULES_DIR).join(release);
    let mut loaded = Vec::new();
    match load_tree(&dir, name, params, 0, &mut loaded) {
        Ok(()) => Ok(loaded),
        Err(e) => {
            // Nothing half done: the dependencies loaded for it go again.
            for m in loaded.iter().rev() {
                unload(m);
            }
            Err(e)
        }
    }
}

fn load_tree(
    dir: &Path,
    name: &str,
    params: &[String],
    depth: usize,
    loaded: &mut Vec<String>,
) -> Result<(), ModuleError> {
    if is_loaded(name) {
        if !params.is_empty() {
            log::info!("kernel module {name:?}: already loaded, parameters {params:?} not applied");
        }
        return Ok(());
    }
    if depth > MAX_DEPTH {
        return Err(ModuleError::TooDeep {
            name: name.to_string(),
        });
    }
    let path = find_module(dir, name).ok_or_else(|| ModuleError::NotFound {
        name: name.to_string(),
        dir: dir.to_path_buf(),
    })?;
    let io_err = |op, source| ModuleError::Io {
        name: name.to_string(),
        op,
        path: path.clone(),
        source,
    };
    let compressed = !path.to_string_lossy().ends_with(".ko");
    if !compressed {
        let data = std::fs::read(&path).map_err(|e| io_err("read", e))?;
        for dep in depends_of(&data) {
            load_tree(dir, &dep, &[], depth + 1, loaded)?;
        }
    }
    let file = std::fs::File::open(&path).map_err(|e| io_err("open", e))?;
    let args = CString::new(params.join(" ")).map_err(|_| ModuleError::InvalidParam {
        name: name.to_string(),
        param: params.join(" "),
    })?;
    let flags = if compressed {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    match finit_module(&file, &args, flags) {
        Ok(()) => {
            log::info!("kernel module {name:?} loaded from {}", path.display());
            loaded.push(canonical(name));
            Ok(())
        }
        Err(Errno::EEXIST) => Ok(()),
        Err(source) => Err(ModuleError::Load {
            name: name.to_string(),
            path,
            source,
        }),
    }
}

/// Unloads a module this agent loaded; a failure is logged (the module may
/// be in use by now).
pub fn unload(name: &str) {
    let Ok(c) = CString::new(name) else { return };
    if let Err(e) = delete_module(&c, DeleteModuleFlags::O_NONBLOCK) {
        log::warn!("kernel module {name:?}: unload: {}", e.desc());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_parameters_come_from_the_command_line() {
        let cmdline = "console=hvc0 scsi_mod.scan=none quiet scsi-mod.max_luns=4 \
            virtio_blk.foo=\"a b\" sd_mod.x=1 scsi_mod. agent.log=debug";
        assert_eq!(cmdline_params(cmdline, "scsi_mod"), "scan=none max_luns=4");
        assert_eq!(cmdline_params(cmdline, "scsi-mod"), "scan=none max_luns=4");
        assert_eq!(cmdline_params(cmdline, "virtio_blk"), "foo=a b");
        assert_eq!(cmdline_params(cmdline, "virtio"), "");
        assert_eq!(cmdline_params(cmdline, "agent"), "log=debug");
    }

    #[test]
    fn entries_keep_order_and_the_running_release_only() {
        let text = "# load order\n\
            6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio.ko\n\
            \n\
            6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko\n\
            6.1.0-9-cloud-amd64/kernel/fs/fuse/fuse.ko\n\
              6.1.0-56-cloud-amd64/kernel/net/vmw_vsock/vsock.ko  \n";
        let got = entries(text, "6.1.0-56-cloud-amd64");
        assert_eq!(
            got,
            [
                "6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio.ko",
                "6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko",
                "6.1.0-56-cloud-amd64/kernel/net/vmw_vsock/vsock.ko",
            ]
            .map(PathBuf::from)
        );
        assert!(entries(text, "6.1.55").is_empty());
    }

    #[test]
    fn a_missing_list_loads_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_listed(&dir.path().join("load-order"), "").is_empty());
    }

    #[test]
    fn a_missing_module_names_its_path() {
        let e = load(Path::new("/nonexistent/foo.ko"), "")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("module /nonexistent/foo.ko: "), "{e}");
        assert!(e.contains("ENOENT"), "{e}");
    }

    #[test]
    fn names_are_checked_before_anything_is_looked_up() {
        for (name, why) in [
            ("", "empty"),
            ("../evil", "only letters"),
            ("a b", "only letters"),
            (&"m".repeat(56)[..], "longer than 55"),
        ] {
            let e = load_named(name, &[]).unwrap_err();
            assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{e}");
            assert!(e.to_string().contains(why), "{e}");
        }
        let e = load_named("ok", &["a=\0".to_string()]).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::INVALID_ARGUMENT, "{e}");
    }

    #[test]
    fn an_unknown_module_is_not_found_and_named() {
        let e = load_named("no-such-module-guest-agent", &["x=1".into()]).unwrap_err();
        assert_eq!(e.code(), ttrpc::Code::NOT_FOUND, "{e}");
        assert!(
            e.to_string().starts_with(
                "kernel module \"no-such-module-guest-agent\": not found in /lib/modules/"
            ),
            "{e}"
        );
    }

    #[test]
    fn modules_are_found_by_either_spelling_and_dependencies_read() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("kernel/drivers/virtio");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join("virtio_pci.ko"),
            b"\x7fELF..\0license=GPL\0depends=virtio,virtio_ring\0vermagic=x\0",
        )
        .unwrap();
        std::fs::write(sub.join("vmw-vsock.ko.xz"), b"").unwrap();
        std::fs::write(sub.join("other.kox"), b"").unwrap();
        assert_eq!(
            find_module(dir.path(), "virtio-pci"),
            Some(sub.join("virtio_pci.ko"))
        );
        assert_eq!(
            find_module(dir.path(), "vmw_vsock"),
            Some(sub.join("vmw-vsock.ko.xz"))
        );
        assert_eq!(find_module(dir.path(), "other"), None);
        let data = std::fs::read(sub.join("virtio_pci.ko")).unwrap();
        assert_eq!(depends_of(&data), ["virtio", "virtio_ring"]);
        assert!(depends_of(b"\0depends=\0").is_empty());
        assert!(depends_of(b"nothing").is_empty());
    }
}

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
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

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

/// Loads every module `list` names for the running kernel. A missing list
/// means there is nothing to load. Returns the modules that failed; one that
/// is already loaded or built in is not a failure.
pub fn load_listed(list: &Path) -> Vec<InitError> {
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
    let mut errors = Vec::new();
    for rel in entries(&text, &release) {
        let path = Path::new(MODULES_DIR).join(rel);
        if let Err(e) = load(&path) {
            errors.push(e);
        }
    }
    errors
}

/// Loads one uncompressed `.ko` without parameters.
pub fn load(path: &Path) -> Result<(), InitError> {
    let err = |source| InitError::Module {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    let no_params = CString::default();
    match finit_module(&file, &no_params, ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(load_listed(&dir.path().join("load-order")).is_empty());
    }

    #[test]
    fn a_missing_module_names_its_path() {
        let e = load(Path::new("/nonexistent/foo.ko"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("module /nonexistent/foo.ko: "), "{e}");
        assert!(e.contains("ENOENT"), "{e}");
    }
}

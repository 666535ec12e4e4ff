//! AddSwap and AddSwapPath.
//!
//! Both of Kata's runtimes make the swap area on the host: a file in the
//! sandbox's directory, `mkswap`ed there, hot-plugged as a virtio-blk
//! disk. The Go runtime then sends AddSwap with the disk's PCI path;
//! runtime-rs sends AddSwap when the disk has a PCI path and otherwise
//! AddSwapPath with the disk's node in the guest (`/dev/vdX`, a
//! virtio-mmio disk of Dragonball or Firecracker). So AddSwapPath takes a
//! block device under `/dev/`, and, for a swap file the host placed on a
//! volume the agent mounted, a regular file under `/run/kata-containers/`;
//! anything else is refused: swapping to an arbitrary guest file would
//! let the host have the guest overwrite it.
//!
//! The agent reads the swap signature before it calls `swapon(2)`, so a
//! disk or file without one is refused by name, and `swapon` acts on the
//! descriptor that was checked (`/proc/self/fd/<n>`). A swap area already
//! in use answers OK (a retried request).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{confine, open_checked, proc_fd, Kind, VolumeError, DEVICE_ROOT, VOLUME_ROOT};
use crate::device::pci::PciPath;
use crate::device::{Devices, Target};
use crate::storage::normalize_path;

/// What mkswap writes at the end of the first page.
pub const SIGNATURE: &[u8] = b"SWAPSPACE2";

/// Where AddSwapPath may point: block devices under `devices`, swap
/// files under `files`.
pub struct SwapRoots<'a> {
    pub devices: &'a Path,
    pub files: &'a Path,
}

impl Default for SwapRoots<'static> {
    fn default() -> Self {
        SwapRoots {
            devices: Path::new(DEVICE_ROOT),
            files: Path::new(VOLUME_ROOT),
        }
    }
}

/// AddSwap: waits for the virtio-blk disk at the PCI path `slots` (root
/// bus first), then swaps on it. Blocking. Returns the disk's node.
pub fn add_swap(devices: &Devices, slots: &[u32]) -> Result<PathBuf, VolumeError> {
    let object = format!("swap disk at PCI path {slots:?}");
    let pci = PciPath::from_slots(slots).map_err(|r| VolumeError::invalid(&object, r))?;
    let found = devices
        .wait(&Target::BlkPci(pci.clone()))
        .map_err(|e| VolumeError::Device {
            object: "swap".into(),
            cause: Box::new(e),
        })?;
    let node = devices.node(&found.name);
    let object = format!("swap disk at PCI path {pci} ({})", node.display());
    let file = open_checked(&node, Kind::Block, &object)?;
    swap_on(&file, &node, &object)?;
    Ok(node)
}

/// AddSwapPath: a block device under `roots.devices` or a swap file under
/// `roots.files`. Blocking. Returns the path with symlinks resolved.
pub fn add_swap_path(path: &str, roots: &SwapRoots<'_>) -> Result<PathBuf, VolumeError> {
    let object = format!("swap {path:?}");
    let key = normalize_path(path).map_err(|e| VolumeError::invalid(&object, e.to_string()))?;
    let (root, kind) = if key.starts_with(roots.devices) {
        (roots.devices, Kind::Block)
    } else if key.starts_with(roots.files) {
        (roots.files, Kind::Regular)
    } else {
        return Err(VolumeError::invalid(
            &object,
            format!(
                "neither a device under {}/ nor a swap file under {}/",
                roots.devices.display(),
                roots.files.display()
            ),
        ));
    };
    let real = confine(path, root, &object)?;
    let file = open_checked(&real, kind, &object)?;
    swap_on(&file, &real, &object)?;
    Ok(real)
}

/// Whether the first page of a swap area ends with the signature.
pub fn has_signature(first_page: &[u8]) -> bool {
    first_page.len() > SIGNATURE.len() && first_page.ends_with(SIGNATURE)
}

/// The kernel's page size: the swap header is one page.
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096).max(4096)
}

/// Refuses an area without the signature before the kernel sees it.
fn check_signature(file: &File, page: usize, object: &str) -> Result<(), VolumeError> {
    let mut first = vec![0u8; page];
    file.read_exact_at(&mut first, 0).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            VolumeError::precondition(
                object,
                format!("smaller than one page ({page} bytes): not a swap area"),
            )
        } else {
            VolumeError::io(object, "read the swap header", e)
        }
    })?;
    if !has_signature(&first) {
        return Err(VolumeError::precondition(
            object,
            format!(
                "no swap signature ({} at byte {}): the host must mkswap it first",
                String::from_utf8_lossy(SIGNATURE),
                page - SIGNATURE.len()
            ),
        ));
    }
    Ok(())
}

/// Whether `/proc/swaps` lists `path`.
fn is_active(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/swaps") else {
        return false;
    };
    text.lines().skip(1).any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|f| Path::new(&crate::storage::unescape_octal(f)) == path)
    })
}

/// What a `swapon` errno means here.
fn hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EBUSY) => " (mounted, or held by another user)",
        Some(libc::EINVAL) => {
            " (the kernel refused the swap header, or the file's filesystem cannot hold swap files)"
        }
        Some(libc::EPERM) => {
            " (needs CAP_SYS_ADMIN, or the kernel's limit of swap areas is reached)"
        }
        Some(libc::ENOSYS) => " (the kernel is built without swap support)",
        _ => "",
    }
}

/// Checks the signature, then `swapon(2)` on the open file; `real` is
/// where it is, for `/proc/swaps`.
fn swap_on(file: &File, real: &Path, object: &str) -> Result<(), VolumeError> {
    check_signature(file, page_size(), object)?;
    let path = CString::new(proc_fd(file).as_os_str().as_bytes())
        .map_err(|_| VolumeError::invalid(object, "descriptor path with a nul byte"))?;
    // SAFETY: a NUL-terminated path that lives across the call; no flags.
    if unsafe { libc::swapon(path.as_ptr(), 0) } == 0 {
        log::info!("{object}: now in use as swap");
        return Ok(());
    }
    let e = io::Error::last_os_error();
    let errno = e.raw_os_error();
    if errno == Some(libc::EBUSY) && is_active(real) {
        log::info!("{object}: already in use as swap");
        return Ok(());
    }
    Err(VolumeError::Io {
        object: object.to_owned(),
        op: "swapon".into(),
        cause: e,
        hint: hint(errno),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn err(r: Result<PathBuf, VolumeError>) -> (ttrpc::Code, String) {
        match r {
            // Nothing here may be swapped on: every area these tests make
            // lacks the signature or is not what the call wants.
            Ok(p) => panic!("accepted {}", p.display()),
            Err(e) => (e.code(), e.to_string()),
        }
    }

    #[test]
    fn the_signature_ends_the_first_page() {
        let mut page = vec![0u8; 4096];
        assert!(!has_signature(&page));
        page[4096 - 10..].copy_from_slice(SIGNATURE);
        assert!(has_signature(&page));
        // Elsewhere than at the end of the page does not count.
        let mut early = vec![0u8; 4096];
        early[100..110].copy_from_slice(SIGNATURE);
        assert!(!has_signature(&early));
        assert!(!has_signature(SIGNATURE));
    }

    #[test]
    fn add_swap_path_refuses_before_swapon() -> Result<(), Box<dyn std::error::Error>> {
        let dev = tempfile::tempdir()?;
        let files = tempfile::tempdir()?;
        let dev_root = std::fs::canonicalize(dev.path())?;
        let files_root = std::fs::canonicalize(files.path())?;
        let roots = SwapRoots {
            devices: &dev_root,
            files: &files_root,
        };
        // A file without the signature, one smaller than a page, a
        // directory, a regular file where a device is expected.
        std::fs::write(files_root.join("zeros"), vec![0u8; 64 * 1024])?;
        std::fs::write(files_root.join("tiny"), b"SWAPSPACE2")?;
        std::fs::create_dir(files_root.join("dir"))?;
        std::fs::write(dev_root.join("vdb"), vec![0u8; 64 * 1024])?;
        let p = |root: &Path, name: &str| root.join(name).to_string_lossy().into_owned();
        for (path, code, why) in [
            (
                p(&files_root, "zeros"),
                ttrpc::Code::FAILED_PRECONDITION,
                "no swap signature (SWAPSPACE2 at byte",
            ),
            (
                p(&files_root, "tiny"),
                ttrpc::Code::FAILED_PRECONDITION,
                "smaller than one page",
            ),
            (
                p(&files_root, "dir"),
                ttrpc::Code::INVALID_ARGUMENT,
                "is not a regular file",
            ),
            (
                p(&dev_root, "vdb"),
                ttrpc::Code::INVALID_ARGUMENT,
                "is not a block device",
            ),
            (
                p(&files_root, "missing"),
                ttrpc::Code::NOT_FOUND,
                "no such file",
            ),
            (
                "/etc/passwd".into(),
                ttrpc::Code::INVALID_ARGUMENT,
                "neither a device under",
            ),
            (
                format!("{}/../etc/passwd", files_root.display()),
                ttrpc::Code::INVALID_ARGUMENT,
                "\"..\"",
            ),
            (
                "swapfile".into(),
                ttrpc::Code::INVALID_ARGUMENT,
                "not an absolute path",
            ),
        ] {
            let (c, msg) = err(add_swap_path(&path, &roots));
            assert_eq!(c, code, "{path}: {msg}");
            assert!(msg.contains(why), "{path}: {msg}");
            assert!(msg.starts_with(&format!("swap {path:?}: ")), "{msg}");
        }
        // A symlink out of the files root, into the device root.
        std::os::unix::fs::symlink(dev_root.join("vdb"), files_root.join("out"))?;
        let (c, msg) = err(add_swap_path(&p(&files_root, "out"), &roots));
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
        assert!(msg.contains("through a symlink, outside"), "{msg}");
        Ok(())
    }

    /// A sysfs with a virtio-blk disk `vdb` behind the root port in slot 6,
    /// and a `/dev` where its node is a regular file.
    fn fake_guest() -> Result<(tempfile::TempDir, tempfile::TempDir), Box<dyn std::error::Error>> {
        let sys = tempfile::tempdir()?;
        let port = sys
            .path()
            .join(crate::device::pci::ROOT_BUS_DIR)
            .join("0000:00:06.0");
        std::fs::create_dir_all(port.join("pci_bus/0000:01"))?;
        std::fs::create_dir_all(port.join("0000:01:00.0/virtio3/block/vdb"))?;
        std::fs::create_dir_all(sys.path().join("class/block"))?;
        std::fs::create_dir_all(sys.path().join("bus/pci"))?;
        let dev = tempfile::tempdir()?;
        std::fs::write(dev.path().join("vdb"), vec![0u8; 8192])?;
        Ok((sys, dev))
    }

    #[test]
    fn add_swap_names_the_pci_path_and_the_cause() -> Result<(), Box<dyn std::error::Error>> {
        let (sys, dev) = fake_guest()?;
        let devices = Devices::with_roots(
            sys.path().to_path_buf(),
            std::fs::canonicalize(dev.path())?,
            Duration::from_millis(20),
        );
        let (c, msg) = err(add_swap(&devices, &[]));
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
        assert_eq!(msg, "swap disk at PCI path []: empty PCI path");
        let (c, msg) = err(add_swap(&devices, &[0x20, 0]));
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT);
        assert!(msg.contains("PCI slot 0x20 out of range"), "{msg}");
        // Nothing in slot 7: the wait times out naming the device.
        let (c, msg) = err(add_swap(&devices, &[7, 0]));
        assert_eq!(c, ttrpc::Code::DEADLINE_EXCEEDED, "{msg}");
        assert!(
            msg.starts_with("swap: virtio-blk device at PCI path 07/00: not found"),
            "{msg}"
        );
        // The disk in slot 6 is found; its node here is no block device.
        let (c, msg) = err(add_swap(&devices, &[6, 0]));
        assert_eq!(c, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
        assert!(msg.starts_with("swap disk at PCI path 06/00 ("), "{msg}");
        assert!(msg.ends_with("vdb is not a block device"), "{msg}");
        Ok(())
    }

    #[test]
    fn hints_name_what_the_errno_means() {
        assert!(hint(Some(libc::EBUSY)).contains("mounted"));
        assert!(hint(Some(libc::EINVAL)).contains("swap header"));
        assert_eq!(hint(Some(libc::EIO)), "");
        let e = VolumeError::Io {
            object: "swap \"/dev/vdb\"".into(),
            op: "swapon".into(),
            cause: io::Error::from_raw_os_error(libc::EBUSY),
            hint: hint(Some(libc::EBUSY)),
        };
        assert_eq!(
            e.to_string(),
            "swap \"/dev/vdb\": swapon: device or resource busy (mounted, or held by another user)"
        );
        assert_eq!(e.code(), ttrpc::Code::FAILED_PRECONDITION);
    }
}

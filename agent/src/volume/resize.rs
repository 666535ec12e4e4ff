//! ResizeVolume: an ext4 filesystem grown online, as `resize2fs` does it
//! for a mounted filesystem, without the binary.
//!
//! The volume's guest path is the mount point of a block storage (the Go
//! runtime sends the storage's `mount_point` for a direct-assigned volume,
//! `/run/kata-containers/sandbox/storage/<...>`). The disk is found from
//! the mount (its source, which must be the block device the filesystem
//! lives on), its size read with `BLKGETSIZE64`, the filesystem's block
//! size and block count from its superblock. The new block count is the
//! requested size or the disk's, whichever is smaller, in whole blocks
//! (0 asks for the whole disk); `EXT4_IOC_RESIZE_FS` on the mount point
//! does the rest. A size below the filesystem's is refused (ext4 does not
//! shrink online), as is every filesystem but ext4.
//!
//! The host enlarges the disk before it asks (QEMU's `block_resize`); the
//! guest learns the new capacity asynchronously, from a virtio config
//! interrupt. So while the disk is smaller than the requested size the
//! agent polls its size, up to `agent.hotplug_timeout`, before it decides.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use super::{confine, open_checked, Kind, VolumeError};
use crate::storage::mounted_at;

/// Where the ext4 superblock starts, and its size.
const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_SIZE: usize = 1024;
const EXT4_SUPER_MAGIC: u16 = 0xEF53;
/// `s_feature_incompat`: block numbers wider than 32 bits.
const INCOMPAT_64BIT: u32 = 0x80;

/// How often the disk's size is read while waiting for it to grow.
const POLL: Duration = Duration::from_millis(50);

/// `_IOW('f', 16, __u64)`: grow a mounted ext4 to a block count.
pub const EXT4_IOC_RESIZE_FS: u32 = nix::request_code_write!(b'f', 16, 8) as u32;
/// `_IOR(0x12, 114, size_t)`: a block device's size in bytes.
pub const BLKGETSIZE64: u32 = nix::request_code_read!(0x12, 114, 8) as u32;

/// What the superblock says about the filesystem's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ext4Super {
    pub block_size: u64,
    pub blocks: u64,
    pub is_64bit: bool,
}

impl Ext4Super {
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size)
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

/// Reads the fields of an ext4 superblock (the 1024 bytes at offset 1024).
pub fn parse_super(sb: &[u8]) -> Result<Ext4Super, String> {
    if sb.len() < SUPERBLOCK_SIZE {
        return Err(format!("superblock of {} bytes", sb.len()));
    }
    let magic = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    if magic != EXT4_SUPER_MAGIC {
        return Err(format!("no ext4 superblock (magic {magic:#06x})"));
    }
    let log = le32(sb, 0x18);
    if log > 6 {
        return Err(format!("block size 2^{} out of range", u64::from(log) + 10));
    }
    let is_64bit = le32(sb, 0x60) & INCOMPAT_64BIT != 0;
    let hi = if is_64bit { le32(sb, 0x150) } else { 0 };
    Ok(Ext4Super {
        block_size: 1024 << log,
        blocks: u64::from(hi) << 32 | u64::from(le32(sb, 0x04)),
        is_64bit,
    })
}

/// What a resize will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Grow { blocks: u64 },
    Unchanged,
}

/// The new block count for `requested` bytes (0: the whole disk) on a
/// disk of `device` bytes holding `sb`.
pub fn plan(
    object: &str,
    requested: u64,
    device: u64,
    sb: &Ext4Super,
) -> Result<Plan, VolumeError> {
    let bs = sb.block_size;
    let current = sb.blocks;
    if requested != 0 && requested / bs < current {
        return Err(VolumeError::invalid(
            object,
            format!(
                "requested {requested} bytes, less than the filesystem's {}: shrinking is not supported",
                sb.bytes()
            ),
        ));
    }
    if requested != 0 && requested / bs == current {
        return Ok(Plan::Unchanged);
    }
    let target = if requested == 0 {
        device
    } else {
        requested.min(device)
    };
    let blocks = target / bs;
    if blocks < current {
        return Err(VolumeError::precondition(
            object,
            format!(
                "the disk holds {device} bytes, less than the filesystem's {}",
                sb.bytes()
            ),
        ));
    }
    if blocks == current {
        if requested == 0 {
            return Ok(Plan::Unchanged);
        }
        return Err(VolumeError::precondition(
            object,
            format!(
                "requested {requested} bytes, but the disk holds {device}, no more than the filesystem: the disk was not enlarged"
            ),
        ));
    }
    if !sb.is_64bit && blocks > u64::from(u32::MAX) {
        return Err(VolumeError::precondition(
            object,
            format!("{blocks} blocks: a filesystem without the 64bit feature holds at most 2^32"),
        ));
    }
    Ok(Plan::Grow { blocks })
}

/// What a resize did, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Grown { from: u64, to: u64 },
    Unchanged { bytes: u64 },
}

/// The size of the block device open as `dev`.
fn device_size(dev: &File, object: &str) -> Result<u64, VolumeError> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which
    // points at a live local; `dev` is an open block device.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), BLKGETSIZE64 as libc::Ioctl, &mut size) };
    if r != 0 {
        return Err(VolumeError::io(
            object,
            "BLKGETSIZE64",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(size)
}

/// What an `EXT4_IOC_RESIZE_FS` errno means here.
fn hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EOPNOTSUPP) => {
            " (the filesystem's layout cannot grow online, e.g. sparse_super2 or no reserved GDT blocks)"
        }
        Some(libc::EROFS) => " (mounted read-only)",
        Some(libc::EBUSY) => " (another resize is in progress)",
        Some(libc::EPERM) => " (needs CAP_SYS_RESOURCE)",
        Some(libc::EINVAL) => " (the kernel refused the new size)",
        _ => "",
    }
}

/// ResizeVolume for the volume mounted at `path` (under `root`); waits
/// up to `wait` for the disk to reach the requested size. Blocking.
pub fn resize(
    path: &str,
    requested: u64,
    root: &Path,
    wait: Duration,
) -> Result<Outcome, VolumeError> {
    let object = format!("volume {path:?}");
    let real = confine(path, root, &object)?;
    let mount = mounted_at(&real)
        .map_err(|e| VolumeError::io(&object, "read /proc/self/mountinfo", e))?
        .ok_or_else(|| VolumeError::NotFound {
            object: object.clone(),
            reason: format!("nothing is mounted at {}", real.display()),
        })?;
    if mount.fstype != "ext4" {
        return Err(VolumeError::precondition(
            &object,
            format!(
                "a {} filesystem: only ext4 is grown online by this agent",
                mount.fstype
            ),
        ));
    }
    let dir = open_checked(&real, Kind::Directory, &object)?;
    let fs_dev = dir
        .metadata()
        .map_err(|e| VolumeError::io(&object, "fstat", e))?
        .dev();
    let source = Path::new(&mount.source);
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(source)
        .map_err(|e| VolumeError::io(&object, format!("open {}", source.display()), e))?;
    let md = dev
        .metadata()
        .map_err(|e| VolumeError::io(&object, "fstat", e))?;
    if !md.file_type().is_block_device() || md.rdev() != fs_dev {
        return Err(VolumeError::precondition(
            &object,
            format!(
                "mount source {} is not the filesystem's block device",
                source.display()
            ),
        ));
    }
    let mut raw = [0u8; SUPERBLOCK_SIZE];
    dev.read_exact_at(&mut raw, SUPERBLOCK_OFFSET)
        .map_err(|e| {
            VolumeError::io(
                &object,
                format!("read the superblock of {}", source.display()),
                e,
            )
        })?;
    let sb = parse_super(&raw)
        .map_err(|r| VolumeError::precondition(&object, format!("{}: {r}", source.display())))?;
    let mut device = device_size(&dev, &object)?;
    if requested / sb.block_size > sb.blocks && device < requested {
        let deadline = Instant::now() + wait;
        while device < requested && Instant::now() < deadline {
            std::thread::sleep(POLL);
            device = device_size(&dev, &object)?;
        }
    }
    let blocks = match plan(&object, requested, device, &sb)? {
        Plan::Unchanged => {
            log::info!("{object}: already {} bytes", sb.bytes());
            return Ok(Outcome::Unchanged { bytes: sb.bytes() });
        }
        Plan::Grow { blocks } => blocks,
    };
    if requested > device {
        log::warn!(
            "{object}: requested {requested} bytes, {} holds {device}: growing to the disk",
            source.display()
        );
    }
    let count: u64 = blocks;
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 through the pointer, which
    // points at a live local; `dir` is an open directory of the
    // filesystem.
    let r = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS as libc::Ioctl, &count) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        let errno = e.raw_os_error();
        return Err(VolumeError::Io {
            object,
            op: format!("grow to {blocks} blocks of {}", sb.block_size),
            cause: e,
            hint: hint(errno),
        });
    }
    let to = blocks.saturating_mul(sb.block_size);
    log::info!("{object}: grown from {} to {to} bytes", sb.bytes());
    Ok(Outcome::Grown {
        from: sb.bytes(),
        to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn sb(block_size: u64, blocks: u64) -> Ext4Super {
        Ext4Super {
            block_size,
            blocks,
            is_64bit: true,
        }
    }

    fn refused(r: Result<Plan, VolumeError>) -> (ttrpc::Code, String) {
        match r {
            Ok(p) => panic!("planned {p:?}"),
            Err(e) => (e.code(), e.to_string()),
        }
    }

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        {
            assert_eq!(EXT4_IOC_RESIZE_FS, 0x4008_6610);
            assert_eq!(BLKGETSIZE64, 0x8008_1272);
        }
    }

    #[test]
    fn grows_to_the_smaller_of_request_and_disk_in_whole_blocks() {
        let fs = sb(4096, 32 * MIB / 4096);
        // Requested less than the disk: the request, rounded down.
        assert_eq!(
            plan("v", 48 * MIB + 100, 64 * MIB, &fs).ok(),
            Some(Plan::Grow {
                blocks: 48 * MIB / 4096
            })
        );
        // Requested more than the disk: the disk.
        assert_eq!(
            plan("v", 128 * MIB, 64 * MIB + 4095, &fs).ok(),
            Some(Plan::Grow {
                blocks: 64 * MIB / 4096
            })
        );
        // 0: the whole disk; 1 KiB blocks.
        let small = sb(1024, 32 * 1024);
        assert_eq!(
            plan("v", 0, 64 * MIB, &small).ok(),
            Some(Plan::Grow { blocks: 64 * 1024 })
        );
        // Already that size, or the whole disk already used.
        assert_eq!(
            plan("v", 32 * MIB, 64 * MIB, &fs).ok(),
            Some(Plan::Unchanged)
        );
        assert_eq!(
            plan("v", 32 * MIB + 4095, 64 * MIB, &fs).ok(),
            Some(Plan::Unchanged)
        );
        assert_eq!(plan("v", 0, 32 * MIB, &fs).ok(), Some(Plan::Unchanged));
    }

    #[test]
    fn refuses_shrinking_and_a_disk_that_did_not_grow() {
        let fs = sb(4096, 32 * MIB / 4096);
        let (code, msg) = refused(plan("volume \"/v\"", 16 * MIB, 64 * MIB, &fs));
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT);
        assert_eq!(
            msg,
            "volume \"/v\": requested 16777216 bytes, less than the filesystem's 33554432: shrinking is not supported"
        );
        let (code, msg) = refused(plan("v", 64 * MIB, 32 * MIB, &fs));
        assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
        assert!(msg.contains("the disk was not enlarged"), "{msg}");
        let (code, msg) = refused(plan("v", 0, 16 * MIB, &fs));
        assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION);
        assert!(
            msg.contains("the disk holds 16777216 bytes, less than"),
            "{msg}"
        );
        let narrow = Ext4Super {
            block_size: 1024,
            blocks: 1024,
            is_64bit: false,
        };
        let (_, msg) = refused(plan("v", 0, 8 << 40, &narrow));
        assert!(msg.contains("without the 64bit feature"), "{msg}");
    }

    fn raw_super(log_block: u32, lo: u32, incompat: u32, hi: u32) -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        b[0x04..0x08].copy_from_slice(&lo.to_le_bytes());
        b[0x18..0x1c].copy_from_slice(&log_block.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&EXT4_SUPER_MAGIC.to_le_bytes());
        b[0x60..0x64].copy_from_slice(&incompat.to_le_bytes());
        b[0x150..0x154].copy_from_slice(&hi.to_le_bytes());
        b
    }

    #[test]
    fn reads_the_superblock() {
        assert_eq!(
            parse_super(&raw_super(2, 8192, 0, 7)),
            Ok(Ext4Super {
                block_size: 4096,
                blocks: 8192,
                is_64bit: false
            }),
            "the high word counts only with the 64bit feature"
        );
        assert_eq!(
            parse_super(&raw_super(0, 5, INCOMPAT_64BIT | 0x2, 1)).map(|s| s.blocks),
            Ok((1 << 32) + 5)
        );
        let mut bad = raw_super(2, 1, 0, 0);
        bad[0x38] = 0;
        assert!(parse_super(&bad)
            .err()
            .unwrap_or_default()
            .contains("no ext4 superblock"));
        assert!(parse_super(&raw_super(9, 1, 0, 0)).is_err());
        assert!(parse_super(&[0u8; 16]).is_err());
    }

    #[test]
    fn resize_refuses_paths_and_what_is_not_a_mounted_ext4(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = std::fs::canonicalize(dir.path())?;
        std::fs::create_dir(root.join("vol"))?;
        let wait = Duration::from_millis(10);
        let vol = root.join("vol").to_string_lossy().into_owned();
        let err = |p: &str| match resize(p, MIB, &root, wait) {
            Ok(o) => panic!("{p}: {o:?}"),
            Err(e) => (e.code(), e.to_string()),
        };
        let (code, msg) = err(&vol);
        assert_eq!(code, ttrpc::Code::NOT_FOUND, "{msg}");
        assert!(msg.contains("nothing is mounted at"), "{msg}");
        let (code, msg) = err("/etc");
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
        let (code, msg) = err(&format!("{vol}/../../etc"));
        assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{msg}");
        assert!(msg.starts_with("volume "), "{msg}");
        Ok(())
    }
}

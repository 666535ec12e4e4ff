//! `/proc/self/mountinfo`: which mounts exist, with mountinfo's escapes
//! undone.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
pub(crate) fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let code = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|c| u8::from_str_radix(c, 8).ok());
            if let Some(b) = code {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of this mount namespace, in mount order.
pub(crate) fn mounts() -> io::Result<Vec<MountInfo>> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < sep + 3 || fields.len() < 5 {
            continue;
        }
        out.push(MountInfo {
            mount_point: PathBuf::from(unescape(fields[4])),
            fstype: fields[sep + 1].to_owned(),
            source: unescape(fields[sep + 2]),
        });
    }
    Ok(out)
}

/// The top-most mount at `path`, if `path` is a mount point.
pub(crate) fn mounted_at(path: &Path) -> io::Result<Option<MountInfo>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.mount_point == path))
}

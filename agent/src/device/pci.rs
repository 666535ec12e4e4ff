//! PCI paths as Kata's runtime names a hot-plugged device: the slot of
//! each bridge from the root bus down, then the device's own slot, in hex,
//! separated by `/` (`02/01`: slot 1 behind the bridge in slot 2 of the
//! root bus; `05/00`: the device behind the root port in slot 5). The
//! function is always 0, as the runtime plugs it.
//!
//! A path is resolved against sysfs one hop at a time: the device at
//! `<bus>:<slot>.0`, and for every hop but the last the bus behind that
//! bridge (its one `pci_bus/` entry).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The root bus every path starts from (domain 0, bus 0).
pub const ROOT_BUS: &str = "0000:00";
/// Where the root bus's devices are in sysfs, relative to the sysfs root.
pub const ROOT_BUS_DIR: &str = "devices/pci0000:00";
/// The highest slot number on a PCI bus.
const MAX_SLOT: u8 = 0x1f;
/// More hops than any real topology has (PCI allows 256 buses).
const MAX_HOPS: usize = 16;

/// A PCI path: slots from the root bus down.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PciPath(Vec<u8>);

impl PciPath {
    /// A path from slot numbers, as AddSwapRequest carries them.
    pub fn from_slots(slots: &[u32]) -> Result<Self, String> {
        if slots.is_empty() {
            return Err("empty PCI path".into());
        }
        if slots.len() > MAX_HOPS {
            return Err(format!(
                "PCI path has {} hops (at most {MAX_HOPS})",
                slots.len()
            ));
        }
        let mut out = Vec::with_capacity(slots.len());
        for &s in slots {
            match u8::try_from(s) {
                Ok(v) if v <= MAX_SLOT => out.push(v),
                _ => {
                    return Err(format!(
                        "PCI slot {s:#x} out of range (at most {MAX_SLOT:#x})"
                    ))
                }
            }
        }
        Ok(Self(out))
    }

    /// The slots, root bus first.
    pub fn slots(&self) -> &[u8] {
        &self.0
    }

    /// The directory of the device in sysfs (`<sysfs>/devices/pci0000:00/
    /// 0000:00:05.0/0000:01:00.0`), reading each bridge's secondary bus.
    /// Fails naming the hop that is missing.
    pub fn resolve(&self, sysfs: &Path) -> Result<PathBuf, ResolveError> {
        self.walk(sysfs, true)
    }

    /// The directory the device has or will have: every bridge on the way
    /// must be there, the device itself need not be (yet).
    pub fn expected(&self, sysfs: &Path) -> Result<PathBuf, ResolveError> {
        self.walk(sysfs, false)
    }

    fn walk(&self, sysfs: &Path, device_too: bool) -> Result<PathBuf, ResolveError> {
        let mut dir = sysfs.join(ROOT_BUS_DIR);
        let mut bus = ROOT_BUS.to_owned();
        for (i, slot) in self.0.iter().enumerate() {
            let last = i + 1 == self.0.len();
            dir.push(format!("{bus}:{slot:02x}.0"));
            if (device_too || !last) && !dir.exists() {
                return Err(ResolveError::Missing {
                    hop: i,
                    looked_for: dir,
                });
            }
            if last {
                break;
            }
            bus = secondary_bus(&dir).map_err(|reason| ResolveError::NotABridge {
                hop: i,
                bridge: dir.clone(),
                reason,
            })?;
        }
        Ok(dir)
    }
}

/// Why a PCI path does not lead to a device (yet).
#[derive(Debug)]
pub enum ResolveError {
    /// Nothing at hop `hop` (0: the root bus).
    Missing { hop: usize, looked_for: PathBuf },
    /// The device at hop `hop` has no single bus behind it.
    NotABridge {
        hop: usize,
        bridge: PathBuf,
        reason: String,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Missing { looked_for, .. } => {
                write!(f, "no device at {}", looked_for.display())
            }
            ResolveError::NotABridge { bridge, reason, .. } => {
                write!(f, "{} is not a bridge: {reason}", bridge.display())
            }
        }
    }
}

/// The bus behind a bridge: its one `pci_bus/<domain>:<bus>` entry.
fn secondary_bus(bridge: &Path) -> Result<String, String> {
    let entries = fs::read_dir(bridge.join("pci_bus")).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "no pci_bus directory".to_owned(),
        _ => format!("read pci_bus: {}", crate::error::describe_io(&e)),
    })?;
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err("no bus behind it".into()),
        many => Err(format!("{} buses behind it", many.len())),
    }
}

impl std::str::FromStr for PciPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty PCI path".into());
        }
        let mut slots = Vec::new();
        for part in s.split('/') {
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "PCI path {s:?}: slot {part:?} is not one or two hex digits"
                ));
            }
            let v = u32::from_str_radix(part, 16).map_err(|e| format!("PCI path {s:?}: {e}"))?;
            slots.push(v);
        }
        Self::from_slots(&slots).map_err(|e| format!("PCI path {s:?}: {e}"))
    }
}

impl fmt::Display for PciPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            write!(f, "{s:02x}")?;
        }
        Ok(())
    }
}

/// Asks the kernel to scan every PCI bus again (`<sysfs>/bus/pci/rescan`):
/// a device whose hot-plug notification was lost is found this way.
pub fn rescan(sysfs: &Path) -> io::Result<()> {
    fs::write(sysfs.join("bus/pci/rescan"), b"1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_kata_paths() {
        let p: PciPath = "05/00".parse().unwrap();
        assert_eq!(p.slots(), &[5, 0]);
        assert_eq!(p.to_string(), "05/00");
        let p: PciPath = "1f".parse().unwrap();
        assert_eq!(p.slots(), &[0x1f]);
        assert_eq!("2/a".parse::<PciPath>().unwrap().to_string(), "02/0a");
    }

    #[test]
    fn refuses_malformed_paths() {
        for bad in ["", "/", "05/", "x1", "20", "123", "05//01", "0g", "05/00/"] {
            let e = bad.parse::<PciPath>().unwrap_err();
            assert!(e.contains("PCI path"), "{bad:?}: {e}");
        }
        let e = PciPath::from_slots(&[6, 0x20]).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        assert!(PciPath::from_slots(&[]).is_err());
        assert!(PciPath::from_slots(&[0; 17]).is_err());
    }

    fn bridge(dir: &Path, bus: &str) {
        fs::create_dir_all(dir.join("pci_bus").join(bus)).unwrap();
    }

    #[test]
    fn resolves_through_bridges_in_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        let root = sys.path().join(ROOT_BUS_DIR);
        let port = root.join("0000:00:05.0");
        bridge(&port, "0000:01");
        let dev = port.join("0000:01:00.0");
        fs::create_dir_all(&dev).unwrap();
        let p: PciPath = "05/00".parse().unwrap();
        assert_eq!(p.resolve(sys.path()).unwrap(), dev);

        // A device directly on the root bus.
        fs::create_dir_all(root.join("0000:00:07.0")).unwrap();
        let p: PciPath = "07".parse().unwrap();
        assert_eq!(p.resolve(sys.path()).unwrap(), root.join("0000:00:07.0"));

        // Nothing plugged behind the port yet: the missing hop is named.
        let p: PciPath = "05/01".parse().unwrap();
        match p.resolve(sys.path()) {
            Err(ResolveError::Missing { hop: 1, looked_for }) => {
                assert!(looked_for.ends_with("0000:01:01.0"), "{looked_for:?}")
            }
            other => panic!("{other:?}"),
        }
        // A device that is not a bridge cannot have a hop behind it.
        let p: PciPath = "07/00".parse().unwrap();
        let e = p.resolve(sys.path()).unwrap_err();
        assert!(e.to_string().contains("is not a bridge"), "{e}");
    }
}

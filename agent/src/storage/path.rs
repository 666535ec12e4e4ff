//! Mount point checks: a path from the host is only used once it is
//! absolute, free of `..`, strictly under an allowed root, and does not
//! leave that root through a symlink in the part that already exists.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// Why a path from the host was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("path contains a nul byte")]
    Nul,
    #[error("not an absolute path")]
    NotAbsolute,
    #[error("path contains a \"..\" component")]
    DotDot,
    #[error("a name longer than {NAME_MAX} bytes")]
    NameTooLong,
    #[error("longer than {} bytes", PATH_MAX - 1)]
    TooLong,
    #[error("not under an allowed root ({0})")]
    NotUnderRoot(String),
    #[error("resolve {0}: {1}")]
    Resolve(String, String),
    #[error("resolves to {0} through a symlink, outside {1}")]
    Escapes(String, String),
}

/// The longest name the kernel takes in a path (`NAME_MAX`).
pub(crate) const NAME_MAX: usize = 255;
/// The longest path the kernel takes, with its terminating NUL (`PATH_MAX`).
pub(crate) const PATH_MAX: usize = 4096;

/// A mount point that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CheckedPath {
    /// The lexically normalized path from the request: the bookkeeping key.
    pub key: PathBuf,
    /// The same path with its existing prefix resolved: where syscalls act.
    pub real: PathBuf,
}

/// Lexical normalization: absolute, no NUL, no `..`, no name or path the
/// kernel would refuse as too long; `.` and repeated or trailing slashes
/// are dropped.
pub(crate) fn normalize(path: &str) -> Result<PathBuf, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.len() >= PATH_MAX {
        return Err(PathError::TooLong);
    }
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir => out.push("/"),
            Component::Normal(n) if n.len() > NAME_MAX => return Err(PathError::NameTooLong),
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(PathError::DotDot),
            Component::Prefix(_) => return Err(PathError::NotAbsolute),
        }
    }
    Ok(out)
}

/// Resolves the longest existing prefix of `path` with `canonicalize` and
/// appends the rest, which does not exist yet and so holds no symlink.
fn resolve_existing_prefix(path: &Path) -> Result<PathBuf, PathError> {
    let mut existing = path;
    loop {
        if fs::symlink_metadata(existing).is_ok() {
            break;
        }
        existing = match existing.parent() {
            Some(p) => p,
            None => break,
        };
    }
    let resolved = fs::canonicalize(existing)
        .map_err(|e| PathError::Resolve(existing.display().to_string(), super::describe_io(&e)))?;
    match path.strip_prefix(existing) {
        Ok(rest) if !rest.as_os_str().is_empty() => Ok(resolved.join(rest)),
        _ => Ok(resolved),
    }
}

/// Checks `mount_point` against `roots` (each already normalized).
pub(super) fn check(mount_point: &str, roots: &[PathBuf]) -> Result<CheckedPath, PathError> {
    let key = normalize(mount_point)?;
    let root = roots
        .iter()
        .find(|r| key.starts_with(r) && key != **r)
        .ok_or_else(|| {
            let list: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
            PathError::NotUnderRoot(list.join(", "))
        })?;
    let real = resolve_existing_prefix(&key)?;
    let real_root = resolve_existing_prefix(root)?;
    if !real.starts_with(&real_root) || real == real_root {
        return Err(PathError::Escapes(
            real.display().to_string(),
            root.display().to_string(),
        ));
    }
    Ok(CheckedPath { key, real })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn normalize_accepts_and_cleans() {
        assert_eq!(
            normalize("/run/kata-containers/shared/containers/").ok(),
            Some(PathBuf::from("/run/kata-containers/shared/containers"))
        );
        assert_eq!(
            normalize("/run//kata-containers/./x").ok(),
            Some(PathBuf::from("/run/kata-containers/x"))
        );
    }

    #[test]
    fn normalize_refuses() {
        for (p, why) in [
            ("", "empty"),
            ("run/kata-containers/x", "absolute"),
            ("./x", "absolute"),
            ("/run/kata-containers/../etc", ".."),
            ("/run/kata-containers/x/..", ".."),
            ("/run/kata\0/x", "nul"),
            (&format!("/run/{}", "n".repeat(NAME_MAX + 1)), "name longer"),
            (
                &format!("/run/{}", "d/".repeat(PATH_MAX / 2)),
                "longer than",
            ),
        ] {
            let err = normalize(p)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(why), "{p:?}: {err:?}");
        }
    }

    #[test]
    fn check_root_membership() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = fs::canonicalize(dir.path())?;
        let roots = vec![root.clone()];
        let inside = root.join("a/b");
        let c = check(&inside.to_string_lossy(), &roots)?;
        assert_eq!(c.key, inside);
        assert_eq!(c.real, inside);
        // The root itself, a sibling with the root as a string prefix, and
        // a path elsewhere are all refused.
        assert!(check(&root.to_string_lossy(), &roots).is_err());
        let sibling = format!("{}x/y", root.display());
        assert!(check(&sibling, &roots)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("not under an allowed root"));
        assert!(check("/etc/x", &roots).is_err());
        Ok(())
    }

    #[test]
    fn check_refuses_symlink_escape() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        let root = fs::canonicalize(dir.path())?;
        let roots = vec![root.clone()];
        symlink(outside.path(), root.join("escape"))?;
        let err = check(&root.join("escape/x").to_string_lossy(), &roots)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("outside"), "{err}");
        // A symlink that stays inside the root is followed.
        fs::create_dir(root.join("real"))?;
        symlink(root.join("real"), root.join("inner"))?;
        let c = check(&root.join("inner/x").to_string_lossy(), &roots)?;
        assert_eq!(c.real, root.join("real/x"));
        assert_eq!(c.key, root.join("inner/x"));
        // A dangling symlink cannot be resolved.
        symlink(root.join("nowhere"), root.join("dangling"))?;
        assert!(check(&root.join("dangling/x").to_string_lossy(), &roots).is_err());
        Ok(())
    }
}

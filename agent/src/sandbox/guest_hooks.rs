//! Guest hooks: OCI hooks the guest image carries under the
//! `guest_hook_path` of CreateSandbox, one folder per kind
//! (`<path>/prestart/`, `<path>/poststart/`, `<path>/poststop/`), as
//! upstream Kata reads them. Each executable regular file there becomes a
//! hook (path `<path>/<kind>/<name>`, arguments `<name> <kind>`) appended
//! to every container's own hooks. A folder that is missing means no hooks
//! of that kind; one that cannot be read is logged and skipped, as
//! upstream does: hooks the image may carry never stop a sandbox.
//!
//! The folder itself is checked first ([`check_dir`]): hooks run as the
//! guest's root, outside any container, so they must come from the guest
//! image, never from `/run/kata-containers`, where the host copies files
//! and the containers' root filesystems lie.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustjail::oci_spec::runtime::{Hook, Hooks, Spec};

/// The kinds of guest hook, as folder names.
const KINDS: [&str; 3] = ["prestart", "poststart", "poststop"];

/// Checks a `guest_hook_path` from the host: absolute, no `..`, no NUL, no
/// over-long name, and neither under `writable` (the run directory) as
/// written nor once its symlinks are resolved. Returns the resolved
/// folder, or `None` when it does not exist (no hooks, as upstream).
pub fn check_dir(path: &str, writable: &Path) -> Result<Option<PathBuf>, String> {
    let key = crate::storage::normalize_path(path).map_err(|e| e.to_string())?;
    let refuse = |p: &Path| {
        format!(
            "{} is under {}, where the host and containers write: guest hooks come from the guest image",
            p.display(),
            writable.display()
        )
    };
    if key.starts_with(writable) {
        return Err(refuse(&key));
    }
    match std::fs::canonicalize(&key) {
        Ok(real) if real.starts_with(writable) => Err(refuse(&real)),
        Ok(real) => Ok(Some(real)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::error::describe_io(&e)),
    }
}

/// The guest hooks under `dir`, or `None` when there is none.
pub fn find(dir: &Path) -> Option<Hooks> {
    let mut found: [Vec<Hook>; 3] = Default::default();
    for (kind, hooks) in KINDS.iter().zip(found.iter_mut()) {
        *hooks = find_kind(dir, kind);
    }
    if found.iter().all(Vec::is_empty) {
        return None;
    }
    let [prestart, poststart, poststop] = found;
    let mut hooks = Hooks::default();
    #[allow(deprecated)]
    hooks.set_prestart(Some(prestart).filter(|h| !h.is_empty()));
    hooks.set_poststart(Some(poststart).filter(|h| !h.is_empty()));
    hooks.set_poststop(Some(poststop).filter(|h| !h.is_empty()));
    Some(hooks)
}

/// The executable files in `dir/kind`, by name.
fn find_kind(dir: &Path, kind: &str) -> Vec<Hook> {
    let folder = dir.join(kind);
    let entries = match std::fs::read_dir(&folder) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            log::warn!("guest hooks {}: {e}", folder.display());
            return Vec::new();
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| {
            // Not followed: a symlink is no hook, as upstream.
            e.file_type().is_ok_and(|t| t.is_file())
                && e.metadata()
                    .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let mut hook = Hook::default();
            hook.set_path(folder.join(&name));
            hook.set_args(Some(vec![name, kind.to_string()]));
            log::info!("guest hook {kind} {}", hook.path().display());
            hook
        })
        .collect()
}

/// Appends the guest hooks to the spec's own, kind by kind.
pub fn append(spec: &mut Spec, guest: &Hooks) {
    let mut hooks = spec.hooks().clone().unwrap_or_default();
    let add = |own: &mut Option<Vec<Hook>>, extra: &Option<Vec<Hook>>| {
        if let Some(extra) = extra.as_ref().filter(|e| !e.is_empty()) {
            own.get_or_insert_with(Vec::new)
                .extend(extra.iter().cloned());
        }
    };
    #[allow(deprecated)]
    add(hooks.prestart_mut(), guest.prestart());
    add(hooks.poststart_mut(), guest.poststart());
    add(hooks.poststop_mut(), guest.poststop());
    spec.set_hooks(Some(hooks));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn exe(path: &Path, mode: u32) {
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn hook_folders_from_the_host_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let writable = root.join("run");
        fs::create_dir_all(writable.join("c/hooks")).unwrap();
        fs::create_dir_all(root.join("image/hooks")).unwrap();
        std::os::unix::fs::symlink(writable.join("c/hooks"), root.join("link")).unwrap();
        let ok = root.join("image/hooks");
        assert_eq!(
            check_dir(&ok.to_string_lossy(), &writable),
            Ok(Some(ok.clone()))
        );
        assert_eq!(check_dir("/no/such/hooks", &writable), Ok(None));
        for bad in [
            "relative/hooks".to_string(),
            format!("{}/../run/c/hooks", ok.display()),
            "/usr/share\0/hooks".to_string(),
            format!("/usr/{}", "n".repeat(256)),
            writable.join("c/hooks").display().to_string(),
            root.join("link").display().to_string(),
        ] {
            assert!(check_dir(&bad, &writable).is_err(), "{bad:?}");
        }
    }

    #[test]
    #[allow(deprecated)]
    fn executables_of_each_kind_are_found_and_appended() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find(dir.path()).is_none());
        for k in KINDS {
            fs::create_dir(dir.path().join(k)).unwrap();
        }
        exe(&dir.path().join("prestart/b"), 0o755);
        exe(&dir.path().join("prestart/a"), 0o700);
        exe(&dir.path().join("prestart/not-exec"), 0o644);
        std::os::unix::fs::symlink("/bin/true", dir.path().join("prestart/link")).unwrap();
        fs::create_dir(dir.path().join("prestart/subdir")).unwrap();
        exe(&dir.path().join("poststop/z"), 0o755);
        let hooks = find(dir.path()).unwrap();
        let pre = hooks.prestart().as_ref().unwrap();
        assert_eq!(pre.len(), 2);
        assert_eq!(pre[0].path(), &dir.path().join("prestart/a"));
        assert_eq!(
            pre[0].args().as_ref().unwrap(),
            &["a".to_string(), "prestart".to_string()]
        );
        assert!(hooks.poststart().is_none());
        assert_eq!(hooks.poststop().as_ref().unwrap().len(), 1);

        let mut spec = Spec::default();
        let mut own = Hooks::default();
        let mut h = Hook::default();
        h.set_path("/own".into());
        own.set_prestart(Some(vec![h]));
        spec.set_hooks(Some(own));
        append(&mut spec, &hooks);
        let got = spec.hooks().as_ref().unwrap();
        let paths: Vec<_> = got
            .prestart()
            .as_ref()
            .unwrap()
            .iter()
            .map(|h| h.path().clone())
            .collect();
        assert_eq!(
            paths,
            [
                "/own".into(),
                dir.path().join("prestart/a"),
                dir.path().join("prestart/b")
            ]
        );
        assert_eq!(got.poststop().as_ref().unwrap().len(), 1);
    }
}

//! Guest hooks: OCI hooks the guest image carries under the
//! `guest_hook_path` of CreateSandbox, one folder per kind
//! (`<path>/prestart/`, `<path>/poststart/`, `<path>/poststop/`), as
//! upstream Kata reads them. Each executable regular file there becomes a
//! hook (path `<path>/<kind>/<name>`, arguments `<name> <kind>`) appended
//! to every container's own hooks. A folder that is missing means no hooks
//! of that kind; one that cannot be read is logged and skipped, as
//! upstream does: hooks the image may carry never stop a sandbox.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustjail::oci_spec::runtime::{Hook, Hooks, Spec};

/// The kinds of guest hook, as folder names.
const KINDS: [&str; 3] = ["prestart", "poststart", "poststop"];

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

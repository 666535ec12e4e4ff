//! OCI hooks: each gets the container state as JSON on stdin and must exit
//! 0 within its timeout. The caller runs prestart, createRuntime,
//! poststart and poststop; the container init runs createContainer and
//! startContainer inside the container's namespaces.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use oci_spec::runtime::Hook;

use crate::error::{Context, SetupError, SetupResult};
use crate::reap::Reap;

/// Hooks without a timeout may run this long.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest a spec may let a hook run: a day.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The OCI state document handed to hooks.
pub(crate) fn state_json(
    id: &str,
    status: &str,
    pid: i32,
    bundle: &Path,
    annotations: Option<&std::collections::HashMap<String, String>>,
) -> String {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations.cloned().unwrap_or_default(),
    })
    .to_string()
}

/// Runs `hooks` in order; the first failure stops the run.
pub(crate) fn run(
    reap: &dyn Reap,
    kind: &str,
    hooks: Option<&Vec<Hook>>,
    state: &str,
) -> SetupResult<()> {
    for hook in hooks.into_iter().flatten() {
        run_one(reap, kind, hook, state)?;
    }
    Ok(())
}

fn run_one(reap: &dyn Reap, kind: &str, hook: &Hook, state: &str) -> SetupResult<()> {
    let path = hook.path();
    let what = || format!("hook {kind} {}", path.display());
    let mut cmd = Command::new(path);
    if let Some(args) = hook.args().as_deref() {
        if let Some((arg0, rest)) = args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().as_deref().unwrap_or_default() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        // A group of its own: a hook that times out goes with everything
        // it started (`sh -c 'sleep 1000; ...'` leaves no `sleep` behind).
        .process_group(0);
    // SAFETY: default_signals calls only async-signal-safe functions.
    unsafe {
        cmd.pre_exec(|| {
            crate::utils::default_signals();
            Ok(())
        });
    }
    let mut child = reap.spawn(&mut cmd).ctx(what)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its state may close stdin early.
        let _ = stdin.write_all(state.as_bytes());
    }
    let timeout = match hook.timeout() {
        Some(t) if t > 0 => Duration::from_secs(t.unsigned_abs()).min(MAX_TIMEOUT),
        _ => DEFAULT_TIMEOUT,
    };
    match child.exit.wait_timeout(Some(timeout)) {
        Some(status) if status.success() => Ok(()),
        Some(status) => Err(SetupError::new(what(), status.to_string())),
        None => {
            // The group's id is the hook's pid; its orphans are the
            // caller's (a subreaper) to collect.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            child.kill();
            let _ = child.exit.wait_timeout(None);
            Err(SetupError::new(
                what(),
                format!("timed out after {} s", timeout.as_secs()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reap::DirectReap;
    use oci_spec::runtime::HookBuilder;

    fn hook(args: &[&str], timeout: Option<i64>) -> Hook {
        let mut b = HookBuilder::default()
            .path("/bin/sh")
            .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.build().unwrap()
    }

    #[test]
    fn hook_gets_state_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("state");
        let script = format!("cat > {}", out.display());
        let hooks = vec![hook(&["sh", "-c", &script], None)];
        let state = state_json("abc", "creating", 42, Path::new("/b"), None);
        run(&DirectReap, "createRuntime", Some(&hooks), &state).unwrap();
        let got: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
        assert_eq!(got["id"], "abc");
        assert_eq!(got["pid"], 42);
        assert_eq!(got["status"], "creating");
    }

    #[test]
    fn failing_and_slow_hooks() {
        let hooks = vec![hook(&["sh", "-c", "exit 3"], None)];
        let err = run(&DirectReap, "poststart", Some(&hooks), "{}")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "hook poststart /bin/sh: exit status: 3");
        let hooks = vec![hook(&["sh", "-c", "sleep 5"], Some(1))];
        let err = run(&DirectReap, "prestart", Some(&hooks), "{}")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "hook prestart /bin/sh: timed out after 1 s");
    }
}

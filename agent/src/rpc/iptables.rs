//! GetIPTables and SetIPTables: the guest's packet filter rules, in the
//! text form of `iptables-save` / `iptables-restore` (and their IPv6
//! twins), which must be in the guest's root filesystem.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use protocols::agent::*;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::{blocking, status, AgentImpl};
use crate::reaper::Reaper;

/// Largest rule set accepted or returned: the ttrpc frame limit is 4 MiB.
const MAX_RULES: usize = 4 * 1024 * 1024 - 4096;

fn tool(ipv6: bool, save: bool) -> &'static str {
    match (ipv6, save) {
        (false, true) => "iptables-save",
        (false, false) => "iptables-restore",
        (true, true) => "ip6tables-save",
        (true, false) => "ip6tables-restore",
    }
}

/// Runs `name` with `input` on stdin through the reaper; returns stdout,
/// or a status naming the tool and what it said.
fn run(reaper: &Reaper, name: &str, input: Option<&[u8]>) -> ttrpc::Result<Vec<u8>> {
    use std::os::unix::process::ExitStatusExt;
    let mut cmd = Command::new(name);
    cmd.env_clear()
        .env("PATH", crate::pid1::PATH)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (mut child, exit) = reaper.spawn(&mut cmd).map_err(|e| {
        let code = if e.kind() == std::io::ErrorKind::NotFound {
            Code::FAILED_PRECONDITION
        } else {
            Code::INTERNAL
        };
        status(code, format!("{name}: {e} (is it in the guest image?)"))
    })?;
    // stderr drains on its own thread so that neither pipe can fill while
    // the other is read.
    let stderr = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            buf
        })
    });
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        // A tool that exits early closes its stdin: its status says why.
        let _ = stdin.write_all(data);
    }
    let mut stdout = Vec::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_end(&mut stdout)
            .map_err(|e| status(Code::INTERNAL, format!("{name}: {e}")))?;
    }
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    let raw = exit.wait_blocking(None).unwrap_or(0);
    let st = std::process::ExitStatus::from_raw(raw);
    if !st.success() {
        return Err(status(
            Code::INVALID_ARGUMENT,
            format!("{name}: {} ({st})", String::from_utf8_lossy(&stderr).trim()),
        ));
    }
    if stdout.len() > MAX_RULES {
        return Err(status(
            Code::RESOURCE_EXHAUSTED,
            format!(
                "{name}: {} bytes of output exceed the frame limit",
                stdout.len()
            ),
        ));
    }
    Ok(stdout)
}

impl AgentImpl {
    pub(super) async fn do_get_ip_tables(
        &self,
        _ctx: &TtrpcContext,
        req: GetIPTablesRequest,
    ) -> ttrpc::Result<GetIPTablesResponse> {
        let reaper = self.sandbox.reaper.clone();
        let data = blocking(move || run(&reaper, tool(req.is_ipv6, true), None)).await??;
        let mut resp = GetIPTablesResponse::new();
        resp.data = data;
        Ok(resp)
    }

    pub(super) async fn do_set_ip_tables(
        &self,
        _ctx: &TtrpcContext,
        req: SetIPTablesRequest,
    ) -> ttrpc::Result<SetIPTablesResponse> {
        let reaper = self.sandbox.reaper.clone();
        let data =
            blocking(move || run(&reaper, tool(req.is_ipv6, false), Some(&req.data))).await??;
        let mut resp = SetIPTablesResponse::new();
        resp.data = data;
        Ok(resp)
    }
}

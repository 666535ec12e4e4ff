//! Processes and their stdio: ExecProcess, SignalProcess, WaitProcess,
//! ReadStdout, ReadStderr, WriteStdin, CloseStdin, TtyWinResize.
//!
//! Output stays in the process's pipe until the host reads it, so nothing a
//! process wrote is lost however late the host reads, and a read cancelled
//! by a disconnecting client consumes nothing.

use std::os::fd::AsFd;
use std::sync::Arc;

use nix::sys::signal::Signal;
use protocols::agent::*;
use protocols::empty::Empty;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::Code;

use super::oci;
use super::{blocking, status, AgentImpl};
use crate::containers::{self, Ctr, ExecParams, Output, Proc};
use crate::reaper::exit_code;

/// Largest ReadStdout answer: the ttrpc frame limit is 4 MiB.
const MAX_READ: usize = 4 * 1024 * 1024 - 4096;

impl AgentImpl {
    /// The process `exec_id` of `cid`; an empty exec id is the init.
    fn proc_of(&self, cid: &str, exec_id: &str) -> ttrpc::Result<(Arc<Ctr>, Arc<Proc>)> {
        let ctr = self.ctr(cid)?;
        let id = if exec_id.is_empty() {
            ctr.init_exec_id.clone()
        } else {
            exec_id.to_string()
        };
        let p = ctr
            .proc(&id)
            .ok_or_else(|| containers::Error::ProcNotFound {
                id: cid.to_string(),
                exec_id: id.clone(),
            })?;
        Ok((ctr, p))
    }

    pub(super) async fn do_exec_process(
        &self,
        _ctx: &TtrpcContext,
        req: ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        let (cid, eid) = (req.container_id, req.exec_id);
        let invalid = |reason: String| containers::Error::Invalid {
            id: cid.clone(),
            reason: format!("exec {eid:?}: {reason}"),
        };
        let p_pb = req
            .process
            .as_ref()
            .ok_or_else(|| invalid("the request has no process".into()))?;
        let process = oci::process_from_proto(p_pb).map_err(|e| invalid(e.to_string()))?;
        let ctr = self.ctr(&cid)?;
        let sandbox = self.sandbox.clone();
        let params = ExecParams {
            exec_id: eid,
            process,
        };
        blocking(move || containers::exec(&sandbox, &ctr, params)).await??;
        Ok(Empty::new())
    }

    pub(super) async fn do_signal_process(
        &self,
        _ctx: &TtrpcContext,
        req: SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        let cid = req.container_id.clone();
        let sig = i32::try_from(req.signal)
            .ok()
            .and_then(|s| Signal::try_from(s).ok())
            .ok_or_else(|| {
                status(
                    Code::INVALID_ARGUMENT,
                    format!("container {cid:?}: invalid signal {}", req.signal),
                )
            })?;
        let (ctr, p) = self.proc_of(&cid, &req.exec_id)?;
        blocking(move || containers::signal(&ctr, &p, sig)).await??;
        Ok(Empty::new())
    }

    pub(super) async fn do_wait_process(
        &self,
        ctx: &TtrpcContext,
        req: WaitProcessRequest,
    ) -> ttrpc::Result<WaitProcessResponse> {
        let (ctr, p) = self.proc_of(&req.container_id, &req.exec_id)?;
        let raw = p.wait().await;
        // The status is delivered once (then the exec may be released):
        // not to a client that has gone.
        if crate::peer::hung_up(ctx) {
            return Err(status(
                Code::CANCELLED,
                format!(
                    "container {:?}: process {:?}: wait: the client hung up",
                    req.container_id, p.exec_id
                ),
            ));
        }
        p.set_waited();
        ctr.release_if_finished(&p.exec_id);
        let mut resp = WaitProcessResponse::new();
        resp.status = exit_code(raw);
        Ok(resp)
    }

    /// One read (see [`containers::output`]); the end is OUT_OF_RANGE, as
    /// the shims expect.
    async fn read_stream(
        &self,
        ctx: &TtrpcContext,
        req: ReadStreamRequest,
        which: Output,
    ) -> ttrpc::Result<ReadStreamResponse> {
        let (ctr, p) = self.proc_of(&req.container_id, &req.exec_id)?;
        let len = match req.len as usize {
            0 => 64 * 1024,
            n => n.min(MAX_READ),
        };
        let wanted = || !crate::peer::hung_up(ctx);
        match containers::output::read(&ctr, &p, which, len, &wanted).await? {
            Some(data) => {
                let mut resp = ReadStreamResponse::new();
                resp.data = data;
                Ok(resp)
            }
            None => Err(status(
                Code::OUT_OF_RANGE,
                format!(
                    "container {:?}: process {:?}: {}: EOF",
                    req.container_id,
                    p.exec_id,
                    which.name()
                ),
            )),
        }
    }

    pub(super) async fn do_read_stdout(
        &self,
        ctx: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        self.read_stream(ctx, req, Output::Stdout).await
    }

    pub(super) async fn do_read_stderr(
        &self,
        ctx: &TtrpcContext,
        req: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        self.read_stream(ctx, req, Output::Stderr).await
    }

    pub(super) async fn do_write_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: WriteStreamRequest,
    ) -> ttrpc::Result<WriteStreamResponse> {
        let (_ctr, p) = self.proc_of(&req.container_id, &req.exec_id)?;
        let what = || {
            format!(
                "container {:?}: process {:?}: stdin",
                req.container_id, p.exec_id
            )
        };
        let mut guard = p.stdin.lock().await;
        if req.data.is_empty() {
            // Empty data is the host's EOF.
            guard.take();
            return Ok(WriteStreamResponse::new());
        }
        let tx = guard
            .as_ref()
            .ok_or_else(|| status(Code::FAILED_PRECONDITION, format!("{}: closed", what())))?;
        tx.write_all(&req.data)
            .await
            .map_err(|e| status(Code::FAILED_PRECONDITION, format!("{}: write: {e}", what())))?;
        let mut resp = WriteStreamResponse::new();
        resp.len = u32::try_from(req.data.len()).unwrap_or(u32::MAX);
        Ok(resp)
    }

    pub(super) async fn do_close_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: CloseStdinRequest,
    ) -> ttrpc::Result<Empty> {
        let (_ctr, p) = self.proc_of(&req.container_id, &req.exec_id)?;
        p.stdin.lock().await.take();
        Ok(Empty::new())
    }

    pub(super) async fn do_get_oom_event(
        &self,
        _ctx: &TtrpcContext,
        _req: GetOOMEventRequest,
    ) -> ttrpc::Result<OOMEvent> {
        let cid =
            self.sandbox.oom.next().await.ok_or_else(|| {
                status(Code::UNAVAILABLE, "OOM events: the agent is shutting down")
            })?;
        let mut ev = OOMEvent::new();
        ev.container_id = cid;
        Ok(ev)
    }

    pub(super) async fn do_tty_win_resize(
        &self,
        _ctx: &TtrpcContext,
        req: TtyWinResizeRequest,
    ) -> ttrpc::Result<Empty> {
        let (_ctr, p) = self.proc_of(&req.container_id, &req.exec_id)?;
        let what = || format!("container {:?}: process {:?}", req.container_id, p.exec_id);
        let tty = p.tty.as_ref().ok_or_else(|| {
            status(
                Code::FAILED_PRECONDITION,
                format!("{}: has no terminal to resize", what()),
            )
        })?;
        let rows = u16::try_from(req.row).map_err(|_| {
            status(
                Code::INVALID_ARGUMENT,
                format!("{}: row {} is too large", what(), req.row),
            )
        })?;
        let cols = u16::try_from(req.column).map_err(|_| {
            status(
                Code::INVALID_ARGUMENT,
                format!("{}: column {} is too large", what(), req.column),
            )
        })?;
        rustjail::set_window_size(tty.as_fd(), rows, cols)
            .map_err(|e| status(Code::INTERNAL, format!("{}: resize terminal: {e}", what())))?;
        Ok(Empty::new())
    }
}

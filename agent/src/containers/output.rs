//! Reading a process's stdout or stderr for ReadStdout and ReadStderr.
//!
//! Output stays in the process's pipe until the host reads it, so nothing a
//! process wrote is lost however late the host reads, and a read cancelled
//! by a disconnecting client consumes nothing. Once the process has exited,
//! what is left is still returned, then the end (at the latest
//! [`super::DRAIN_AFTER_EXIT`] after the exit was seen, even while a child of it
//! holds the pipe or terminal open), so that `kubectl exec` and exec probes
//! return. The end of both streams, with WaitProcess, releases an exec.

use super::{Ctr, Error, Output, Proc};

/// Most bytes one read answers, whatever `len` asks for. Each answer is
/// copied three times in the agent (pipe to buffer, buffer to the encoded
/// response, that to the encoded ttrpc frame); at this size the three
/// buffers come from the heap, already mapped and warm in the cache,
/// while 1 MiB answers cost a fresh mapping, 256 page faults and a
/// cache-cold copy for each of them: measured, 128 KiB answers take about
/// half the agent's CPU time per byte of 1 MiB ones.
pub const MAX_ANSWER: usize = 128 * 1024;

/// Reads at most `len` bytes of `which`; `Ok(None)` is the end. `wanted`
/// is asked just before bytes are taken from the pipe: once the client has
/// gone, none are (they would be lost with the answer).
pub async fn read(
    ctr: &Ctr,
    p: &Proc,
    which: Output,
    len: usize,
    wanted: &(dyn Fn() -> bool + Sync),
) -> Result<Option<Vec<u8>>, Error> {
    let slot = match which {
        Output::Stdout => &p.stdout,
        Output::Stderr => &p.stderr,
    };
    let what = format!("process {:?}: {}", p.exec_id, which.name());
    let guard = slot.lock().await;
    let rx = guard.as_ref().ok_or_else(|| Error::StreamClosed {
        id: ctr.id.clone(),
        what: what.clone(),
    })?;
    let read_err = |e| Error::io(&ctr.id, format!("{what}: read"))(e);
    let mut buf = vec![0u8; len.min(MAX_ANSWER)];
    let mut n = loop {
        match p.drain_deadline() {
            Some(deadline) => {
                let until = tokio::time::sleep_until(deadline.into());
                break match rx
                    .read_while(&mut buf, until, wanted)
                    .await
                    .map_err(read_err)?
                {
                    Some(n) => n,
                    // Past the deadline: what the pipe still holds (the
                    // reactor may not have seen it yet), else the end.
                    None if !wanted() => {
                        return Err(read_err(std::io::ErrorKind::ConnectionAborted.into()))
                    }
                    None => match rx.try_read(&mut buf) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                        Err(e) => return Err(read_err(e)),
                    },
                };
            }
            None => {
                if let Some(n) = rx
                    .read_while(&mut buf, p.wait(), wanted)
                    .await
                    .map_err(read_err)?
                {
                    break n;
                }
                // The process exited meanwhile: read on with a deadline.
            }
        }
    };
    if n == 0 {
        drop(guard);
        p.output_done(which);
        ctr.release_if_finished(&p.exec_id);
        return Ok(None);
    }
    // Take what else is already there, without waiting.
    while n < buf.len() {
        match rx.try_read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    buf.truncate(n);
    Ok(Some(buf))
}

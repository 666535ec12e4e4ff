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

/// The buffer a read starts with; it grows while the pipe has more.
const FIRST_READ: usize = 64 * 1024;

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
    // Zeroed as it is used, not up front: most reads find far less than
    // the 1 to 4 MiB a shim may ask for.
    let mut buf = vec![0u8; len.min(FIRST_READ)];
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
    while n < len {
        if n == buf.len() {
            buf.resize(len.min(n.saturating_mul(4)), 0);
        }
        match rx.try_read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    buf.truncate(n);
    Ok(Some(buf))
}

//! StartContainer: the init execs the container process.

use super::error::Error;
use super::Ctr;
use crate::lock::lock;

/// Starts a created container; runs blocking. The container's own lock is
/// the only one held, so other containers are not delayed.
pub fn start(ctr: &Ctr) -> Result<(), Error> {
    lock(&ctr.jail).start()?;
    Ok(())
}

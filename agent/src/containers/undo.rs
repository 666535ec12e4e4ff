//! The rollback of a transaction: each step that changed something
//! registers how to undo it; unless the transaction commits, dropping the
//! guard undoes the steps in reverse order.

/// Undo steps, run newest first on drop unless [`Rollback::commit`] ran.
#[derive(Default)]
pub struct Rollback {
    steps: Vec<Box<dyn FnOnce() + Send>>,
}

impl Rollback {
    pub fn new() -> Rollback {
        Rollback::default()
    }

    /// Registers the undo of the step just done.
    pub fn push(&mut self, undo: impl FnOnce() + Send + 'static) {
        self.steps.push(Box::new(undo));
    }

    /// The transaction succeeded: nothing is undone.
    pub fn commit(mut self) {
        self.steps.clear();
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        while let Some(undo) = self.steps.pop() {
            undo();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn undoes_in_reverse_unless_committed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut r = Rollback::new();
            for i in 0..3 {
                let l = log.clone();
                r.push(move || l.lock().unwrap().push(i));
            }
        }
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);
        let mut r = Rollback::new();
        let l = log.clone();
        r.push(move || l.lock().unwrap().push(9));
        r.commit();
        assert_eq!(log.lock().unwrap().len(), 3);
    }
}

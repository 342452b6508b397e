//! The writer's hold on a replicated engine, renewed in the background (issue 31): every
//! third of the lease's term, so that an idle writer keeps the cell. A renewal that finds
//! the writer fenced poisons the store: it must not write again (docs/ARCHITECTURE.md,
//! "Storage engines").

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};

use super::Inner;
use super::engine::EngineError;

/// The renewing thread; dropping it stops the thread.
pub(crate) struct LeaseHandle {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LeaseHandle {
    /// Starts renewing when the store's engine has a lease; `None` when it has none.
    pub(crate) fn start(inner: &Arc<Inner>) -> std::io::Result<Option<LeaseHandle>> {
        let Some(term) = inner.engine.lease_term() else {
            return Ok(None);
        };
        let every = (term / 3).max(std::time::Duration::from_millis(10));
        let (stop, stopped) = mpsc::channel::<()>();
        let inner = Arc::clone(inner);
        let thread = std::thread::Builder::new()
            .name("kukaku-lease".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    renew(&inner);
                }
            })?;
        Ok(Some(LeaseHandle {
            stop: Some(stop),
            thread: Some(thread),
        }))
    }
}

fn renew(inner: &Inner) {
    match inner.engine.renew() {
        Ok(()) => {}
        Err(e @ EngineError::Fenced(_)) => {
            inner.poison();
            tracing::error!(error = %crate::error::report(&e), "another writer took the cell; store poisoned");
        }
        // A lost connection or a failover: the next renewal or commit tries again.
        Err(e) => {
            tracing::warn!(error = %crate::error::report(&e), "could not renew the writer lease")
        }
    }
}

impl Drop for LeaseHandle {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

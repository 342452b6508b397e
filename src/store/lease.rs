//! The writer's hold on a replicated engine, renewed in the background (issue 31): every
//! third of the lease's term, so that an idle writer keeps the cell. A renewal that finds
//! the writer fenced poisons the store: it must not write again (docs/ARCHITECTURE.md,
//! "Storage engines").

use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};

use super::engine::EngineError;
use super::keyring::KeyError;
use super::{Inner, OpenError, Store};

/// Why an open found that it cannot hold the cell now, but may later: a standby waits and
/// tries again ([`OpenError::standby`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standby {
    /// Another writer holds the cell (its holder, as it named itself) and keeps its lease.
    Held(String),
    /// No leader answers now: between leaders, or the network.
    Unreachable,
}

impl OpenError {
    /// Whether a standby should wait and open again: the cell is held by another writer or
    /// answers no writes now. `None` for every other failure (those need an operator).
    pub fn standby(&self) -> Option<Standby> {
        let engine = match self {
            OpenError::Engine(e) | OpenError::KeyStore(KeyError::Engine(e)) => e,
            _ => return None,
        };
        match engine {
            EngineError::WriterActive(holder) => Some(Standby::Held(holder.clone())),
            e if e.is_transient() => Some(Standby::Unreachable),
            _ => None,
        }
    }
}

impl Store {
    /// Whether this store writes a replicated cell under a lease (one that another writer
    /// may take over: the store is then poisoned, and a server opens it again as a
    /// standby). `false` on the embedded engine.
    pub fn holds_a_lease(&self) -> bool {
        self.inner.engine.lease_term().is_some()
    }
}

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

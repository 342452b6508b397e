//! The engine's connections (made on first use, made again after a failover, several for
//! reads of the latest state) and the reads through one: point reads and paged scans. Every
//! call that blocks on the synchronous client goes through [`off_runtime`].

use std::collections::VecDeque;
use std::sync::Mutex;

use postgres::{Client, NoTls};

use super::{PAGE, PgTarget, pg};
use crate::store::engine::{Dir, EngineError, Pair, Scan};

/// Runs `f`, which blocks on the synchronous client, where that may happen. The client
/// drives a runtime of its own, which tokio refuses to start on a thread that runs one: a
/// store call made from async code (it belongs on the blocking pool, `api::access::blocking`)
/// would panic there. On a multi-threaded runtime `block_in_place` moves the thread out of
/// it (on a blocking-pool thread, where store calls are made, it only runs `f`); on a
/// current-thread runtime (tests) `f` runs on a scoped thread of its own.
pub(super) fn off_runtime<T: Send>(
    f: impl FnOnce() -> Result<T, EngineError> + Send,
) -> Result<T, EngineError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Err(_) => f(),
        Ok(RuntimeFlavor::CurrentThread) => {
            std::thread::scope(|scope| scope.spawn(f).join()).unwrap_or(Err(EngineError::Poisoned))
        }
        Ok(_) => tokio::task::block_in_place(f),
    }
}

pub(super) fn connect(target: &PgTarget) -> Result<Client, EngineError> {
    Client::connect(&target.dsn, NoTls).map_err(pg)
}

/// Connections made on first use and made again after they were lost: after a failover the
/// DSN's `target_session_attrs=read-write` finds the new leader. A statement that fails on
/// a lost connection fails (its caller decides); the next one reconnects. A snapshot's
/// connection is never made again (a new one would not see the snapshot's state). The
/// engine's reads of the latest state have several ([`READERS`]): a statement takes a free
/// one, so concurrent readers (request threads, the writer) do not queue behind one another's
/// round trips.
pub(super) struct Conn {
    slots: Vec<Mutex<Option<Client>>>,
    /// The slot a statement waits for when none is free (round robin).
    next: std::sync::atomic::AtomicUsize,
    reconnect: bool,
}

/// Connections for reads of the latest state (each a PostgreSQL backend, made when first
/// needed: an idle engine holds one or two).
pub(super) const READERS: usize = 8;

impl Conn {
    /// `n` connections, made again after a loss.
    pub(super) fn new(n: usize, first: Option<Client>) -> Self {
        let mut slots: Vec<_> = (1..n.max(1)).map(|_| Mutex::new(None)).collect();
        slots.insert(0, Mutex::new(first));
        Conn {
            slots,
            next: std::sync::atomic::AtomicUsize::new(0),
            reconnect: true,
        }
    }

    /// A snapshot's one connection, never made again.
    pub(super) fn snapshot(client: Client) -> Self {
        let mut conn = Conn::new(1, Some(client));
        conn.reconnect = false;
        conn
    }

    pub(super) fn with<T: Send>(
        &self,
        target: &PgTarget,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send,
    ) -> Result<T, EngineError> {
        off_runtime(|| {
            let mut session = self.session(target)?;
            f(session.client()?).map_err(pg)
        })
    }

    /// A free connection, else the next in turn once it is free; made (again) if it is
    /// missing or lost.
    pub(super) fn session(&self, target: &PgTarget) -> Result<Session<'_>, EngineError> {
        let free = self.slots.iter().find_map(|s| s.try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => {
                let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let slot = self
                    .slots
                    .get(i % self.slots.len())
                    .ok_or(EngineError::Poisoned)?;
                slot.lock().map_err(|_| EngineError::Poisoned)?
            }
        };
        if slot.as_ref().is_none_or(Client::is_closed) {
            if !self.reconnect {
                return Err(EngineError::SnapshotLost);
            }
            *slot = Some(connect(target)?);
        }
        Ok(Session(slot))
    }
}

impl Drop for Conn {
    /// Closing a connection blocks on the client's runtime too (see [`off_runtime`]).
    fn drop(&mut self) {
        let clients: Vec<Client> = self
            .slots
            .iter_mut()
            .filter_map(|s| s.get_mut().ok().and_then(Option::take))
            .collect();
        if !clients.is_empty() {
            let _ = off_runtime(move || {
                drop(clients);
                Ok(())
            });
        }
    }
}

/// A connection in use; a connection found lost when it is put back is dropped, so the
/// next use makes a new one.
pub(super) struct Session<'a>(std::sync::MutexGuard<'a, Option<Client>>);

impl Session<'_> {
    pub(super) fn client(&mut self) -> Result<&mut Client, EngineError> {
        self.0.as_mut().ok_or(EngineError::Poisoned)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.0.as_ref().is_some_and(Client::is_closed) {
            *self.0 = None;
        }
    }
}

/// Reads through one connection: the engine's reader, or a snapshot's own.
pub(super) fn get_on(
    conn: &Conn,
    target: &PgTarget,
    space: &str,
    key: &[u8],
) -> Result<Option<Vec<u8>>, EngineError> {
    let sql = format!(
        "SELECT value FROM {}.kv WHERE space = $1 AND key = $2",
        target.schema
    );
    Ok(conn
        .with(target, |c| c.query_opt(&sql, &[&space, &key]))?
        .map(|r| r.get::<_, Vec<u8>>(0)))
}

/// A scan fetched a page at a time, each page its own statement on the connection.
struct PgScan<'a> {
    conn: &'a Conn,
    target: &'a PgTarget,
    space: String,
    from: Vec<u8>,
    /// Whether `from` itself is still to be returned (the first page).
    inclusive: bool,
    dir: Dir,
    page: VecDeque<Pair>,
    done: bool,
}

impl PgScan<'_> {
    fn fetch(&mut self) -> Result<(), EngineError> {
        let (cmp, order) = match (self.dir, self.inclusive) {
            (Dir::Forward, true) => (">=", "ASC"),
            (Dir::Forward, false) => (">", "ASC"),
            (Dir::Reverse, true) => ("<=", "DESC"),
            (Dir::Reverse, false) => ("<", "DESC"),
        };
        let sql = format!(
            "SELECT key, value FROM {}.kv WHERE space = $1 AND key {cmp} $2
             ORDER BY key {order} LIMIT {PAGE}",
            self.target.schema
        );
        let (space, from) = (&self.space, &self.from);
        let rows = self
            .conn
            .with(self.target, |c| c.query(&sql, &[space, from]))?;
        self.done = (rows.len() as i64) < PAGE;
        self.inclusive = false;
        for row in rows {
            let (k, v): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
            self.from.clone_from(&k);
            self.page.push_back((k.into(), v.into()));
        }
        Ok(())
    }
}

impl Iterator for PgScan<'_> {
    type Item = Result<Pair, EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty()
            && !self.done
            && let Err(e) = self.fetch()
        {
            self.done = true;
            return Some(Err(e));
        }
        self.page.pop_front().map(Ok)
    }
}

pub(super) fn scan_on<'a>(
    conn: &'a Conn,
    target: &'a PgTarget,
    space: String,
    from: &[u8],
    dir: Dir,
) -> Scan<'a> {
    Box::new(PgScan {
        conn,
        target,
        space,
        from: from.to_vec(),
        inclusive: true,
        dir,
        page: VecDeque::new(),
        done: false,
    })
}

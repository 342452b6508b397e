//! A replicated engine: PostgreSQL (issue 31; docs/ARCHITECTURE.md, "Storage engines"), run
//! as a cell by Patroni with synchronous replication, so that a `COMMIT` that returns is on
//! a standby too (`synchronous_commit = on`, `synchronous_mode_strict`).
//!
//! Layout, in a schema of its own (`kukaku` unless told otherwise):
//! - `kv(space, key, value)`, primary key `(space, key)`: every space in one table, the
//!   space the first column of the key. No statement here reads or writes without
//!   `space = $1`, and the [`View`] API cannot express a read without a space, so
//!   per-partition isolation stays structural; one table keeps a group commit over many
//!   partitions one statement per kind of write instead of one per partition.
//!   `bytea` compares bytewise, so the key order is RocksDB's.
//! - `spaces(space)`: the spaces that exist ([`Engine::create_spaces`]).
//! - `writer(id = 1, epoch, holder)`: the writer fence. Opening an engine takes the next
//!   epoch; each commit updates the row where the epoch is still its own, in the commit's
//!   transaction, so a writer whose epoch was taken can never commit again ([`EngineError::Fenced`]).
//!
//! The bytes stored are those RocksDB stores: keys and values of docs/format.md §7.

use std::collections::{BTreeMap, HashSet};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use postgres::Client;

use super::{Dir, Engine, EngineError, Op, Scan, Space, View};
use crate::ledger::PartitionId;
use crate::store::records::partition_cf;

mod conn;
use conn::{Conn, READERS, connect, get_on, off_runtime, scan_on};

/// Rows fetched per round trip of a scan.
const PAGE: i64 = 256;

/// Where a PostgreSQL engine lives: a libpq connection string and the schema.
#[derive(Clone)]
pub struct PgTarget {
    /// e.g. `host=10.0.0.1,10.0.0.2 port=5432,5432 user=kukaku dbname=kukaku
    /// target_session_attrs=read-write` (any libpq form; the password belongs in a
    /// `.pgpass`, not here, but one given here is never logged).
    pub dsn: String,
    /// The schema holding kukaku's tables (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub schema: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("dsn", &"<redacted>")
            .field("schema", &self.schema)
            .finish()
    }
}

/// PostgreSQL behind the seam.
pub struct PostgresEngine {
    target: PgTarget,
    /// Reads of the latest state, [`READERS`] connections (made again after a lost
    /// connection: a failover).
    reader: Conn,
    /// Commits, with the fence (made again likewise).
    writer: Conn,
    /// This writer's epoch (0 for a reader).
    epoch: i64,
    /// Opened to read ([`PostgresEngine::open_reader`]): it takes no epoch and writes
    /// nothing, so it never fences the writer.
    read_only: bool,
    /// How long a commit (or [`PostgresEngine::renew`]) keeps the writer row this writer's.
    lease: Duration,
    /// Spaces known to exist (they are never dropped).
    spaces: RwLock<HashSet<String>>,
}

/// An error a later try may not meet: no SQLSTATE (the connection could not be made or was
/// lost), a connection exception (08), operator intervention (57: shutdown, a failover's
/// restart), insufficient resources (53), or a read-only transaction (a standby reached
/// before it was promoted).
pub(super) fn transient(e: &postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(c) => {
            c == &postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION
                || ["08", "57", "53"]
                    .iter()
                    .any(|class| c.code().starts_with(class))
        }
    }
}

fn pg(e: postgres::Error) -> EngineError {
    EngineError::Postgres(Box::new(e))
}

impl PostgresEngine {
    /// Connects, makes the schema and tables if missing, and takes the writer epoch as
    /// `holder` (fencing any earlier writer).
    pub fn open(target: PgTarget, holder: &str, lease: Lease) -> Result<Self, EngineError> {
        off_runtime(|| Self::open_here(target, holder, lease))
    }

    fn open_here(target: PgTarget, holder: &str, lease: Lease) -> Result<Self, EngineError> {
        if !valid_schema(&target.schema) {
            return Err(EngineError::BadSchema);
        }
        let mut writer = connect(&target)?;
        let (s, sys, keys) = (&target.schema, Space::System.name(), Space::Keys.name());
        writer
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.kv (space text NOT NULL, key bytea NOT NULL,
                     value bytea NOT NULL, PRIMARY KEY (space, key));
                 CREATE TABLE IF NOT EXISTS {s}.spaces (space text PRIMARY KEY);
                 CREATE TABLE IF NOT EXISTS {s}.writer (id int PRIMARY KEY CHECK (id = 1),
                     epoch bigint NOT NULL, holder text NOT NULL,
                     lease_until timestamptz NOT NULL DEFAULT '-infinity');
                 INSERT INTO {s}.writer VALUES (1, 0, '') ON CONFLICT DO NOTHING;
                 INSERT INTO {s}.spaces VALUES ('{sys}'), ('{keys}')
                     ON CONFLICT DO NOTHING;"
            ))
            .map_err(pg)?;
        let epoch = take_epoch(&mut writer, s, holder, lease)?;
        let spaces = writer
            .query(&format!("SELECT space FROM {s}.spaces"), &[])
            .map_err(pg)?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        Ok(PostgresEngine {
            target,
            reader: Conn::new(READERS, None),
            writer: Conn::new(1, Some(writer)),
            epoch,
            read_only: false,
            lease: lease.term,
            spaces: RwLock::new(spaces),
        })
    }

    /// Connects to read an existing instance's schema: no epoch is taken (a serving writer
    /// goes on), and every write is refused ([`EngineError::ReadOnly`]).
    pub fn open_reader(target: PgTarget) -> Result<Self, EngineError> {
        if !valid_schema(&target.schema) {
            return Err(EngineError::BadSchema);
        }
        let reader = Conn::new(READERS, None);
        let sql = format!("SELECT space FROM {}.spaces", target.schema);
        let spaces = reader
            .with(&target, |c| c.query(&sql, &[]))?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        Ok(PostgresEngine {
            target,
            reader,
            writer: Conn::new(1, None),
            epoch: 0,
            read_only: true,
            lease: Duration::ZERO,
            spaces: RwLock::new(spaces),
        })
    }

    /// This writer's epoch.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the engine tests only"))]
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    fn known(&self, space: &Space) -> Result<String, EngineError> {
        let name = space.name();
        let cached = self.spaces.read().is_ok_and(|s| s.contains(&name));
        if cached || self.lookup_space(&name)? {
            return Ok(name);
        }
        Err(match space {
            Space::System => EngineError::NoSystemSpace,
            Space::Partition(p) => EngineError::NoSpace(p.clone()),
            Space::Keys => EngineError::NoKeySpace,
        })
    }

    /// A space another process may have made since this one cached the list.
    fn lookup_space(&self, name: &str) -> Result<bool, EngineError> {
        let s = &self.target.schema;
        let sql = format!("SELECT 1 FROM {s}.spaces WHERE space = $1");
        let found = self
            .reader
            .with(&self.target, |c| c.query_opt(&sql, &[&name]))?
            .is_some();
        if found && let Ok(mut spaces) = self.spaces.write() {
            spaces.insert(name.to_owned());
        }
        Ok(found)
    }
}

/// How a writer holds the cell: for `term` after each commit, another waiting at most
/// `patience` for a holder's term to lapse before giving up.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    /// How long a commit keeps the writer row (another writer waits that long after the
    /// last commit of a holder that stopped).
    pub term: Duration,
    /// How long [`PostgresEngine::open`] waits for another holder's term to lapse.
    pub patience: Duration,
}

/// Takes the next epoch once no other holder's lease is current, waiting at most the
/// lease's patience: the old holder's next commit is then fenced.
fn take_epoch(
    writer: &mut Client,
    s: &str,
    holder: &str,
    lease: Lease,
) -> Result<i64, EngineError> {
    let give_up = Instant::now() + lease.patience;
    loop {
        let mut tx = writer.transaction().map_err(pg)?;
        let row = tx
            .query_one(
                &format!(
                    "SELECT holder, lease_until > now() FROM {s}.writer WHERE id = 1 FOR UPDATE"
                ),
                &[],
            )
            .map_err(pg)?;
        let (current, live): (String, bool) = (row.get(0), row.get(1));
        if !live || current == holder {
            let epoch: i64 = tx
                .query_one(
                    &format!(
                        "UPDATE {s}.writer SET epoch = epoch + 1, holder = $1,
                         lease_until = now() + $2::text::interval WHERE id = 1 RETURNING epoch"
                    ),
                    &[&holder, &interval(lease.term)],
                )
                .map_err(pg)?
                .get(0);
            tx.commit().map_err(pg)?;
            return Ok(epoch);
        }
        drop(tx);
        if Instant::now() >= give_up {
            return Err(EngineError::WriterActive(current));
        }
        std::thread::sleep(
            Duration::from_millis(200).min(lease.term.max(Duration::from_millis(10))),
        );
    }
}

/// A duration as PostgreSQL's interval, in whole milliseconds.
fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

fn valid_schema(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Drop for PostgresEngine {
    /// A writer that closes gives its lease back, so the next one need not wait for it to
    /// lapse (one that crashes holds it for its term). Best effort: the epoch fences anyway.
    fn drop(&mut self) {
        if self.read_only {
            return;
        }
        let s = &self.target.schema;
        let sql =
            format!("UPDATE {s}.writer SET lease_until = '-infinity' WHERE id = 1 AND epoch = $1");
        let epoch = self.epoch;
        if let Err(e) = self
            .writer
            .with(&self.target, |c| c.execute(&sql, &[&epoch]))
        {
            tracing::warn!(error = %crate::error::report(&e), "could not give the writer lease back");
        }
    }
}

impl View for PostgresEngine {
    fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let name = self.known(space)?;
        get_on(&self.reader, &self.target, &name, key)
    }

    fn scan<'a>(&'a self, space: &Space, from: &[u8], dir: Dir) -> Result<Scan<'a>, EngineError> {
        let name = self.known(space)?;
        Ok(scan_on(&self.reader, &self.target, name, from, dir))
    }
}

/// A snapshot: a connection of its own in a repeatable-read, read-only transaction, so every
/// read sees one state of every space; dropping it closes the connection.
struct PgSnapshot<'a> {
    engine: &'a PostgresEngine,
    conn: Conn,
}

impl View for PgSnapshot<'_> {
    fn get(&self, space: &Space, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        let name = self.engine.known(space)?;
        get_on(&self.conn, &self.engine.target, &name, key)
    }

    fn scan<'b>(&'b self, space: &Space, from: &[u8], dir: Dir) -> Result<Scan<'b>, EngineError> {
        let name = self.engine.known(space)?;
        Ok(scan_on(&self.conn, &self.engine.target, name, from, dir))
    }
}

impl Engine for PostgresEngine {
    fn snapshot(&self) -> Result<Box<dyn View + '_>, EngineError> {
        let conn = off_runtime(|| {
            let mut conn = connect(&self.target)?;
            // A repeatable-read transaction takes its snapshot at its first statement, not
            // at BEGIN: the SELECT fixes it now (the contract test found reads of later
            // commits).
            conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1")
                .map_err(pg)?;
            Ok(conn)
        })?;
        // Its connection is never made again: a new one would not see this state.
        Ok(Box::new(PgSnapshot {
            engine: self,
            conn: Conn::snapshot(conn),
        }))
    }

    fn commit(&self, ops: Vec<Op>) -> Result<(), EngineError> {
        off_runtime(|| self.commit_here(ops))
    }

    fn lease_term(&self) -> Option<Duration> {
        (!self.read_only).then_some(self.lease)
    }

    /// Extends this writer's lease (as every commit does): a writer idle for longer than
    /// its lease calls it, or another may take over, and its next commit is fenced.
    fn renew(&self) -> Result<(), EngineError> {
        let s = &self.target.schema;
        let sql = format!(
            "UPDATE {s}.writer SET lease_until = now() + $2::text::interval
             WHERE id = 1 AND epoch = $1"
        );
        let (epoch, term) = (self.epoch, interval(self.lease));
        match self
            .writer
            .with(&self.target, |c| c.execute(&sql, &[&epoch, &term]))?
        {
            1 => Ok(()),
            _ => Err(EngineError::Fenced(self.epoch)),
        }
    }

    fn has_space(&self, p: &PartitionId) -> bool {
        self.known(&Space::Partition(p.clone())).is_ok()
    }

    fn partition_spaces(&self) -> Result<Vec<PartitionId>, EngineError> {
        let sql = format!("SELECT space FROM {}.spaces", self.target.schema);
        let rows = self.reader.with(&self.target, |c| c.query(&sql, &[]))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                let id = name.strip_prefix(crate::store::records::PARTITION_CF_PREFIX)?;
                PartitionId::parse(id).ok()
            })
            .collect())
    }

    fn create_spaces(&self, partitions: &[PartitionId]) -> Result<(), EngineError> {
        if self.read_only {
            return Err(EngineError::ReadOnly);
        }
        let names: Vec<String> = partitions.iter().map(partition_cf).collect();
        let s = &self.target.schema;
        let sql =
            format!("INSERT INTO {s}.spaces SELECT unnest($1::text[]) ON CONFLICT DO NOTHING");
        self.writer
            .with(&self.target, |c| c.execute(&sql, &[&names]))?;
        if let Ok(mut spaces) = self.spaces.write() {
            spaces.extend(names);
        }
        Ok(())
    }

    fn holds_keys(&self) -> bool {
        true
    }

    fn purge_deleted(&self, _spaces: &[Space]) -> Result<(), EngineError> {
        if self.read_only {
            return Err(EngineError::ReadOnly);
        }
        // Dead row versions go at the next vacuum; old copies persist in WAL, standbys and
        // backups whatever kukaku does (docs/keys.md: destroy holds because the KEK is
        // rotated and never in the database).
        let s = &self.target.schema;
        let sql = format!("VACUUM {s}.kv");
        self.writer.with(&self.target, |c| c.batch_execute(&sql))
    }
}

impl PostgresEngine {
    /// [`Engine::commit`] on a thread that may block.
    fn commit_here(&self, ops: Vec<Op>) -> Result<(), EngineError> {
        if self.read_only {
            return Err(EngineError::ReadOnly);
        }
        let s = &self.target.schema;
        let mut resolved = Vec::with_capacity(ops.len());
        for op in ops {
            let space = match &op {
                Op::Put { space, .. }
                | Op::Delete { space, .. }
                | Op::DeleteRange { space, .. } => space,
            };
            resolved.push((self.known(space)?, op));
        }
        let mut session = self.writer.session(&self.target)?;
        let mut tx = session.client()?.transaction().map_err(pg)?;
        let fenced = tx
            .execute(
                &format!(
                    "UPDATE {s}.writer SET lease_until = now() + $2::text::interval
                     WHERE id = 1 AND epoch = $1"
                ),
                &[&self.epoch, &interval(self.lease)],
            )
            .map_err(pg)?;
        if fenced != 1 {
            return Err(EngineError::Fenced(self.epoch));
        }
        let mut puts = BTreeMap::new();
        for (name, op) in resolved {
            match op {
                Op::Put { key, value, .. } => {
                    puts.insert((name, key), value);
                }
                Op::Delete { key, .. } => {
                    write_puts(&mut tx, s, &mut puts)?;
                    tx.execute(
                        &format!("DELETE FROM {s}.kv WHERE space = $1 AND key = $2"),
                        &[&name, &key],
                    )
                    .map_err(pg)?;
                }
                Op::DeleteRange { from, to, .. } => {
                    write_puts(&mut tx, s, &mut puts)?;
                    tx.execute(
                        &format!("DELETE FROM {s}.kv WHERE space = $1 AND key >= $2 AND key < $3"),
                        &[&name, &from, &to],
                    )
                    .map_err(pg)?;
                }
            }
        }
        write_puts(&mut tx, s, &mut puts)?;
        // A connection lost here leaves the outcome unknown: the caller must not answer
        // either way (the writer poisons the store; a reopen reads every head again).
        tx.commit().map_err(|e| EngineError::Unknown(Box::new(e)))
    }
}

/// The puts gathered since the last delete, as one statement (a later put of a key in the
/// batch has replaced an earlier one already).
fn write_puts(
    tx: &mut postgres::Transaction<'_>,
    schema: &str,
    puts: &mut BTreeMap<(String, Vec<u8>), Vec<u8>>,
) -> Result<(), EngineError> {
    if puts.is_empty() {
        return Ok(());
    }
    let mut spaces = Vec::with_capacity(puts.len());
    let mut keys = Vec::with_capacity(puts.len());
    let mut values = Vec::with_capacity(puts.len());
    for ((space, key), value) in std::mem::take(puts) {
        spaces.push(space);
        keys.push(key);
        values.push(value);
    }
    tx.execute(
        &format!(
            "INSERT INTO {schema}.kv (space, key, value)
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[])
             ON CONFLICT (space, key) DO UPDATE SET value = excluded.value"
        ),
        &[&spaces, &keys, &values],
    )
    .map_err(pg)?;
    Ok(())
}

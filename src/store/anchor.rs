//! The acknowledged-size anchor (`<home>/acked.anchor`): each partition's size as of the
//! last durable batch, written outside RocksDB at most once a second by its own thread and
//! once more at a clean close. At open, a partition whose log ends before its anchored size
//! lost acknowledged batches (a truncated or replaced WAL, an older copy of `data/`): the
//! store refuses to open and names the partition and both sizes. RocksDB cannot see this on
//! its own: it tolerates a torn WAL tail, which is what a crash leaves of an unacknowledged
//! batch, and a cut at a record boundary leaves no trace at all.
//!
//! The anchor only ever holds sizes that were durable before it was written, so a crash never
//! makes it ahead of the log. It lags the log by up to [`ANCHOR_INTERVAL`]: a loss confined
//! to the last second before a crash goes unseen here (auditors' state files, the witness's
//! cosignatures and the replica still see it). Partition ids and sizes only; no identifier.
//!
//! Format (docs/format.md §anchor): UTF-8 lines `kukaku-anchor v1`, then `<partition>
//! <size>` in id order, then `sha256 <hex of SHA-256 over every preceding byte>`. Written
//! to a temporary file, synced, renamed over the old one, directory synced.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::ledger::PartitionId;

/// Longest time the anchor lags the log while appends go on.
pub const ANCHOR_INTERVAL: Duration = Duration::from_secs(1);

const MAGIC: &str = "kukaku-anchor v1\n";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    #[error("anchor {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("anchor {path} is damaged at line {line}: {reason}")]
    Damaged {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
}

/// Parses an anchor file's bytes.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<BTreeMap<PartitionId, u64>, AnchorError> {
    let damaged = |line, reason| AnchorError::Damaged {
        path: path.to_owned(),
        line,
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| damaged(0, "not UTF-8"))?;
    let body_end = text
        .rfind("sha256 ")
        .filter(|i| *i == 0 || text.as_bytes().get(i - 1) == Some(&b'\n'))
        .ok_or_else(|| damaged(0, "no checksum line"))?;
    let (body, sum_line) = text.split_at(body_end);
    let want = sum_line
        .strip_prefix("sha256 ")
        .and_then(|s| s.strip_suffix('\n'))
        .ok_or_else(|| damaged(0, "bad checksum line"))?;
    let got = hex(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()).as_ref());
    if want != got {
        return Err(damaged(0, "checksum does not match"));
    }
    let mut lines = body.split_terminator('\n').enumerate();
    if lines.next().map(|(_, l)| l) != MAGIC.strip_suffix('\n') {
        return Err(damaged(1, "not a kukaku anchor"));
    }
    let mut sizes = BTreeMap::new();
    for (i, line) in lines {
        let (p, size) = line
            .split_once(' ')
            .ok_or_else(|| damaged(i + 1, "expected `<partition> <size>`"))?;
        let p = PartitionId::parse(p).map_err(|_| damaged(i + 1, "bad partition id"))?;
        let size = size
            .parse::<u64>()
            .map_err(|_| damaged(i + 1, "bad size"))?;
        if sizes.insert(p, size).is_some() {
            return Err(damaged(i + 1, "partition listed twice"));
        }
    }
    Ok(sizes)
}

/// The file's bytes for `sizes`.
pub fn render(sizes: &BTreeMap<PartitionId, u64>) -> Vec<u8> {
    let mut body = String::from(MAGIC);
    for (p, size) in sizes {
        body.push_str(&format!("{p} {size}\n"));
    }
    let sum = hex(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()).as_ref());
    body.push_str(&format!("sha256 {sum}\n"));
    body.into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the anchor at `path`; `None` if there is none (a new instance, or one made before
/// anchors existed).
pub fn load(path: &Path) -> Result<Option<BTreeMap<PartitionId, u64>>, AnchorError> {
    match std::fs::read(path) {
        Ok(bytes) => parse(path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(AnchorError::Io {
            path: path.to_owned(),
            error,
        }),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("anchor.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[derive(Default)]
struct State {
    sizes: BTreeMap<PartitionId, u64>,
    dirty: bool,
    stop: bool,
}

/// The anchor of an open store: the writer notes durable sizes, a thread writes them.
pub(crate) struct Anchor {
    path: PathBuf,
    state: Mutex<State>,
    wake: Condvar,
}

impl Anchor {
    pub(crate) fn new(path: PathBuf, sizes: BTreeMap<PartitionId, u64>) -> Arc<Anchor> {
        Arc::new(Anchor {
            path,
            state: Mutex::new(State {
                sizes,
                ..State::default()
            }),
            wake: Condvar::new(),
        })
    }

    /// Records that `p` has `size` entries durably. Called after the batch is synced.
    pub(crate) fn note(&self, p: &PartitionId, size: u64) {
        if let Ok(mut s) = self.state.lock() {
            let entry = s.sizes.entry(p.clone()).or_insert(0);
            if size > *entry {
                *entry = size;
                s.dirty = true;
            }
        }
    }

    /// Stops guarding `p`: its copy here was dropped after it moved to another cell.
    pub(crate) fn forget(&self, p: &PartitionId) {
        if let Ok(mut s) = self.state.lock()
            && s.sizes.remove(p).is_some()
        {
            s.dirty = true;
        }
    }

    /// Writes the anchor when it changed, at most once per [`ANCHOR_INTERVAL`], until
    /// `stop`, then once more.
    pub(crate) fn run(&self) {
        loop {
            let (bytes, stop) = {
                let Ok(guard) = self.state.lock() else {
                    return;
                };
                let Ok((mut s, _)) = self
                    .wake
                    .wait_timeout_while(guard, ANCHOR_INTERVAL, |s| !s.stop)
                else {
                    return;
                };
                let bytes = s.dirty.then(|| render(&s.sizes));
                s.dirty = false;
                (bytes, s.stop)
            };
            if let Some(Err(e)) = bytes.map(|b| write_file(&self.path, &b)) {
                // The log is unaffected; only the rollback check lags. Retried next time.
                tracing::warn!(path = %self.path.display(), error = %crate::error::report(&e), "anchor write failed");
                if let Ok(mut s) = self.state.lock() {
                    s.dirty = true;
                }
            }
            if stop {
                return;
            }
        }
    }

    pub(crate) fn stop(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.stop = true;
        }
        self.wake.notify_all();
    }
}

/// The anchor thread of an open store; dropping it writes the last sizes and joins.
pub(crate) struct AnchorHandle {
    anchor: Arc<Anchor>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AnchorHandle {
    pub(crate) fn start(anchor: Arc<Anchor>) -> std::io::Result<AnchorHandle> {
        let a = Arc::clone(&anchor);
        let thread = std::thread::Builder::new()
            .name("kukaku-anchor".into())
            .spawn(move || a.run())?;
        Ok(AnchorHandle {
            anchor,
            thread: Some(thread),
        })
    }
}

impl Drop for AnchorHandle {
    fn drop(&mut self) {
        self.anchor.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PartitionId {
        PartitionId::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Known answer, byte for byte (docs/format.md).
    #[test]
    fn renders_and_parses_the_documented_format() {
        let sizes = BTreeMap::from([(p("380014"), 7), (p("131011"), 12)]);
        let bytes = render(&sizes);
        let text = String::from_utf8(bytes.clone()).unwrap_or_default();
        let body = "kukaku-anchor v1\n131011 12\n380014 7\n";
        let sum = hex(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()).as_ref());
        assert_eq!(text, format!("{body}sha256 {sum}\n"));
        assert_eq!(parse(Path::new("a"), &bytes).ok(), Some(sizes));
        assert_eq!(
            parse(Path::new("a"), &render(&BTreeMap::new())).ok(),
            Some(BTreeMap::new())
        );
    }

    /// Must-fail cases: every damage is refused with its line, never read as fewer sizes.
    #[test]
    fn damaged_anchors_are_refused() {
        let good = render(&BTreeMap::from([(p("131011"), 12)]));
        let mut flipped = good.clone();
        flipped[20] ^= 1;
        let cut = &good[..good.len() - 3];
        let resummed = |body: &str| {
            let sum = hex(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()).as_ref());
            format!("{body}sha256 {sum}\n").into_bytes()
        };
        for (bytes, reason) in [
            (flipped, "checksum does not match"),
            (cut.to_vec(), "bad checksum line"),
            (b"".to_vec(), "no checksum line"),
            (resummed("kukaku-anchor v2\n"), "not a kukaku anchor"),
            (
                resummed("kukaku-anchor v1\n131011\n"),
                "expected `<partition> <size>`",
            ),
            (resummed("kukaku-anchor v1\n13101x 3\n"), "bad partition id"),
            (resummed("kukaku-anchor v1\n131011 -3\n"), "bad size"),
            (
                resummed("kukaku-anchor v1\n131011 3\n131011 4\n"),
                "partition listed twice",
            ),
            (vec![0xff, 0xfe], "not UTF-8"),
        ] {
            match parse(Path::new("a"), &bytes) {
                Err(AnchorError::Damaged { reason: r, .. }) => assert_eq!(r, reason),
                other => panic!("{reason}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_thread_writes_on_change_and_at_stop() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("acked.anchor");
        let handle = AnchorHandle::start(Anchor::new(path.clone(), BTreeMap::new()))
            .unwrap_or_else(|e| panic!("{e}"));
        handle.anchor.note(&p("131011"), 5);
        handle.anchor.note(&p("131011"), 3); // never backwards
        drop(handle);
        assert_eq!(
            load(&path).ok().flatten(),
            Some(BTreeMap::from([(p("131011"), 5)]))
        );
    }
}

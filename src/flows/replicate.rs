//! Flow 5, steps 5-③/5-④: the intermediate's replicator. It pulls each partition's signed
//! feed from the hub and accepts a page only if everything checks:
//!
//! 1. the checkpoint is signed by the pinned hub key under `<hub origin>/<partition>`;
//! 2. the page starts where the last accepted one ended, and (from a non-zero size) the
//!    consistency proof links the old checkpoint to the new one;
//! 3. every header has the right partition and seq and continues the hub's hash chain;
//! 4. the hub's compact range at the old size, extended by the page's leaves, gives the
//!    signed root;
//! 5. every shared body matches its header's commitment.
//!
//! Then the copies (same salt and payload, so the same commitment; own seq, chain and DEK),
//! a forwarding receipt and the new replica state are appended in one batch. A bad page
//! stores nothing; the next attempt starts from the same state, so a crash or a network error
//! leaves neither a gap nor a duplicate.

use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::flows::feed::{FeedEntry, FeedResponse, forwarded_kind};
use crate::ledger::envelope::SALT_LEN;
use crate::ledger::hash::{Hash, chain_next, commitment};
use crate::ledger::merkle::CompactRange;
use crate::ledger::payload::ForwardingReceipt;
use crate::ledger::{Checkpoint, Class, Header, Kind, PartitionId, VerifierKey};
use crate::store::{AppendOptions, NewEntry, ReplicaState, Store};

/// The hub as the intermediate pins it: origin and checkpoint public keys (two while the
/// hub rotates its signing key: either one's signature is accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub origin: String,
    pub public_keys: Vec<[u8; 32]>,
}

impl Upstream {
    /// From any of the hub's partition verifier keys (`<origin>/<partition>+id+key`).
    pub fn from_partition_vkey(vkey: &str) -> Option<Upstream> {
        Self::from_partition_vkeys(&[vkey])
    }

    /// From one or more of the hub's partition verifier keys, all of one origin.
    pub fn from_partition_vkeys(vkeys: &[&str]) -> Option<Upstream> {
        let mut origin = None;
        let mut public_keys = Vec::new();
        for vkey in vkeys {
            let key = VerifierKey::parse(vkey).ok()?;
            let (o, _) = key.name().rsplit_once('/')?;
            if origin.get_or_insert_with(|| o.to_owned()) != o {
                return None;
            }
            public_keys.push(*key.public_key());
        }
        Some(Upstream {
            origin: origin?,
            public_keys,
        })
    }

    /// The pinned key of `p` that `note` claims a signature by (else the first, which then
    /// fails to verify).
    fn key(&self, p: &PartitionId, note: &str) -> Result<VerifierKey, Refusal> {
        let name = format!("{}/{}", self.origin, p);
        let keys: Vec<VerifierKey> = self
            .public_keys
            .iter()
            .filter_map(|k| VerifierKey::new(&name, *k).ok())
            .collect();
        crate::ledger::note::key_for(note, &keys)
            .or(keys.first())
            .cloned()
            .ok_or_else(|| Refusal("pinned hub key is unusable".into()))
    }
}

/// Why a hub answer was refused. Names the check, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hub answer refused: {0}")]
pub struct Refusal(pub String);

fn refuse(why: impl Into<String>) -> Refusal {
    Refusal(why.into())
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicateError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The feed source's own account (the HTTP client's status line or transport error).
    #[error("fetching the feed: {0}")]
    Fetch(String),
    #[error("reading the replica state")]
    ReadState(#[source] crate::store::ReadError),
    #[error("encoding the forwarding receipt")]
    Receipt(#[source] crate::ledger::payload::PayloadError),
    #[error("encoding the replica state")]
    EncodeState(#[source] bincode::error::EncodeError),
    #[error("storing the page")]
    Append(#[source] crate::store::AppendError),
}

/// Where pages come from and cosignatures go: the hub over HTTPS, or a test double.
pub trait FeedSource {
    fn fetch(
        &self,
        partition: &PartitionId,
        from_size: u64,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<u8>, String>> + Send;

    /// Hands the hub its checkpoint with this witness's cosignature added.
    fn post_cosignature(
        &self,
        partition: &PartitionId,
        note: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// A page that passed every check, ready to store.
pub struct Accepted {
    copies: Vec<NewEntry>,
    receipt: ForwardingReceipt,
    state: ReplicaState,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("copies", &self.copies.len())
            .field("hub_to", &self.receipt.hub_to)
            .finish()
    }
}

fn b64(field: &str, text: &str) -> Result<Vec<u8>, Refusal> {
    B64.decode(text)
        .map_err(|_| refuse(format!("{field} is not base64")))
}

/// Checks one page against the last accepted state (`None`: nothing accepted yet).
pub fn verify_page(
    upstream: &Upstream,
    p: &PartitionId,
    state: Option<&ReplicaState>,
    raw: &[u8],
) -> Result<Option<Accepted>, Refusal> {
    let page: FeedResponse =
        serde_json::from_slice(raw).map_err(|_| refuse("feed answer is not a feed page"))?;
    let key = upstream.key(p, &page.checkpoint)?;
    let from = state.map_or(0, |s| s.hub_size);
    if page.partition != p.as_str() {
        return Err(refuse("page is for another partition"));
    }
    if page.from_size != from {
        return Err(refuse("page does not start at the accepted size"));
    }
    let cp = Checkpoint::verify_note(&page.checkpoint, &key)
        .map_err(|e| refuse(format!("checkpoint: {}", crate::error::report(&e))))?;
    if cp.size != page.to_size || page.to_size < from {
        return Err(refuse("checkpoint size does not match the page"));
    }
    if page.to_size == from {
        if !page.entries.is_empty() {
            return Err(refuse("entries beyond the checkpoint"));
        }
        return Ok(None);
    }
    let (mut range, mut chain) = consistent_start(state, &page, &key)?;
    if page.entries.len() as u64 != page.to_size - from {
        return Err(refuse("entry count does not match the checkpoint"));
    }
    let mut copies = Vec::new();
    let mut hub_seqs = Vec::new();
    for (i, e) in page.entries.iter().enumerate() {
        let seq = from + i as u64;
        if let Some(copy) = check_entry(p, seq, e, &mut chain, &mut range)? {
            hub_seqs.push(seq);
            copies.push(copy);
        }
    }
    if range.root() != cp.root {
        return Err(refuse("entries do not hash to the signed root"));
    }
    let receipt = ForwardingReceipt {
        hub_origin: key.name().to_owned(),
        hub_from: from,
        hub_to: page.to_size,
        hub_checkpoint: page.checkpoint.clone(),
        hub_seqs,
    };
    let state = ReplicaState {
        hub_size: page.to_size,
        hub_frontier: range.hashes().iter().map(|h| *h.as_bytes()).collect(),
        hub_chain: *chain.as_bytes(),
        hub_checkpoint: page.checkpoint,
    };
    Ok(Some(Accepted {
        copies,
        receipt,
        state,
    }))
}

/// The tree and chain the page continues: those of the accepted state, once the page's
/// consistency proof shows its checkpoint extends the accepted one; empty ones at the start.
fn consistent_start(
    state: Option<&ReplicaState>,
    page: &FeedResponse,
    key: &VerifierKey,
) -> Result<(CompactRange, Hash), Refusal> {
    let Some(s) = state else {
        return Ok((CompactRange::new(), Hash::from_bytes([0; 32])));
    };
    let old = Checkpoint::verify_note(&s.hub_checkpoint, key).map_err(|e| {
        refuse(format!(
            "stored hub checkpoint: {}",
            crate::error::report(&e)
        ))
    })?;
    let proof = page
        .consistency
        .as_ref()
        .ok_or_else(|| refuse("consistency proof missing"))?;
    if proof.size1 != s.hub_size || proof.size2 != page.to_size {
        return Err(refuse("consistency proof is for other sizes"));
    }
    proof
        .verify_with_key(key, &old.root)
        .map_err(|e| refuse(format!("consistency: {}", crate::error::report(&e))))?;
    let frontier = s
        .hub_frontier
        .iter()
        .map(|h| Hash::from_bytes(*h))
        .collect();
    let range = CompactRange::from_parts(s.hub_size, frontier)
        .map_err(|_| refuse("stored hub frontier is inconsistent"))?;
    Ok((range, Hash::from_bytes(s.hub_chain)))
}

/// One entry of a page at `seq`: its header in place and on the chain, its body (when sent)
/// matching its commitment; extends `chain` and `range`. The copy to store if the kind is
/// forwarded.
fn check_entry(
    p: &PartitionId,
    seq: u64,
    e: &FeedEntry,
    chain: &mut Hash,
    range: &mut CompactRange,
) -> Result<Option<NewEntry>, Refusal> {
    let header = Header::decode(&b64("header", &e.header)?)
        .map_err(|_| refuse(format!("seq {seq}: header does not decode")))?;
    if header.partition != *p || header.seq != seq || e.seq != seq {
        return Err(refuse(format!("seq {seq}: header is not at this position")));
    }
    if header.prev_chain != *chain {
        return Err(refuse(format!("seq {seq}: breaks the hash chain")));
    }
    let leaf = header.leaf_hash();
    *chain = chain_next(chain, &leaf);
    range.append(leaf).map_err(|_| refuse("tree overflow"))?;
    let shared = header.kind.class() == Class::Open || forwarded_kind(header.kind);
    match (&e.salt, &e.payload) {
        (Some(salt), Some(payload)) => {
            let salt: [u8; SALT_LEN] = b64("salt", salt)?
                .try_into()
                .map_err(|_| refuse(format!("seq {seq}: salt length")))?;
            let payload = zeroize::Zeroizing::new(b64("payload", payload)?);
            if commitment(&salt, &payload) != header.commitment {
                return Err(refuse(format!(
                    "seq {seq}: body does not match its commitment"
                )));
            }
            if !forwarded_kind(header.kind) {
                return Ok(None);
            }
            NewEntry::copy(header.kind, header.valid_from, salt, payload.to_vec())
                .map(Some)
                .map_err(|_| refuse(format!("seq {seq}: body too large")))
        }
        (None, None) if !shared => Ok(None),
        _ => Err(refuse(format!("seq {seq}: body missing or unexpected"))),
    }
}

/// Stores an accepted page: copies, receipt and replica state in one batch.
pub async fn store_page(
    store: &Store,
    p: &PartitionId,
    page: Accepted,
) -> Result<u64, ReplicateError> {
    let copies = page.copies.len() as u64;
    let mut entries = page.copies;
    let receipt = page.receipt.encode().map_err(ReplicateError::Receipt)?;
    let day = crate::store::today_days();
    entries.push(
        NewEntry::new(Kind::FORWARDING_RECEIPT, day, None, receipt)
            .map_err(ReplicateError::Append)?,
    );
    let state =
        crate::store::encode_replica_state(&page.state).map_err(ReplicateError::EncodeState)?;
    store
        .append_with_async(
            p,
            entries,
            AppendOptions {
                replica_state: Some(state),
                ..AppendOptions::default()
            },
        )
        .await
        .map_err(ReplicateError::Append)?;
    Ok(copies)
}

/// What one sync of a partition did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub pages: u64,
    pub copies: u64,
    pub hub_size: u64,
    /// Hub entries beyond the replica when the round started (what the first page covered).
    pub behind: u64,
    /// Whether the hub took this witness's cosignature of the last accepted checkpoint
    /// (`None`: nothing new to cosign), and if not, why.
    pub cosigned: Option<Result<(), String>>,
}

/// Pulls and stores pages of one partition until the hub has nothing new, then cosigns the
/// last checkpoint it accepted and hands the cosignature to the hub. The pages are stored
/// whatever the hub does with the cosignature; a failed hand-over is reported, and the next
/// accepted page cosigns again.
pub async fn sync_partition<S: FeedSource>(
    store: &Store,
    source: &S,
    upstream: &Upstream,
    p: &PartitionId,
    limit: u64,
) -> Result<SyncReport, ReplicateError> {
    let mut report = SyncReport::default();
    loop {
        let state = store.replica_state(p).map_err(ReplicateError::ReadState)?;
        let from = state.as_ref().map_or(0, |s| s.hub_size);
        report.hub_size = from;
        let raw = source
            .fetch(p, from, limit)
            .await
            .map_err(ReplicateError::Fetch)?;
        let Some(page) = verify_page(upstream, p, state.as_ref(), &raw)? else {
            if let Some(state) = state.filter(|_| report.pages > 0) {
                report.cosigned = Some(cosign(store, source, p, &state.hub_checkpoint).await);
            }
            return Ok(report);
        };
        if report.pages == 0 {
            report.behind = page.state.hub_size.saturating_sub(from);
        }
        report.hub_size = page.state.hub_size;
        report.copies += store_page(store, p, page).await?;
        report.pages += 1;
    }
}

async fn cosign<S: FeedSource>(
    store: &Store,
    source: &S,
    p: &PartitionId,
    checkpoint: &str,
) -> Result<(), String> {
    let note = store
        .cosign(checkpoint)
        .map_err(|e| crate::error::report(&e))?;
    source.post_cosignature(p, &note).await
}

/// Runs forever: every `interval`, syncs every active partition; on errors backs off
/// (doubling up to `max_backoff`) per round. Refused answers are logged with partition and
/// reason and store nothing.
pub async fn run<S: FeedSource>(
    store: &Store,
    source: &S,
    upstream: &Upstream,
    interval: Duration,
    max_backoff: Duration,
) {
    let mut backoff = interval;
    let mut last_clean = std::time::Instant::now();
    loop {
        let mut failed = false;
        let mut behind = 0u64;
        let partitions = match store.partitions() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %crate::error::report(&e), "replicator: partition registry");
                Vec::new()
            }
        };
        for info in partitions {
            if info.status != crate::store::PartitionStatus::Active {
                continue;
            }
            let synced = sync_partition(store, source, upstream, &info.partition, 100).await;
            if let Ok(r) = &synced {
                behind += r.behind;
                crate::telemetry::partition_gauge(
                    crate::telemetry::PARTITION_REPLICATION_LAG_ENTRIES,
                    &info.partition,
                    r.behind,
                );
            }
            match synced {
                Ok(r) if r.pages > 0 => {
                    tracing::info!(
                        partition = %info.partition,
                        pages = r.pages,
                        copies = r.copies,
                        hub_size = r.hub_size,
                        "replicated"
                    );
                    if let Some(Err(e)) = r.cosigned {
                        tracing::warn!(partition = %info.partition, error = %e, "cosignature not taken");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    failed = true;
                    tracing::error!(partition = %info.partition, error = %crate::error::report(&e), "replication failed");
                }
            }
        }
        if !failed {
            last_clean = std::time::Instant::now();
        }
        metrics::gauge!(crate::telemetry::REPLICATION_LAG_ENTRIES).set(behind as f64);
        metrics::gauge!(crate::telemetry::REPLICATION_LAG_SECONDS)
            .set(last_clean.elapsed().as_secs_f64());
        backoff = if failed {
            (backoff * 2).min(max_backoff)
        } else {
            interval
        };
        tokio::time::sleep(backoff).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{CheckpointSigner, Secret32};
    use crate::ledger::Hash;

    /// While the hub rotates its signing key, an intermediate pinning both keys accepts
    /// notes by either; pinning only the old one refuses notes signed by the new one alone.
    #[test]
    fn pinned_keys_pick_the_one_a_note_is_signed_by() {
        let (old, new) = (Secret32::generate().unwrap(), Secret32::generate().unwrap());
        let p = PartitionId::parse("131011").unwrap();
        let signer =
            |seeds: &[&Secret32]| CheckpointSigner::from_seeds("hub.example", seeds).unwrap();
        let vkey = |s: &Secret32| signer(&[s]).verifier_key(&p).unwrap().to_text();
        let both = Upstream::from_partition_vkeys(&[&vkey(&old), &vkey(&new)]).unwrap();
        let only_old = Upstream::from_partition_vkey(&vkey(&old)).unwrap();
        let root = Hash::from_bytes([7; 32]);
        let dual = signer(&[&old, &new]).sign_checkpoint(&p, 2, root);
        let newer = signer(&[&new]).sign_checkpoint(&p, 3, root);
        for (up, note, ok) in [
            (&both, &dual, true),
            (&both, &newer, true),
            (&only_old, &dual, true),
            (&only_old, &newer, false),
        ] {
            let key = up.key(&p, note).unwrap();
            assert_eq!(Checkpoint::verify_note(note, &key).is_ok(), ok);
        }
        let other = CheckpointSigner::from_seed("other.example", &old).unwrap();
        let elsewhere = other.verifier_key(&p).unwrap().to_text();
        assert!(Upstream::from_partition_vkeys(&[&vkey(&old), &elsewhere]).is_none());
    }
}

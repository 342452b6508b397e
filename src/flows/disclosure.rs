//! A person's disclosure record (本人開示, issue 28 item 6): 番号法 gives each person the right
//! to see who handled their 特定個人情報 and to whom it was provided. For one person of one
//! partition, found through the blind index (the 個人番号 is hashed under the partition's
//! index key, never stored or logged), this lists the person's entries (their households'
//! snapshots and those households' 高額該当 records) and every access record, provision
//! record and forwarding record whose range touches them, each with an RFC 9162 inclusion
//! proof against one signed checkpoint and the record's envelope, so anyone with the
//! partition's verifier key can check that each record is in the log as shown. The request
//! itself is an access record, durable before anything is returned.

use std::collections::BTreeSet;

use base64::Engine as _;
use serde::Serialize;

use crate::crypto::PartitionScope;
use crate::domain::KojinNo;
use crate::flows::import::Importer;
use crate::flows::transmission::Household;
use crate::ledger::payload::{AccessRecord, ProvisionRecord};
use crate::ledger::proof_json::InclusionProofJson;
use crate::ledger::{EnvelopeRef, Kind, PartitionId};
use crate::ledger::{Seq, TreeSize};
use crate::store::{AppendError, IndexKind, KeyError, ReadError, Store};

pub const DISCLOSURE_SCHEMA: &str = "kukaku-disclosure-v1";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DisclosureError {
    /// The 個人番号 is not one (its check digit or form): the value is never echoed.
    #[error("kojin_no: not a valid 個人番号")]
    KojinNo,
    #[error("no entry of this partition holds the person")]
    NotFound,
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error("partition {partition} seq {seq}: record does not decode")]
    Record { partition: PartitionId, seq: u64 },
}

/// One of the person's entries (what was handled): its seq, kind and time.
#[derive(Debug, Clone, Serialize)]
pub struct PersonEntry {
    pub seq: u64,
    pub kind: String,
    pub tx_time_ms: u64,
}

/// One record of who handled the person's entries, or to whom they went.
#[derive(Debug, Clone, Serialize)]
pub struct Handled {
    pub seq: u64,
    /// `access_record` or `provision_record`.
    pub kind: String,
    pub tx_time_ms: u64,
    /// Access: the credential id and its role; provision: the recipient.
    pub who: String,
    pub role: String,
    pub purpose: String,
    pub route: String,
    /// The range of entries the record names.
    pub first_seq: u64,
    pub count: u64,
    /// The record's envelope (base64), whose header the proof's leaf hash is of.
    pub envelope: String,
    pub proof: InclusionProofJson,
}

/// The disclosure record: the person's entries and every record that touched them.
#[derive(Debug, Clone, Serialize)]
pub struct Disclosure {
    pub schema: String,
    pub partition: String,
    /// The signed checkpoint every proof is against, and its size.
    pub checkpoint: String,
    pub tree_size: u64,
    pub entries: Vec<PersonEntry>,
    pub handled: Vec<Handled>,
    /// The access record of this request (written before the answer).
    pub request_seq: u64,
}

/// The person's entries: the snapshots holding them (blind index) and the 高額該当 records of
/// those households. The snapshots are read (to learn the households): the caller's access
/// record covers them.
fn person_entries(
    store: &Store,
    scope: &PartitionScope,
    kojin_no: &str,
) -> Result<BTreeSet<u64>, DisclosureError> {
    let p = scope.partition();
    let token = store.index_key(p)?.token("kojin", kojin_no.as_bytes());
    let snapshots = store.index_seqs(p, IndexKind::Person, &token)?;
    let mut seqs: BTreeSet<u64> = snapshots.iter().copied().collect();
    let mut households = BTreeSet::new();
    for seq in &snapshots {
        let e = store.read_entry(scope, *seq)?;
        let h: Household =
            serde_json::from_slice(&e.payload).map_err(|_| DisclosureError::Record {
                partition: p.clone(),
                seq: *seq,
            })?;
        households.insert(h.setai_no.clone());
    }
    for setai in &households {
        seqs.extend(store.index_seqs(p, IndexKind::Kogaku, setai.as_bytes())?);
    }
    Ok(seqs)
}

/// Whether `[first, first + count)` holds one of `seqs`.
fn touches(seqs: &BTreeSet<u64>, first: u64, count: u64) -> bool {
    seqs.range(first..first.saturating_add(count))
        .next()
        .is_some()
}

/// The disclosure record of the person with `kojin_no` in the scope's partition.
pub fn disclose(
    store: &Store,
    scope: &PartitionScope,
    kojin_no: &str,
    who: &Importer,
) -> Result<Disclosure, DisclosureError> {
    KojinNo::parse(kojin_no).map_err(|_| DisclosureError::KojinNo)?;
    let p = scope.partition();
    let mut seqs = person_entries(store, scope, kojin_no)?;
    if seqs.is_empty() {
        return Err(DisclosureError::NotFound);
    }
    let (entries, records) = scan(store, p, &mut seqs)?;
    let request_seq = record_request(store, p, &seqs, &entries, who)?;
    let tree_size = store
        .checkpoint_sizes(p)?
        .last()
        .copied()
        .unwrap_or(store.size(p)?);
    let mut handled = Vec::new();
    for (seq, raw) in records.into_iter().filter(|(s, _)| *s < tree_size) {
        if let Some(h) = handled_with_proof(store, p, seq, &raw, &seqs, tree_size)? {
            handled.push(h);
        }
    }
    Ok(Disclosure {
        schema: DISCLOSURE_SCHEMA.to_owned(),
        partition: p.to_string(),
        checkpoint: store.checkpoint_at(p, tree_size)?,
        tree_size,
        entries,
        handled,
        request_seq,
    })
}

/// A record's seq and its stored envelope.
type Raw = (u64, Vec<u8>);

fn bad(p: &crate::ledger::PartitionId, seq: u64) -> DisclosureError {
    DisclosureError::Record {
        partition: p.clone(),
        seq,
    }
}

/// One pass over the log in order: the person's entries, growing `seqs` by the flow-4
/// entries that refer to them (a candidate to the household's snapshot, a decision or
/// acknowledgement to the candidate, a confirmation or carry-over to the decision: they show
/// the person's name or months; references point back, so one pass finds them all), and
/// every access and provision record with its envelope.
fn scan(
    store: &Store,
    p: &crate::ledger::PartitionId,
    seqs: &mut BTreeSet<u64>,
) -> Result<(Vec<PersonEntry>, Vec<Raw>), DisclosureError> {
    let mut entries = Vec::new();
    let mut records = Vec::new();
    store.for_each_envelope(p, |seq, raw| {
        let env = EnvelopeRef::decode(raw).map_err(|_| bad(p, seq))?;
        let h = &env.header;
        let refers = h.ref_seq.is_some_and(|r| seqs.contains(&r));
        if refers && crate::flows::decision::FLOW4_KINDS.contains(&h.kind) {
            seqs.insert(seq);
        }
        if seqs.contains(&seq) {
            entries.push(PersonEntry {
                seq,
                kind: h.kind.name().to_owned(),
                tx_time_ms: h.tx_time,
            });
        }
        if matches!(h.kind, Kind::ACCESS_RECORD | Kind::PROVISION_RECORD) {
            records.push((seq, raw.to_vec()));
        }
        Ok::<(), DisclosureError>(())
    })?;
    Ok((entries, records))
}

/// The request's own access record, durable before anything derived is answered.
fn record_request(
    store: &Store,
    p: &crate::ledger::PartitionId,
    seqs: &BTreeSet<u64>,
    entries: &[PersonEntry],
    who: &Importer,
) -> Result<u64, DisclosureError> {
    let (Some(&low), Some(&high)) = (seqs.first(), seqs.last()) else {
        return Err(DisclosureError::NotFound);
    };
    let mut kinds: Vec<u16> = entries
        .iter()
        .filter_map(|e| Kind::from_name(&e.kind))
        .map(Kind::code)
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let rec = who.access("disclosure", kinds, low, high - low + 1);
    let payload = rec.encode().map_err(|_| bad(p, low))?;
    Ok(crate::flows::import::append_record(
        store,
        p,
        Kind::ACCESS_RECORD,
        payload,
    )?)
}

/// The record at `seq` with its envelope and proof, if it touches the person's entries.
fn handled_with_proof(
    store: &Store,
    p: &crate::ledger::PartitionId,
    seq: u64,
    raw: &[u8],
    seqs: &BTreeSet<u64>,
    tree_size: u64,
) -> Result<Option<Handled>, DisclosureError> {
    let Some(draft) = touching(raw, seqs) else {
        return Ok(None);
    };
    let d = draft.map_err(|()| bad(p, seq))?;
    let env = EnvelopeRef::decode(raw).map_err(|_| bad(p, seq))?;
    Ok(Some(Handled {
        seq,
        kind: env.header.kind.name().to_owned(),
        tx_time_ms: env.header.tx_time,
        who: d.who,
        role: d.role,
        purpose: d.purpose,
        route: d.route,
        first_seq: d.first_seq,
        count: d.count,
        envelope: base64::engine::general_purpose::STANDARD.encode(raw),
        proof: store.prove_inclusion(p, Seq(seq), Some(TreeSize(tree_size)))?,
    }))
}

/// What a record says of whom and why, before its proof is added.
struct Draft {
    who: String,
    role: String,
    purpose: String,
    route: String,
    first_seq: u64,
    count: u64,
}

/// The record at `seq` (an access or provision record) if it touches the person's entries.
fn touching(raw: &[u8], seqs: &BTreeSet<u64>) -> Option<Result<Draft, ()>> {
    let Ok(env) = EnvelopeRef::decode(raw) else {
        return Some(Err(()));
    };
    let crate::ledger::envelope::BodyRef::Open { payload, .. } = env.body else {
        return Some(Err(()));
    };
    let draft = if env.header.kind == Kind::ACCESS_RECORD {
        let Ok(a) = AccessRecord::decode(payload) else {
            return Some(Err(()));
        };
        Draft {
            who: a.actor,
            role: a.role,
            purpose: a.purpose,
            route: a.route,
            first_seq: a.first_seq,
            count: a.count,
        }
    } else {
        let Ok(r) = ProvisionRecord::decode(payload) else {
            return Some(Err(()));
        };
        Draft {
            who: r.recipient,
            role: "provision".to_owned(),
            purpose: r.purpose,
            route: r.provider,
            first_seq: r.first_seq,
            count: r.count,
        }
    };
    touches(seqs, draft.first_seq, draft.count).then_some(Ok(draft))
}

//! Flow 5, step 5-②: import a validated transmission into the caller's partition as one
//! atomic batch — a snapshot per household, the derived indexes, the transmission claim and
//! the access record — or nothing.

use crate::crypto::PartitionScope;
use crate::flows::transmission::{self, Context, Encoding, Household, Rejected, Validated};
use crate::ledger::payload::AccessRecord;
use crate::ledger::{Kind, PartitionId};
use crate::store::{
    AppendError, AppendOptions, Claim, IndexKind, KeyError, NewEntry, ReadError, Store,
};

/// Who acts (imports, extracts, decides), for the access records.
#[derive(Debug, Clone)]
pub struct Importer {
    /// Credential id, or `admin-cli`.
    pub actor: String,
    pub role: String,
    pub route: String,
    pub request_id: String,
}

impl Importer {
    /// An access record of this actor: `count` entries from `first_seq` of `kinds`, ok.
    pub fn access(
        &self,
        purpose: &str,
        kinds: Vec<u16>,
        first_seq: u64,
        count: u64,
    ) -> AccessRecord {
        AccessRecord {
            actor: self.actor.clone(),
            role: self.role.clone(),
            route: self.route.clone(),
            purpose: purpose.to_owned(),
            kinds,
            first_seq,
            count,
            result: "ok".into(),
            request_id: self.request_id.clone(),
        }
    }
}

/// Appends an open record (access or provision) to `p` on its own and waits until it is
/// durable: for reads that must be on record before anything derived from them is stored.
pub(crate) fn append_record(
    store: &Store,
    p: &PartitionId,
    kind: Kind,
    payload: Vec<u8>,
) -> Result<u64, AppendError> {
    let day = crate::store::today_days();
    let r = store.append(p, vec![NewEntry::new(kind, day, None, payload)?])?;
    Ok(r.first_seq)
}

/// What [`store_claimed`] stores: the entries, their claim and the access record.
pub(crate) struct Claimed<'a> {
    pub transmission_id: &'a str,
    pub claim: Claim,
    pub access: AccessRecord,
    pub entries: Vec<NewEntry>,
}

/// Stores a validated import's entries with its claim and access record in one batch, or,
/// when a concurrent retry stored it first, answers that earlier result.
pub(crate) fn store_claimed(
    store: &Store,
    partition: &PartitionId,
    c: Claimed<'_>,
) -> Result<ImportOutcome, ImportError> {
    let (claim_id, digest) = (c.claim.id.clone(), c.claim.digest);
    let households = c.claim.households.len() as u64;
    let opts = AppendOptions {
        claim: Some(c.claim),
        access: Some(c.access),
        replica_state: None,
    };
    match store.append_with(partition, c.entries, opts) {
        Ok(r) => Ok(ImportOutcome {
            transmission_id: c.transmission_id.to_owned(),
            households,
            first_seq: r.first_seq,
            count: r.entries.last().map_or(0, |l| l.0 - r.first_seq + 1),
            access_record_seq: r.access_record_seq,
            replayed: false,
            checkpoint: r.checkpoint,
        }),
        Err(AppendError::AlreadyStored { .. }) => {
            let t = store
                .transmission(partition, &claim_id)?
                .ok_or(ImportError::Conflict)?;
            replay(store, partition, c.transmission_id, &t, digest)
        }
        Err(AppendError::Conflict) => Err(ImportError::Conflict),
        Err(e) => Err(ImportError::Append(e)),
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("transmission rejected: {} problem(s)", .0.problems.len())]
    Rejected(Rejected),
    #[error("transmission id already used with different content")]
    Conflict,
    #[error("unknown encoding (declare utf-8 or cp932)")]
    Encoding,
    #[error(transparent)]
    Append(AppendError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("encoding a payload")]
    Encode(#[source] serde_json::Error),
}

/// What an import (or its idempotent replay) answers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportOutcome {
    pub transmission_id: String,
    pub households: u64,
    /// Seqs of the snapshots: `[first_seq, first_seq + count)` (key events may sit between).
    pub first_seq: u64,
    pub count: u64,
    /// Set on the first import; a replay does not know it.
    pub access_record_seq: Option<u64>,
    /// `true` when this answer repeats an earlier identical transmission.
    pub replayed: bool,
    /// A signed checkpoint covering the entries.
    pub checkpoint: String,
}

/// The keyed digest of a transmission's content: identifies a retry without storing a hash
/// an attacker could test guesses against.
fn digest(
    store: &Store,
    p: &PartitionId,
    enc: Encoding,
    setai: &[u8],
    kojin: &[u8],
) -> Result<[u8; 32], KeyError> {
    let key = store.index_key(p)?;
    Ok(key.token_parts(
        "transmission",
        &[
            enc.name().as_bytes(),
            &(setai.len() as u64).to_be_bytes(),
            setai,
            &(kojin.len() as u64).to_be_bytes(),
            kojin,
        ],
    ))
}

fn entry_for(store: &Store, p: &PartitionId, h: &Household) -> Result<NewEntry, ImportError> {
    let correction = h.ido_jiyu == "90";
    let kind = if correction {
        Kind::HOUSEHOLD_CORRECTION
    } else {
        Kind::HOUSEHOLD_SNAPSHOT
    };
    // A correction refers to the latest snapshot of its household.
    let ref_seq = if correction {
        store
            .index_seqs(p, IndexKind::Household, h.setai_no.as_bytes())?
            .last()
            .copied()
    } else {
        None
    };
    let payload = zeroize::Zeroizing::new(serde_json::to_vec(h).map_err(ImportError::Encode)?);
    let valid_from = crate::domain::text::parse_date(&h.ido_date).unwrap_or(0);
    let mut entry = NewEntry::new(kind, valid_from, ref_seq, payload.to_vec())
        .map_err(ImportError::Append)?
        .with_index(IndexKind::Household, h.setai_no.as_bytes().to_vec())
        .map_err(ImportError::Append)?;
    for (kind, token) in person_tokens(store, p, h)? {
        entry = entry.with_index(kind, token).map_err(ImportError::Append)?;
    }
    Ok(entry)
}

/// The derived index keys of a snapshot's persons: the partition's blind index (`I`) and the
/// prefecture's matching tokens (`X`, flow 4). Used at import and by `rebuild-index`.
pub(crate) fn person_tokens(
    store: &Store,
    p: &PartitionId,
    h: &Household,
) -> Result<Vec<(IndexKind, Vec<u8>)>, KeyError> {
    let key = store.index_key(p)?;
    let matching = match crate::domain::InsurerNumber::parse(p.as_str()) {
        Ok(n) => Some(store.matching_key(n.prefecture())?),
        Err(_) => None,
    };
    let mut out = Vec::with_capacity(h.persons.len() * 2);
    for person in &h.persons {
        out.push((
            IndexKind::Person,
            key.token("kojin", person.kojin_no.as_bytes()).to_vec(),
        ));
        if let Some(m) = &matching {
            // Filed under this partition's own key (IndexKey::matching_slot): a destroyed
            // partition's slots cannot be recomputed from the prefecture key.
            let t = m.token("kojin", person.kojin_no.as_bytes());
            out.push((IndexKind::Matching, key.matching_slot(&t).to_vec()));
        }
    }
    Ok(out)
}

/// Validates and stores a transmission (blocking; call from the blocking pool), without the
/// rules that need the partition's earlier snapshots: see [`import_checked`], which the API
/// and the CLI use.
pub fn import(
    store: &Store,
    partition: &PartitionId,
    transmission_id: &str,
    encoding: Encoding,
    setai: &[u8],
    kojin: &[u8],
    who: &Importer,
) -> Result<ImportOutcome, ImportError> {
    let files = Files {
        transmission_id,
        encoding,
        setai,
        kojin,
    };
    let none = std::cell::RefCell::new(Vec::new());
    import_with(
        store,
        partition,
        files,
        &transmission::no_previous,
        &none,
        who,
    )
}

/// [`import`] with the household rules that need the partition's earlier data (issue 27
/// item 6): every member of a household's latest snapshot who had no 喪失 must be sent again.
/// Reading those snapshots takes the partition's scope; the import's access record names
/// them.
pub fn import_checked(
    store: &Store,
    scope: &PartitionScope,
    transmission_id: &str,
    encoding: Encoding,
    setai: &[u8],
    kojin: &[u8],
    who: &Importer,
) -> Result<ImportOutcome, ImportError> {
    let read = std::cell::RefCell::new(Vec::new());
    let previous = |setai_no: &str| -> Option<Vec<zeroize::Zeroizing<String>>> {
        let seq = *store
            .index_seqs(scope.partition(), IndexKind::Household, setai_no.as_bytes())
            .ok()?
            .last()?;
        let e = store.read_entry(scope, seq).ok()?;
        let h: Household = serde_json::from_slice(&e.payload).ok()?;
        read.borrow_mut().push(seq);
        Some(
            h.persons
                .iter()
                .filter(|p| p.soshitsu_date.is_none())
                .map(|p| zeroize::Zeroizing::new(p.kojin_no.clone()))
                .collect(),
        )
    };
    let files = Files {
        transmission_id,
        encoding,
        setai,
        kojin,
    };
    import_with(store, scope.partition(), files, &previous, &read, who)
}

/// A transmission's two files as the caller declared them.
struct Files<'a> {
    transmission_id: &'a str,
    encoding: Encoding,
    setai: &'a [u8],
    kojin: &'a [u8],
}

/// The import itself. `read` collects the seqs of earlier snapshots `previous_members` read,
/// which the import's access record then names.
fn import_with(
    store: &Store,
    partition: &PartitionId,
    files: Files<'_>,
    previous_members: &dyn Fn(&str) -> Option<Vec<zeroize::Zeroizing<String>>>,
    read: &std::cell::RefCell<Vec<u64>>,
    who: &Importer,
) -> Result<ImportOutcome, ImportError> {
    let Files {
        transmission_id,
        encoding,
        setai,
        kojin,
    } = files;
    let known = |id: &str, setai_no: &str| -> bool {
        matches!(store.transmission(partition, id), Ok(Some(t)) if t.households.iter().any(|h| h == setai_no))
    };
    let ctx = Context {
        partition,
        transmission_id,
        encoding,
        correction_target: &known,
        previous_members,
    };
    let digest = digest(store, partition, encoding, setai, kojin)?;
    // A retry of a stored transmission answers before validating again.
    if let Some(t) = store.transmission(partition, transmission_id)? {
        return replay(store, partition, transmission_id, &t, digest);
    }
    let Validated {
        transmission_id,
        households,
    } = transmission::validate(setai, kojin, &ctx).map_err(ImportError::Rejected)?;
    let entries = households
        .iter()
        .map(|h| entry_for(store, partition, h))
        .collect::<Result<Vec<_>, _>>()?;
    let claim = Claim {
        id: transmission_id.clone(),
        digest,
        households: households.iter().map(|h| h.setai_no.clone()).collect(),
    };
    store_claimed(
        store,
        partition,
        Claimed {
            transmission_id: &transmission_id,
            claim,
            access: {
                // The earlier snapshots read for the household rules, if any.
                let seqs = read.borrow();
                match (seqs.iter().min(), seqs.iter().max()) {
                    (Some(&first), Some(&last)) => who.access(
                        "transmission_import",
                        vec![Kind::HOUSEHOLD_SNAPSHOT.code()],
                        first,
                        last - first + 1,
                    ),
                    _ => who.access("transmission_import", Vec::new(), 0, 0),
                }
            },
            entries,
        },
    )
}

/// The answer to a retry of a stored transmission, after checking that its content is the
/// same (keyed digest, constant-time).
pub(crate) fn replay(
    store: &Store,
    p: &PartitionId,
    id: &str,
    t: &crate::store::TransmissionRecord,
    digest: [u8; 32],
) -> Result<ImportOutcome, ImportError> {
    use subtle::ConstantTimeEq;
    if !bool::from(t.digest.ct_eq(&digest)) {
        return Err(ImportError::Conflict);
    }
    let checkpoint = store
        .checkpoint(p)?
        .ok_or_else(|| ImportError::Read(ReadError::UnknownPartition(p.clone())))?;
    Ok(ImportOutcome {
        transmission_id: id.to_owned(),
        households: t.households.len() as u64,
        first_seq: t.first_seq,
        count: t.count,
        access_record_seq: None,
        replayed: true,
        checkpoint,
    })
}

//! Flow 5, step 5-⑤: the 資格履歴ファイル (docs/domain.md §9.6), written by the intermediate's
//! ops-support role from the verified copies. Storing into it is the provision to the
//! 取りまとめ機関, so every export appends a 提供記録 to each partition it covers.
//!
//! The file is deterministic for a given checkpoint: one row per person and validity interval,
//! corrections applied, sorted by 個人番号, `valid_from`, `source_seq`. It holds protected
//! identifiers, so it is only ever returned to the caller (streamed), never written to disk
//! here. The manifest holds no personal data.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use zeroize::Zeroizing;

use crate::crypto::PartitionScope;
use crate::domain::text::{format_date, parse_date};
use crate::flows::transmission::{Household, Person};
use crate::ledger::payload::{ForwardingReceipt, ProvisionRecord};
use crate::ledger::{Kind, PartitionId};
use crate::store::{NewEntry, ReadError, Store};

/// Column names of the 資格履歴ファイル (layout `rireki-v2`: v1's columns, then the
/// household of the snapshot and whether the person heads it; docs/format.md §5c).
pub const RIREKI_HEADER: [&str; 23] = [
    "layout",
    "hokensha_no",
    "kojin_no",
    "kigo",
    "bango",
    "edaban",
    "shimei",
    "shimei_kana",
    "birth_date",
    "sex",
    "shutoku_date",
    "soshitsu_date",
    "soshitsu_jiyu",
    "tekiyo_start",
    "tekiyo_end",
    "futan_wariai",
    "gendo_kubun",
    "shosho_kubun",
    "valid_from",
    "valid_to",
    "source_seq",
    "setai_no",
    "setai_nushi",
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("partition {partition} seq {seq}: a copy has no forwarding receipt after it")]
    Unreceipted { partition: PartitionId, seq: u64 },
    #[error("partition {partition} seq {seq}: snapshot does not decode")]
    Snapshot { partition: PartitionId, seq: u64 },
    #[error("seq {seq}: the forwarding receipt does not decode")]
    Receipt {
        seq: u64,
        #[source]
        error: crate::ledger::payload::PayloadError,
    },
    #[error("the receipt at seq {seq} names {named} copies, {preceding} precede it")]
    ReceiptCount {
        seq: u64,
        named: usize,
        preceding: usize,
    },
    #[error("writing the CSV")]
    Csv(#[from] csv::Error),
    #[error("finishing the CSV")]
    CsvFlush(#[source] std::io::Error),
    #[error("encoding the provision record")]
    ProvisionRecord(#[source] crate::ledger::payload::PayloadError),
    #[error("appending the provision record")]
    Append(#[source] crate::store::AppendError),
}

/// One partition's part of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManifestPartition {
    pub partition: String,
    /// Local seqs covered: `[from_seq, to_seq)`; `to_seq` is the checkpoint size.
    pub from_seq: u64,
    pub to_seq: u64,
    pub checkpoint: String,
    pub rows: u64,
    /// Seq of the 提供記録 this export appended.
    pub provision_record_seq: u64,
}

/// The manifest: no personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub layout: &'static str,
    pub partitions: Vec<ManifestPartition>,
    pub rows: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
}

/// One person in one snapshot.
struct Appearance {
    valid_from: i32,
    source_seq: u64,
    person: Person,
    /// The household of the snapshot and whether the person is its 世帯主.
    setai_no: String,
    head: bool,
}

/// The copies of a partition up to `size`, with the hub seq of each (from the receipts that
/// follow them). Corrections replace the snapshot of the same household and transmission.
fn snapshots(
    store: &Store,
    scope: &PartitionScope,
    size: u64,
) -> Result<Vec<(u64, u64, Household)>, HistoryError> {
    let p = scope.partition();
    let mut pending: Vec<(u64, Household)> = Vec::new();
    let mut out: Vec<(u64, u64, Household)> = Vec::new();
    for seq in 0..size {
        let e = store.read_entry(scope, seq)?;
        match e.header.kind {
            Kind::HOUSEHOLD_SNAPSHOT | Kind::HOUSEHOLD_CORRECTION => {
                let h: Household =
                    serde_json::from_slice(&e.payload).map_err(|_| HistoryError::Snapshot {
                        partition: p.clone(),
                        seq,
                    })?;
                pending.push((seq, h));
            }
            Kind::FORWARDING_RECEIPT => {
                let r = ForwardingReceipt::decode(&e.payload)
                    .map_err(|error| HistoryError::Receipt { seq, error })?;
                if r.hub_seqs.len() != pending.len() {
                    return Err(HistoryError::ReceiptCount {
                        seq,
                        named: r.hub_seqs.len(),
                        preceding: pending.len(),
                    });
                }
                for ((local, h), hub) in pending.drain(..).zip(r.hub_seqs) {
                    out.push((local, hub, h));
                }
            }
            _ => {}
        }
    }
    if let Some((seq, _)) = pending.first() {
        return Err(HistoryError::Unreceipted {
            partition: p.clone(),
            seq: *seq,
        });
    }
    // Corrections: drop the corrected snapshot (same transmission and household).
    let corrected: BTreeSet<(String, String)> = out
        .iter()
        .filter_map(|(_, _, h)| {
            h.teisei_moto
                .as_ref()
                .map(|t| (t.clone(), h.setai_no.clone()))
        })
        .collect();
    out.retain(|(_, _, h)| !corrected.contains(&(h.transmission_id.clone(), h.setai_no.clone())));
    Ok(out)
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

/// Rows of one partition: every interval of every person touched since `since`.
fn rows(
    hokensha_no: &str,
    snaps: &[(u64, u64, Household)],
    since: u64,
) -> Vec<Zeroizing<Vec<String>>> {
    let mut by_person: BTreeMap<String, Vec<Appearance>> = BTreeMap::new();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for (local, hub, h) in snaps {
        let valid_from = parse_date(&h.ido_date).unwrap_or(0);
        // A 擬制世帯主 is not insured: no 資格履歴 of their own (docs/domain.md §4.5).
        for person in h.persons.iter().filter(|p| !p.giji_head) {
            if *local >= since {
                touched.insert(person.kojin_no.clone());
            }
            by_person
                .entry(person.kojin_no.clone())
                .or_default()
                .push(Appearance {
                    valid_from,
                    source_seq: *hub,
                    person: person.clone(),
                    setai_no: h.setai_no.clone(),
                    head: person.zokugara == "01",
                });
        }
    }
    let mut out = Vec::new();
    for (kojin, mut apps) in by_person {
        if !touched.contains(&kojin) {
            continue;
        }
        apps.sort_by_key(|a| (a.valid_from, a.source_seq));
        for (i, a) in apps.iter().enumerate() {
            let valid_to = apps
                .get(i + 1)
                .filter(|next| next.valid_from > a.valid_from)
                .map(|next| format_date(next.valid_from - 1))
                .unwrap_or_default();
            // A later snapshot with the same valid_from supersedes this one entirely.
            if apps
                .get(i + 1)
                .is_some_and(|next| next.valid_from == a.valid_from)
            {
                continue;
            }
            let p = &a.person;
            out.push(Zeroizing::new(vec![
                "rireki-v2".to_owned(),
                hokensha_no.to_owned(),
                p.kojin_no.clone(),
                opt(&p.kigo),
                opt(&p.bango),
                opt(&p.edaban),
                p.shimei.clone(),
                opt(&p.shimei_kana),
                p.birth_date.clone(),
                p.sex.clone(),
                opt(&p.shutoku_date),
                opt(&p.soshitsu_date),
                opt(&p.soshitsu_jiyu),
                opt(&p.tekiyo_start),
                opt(&p.tekiyo_end),
                opt(&p.futan_wariai),
                opt(&p.gendo_kubun),
                opt(&p.shosho_kubun),
                format_date(a.valid_from),
                valid_to,
                a.source_seq.to_string(),
                a.setai_no.clone(),
                if a.head { "1" } else { "0" }.to_owned(),
            ]));
        }
    }
    out
}

/// Who receives the file, for the 提供記録.
#[derive(Debug, Clone)]
pub struct Exporter {
    /// e.g. `ops-support 0001020304050607`. ASCII.
    pub recipient: String,
    pub request_id: String,
}

/// Builds the 資格履歴ファイル of `partitions` since local seq `since`, appends a 提供記録 to
/// each, and returns the file bytes (UTF-8 CSV, CRLF) with the manifest. Blocking.
/// `progress(done, total)` is called per partition.
pub fn export(
    store: &Store,
    scopes: &[PartitionScope],
    since: u64,
    who: &Exporter,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Zeroizing<Vec<u8>>, Manifest), HistoryError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    writer.write_record(RIREKI_HEADER)?;
    let mut parts = Vec::new();
    let mut total_rows = 0u64;
    // Partitions in id order, so the file is deterministic whatever order was asked.
    let mut ordered: Vec<&PartitionScope> = scopes.iter().collect();
    ordered.sort_by(|a, b| a.partition().cmp(b.partition()));
    ordered.dedup_by(|a, b| a.partition() == b.partition());
    let total = ordered.len() as u64;
    progress(0, total);
    for (i, scope) in ordered.into_iter().enumerate() {
        let p: &PartitionId = scope.partition();
        let cp = store
            .checkpoint_parsed(p)?
            .ok_or_else(|| ReadError::UnknownPartition(p.clone()))?;
        let note = store.checkpoint_at(p, cp.size)?;
        let snaps = snapshots(store, scope, cp.size)?;
        let part_rows = rows(p.as_str(), &snaps, since);
        for r in &part_rows {
            writer.write_record(r.iter())?;
        }
        let record = ProvisionRecord {
            provider: format!("{}/{}", store.origin(), p),
            recipient: who.recipient.clone(),
            items: vec!["資格履歴".into()],
            nondisclosure: false,
            purpose: "shikaku_rireki_file".into(),
            first_seq: since.min(cp.size),
            count: cp.size.saturating_sub(since),
            checkpoint_size: cp.size,
            request_id: who.request_id.clone(),
        };
        let payload = record.encode().map_err(HistoryError::ProvisionRecord)?;
        let day = crate::store::today_days();
        let entry = NewEntry::new(Kind::PROVISION_RECORD, day, None, payload)
            .map_err(HistoryError::Append)?;
        let receipt = store.append(p, vec![entry]).map_err(HistoryError::Append)?;
        total_rows += part_rows.len() as u64;
        parts.push(ManifestPartition {
            partition: p.to_string(),
            from_seq: since.min(cp.size),
            to_seq: cp.size,
            checkpoint: note,
            rows: part_rows.len() as u64,
            provision_record_seq: receipt.first_seq,
        });
        progress(i as u64 + 1, total);
    }
    let bytes = Zeroizing::new(
        writer
            .into_inner()
            .map_err(|e| HistoryError::CsvFlush(e.into_error()))?,
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok((
        bytes,
        Manifest {
            layout: "rireki-v2",
            partitions: parts,
            rows: total_rows,
            sha256,
        },
    ))
}

//! One partition's section of a bundle as the auditor verifies it: the pinned keys, the
//! chain and tree, checkpoints and their cosignatures, key events, the continuity with the
//! previous run's state.

use std::collections::{BTreeMap, BTreeSet};

use kukaku::ledger::note::NoteError;
use kukaku::ledger::payload::KeyEvent;
use kukaku::ledger::{ChainVerifier, Hash, PartitionId, SignedNote, Step, VerifyError};

use crate::audit::{
    AuditError, CheckpointInfo, Entry, KeyEventInfo, Options, PartitionReport, WitnessInfo, failed,
};
use crate::state::LogState;
use crate::trust::LogKey;

pub(crate) struct Section {
    /// False between a start record and the checkpoint that anchors it.
    anchored: bool,
    partition: PartitionId,
    keys: Vec<(LogKey, kukaku::ledger::VerifierKey)>,
    verifier: ChainVerifier,
    previous: Option<LogState>,
    last_note: Option<String>,
    report: PartitionReport,
    /// The size a consistency record proved the start from.
    proven_from: Option<u64>,
}

impl Section {
    /// The section a partition record opens: its log named by a key pinned for that
    /// partition of a trusted origin, and not seen before in this bundle.
    pub(crate) fn open(
        partition: PartitionId,
        vkey: &kukaku::ledger::VerifierKey,
        opts: &Options<'_>,
        seen: &mut BTreeSet<String>,
    ) -> Result<Section, AuditError> {
        let log = vkey.name().to_owned();
        let origin = match log.rsplit_once('/') {
            Some((o, p)) if p == partition.as_str() => o.to_owned(),
            _ => {
                return Err(failed(
                    &partition,
                    0,
                    "the bundle names a key of another partition",
                ));
            }
        };
        if !seen.insert(log.clone()) {
            return Err(failed(
                &partition,
                0,
                "partition appears twice in the bundle",
            ));
        }
        let keys: Vec<_> = opts
            .trust
            .log_keys(&origin, &partition)
            .map(|(l, k)| (l.clone(), k))
            .collect();
        if keys.is_empty() {
            return Err(AuditError::NotTrusted(log));
        }
        if !keys.iter().any(|(_, k)| k == vkey) {
            return Err(failed(
                &partition,
                0,
                "the bundle names a checkpoint key that is not pinned for this log",
            ));
        }
        Ok(Section {
            previous: opts.previous.logs.get(&log).cloned(),
            report: PartitionReport {
                log,
                partition: partition.to_string(),
                entries: 0,
                kinds: BTreeMap::new(),
                checkpoints: 0,
                last_checkpoint: None,
                signed_by: Vec::new(),
                witnesses: Vec::new(),
                witnessed_size: None,
                key_events: Vec::new(),
                append_only_since: None,
                append_only_by: None,
                first_seq: 0,
            },
            verifier: ChainVerifier::new(partition.clone()),
            keys,
            last_note: None,
            anchored: true,
            proven_from: None,
            partition,
        })
    }

    /// A start record: the chain resumes from the recorded tree edge and chain value,
    /// unanchored until the checkpoint at that size.
    pub(crate) fn start(
        &mut self,
        from: u64,
        chain: Hash,
        frontier: kukaku::ledger::merkle::CompactRange,
    ) -> Result<(), AuditError> {
        if self.verifier.size() != 0 || self.report.checkpoints != 0 {
            return Err(AuditError::Malformed("start record after entries"));
        }
        self.verifier = ChainVerifier::resume(self.partition.clone(), frontier, chain);
        self.anchored = false;
        self.report.first_seq = from;
        Ok(())
    }

    /// At the previous run's size the root must be the one it verified.
    pub(crate) fn check_previous(&mut self) -> Result<(), AuditError> {
        if let Some(prev) = &self.previous
            && self.verifier.size() == prev.size
            && self.report.append_only_since.is_none()
        {
            if self.verifier.root().to_base64() != prev.root {
                return Err(failed(
                    &self.partition,
                    prev.size,
                    format!(
                        "root at size {} differs from the one verified before: the log was rewritten",
                        prev.size
                    ),
                ));
            }
            self.report.append_only_since = Some(prev.size);
            self.report.append_only_by = Some("entries");
        }
        Ok(())
    }

    /// A consistency record (right after the anchoring checkpoint): the tree there extends
    /// the tree of size `from` with root `root`. When `from` is the previous run's size, the
    /// root must be the one verified then, and append-only since then is proven.
    pub(crate) fn consistency(
        &mut self,
        from: u64,
        root: &Hash,
        proof: &[Hash],
    ) -> Result<(), AuditError> {
        kukaku::ledger::bundle::check_consistency(
            &self.verifier,
            self.report.first_seq,
            self.report.checkpoints,
            self.proven_from.is_some(),
            (from, root, proof),
        )?;
        self.proven_from = Some(from);
        if let Some(prev) = &self.previous
            && prev.size == from
        {
            if root.to_base64() != prev.root {
                return Err(failed(
                    &self.partition,
                    from,
                    format!(
                        "the consistency proof starts from a root at size {from} other than the \
                         one verified before: the log was rewritten"
                    ),
                ));
            }
            self.report.append_only_since = Some(from);
            self.report.append_only_by = Some("consistency_proof");
        }
        Ok(())
    }

    /// The state may only advance along a proven path: a bundle that starts past the size
    /// the previous run verified must prove, with a consistency record from that size, that
    /// its start extends what was verified.
    pub(crate) fn check_gap(&self) -> Result<(), AuditError> {
        let Some(prev) = &self.previous else {
            return Ok(());
        };
        let start = self.report.first_seq;
        if prev.size == 0 || prev.size >= start || self.report.append_only_since.is_some() {
            return Ok(());
        }
        Err(failed(
            &self.partition,
            start,
            format!(
                "the bundle starts at size {start}, past size {} verified by the previous run, \
                 and carries no consistency proof from {}; the log between them is unproven \
                 (export with --from-size {start} --prove-from {}, or from --from-size {})",
                prev.size, prev.size, prev.size, prev.size
            ),
        ))
    }

    pub(crate) fn envelope(&mut self, entry: Entry) -> Result<(), AuditError> {
        if !self.anchored {
            return Err(AuditError::Malformed(
                "a start record must be followed by the checkpoint at its size",
            ));
        }
        let (h, leaf, key_event) = match entry {
            Entry::Decoded {
                header,
                leaf,
                key_event,
            } => (header, leaf, key_event),
            Entry::Bad(e) => return Err(self.verifier.decode_failure(e).into()),
        };
        self.verifier.push_decoded(&h, leaf)?;
        *self.report.kinds.entry(h.kind.name()).or_default() += 1;
        if let Some(payload) = key_event {
            match KeyEvent::decode(&payload) {
                Ok(e) => self.report.key_events.push(KeyEventInfo {
                    seq: h.seq,
                    tx_time: kukaku::ledger::format_utc_ms(h.tx_time),
                    event: e.event.name(),
                    key_id: e.key_id,
                    class: e.class.name(),
                    epoch: e.epoch,
                    version: e.version,
                    count: e.count,
                    actor: e.actor,
                    reason: e.reason,
                }),
                // A key event the report cannot show would hide a purge or a rotation: the
                // audit fails rather than vouch for a log whose key history it cannot read.
                Err(e) => {
                    return Err(failed(
                        &self.partition,
                        h.seq,
                        format!(
                            "key event payload does not decode ({}); it cannot be reported",
                            kukaku::error::report(&e)
                        ),
                    ));
                }
            }
        }
        self.check_previous()
    }

    pub(crate) fn checkpoint(&mut self, note: &str, opts: &Options<'_>) -> Result<(), AuditError> {
        let size = self.verifier.size();
        let at = self.verifier.last_tx();
        // The checkpoint anchoring a bundle that starts after genesis covers entries the
        // bundle does not hold, so their time is unknown: any pinned key of the log may have
        // signed it. Windows apply from the next checkpoint on.
        let anchoring = !self.anchored;
        self.anchored = true;
        let mut accepted = None;
        for (entry, key) in self.keys.iter().filter(|(l, _)| anchoring || l.covers(at)) {
            match self.verifier.check_checkpoint(note, key) {
                Ok(cp) => {
                    accepted = Some((cp, entry));
                    break;
                }
                Err(VerifyError {
                    step: Step::Checkpoint(NoteError::NoTrustedSignature),
                    ..
                }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let Some((cp, entry)) = accepted else {
            let outside = self
                .keys
                .iter()
                .any(|(_, k)| self.verifier.check_checkpoint(note, k).is_ok());
            return Err(failed(
                &self.partition,
                size,
                if outside {
                    "checkpoint signed by a pinned key outside its validity window"
                } else {
                    "checkpoint has no signature by a key pinned for this log and time"
                },
            ));
        };
        let signer = format!("{} {}", entry.origin, entry.window());
        if !self.report.signed_by.contains(&signer) {
            self.report.signed_by.push(signer);
        }
        let cosigners = self.cosignatures(note, size, opts)?;
        if cosigners.len() >= opts.quorum.max(1) {
            self.report.witnessed_size = Some(size);
        }
        self.report.checkpoints += 1;
        self.report.last_checkpoint = Some(CheckpointInfo {
            size: cp.size,
            root: cp.root.to_base64(),
        });
        self.last_note = Some(note.to_owned());
        Ok(())
    }

    /// The witnesses whose cosignature on `note` verifies, each once (a witness pinned twice
    /// or under two keys counts once); each one's latest cosigned size goes to the report. A
    /// cosignature by a pinned witness that fails verification fails the audit.
    fn cosignatures(
        &mut self,
        note: &str,
        size: u64,
        opts: &Options<'_>,
    ) -> Result<Vec<String>, AuditError> {
        let parsed = SignedNote::parse(note)
            .map_err(|e| failed(&self.partition, size, kukaku::error::report(&e)))?;
        // Distinct witnesses: a witness pinned twice (or under two keys) counts once.
        let mut cosigners: Vec<String> = Vec::new();
        for w in &opts.trust.witnesses {
            match parsed.verify_cosignature(w) {
                Ok(time) => {
                    if !cosigners.iter().any(|c| c == w.name()) {
                        cosigners.push(w.name().to_owned());
                    }
                    match self
                        .report
                        .witnesses
                        .iter_mut()
                        .find(|i| i.witness == w.name())
                    {
                        Some(i) => {
                            i.cosigned_size = size;
                            i.time = time;
                        }
                        None => self.report.witnesses.push(WitnessInfo {
                            witness: w.name().to_owned(),
                            cosigned_size: size,
                            time,
                        }),
                    }
                }
                Err(NoteError::NoTrustedSignature) => {}
                Err(e) => {
                    return Err(failed(
                        &self.partition,
                        size,
                        format!("cosignature of witness {}: {e}", w.name()),
                    ));
                }
            }
        }
        Ok(cosigners)
    }

    pub(crate) fn close(
        mut self,
        opts: &Options<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<(PartitionReport, LogState), AuditError> {
        let size = self.verifier.size();
        self.report.entries = size;
        self.check_gap()?;
        let (Some(last), Some(note)) = (&self.report.last_checkpoint, self.last_note.take()) else {
            return Err(failed(
                &self.partition,
                size,
                "no checkpoint covers the entries",
            ));
        };
        if last.size != size {
            return Err(failed(
                &self.partition,
                size,
                format!(
                    "entries {}..{size} after the last checkpoint are not covered by a signature",
                    last.size
                ),
            ));
        }
        if let Some(prev) = &self.previous
            && prev.size > size
        {
            return Err(failed(
                &self.partition,
                size,
                format!(
                    "log shrank: the previous run verified size {}, the bundle ends at {size}",
                    prev.size
                ),
            ));
        }
        if opts.quorum > 0 && self.report.witnessed_size.is_none() {
            return Err(failed(
                &self.partition,
                size,
                format!(
                    "no checkpoint is cosigned by {} trusted witness(es)",
                    opts.quorum
                ),
            ));
        }
        if !opts.trust.witnesses.is_empty() && self.report.witnesses.is_empty() {
            warnings.push(format!(
                "partition {}: no checkpoint cosigned by a pinned witness",
                self.partition
            ));
        }
        let state = LogState {
            size,
            root: last.root.clone(),
            checkpoint: note,
        };
        Ok((self.report, state))
    }
}

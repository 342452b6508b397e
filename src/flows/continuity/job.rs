//! One extraction run: what changed since the cursors, the households of a partition, the
//! moves found from them and how each is filed.

use super::*;
use crate::ledger::Seq;

/// What one extraction run needs throughout.
pub(super) struct Job<'a> {
    pub(super) store: &'a Store,
    pub(super) scope: &'a PrefectureScope,
    pub(super) rules: &'a Rules,
    pub(super) who: &'a Importer,
    pub(super) matching: &'a IndexKey,
    pub(super) token: &'a dyn Fn(&str) -> Vec<u8>,
    pub(super) partitions: &'a [PartitionId],
}

/// A move found from A: its candidate as built now and the move's latest version, or `None`
/// when the move's latest version was built from the same two snapshots (nothing read).
pub(super) type Found = Option<(Candidate, Option<(u64, Candidate)>)>;

/// The name of the extraction's cursors (`Store::job_cursor`).
pub const EXTRACT_JOB: &str = "continuity_extract";

/// Households to look at per partition: 世帯番号 → the seq of its newest snapshot, and the
/// snapshot itself when finding the other ends of moves already read it (read once, and
/// recorded once).
pub(super) type Visit =
    HashMap<PartitionId, std::collections::BTreeMap<Vec<u8>, (u64, Option<Household>)>>;

/// A household to look at: its 世帯番号, the seq of its newest snapshot, and the snapshot
/// when it was read already.
pub(super) type Seen = (Vec<u8>, u64, Option<Household>);

impl Job<'_> {
    /// Looks at B's households of this run: each one that came from elsewhere in the
    /// prefecture is a move, filed as a candidate or a new version of one.
    pub(super) fn visit(
        &self,
        b: &PartitionId,
        households: std::collections::BTreeMap<Vec<u8>, (u64, Option<Household>)>,
        as_of: i32,
        report: &mut ExtractReport,
    ) -> Result<(), ExtractError> {
        let (store, who) = (self.store, self.who);
        let Some(b_scope) = self.scope.partition(b) else {
            return Ok(());
        };
        if households.is_empty() {
            return Ok(());
        }
        let b_key = store.index_key(b)?;
        let mut moves = Known::new(store, &b_scope, who);
        // Households not read yet by this run are read (and recorded) now.
        let mut decoded: Vec<u64> = Vec::new();
        for (b_seq, known) in households.into_values() {
            let hb = match known {
                Some(h) => h,
                None => {
                    decoded.push(b_seq);
                    decode(store, &b_scope, b_seq)?
                }
            };
            report.households_read += 1;
            let Some((person, reset)) = mover(&hb) else {
                continue;
            };
            let found = self.predecessors(b, &b_key, &mut moves, (&hb, b_seq), person, report)?;
            // Two households of the prefecture that held the person before B: a person must
            // say which one the move came from.
            let ambiguous = found.len() > 1;
            for (mut candidate, previous) in found.into_iter().flatten() {
                if reset {
                    candidate.anomalies.push(ANOMALY_SHUTOKU_RESET.to_owned());
                }
                if ambiguous {
                    candidate.anomalies.push(ANOMALY_AMBIGUOUS.to_owned());
                }
                let here = (b, &hb, b_seq);
                self.file(here, (candidate, previous), as_of, &mut moves, report)?;
            }
        }
        // B's households read here: one access record for the scan (those read while
        // finding the other ends of moves were recorded then).
        if let (Some(&first), Some(&last)) = (decoded.iter().min(), decoded.iter().max()) {
            record(
                store,
                b,
                &access(who, "continuity_scan", first, last - first + 1),
            )?;
        }
        Ok(())
    }

    /// Files one move found in B: a new candidate when it starts in the window (else it is
    /// listed as outside), a new version when the candidate changed, or nothing.
    pub(super) fn file(
        &self,
        (b, hb, b_seq): (&PartitionId, &Household, u64),
        (mut candidate, previous): (Candidate, Option<(u64, Candidate)>),
        as_of: i32,
        moves: &mut Known<'_>,
        report: &mut ExtractReport,
    ) -> Result<(), ExtractError> {
        let claim = match previous {
            None if !self.in_window(&candidate, as_of) => {
                report.outside_window.push(Outside {
                    partition: b.to_string(),
                    old_hokensha_no: candidate.old_hokensha_no.clone(),
                    ido_date: candidate.ido_date.clone(),
                });
                return Ok(());
            }
            None => format!("move:{}", candidate.move_id),
            Some((seq, earlier)) => {
                let changes = candidate.changes_from(&earlier);
                if changes.is_empty() {
                    report.already_extracted += 1;
                    return Ok(());
                }
                candidate.supersedes = Some(seq);
                candidate.changes = changes;
                format!("move:{}:{}", candidate.move_id, version_tag(&candidate))
            }
        };
        let Some(seq) = append_candidate(self.store, b, hb, b_seq, &candidate, claim, self.who)?
        else {
            report.already_extracted += 1;
            return Ok(());
        };
        report.candidates.push(Made {
            partition: b.to_string(),
            seq: Some(seq),
            old_hokensha_no: candidate.old_hokensha_no.clone(),
            case: candidate.case.clone(),
            period: candidate.period.clone(),
            suggestion: candidate.suggestion.clone(),
            anomalies: candidate.anomalies.clone(),
        });
        moves.add(seq, candidate);
        Ok(())
    }

    /// Whether a new move is proposed on `as_of`: it starts in the window, or its start is
    /// unknown (a person must look at it).
    pub(super) fn in_window(&self, candidate: &Candidate, as_of: i32) -> bool {
        parse_date(&candidate.ido_date).is_none_or(|start| self.rules.in_window(start, as_of))
    }

    /// What changed since the last run: each partition's size now (the cursors to store at
    /// the end), and per partition the households to look at: those with a snapshot since
    /// its cursor, plus, for every person of such a household, their newest household in
    /// each other partition (a 転出 that arrives after the 転入 makes B's unchanged
    /// household the end of a move).
    pub(super) fn changes(&self) -> Result<(Vec<(PartitionId, u64)>, Visit), ExtractError> {
        let store = self.store;
        let mut ends = Vec::new();
        let mut visit: Visit = HashMap::new();
        let mut changed: Vec<(PartitionId, Vec<Seen>)> = Vec::new();
        let mut reads = Reads::default();
        // A first run looks at every household of every partition already.
        let mut first_run = true;
        for p in self.partitions {
            let size = store.size(p)?;
            let from = store.job_cursor(EXTRACT_JOB, p)?.unwrap_or(0);
            first_run &= from == 0;
            ends.push((p.clone(), size));
            let now: Vec<Seen> = if from == 0 {
                // Every household: the index's newest snapshot of each.
                store
                    .index_latest(p, IndexKind::Household)?
                    .into_iter()
                    .filter(|(_, seq)| *seq < size)
                    .map(|(key, seq)| (key, seq, None))
                    .collect()
            } else {
                // Only the log since the cursor: O(changes), not O(households).
                self.snapshots_since(p, from, size, &mut reads)?
            };
            changed.push((p.clone(), now.clone()));
            visit
                .entry(p.clone())
                .or_default()
                .extend(now.into_iter().map(|(key, seq, h)| (key, (seq, h))));
        }
        for (x, households) in changed.into_iter().filter(|_| !first_run) {
            let Some(x_scope) = self.scope.partition(&x) else {
                continue;
            };
            for (_, seq, known) in households {
                let hx = match known {
                    Some(h) => h,
                    None => {
                        reads.add(&x, access(self.who, "continuity_scan", seq, 1));
                        decode(store, &x_scope, seq)?
                    }
                };
                for person in hx.persons.iter().filter(|p| !p.giji_head) {
                    self.elsewhere(&x, person, &mut visit, &mut reads)?;
                }
                visit
                    .entry(x.clone())
                    .or_default()
                    .insert(hx.setai_no.as_bytes().to_vec(), (seq, Some(hx)));
            }
        }
        // Durable before anything derived from these reads is stored.
        reads.flush(store)?;
        Ok((ends, visit))
    }

    /// The newest snapshot of each household with a snapshot in `[from, to)` of `p`, read
    /// from the log (each read recorded): 世帯番号, seq and the snapshot.
    pub(super) fn snapshots_since(
        &self,
        p: &PartitionId,
        from: u64,
        to: u64,
        reads: &mut Reads,
    ) -> Result<Vec<Seen>, ExtractError> {
        let Some(scope) = self.scope.partition(p) else {
            return Ok(Vec::new());
        };
        let mut newest: std::collections::BTreeMap<Vec<u8>, (u64, Household)> =
            std::collections::BTreeMap::new();
        for (i, raw) in self
            .store
            .envelopes(p, Seq(from), Seq(to))?
            .iter()
            .enumerate()
        {
            let seq = from + i as u64;
            let kind = crate::ledger::EnvelopeRef::decode(raw)
                .map_err(|_| ExtractError::Snapshot {
                    partition: p.clone(),
                    seq,
                })?
                .header
                .kind;
            if !matches!(kind, Kind::HOUSEHOLD_SNAPSHOT | Kind::HOUSEHOLD_CORRECTION) {
                continue;
            }
            let h = decode(self.store, &scope, seq)?;
            reads.add(p, access(self.who, "continuity_scan", seq, 1));
            newest.insert(h.setai_no.as_bytes().to_vec(), (seq, h));
        }
        Ok(newest
            .into_iter()
            .map(|(key, (seq, h))| (key, seq, Some(h)))
            .collect())
    }

    /// Adds to `visit` the newest household holding `person` in each partition but `x`.
    pub(super) fn elsewhere(
        &self,
        x: &PartitionId,
        person: &Person,
        visit: &mut Visit,
        reads: &mut Reads,
    ) -> Result<(), ExtractError> {
        let store = self.store;
        let t = self.matching.token("kojin", person.kojin_no.as_bytes());
        for b in self.partitions.iter().filter(|b| *b != x) {
            let Some(seq) = self.newest_holding(b, &t)? else {
                continue;
            };
            let Some(b_scope) = self.scope.partition(b) else {
                continue;
            };
            let hb = decode(store, &b_scope, seq)?;
            reads.add(b, access(self.who, "continuity_scan", seq, 1));
            let key = hb.setai_no.as_bytes().to_vec();
            if let Some(&latest) = store.index_seqs(b, IndexKind::Household, &key)?.last() {
                // The snapshot read is the household's newest: keep it for the visit.
                let read = (latest == seq).then_some(hb);
                visit
                    .entry(b.clone())
                    .or_default()
                    .insert(key, (latest, read));
            }
        }
        Ok(())
    }

    /// The newest snapshot of partition `p` that holds the person with prefecture matching
    /// token `t` (found through `p`'s own matching slot).
    pub(super) fn newest_holding(
        &self,
        p: &PartitionId,
        t: &[u8; 32],
    ) -> Result<Option<u64>, ExtractError> {
        let slot = self.store.index_key(p)?.matching_slot(t);
        Ok(self
            .store
            .index_seqs(p, IndexKind::Matching, &slot)?
            .last()
            .copied())
    }

    /// Every household of another partition that held `person` before B: one entry per A.
    /// Reads of A are recorded in A first.
    pub(super) fn predecessors(
        &self,
        b: &PartitionId,
        b_key: &IndexKey,
        moves: &mut Known<'_>,
        (hb, b_seq): (&Household, u64),
        person: &Person,
        report: &mut ExtractReport,
    ) -> Result<Vec<Found>, ExtractError> {
        let store = self.store;
        let t = self.matching.token("kojin", person.kojin_no.as_bytes());
        let mut found = Vec::new();
        for a in self.partitions.iter().filter(|a| *a != b) {
            let Some(a_seq) = self.newest_holding(a, &t)? else {
                continue;
            };
            // A candidate of the old form (one per snapshot pair) stands for its move.
            if store
                .transmission(b, &format!("candidate:{b_seq}:{a}:{a_seq}"))?
                .is_some()
            {
                report.already_extracted += 1;
                continue;
            }
            let Some(pair) = self.scope.pair(a, b) else {
                continue;
            };
            let id = move_id(b_key, a, &t, person.tekiyo_start.as_deref().unwrap_or(""));
            let previous = moves.latest(&id)?;
            // The same two snapshots as the move's latest version: nothing to read.
            if previous
                .as_ref()
                .is_some_and(|(_, c)| c.old_seq == a_seq && c.new_seq == b_seq)
            {
                report.already_extracted += 1;
                found.push(None);
                continue;
            }
            // The read of A is recorded in A before anything derived from it is stored.
            let ha = decode(store, pair.from_scope(), a_seq)?;
            record(store, a, &access(self.who, "continuity_extract", a_seq, 1))?;
            // A household the person joined only after B's start (the next move of an
            // A→B→C chain, seen from B) is not where they came from.
            if !came_before(&ha, person, &t, self.token) {
                continue;
            }
            let snapshots = Snapshots {
                a,
                ha: &ha,
                a_seq,
                hb,
                b_seq,
            };
            let mut candidate = build(snapshots, person, self.rules, self.token);
            candidate.move_id = id;
            found.push(Some((candidate, previous)));
        }
        Ok(found)
    }
}

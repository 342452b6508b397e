//! The moves B already has candidates for, found through their claims.

use super::*;

/// The moves B already has candidates for, looked up one move at a time through their
/// claims (`T move:<id>…`), so a daily run reads only the moves it meets: move id → the
/// latest version's seq and candidate. Each candidate read is recorded in B.
pub(super) struct Known<'a> {
    store: &'a Store,
    b: &'a PartitionScope,
    who: &'a Importer,
    seen: HashMap<String, Option<(u64, Candidate)>>,
}

impl<'a> Known<'a> {
    pub(super) fn new(store: &'a Store, b: &'a PartitionScope, who: &'a Importer) -> Self {
        Known {
            store,
            b,
            who,
            seen: HashMap::new(),
        }
    }

    /// The move's latest version in B, if B has one.
    pub(super) fn latest(
        &mut self,
        move_id: &str,
    ) -> Result<Option<(u64, Candidate)>, ExtractError> {
        if let Some(known) = self.seen.get(move_id) {
            return Ok(known.clone());
        }
        let versions = self
            .store
            .claims(self.b.partition(), &format!("move:{move_id}"))?;
        let found = match versions.iter().map(|(_, r)| r.first_seq).max() {
            None => None,
            Some(seq) => {
                let e = self.store.read_entry(self.b, seq)?;
                let rec = self.who.access(
                    "continuity_candidate_read",
                    vec![Kind::CONTINUITY_CANDIDATE.code()],
                    seq,
                    1,
                );
                record(self.store, self.b.partition(), &rec)?;
                let c: Candidate =
                    serde_json::from_slice(&e.payload).map_err(|_| ExtractError::Snapshot {
                        partition: self.b.partition().clone(),
                        seq,
                    })?;
                Some((seq, c))
            }
        };
        self.seen.insert(move_id.to_owned(), found.clone());
        Ok(found)
    }

    /// A version this run appended.
    pub(super) fn add(&mut self, seq: u64, c: Candidate) {
        self.seen.insert(c.move_id.clone(), Some((seq, c)));
    }
}

//! The partition registry: requesting, provisioning and listing partitions, their names,
//! the prefecture's partitions a flow-4 job covers, and the operator's action log.

use super::engine::{Dir, Op, Space, View};
use super::*;

pub(crate) fn read_registry(view: &dyn View) -> Result<Vec<PartitionInfo>, ProvisionError> {
    let mut out = Vec::new();
    for item in view.scan_prefix(&Space::System, REGISTRY_PREFIX)? {
        let (k, v) = item?;
        let Some(id) = k.strip_prefix(REGISTRY_PREFIX) else {
            break;
        };
        let text = String::from_utf8_lossy(id).into_owned();
        let partition =
            PartitionId::parse(&text).map_err(|_| ProvisionError::BadRecord(text.clone()))?;
        let rec: PartitionRecord =
            decode(&v).ok_or_else(|| ProvisionError::BadRecord(text.clone()))?;
        out.push(PartitionInfo {
            partition,
            status: rec.status,
            requested_ms: rec.requested_ms,
            activated_ms: rec.activated_ms,
        });
    }
    Ok(out)
}

impl Store {
    /// Registers partitions as `requested`. Existing ones are left as they are. Returns how
    /// many were new. Run [`Store::provision`] to make them active.
    pub fn request_partitions(&self, ids: &[PartitionId]) -> Result<usize, ProvisionError> {
        let mut ops = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for id in ids {
            if !seen.insert(id)
                || self
                    .inner
                    .engine
                    .get(&Space::System, &registry_key(id))?
                    .is_some()
            {
                continue;
            }
            let rec = PartitionRecord {
                status: PartitionStatus::Requested,
                requested_ms: now_ms(),
                activated_ms: 0,
            };
            let bytes = encode(&rec).map_err(ProvisionError::Encode)?;
            ops.push(Op::Put {
                space: Space::System,
                key: registry_key(id),
                value: bytes,
            });
        }
        let added = ops.len();
        self.inner.engine.commit(ops)?;
        Ok(added)
    }

    /// All registered partitions in id order.
    pub fn partitions(&self) -> Result<Vec<PartitionInfo>, ProvisionError> {
        read_registry(&*self.inner.engine)
    }

    /// Names a registered partition (its municipality's or insurer's name, shown beside its
    /// number). Public data, kept in `sys` (`L` ‖ partition).
    pub fn set_partition_name(&self, p: &PartitionId, name: &str) -> Result<(), ProvisionError> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > 40
            || crate::domain::text::check_text(name, 40).is_err()
        {
            return Err(ProvisionError::BadName);
        }
        if self
            .inner
            .engine
            .get(&Space::System, &registry_key(p))?
            .is_none()
        {
            return Err(ProvisionError::Unregistered(p.clone()));
        }
        self.inner.engine.commit(vec![Op::Put {
            space: Space::System,
            key: records::name_key(p),
            value: name.as_bytes().to_vec(),
        }])?;
        Ok(())
    }

    /// Notes one action of a continuity operator of `prefecture` (a run of the extraction or
    /// the confirmation, with its counts): the console shows the operator's own actions.
    /// Counts and codes only, never personal data.
    pub fn log_operator_action(
        &self,
        prefecture: &str,
        credential: &str,
        action: &OperatorAction,
    ) -> Result<(), ProvisionError> {
        let mut key = records::OPERATOR_LOG_PREFIX.to_vec();
        key.extend_from_slice(prefecture.as_bytes());
        key.extend_from_slice(&action.at_ms.to_be_bytes());
        key.extend_from_slice(credential.as_bytes());
        let value = serde_json::to_vec(action).map_err(ProvisionError::Json)?;
        self.inner.engine.commit(vec![Op::Put {
            space: Space::System,
            key,
            value,
        }])?;
        Ok(())
    }

    /// The newest `limit` actions of `credential` in `prefecture`, newest first.
    pub fn operator_actions(
        &self,
        prefecture: &str,
        credential: &str,
        limit: usize,
    ) -> Result<Vec<OperatorAction>, ProvisionError> {
        let mut prefix = records::OPERATOR_LOG_PREFIX.to_vec();
        prefix.extend_from_slice(prefecture.as_bytes());
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xFF; 9]);
        let mut out = Vec::new();
        let it = self.inner.engine.scan(&Space::System, &end, Dir::Reverse)?;
        for item in it {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
                break;
            };
            if rest.get(8..) != Some(credential.as_bytes()) {
                continue;
            }
            let action: OperatorAction = serde_json::from_slice(&v)
                .map_err(|_| ProvisionError::BadRecord("operator log".into()))?;
            out.push(action);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The names of the partitions that have one.
    pub fn partition_names(&self) -> Result<HashMap<PartitionId, String>, ProvisionError> {
        let mut out = HashMap::new();
        for item in self
            .inner
            .engine
            .scan_prefix(&Space::System, records::NAME_PREFIX)?
        {
            let (k, v) = item?;
            let Some(id) = k.strip_prefix(records::NAME_PREFIX) else {
                break;
            };
            let id = String::from_utf8_lossy(id).into_owned();
            let p = PartitionId::parse(&id).map_err(|_| ProvisionError::BadRecord(id.clone()))?;
            let name = String::from_utf8(v.to_vec()).map_err(|_| ProvisionError::BadRecord(id))?;
            out.insert(p, name);
        }
        Ok(out)
    }

    /// The prefecture's active partitions whose keys are not destroyed, in registry order:
    /// what a prefecture's flow-4 job covers.
    pub fn prefecture_partitions(
        &self,
        scope: &crate::crypto::PrefectureScope,
    ) -> Result<Vec<PartitionId>, ProvisionError> {
        Ok(self
            .partitions()?
            .into_iter()
            .filter(|i| i.status == PartitionStatus::Active && scope.contains(&i.partition))
            .filter(|i| !self.is_shredded(&i.partition))
            .map(|i| i.partition)
            .collect())
    }

    pub fn partition(&self, id: &PartitionId) -> Result<Option<PartitionInfo>, ProvisionError> {
        Ok(self.partitions()?.into_iter().find(|p| &p.partition == id))
    }

    /// Runs the provisioning job: for every `requested` partition, makes sure its column family
    /// exists, appends its genesis entry and first key, and marks it `active`. Resumable: a
    /// crash leaves partitions `requested`, and the next run finishes them. `progress(done,
    /// total)` is called as partitions complete.
    ///
    /// Column families of partitions requested before this store was opened were already
    /// created at open, all at once (one OPTIONS file write). Ones requested since are created
    /// here one at a time, which costs O(n) each (RocksDB rewrites the OPTIONS file listing
    /// every family): for large batches, request, reopen, then provision. See
    /// docs/benchmarks.md.
    pub fn provision(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<u64, ProvisionError> {
        let pending: Vec<PartitionId> = self
            .partitions()?
            .into_iter()
            .filter(|p| p.status == PartitionStatus::Requested)
            .map(|p| p.partition)
            .collect();
        let total = pending.len() as u64;
        progress(0, total);
        self.inner.engine.create_spaces(&pending)?;
        let mut done = 0;
        let mut first_error = None;
        self.writer
            .activate_many(&pending, &mut |p, result| {
                done += 1;
                progress(done, total);
                if let (Err(error), None) = (result, &first_error) {
                    first_error = Some(ProvisionError::Append {
                        partition: p.clone(),
                        error,
                    });
                }
            })
            .map_err(ProvisionError::Writer)?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}

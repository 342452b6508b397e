//! What every handler does around the store: runs store calls on the blocking pool, and
//! appends the access record of what a request read, durable before the answer. Shared by
//! the API's routes and the terminal's pages, so neither imports the other for it.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::auth::Actor;
use super::error::ApiError;
use super::{AppState, request_id};
use crate::ledger::payload::AccessRecord;
use crate::ledger::{Kind, PartitionId};
use crate::store::{NewEntry, Store};

/// Runs a store call on the blocking pool.
pub(crate) async fn blocking<T, F>(state: &Arc<AppState>, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
{
    let store = Arc::clone(&state.store);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(ApiError::internal)?
}

/// The partitions' display names for a page (a convenience: a registry that cannot be read
/// shows numbers), read on the blocking pool like every store call.
pub(crate) async fn partition_names(
    state: &Arc<AppState>,
) -> std::collections::HashMap<PartitionId, String> {
    blocking(state, |s| Ok(s.partition_names().unwrap_or_default()))
        .await
        .unwrap_or_default()
}

/// What a request touched, for its access record.
pub(crate) struct Touched<'a> {
    pub(crate) route: &'a str,
    pub(crate) purpose: &'a str,
    pub(crate) kinds: BTreeSet<u16>,
    pub(crate) first_seq: u64,
    pub(crate) count: u64,
}

/// Appends the access record and waits until it is durable. The caller answers only after.
pub(crate) async fn record_access(
    state: &Arc<AppState>,
    partition: &PartitionId,
    actor: &Actor,
    touched: Touched<'_>,
) -> Result<u64, ApiError> {
    let record = AccessRecord {
        actor: actor.credential.to_string(),
        role: actor.role.name().to_owned(),
        route: touched.route.to_owned(),
        purpose: touched.purpose.to_owned(),
        kinds: touched.kinds.into_iter().collect(),
        first_seq: touched.first_seq,
        count: touched.count,
        result: "ok".to_owned(),
        request_id: request_id::current(),
    };
    let payload = record.encode().map_err(ApiError::internal)?;
    let entry = NewEntry::new(
        Kind::ACCESS_RECORD,
        crate::store::today_days(),
        None,
        payload,
    )?;
    let receipt = state.store.append_async(partition, vec![entry]).await?;
    receipt
        .entries
        .first()
        .map(|(seq, _)| *seq)
        .ok_or_else(|| ApiError::internal("access record receipt without entries"))
}

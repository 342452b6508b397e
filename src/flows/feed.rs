//! The signed feed's wire format (hub → intermediate), shared by the hub's route and the
//! intermediate's replicator.

use serde::{Deserialize, Serialize};

use crate::ledger::Kind;
use crate::ledger::proof_json::ConsistencyProofJson;

/// One entry of the feed: the encoded header (hashes to the leaf), and salt and payload, so a
/// replica can check the commitment and store a copy with the same one. Flow-4 entries stay
/// on the hub: for them only the header is sent (enough to extend the tree).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    pub seq: u64,
    pub kind: String,
    pub header: String,
    pub salt: Option<String>,
    pub payload: Option<String>,
}

/// Kinds the intermediate receives with their payloads (flow 5).
pub fn forwarded_kind(kind: Kind) -> bool {
    kind == Kind::HOUSEHOLD_SNAPSHOT || kind == Kind::HOUSEHOLD_CORRECTION
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FeedResponse {
    pub partition: String,
    pub from_size: u64,
    /// Size after the returned entries; `checkpoint` is signed at this size.
    pub to_size: u64,
    pub entries: Vec<FeedEntry>,
    pub checkpoint: String,
    /// From `from_size` to `to_size`; absent when `from_size` is 0 or equals `to_size`.
    pub consistency: Option<ConsistencyProofJson>,
    pub access_record_seq: Option<u64>,
}

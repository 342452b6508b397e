//! Request and response bodies shared by the server and its own client (the intermediate's
//! replicator), so that neither borrows the other's types.

use serde::{Deserialize, Serialize};

/// A witness's cosignature of one of the hub's checkpoints.
#[derive(Deserialize, Serialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CosignatureRequest {
    /// The hub's signed checkpoint note with the witness's `cosignature/v1` line added.
    pub checkpoint: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct CosignatureResponse {
    pub size: u64,
    /// Trusted witnesses whose cosignatures were verified and kept.
    pub witnesses: Vec<String>,
}

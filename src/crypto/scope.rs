//! Scopes: typed permission to open a partition's sealed payloads.
//!
//! A [`PartitionScope`] is the only key to plaintext (`Store::read_entry` takes one). It is
//! minted here and nowhere else: by an [`AdminScope`], which only a holder of the KEK gets.
//! A verified credential (`crypto::credential::Verified`) mints the municipality's and the
//! replicator's scopes from what the credential says, never from a request.
//!
//! Other modules cannot build a scope by hand:
//!
//! ```compile_fail
//! let p = kukaku::ledger::PartitionId::parse("131011").unwrap();
//! let scope = kukaku::crypto::PartitionScope { partition: p };
//! ```
//!
//! ```compile_fail
//! let admin = kukaku::crypto::AdminScope { _private: () };
//! ```

use super::Kek;
use crate::ledger::PartitionId;

/// The local administrator: proved by holding the KEK.
#[derive(Debug)]
pub struct AdminScope {
    _private: (),
}

impl AdminScope {
    /// Holding the loaded KEK is the credential of the local admin CLI.
    pub fn from_kek(_kek: &Kek) -> Self {
        AdminScope { _private: () }
    }

    /// One partition's scope.
    pub fn partition(&self, partition: &PartitionId) -> PartitionScope {
        PartitionScope {
            partition: partition.clone(),
        }
    }
}

/// Permission to read one partition's plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionScope {
    partition: PartitionId,
}

impl PartitionScope {
    /// Minted by [`AdminScope`] or a verified credential (`crypto::credential`), never
    /// outside `crypto`.
    pub(super) fn new(partition: PartitionId) -> Self {
        PartitionScope { partition }
    }

    pub fn partition(&self) -> &PartitionId {
        &self.partition
    }
}

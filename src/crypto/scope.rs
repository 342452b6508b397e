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
//!
//! A [`PrefectureScope`] (the continuity job of flow 4) yields scopes of its own
//! prefecture's partitions only, and the one way to hold two at once is a [`PrefecturePair`]
//! of two different partitions of that prefecture:
//!
//! ```compile_fail
//! let s = kukaku::crypto::PrefectureScope { prefecture: "13".to_owned() };
//! ```

use super::KekProvider;
use crate::ledger::PartitionId;

/// The local administrator: proved by holding the KEK.
#[derive(Debug)]
pub struct AdminScope {
    _private: (),
}

impl AdminScope {
    /// Holding the loaded KEK is the credential of the local admin CLI.
    pub fn from_kek(_kek: &dyn KekProvider) -> Self {
        AdminScope { _private: () }
    }

    /// One partition's scope.
    pub fn partition(&self, partition: &PartitionId) -> PartitionScope {
        PartitionScope {
            partition: partition.clone(),
        }
    }

    /// The continuity job's scope of one prefecture (`01`–`47`).
    pub fn prefecture(&self, code: &str) -> Option<PrefectureScope> {
        PrefectureScope::new(code)
    }
}

/// The continuity job (flow 4): the partitions of one prefecture, one at a time or as a
/// [`PrefecturePair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefectureScope {
    prefecture: String,
}

impl PrefectureScope {
    /// Minted by [`AdminScope`] or a continuity operator's verified credential.
    pub(super) fn new(code: &str) -> Option<Self> {
        let n: u8 = code.parse().ok()?;
        (code.len() == 2 && (1..=47).contains(&n)).then(|| PrefectureScope {
            prefecture: code.to_owned(),
        })
    }

    pub fn prefecture(&self) -> &str {
        &self.prefecture
    }

    /// Whether `partition` is a 市町村国保 of this prefecture (国保組合 are not in flow 4).
    pub fn contains(&self, partition: &PartitionId) -> bool {
        crate::domain::InsurerNumber::parse(partition.as_str())
            .is_ok_and(|n| n.is_municipal_in(&self.prefecture))
    }

    /// One partition of the prefecture.
    pub fn partition(&self, partition: &PartitionId) -> Option<PartitionScope> {
        self.contains(partition)
            .then(|| PartitionScope::new(partition.clone()))
    }

    /// The old (A) and new (B) municipality of a move inside the prefecture.
    pub fn pair(&self, old: &PartitionId, new: &PartitionId) -> Option<PrefecturePair> {
        (old != new && self.contains(old) && self.contains(new)).then(|| PrefecturePair {
            old: PartitionScope::new(old.clone()),
            new: PartitionScope::new(new.clone()),
        })
    }
}

/// Two different partitions of one prefecture, for the one job that reads both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefecturePair {
    old: PartitionScope,
    new: PartitionScope,
}

impl PrefecturePair {
    /// A: the municipality the household left.
    pub fn from_scope(&self) -> &PartitionScope {
        &self.old
    }

    /// B: the municipality the household entered.
    pub fn to_scope(&self) -> &PartitionScope {
        &self.new
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefecture_scopes_stay_in_their_prefecture() {
        let kek = crate::crypto::Kek::generate().unwrap();
        let admin = AdminScope::from_kek(&kek);
        assert!(admin.prefecture("48").is_none() && admin.prefecture("1").is_none());
        let tokyo = admin.prefecture("13").unwrap();
        let (a, b) = (
            PartitionId::parse("131011").unwrap(),
            PartitionId::parse("131029").unwrap(),
        );
        let osaka = PartitionId::parse("270009").unwrap();
        assert!(tokyo.partition(&a).is_some());
        assert!(tokyo.partition(&osaka).is_none());
        let pair = tokyo.pair(&a, &b).unwrap();
        assert_eq!(
            (pair.from_scope().partition(), pair.to_scope().partition()),
            (&a, &b)
        );
        assert!(tokyo.pair(&a, &osaka).is_none());
        assert!(tokyo.pair(&a, &a).is_none());
        // A 国保組合 of Tokyo is not a municipality of the prefecture (issue 26).
        let kumiai = PartitionId::parse("33130014").unwrap();
        assert!(tokyo.partition(&kumiai).is_none());
        assert!(tokyo.pair(&a, &kumiai).is_none());
    }
}

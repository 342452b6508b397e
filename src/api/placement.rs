//! Where each partition is served when several cells share one instance identity
//! (docs/operations.md "Several cells"): a static map of cells and of the partitions placed
//! on each, given to `kukaku serve --placement`. A request for a partition placed on another
//! cell is answered 421 Misdirected Request with that cell's address, before anything is
//! read; partitions the map does not name are served here.

use std::collections::BTreeMap;

use axum::http::StatusCode;

use super::error::ApiError;
use crate::ledger::PartitionId;

/// The cells and the partitions placed on each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// This cell's name.
    here: String,
    /// Each cell's base URL, by name.
    cells: BTreeMap<String, String>,
    /// The cell of each placed partition.
    partitions: BTreeMap<PartitionId, String>,
}

/// Why a placement map was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementMapError {
    #[error("this cell ({0}) is not among the cells")]
    UnknownHere(String),
    #[error("partition {partition} is placed on cell {cell}, which is not among the cells")]
    UnknownCell {
        partition: PartitionId,
        cell: String,
    },
    #[error("cell {0}: the address must start with https:// or http://")]
    BadUrl(String),
}

impl Placement {
    /// A map for the cell named `here`.
    pub fn new(
        here: &str,
        cells: BTreeMap<String, String>,
        partitions: BTreeMap<PartitionId, String>,
    ) -> Result<Self, PlacementMapError> {
        if !cells.contains_key(here) {
            return Err(PlacementMapError::UnknownHere(here.to_owned()));
        }
        if let Some((name, _)) = cells
            .iter()
            .find(|(_, url)| !(url.starts_with("https://") || url.starts_with("http://")))
        {
            return Err(PlacementMapError::BadUrl(name.clone()));
        }
        if let Some((p, cell)) = partitions.iter().find(|(_, c)| !cells.contains_key(*c)) {
            return Err(PlacementMapError::UnknownCell {
                partition: p.clone(),
                cell: cell.clone(),
            });
        }
        Ok(Placement {
            here: here.to_owned(),
            cells,
            partitions,
        })
    }

    /// The cell (name, address) serving `p` when it is not this one.
    pub fn elsewhere(&self, p: &PartitionId) -> Option<(&str, &str)> {
        let cell = self.partitions.get(p)?;
        if *cell == self.here {
            return None;
        }
        let url = self.cells.get(cell)?;
        Some((cell, url))
    }

    /// `Ok` when `p` is served here; else the 421 that names its cell.
    pub fn check(&self, p: &PartitionId) -> Result<(), ApiError> {
        match self.elsewhere(p) {
            None => Ok(()),
            Some((cell, url)) => Err(ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "moved",
                format!("partition {p} is served by cell {cell} at {url}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> PartitionId {
        PartitionId::parse(s).unwrap_or_else(|_| unreachable!("a valid id"))
    }

    fn cells() -> BTreeMap<String, String> {
        [("a", "https://a.example"), ("b", "https://b.example")]
            .into_iter()
            .map(|(n, u)| (n.to_owned(), u.to_owned()))
            .collect()
    }

    #[test]
    fn each_partition_is_served_where_the_map_places_it() {
        let placed = [
            (pid("131011"), "b".to_owned()),
            (pid("380014"), "a".to_owned()),
        ];
        let map = Placement::new("a", cells(), placed.into_iter().collect())
            .unwrap_or_else(|e| unreachable!("{e}"));
        // (partition, served elsewhere by)
        let table = [
            ("131011", Some(("b", "https://b.example"))),
            ("380014", None),
            ("470007", None),
        ];
        for (p, want) in table {
            assert_eq!(map.elsewhere(&pid(p)), want, "{p}");
            assert_eq!(map.check(&pid(p)).is_ok(), want.is_none(), "{p}");
        }
        assert!(Placement::default().elsewhere(&pid("131011")).is_none());
    }

    #[test]
    fn a_map_that_cannot_route_is_refused() {
        let to = |cell: &str| [(pid("131011"), cell.to_owned())].into_iter().collect();
        let cases = [
            (
                Placement::new("z", cells(), BTreeMap::new()),
                PlacementMapError::UnknownHere("z".into()),
            ),
            (
                Placement::new("a", cells(), to("c")),
                PlacementMapError::UnknownCell {
                    partition: pid("131011"),
                    cell: "c".into(),
                },
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, Err(want));
        }
        let mut bad = cells();
        bad.insert("c".into(), "b.example".into());
        assert_eq!(
            Placement::new("a", bad, BTreeMap::new()),
            Err(PlacementMapError::BadUrl("c".into()))
        );
    }
}

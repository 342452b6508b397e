//! Known-answer tests: transparency-dev/merkle vectors (tests/data/transparency-dev/SOURCE.md),
//! including the must-fail cases, and the RFC 6962 reference tree recomputed from its leaves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use kukaku::ledger::hash::leaf_hash;
use kukaku::ledger::merkle::root_of;
use kukaku::ledger::proof_json::{ConsistencyProofJson, InclusionProofJson};

fn files(kind: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/transparency-dev")
        .join(kind);
    for d in std::fs::read_dir(base).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    assert!(!out.is_empty());
    out
}

#[test]
fn inclusion_vectors() {
    let (mut good, mut bad) = (0, 0);
    for f in files("inclusion") {
        let v: InclusionProofJson =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let got = v.verify_root(None);
        assert_eq!(
            got.is_err(),
            v.want_err.unwrap(),
            "{}: {got:?}",
            f.display()
        );
        if got.is_ok() { good += 1 } else { bad += 1 }
    }
    assert!(good >= 5 && bad >= 8);
}

#[test]
fn consistency_vectors() {
    let (mut good, mut bad) = (0, 0);
    for f in files("consistency") {
        let v: ConsistencyProofJson =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let got = v.verify_roots(None, None);
        assert_eq!(
            got.is_err(),
            v.want_err.unwrap(),
            "{}: {got:?}",
            f.display()
        );
        if got.is_ok() { good += 1 } else { bad += 1 }
    }
    assert!(good >= 5 && bad >= 7);
}

#[test]
fn reference_tree_roots() {
    let leaves: Vec<_> = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|h| leaf_hash(&hex::decode(h).unwrap()))
    .collect();
    assert_eq!(
        root_of(&leaves).to_base64(),
        "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg="
    );
    assert_eq!(
        root_of(&leaves[..6]).to_base64(),
        "duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8="
    );
    assert_eq!(
        root_of(&leaves[..5]).to_base64(),
        "Tju7H3tHjc/nH7YxYxUZo7yhLJrvyhYSv85ME6hiZNQ="
    );
}

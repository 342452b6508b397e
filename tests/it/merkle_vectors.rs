//! Known-answer tests: transparency-dev/merkle vectors (tests/data/transparency-dev/SOURCE.md),
//! including the must-fail cases, and the RFC 6962 reference tree recomputed from its leaves.

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

/// Runs every vector of `kind`; returns (accepted, rejected) after checking each against wantErr.
fn run<T: serde::de::DeserializeOwned>(
    kind: &str,
    check: impl Fn(&T) -> (bool, Option<bool>),
) -> (u32, u32) {
    let (mut good, mut bad) = (0, 0);
    for f in files(kind) {
        let v: T = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let (failed, want_err) = check(&v);
        assert_eq!(Some(failed), want_err, "{}", f.display());
        if failed { bad += 1 } else { good += 1 }
    }
    (good, bad)
}

#[test]
fn inclusion_vectors() {
    let (good, bad) = run("inclusion", |v: &InclusionProofJson| {
        (v.verify_root(None).is_err(), v.want_err)
    });
    assert!(good >= 5 && bad >= 8);
}

#[test]
fn consistency_vectors() {
    let (good, bad) = run("consistency", |v: &ConsistencyProofJson| {
        (v.verify_roots(None, None).is_err(), v.want_err)
    });
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

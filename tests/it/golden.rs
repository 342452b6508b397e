//! Golden vectors of docs/format.md (tests/data/golden.json, made by an independent script).

use kukaku::crypto::{CheckpointSigner, Cosigner, Secret32};
use kukaku::ledger::hash::{Hash, chain_next, commitment};
use kukaku::ledger::proof_json::InclusionProofJson;
use kukaku::ledger::{Checkpoint, Header, Kind, PartitionId, SignedNote, VerifierKey};
use serde_json::Value;

fn golden() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/golden.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn h(v: &Value) -> Hash {
    Hash::from_slice(&hex::decode(v.as_str().unwrap()).unwrap()).unwrap()
}

#[test]
fn header_leaf_and_chain() {
    let g = golden();
    let f = &g["header"];
    let salt: [u8; 32] = hex::decode(f["salt_hex"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let com = commitment(&salt, f["payload_utf8"].as_str().unwrap().as_bytes());
    assert_eq!(com, h(&f["commitment_hex"]));
    let header = Header {
        partition: PartitionId::parse("131011").unwrap(),
        seq: 7,
        tx_time: 1_767_225_600_000,
        valid_from: 20454,
        kind: Kind::HOUSEHOLD_CORRECTION,
        ref_seq: Some(3),
        prev_chain: h(&f["prev_chain_hex"]),
        commitment: com,
    };
    let bytes = hex::decode(g["header_hex"].as_str().unwrap()).unwrap();
    assert_eq!(header.encode(), bytes);
    assert_eq!(Header::decode(&bytes).unwrap(), header);
    assert_eq!(header.leaf_hash(), h(&g["leaf_hash_hex"]));
    assert_eq!(
        chain_next(&header.prev_chain, &header.leaf_hash()),
        h(&g["chain_hex"])
    );
}

#[test]
fn checkpoint_and_proof() {
    let g = golden();
    let key = VerifierKey::parse(g["vkey"].as_str().unwrap()).unwrap();
    let note = g["checkpoint"].as_str().unwrap();
    let cp = Checkpoint::verify_note(note, &key).unwrap();
    assert_eq!(cp.size, 5);
    assert_eq!(cp.root.to_base64(), g["tree_root_b64"].as_str().unwrap());
    let seed = Secret32::from_slice(&hex::decode(g["signing_seed_hex"].as_str().unwrap()).unwrap())
        .unwrap();
    let signer = CheckpointSigner::from_seed("hub.kokuho-13.example", &seed).unwrap();
    let p = PartitionId::parse("131011").unwrap();
    assert_eq!(signer.sign_checkpoint(&p, 5, cp.root), note);
    assert_eq!(signer.verifier_key(&p).unwrap(), key);
    let proof: InclusionProofJson = serde_json::from_value(g["inclusion"].clone()).unwrap();
    proof.verify_with_key(&key).unwrap();
    // Must-fail: another partition's key, a wrong leaf index.
    let other = signer
        .verifier_key(&PartitionId::parse("380014").unwrap())
        .unwrap();
    assert!(proof.verify_with_key(&other).is_err());
    let mut moved = proof.clone();
    moved.leaf_idx = 1;
    assert!(moved.verify_with_key(&key).is_err());
}

/// C2SP tlog-cosignature (`cosignature/v1`): the vector from tests/data/gen/cosignature.py
/// (Python `cryptography`, independent of this code) verifies, is reproduced byte for byte,
/// and every single-byte change of it is rejected.
#[test]
fn cosigned_checkpoint() {
    let g = golden();
    let log_key = VerifierKey::parse(g["vkey"].as_str().unwrap()).unwrap();
    let witness = VerifierKey::parse(g["cosigner_vkey"].as_str().unwrap()).unwrap();
    assert!(witness.is_cosigner() && !log_key.is_cosigner());
    let cosigned = g["cosigned_checkpoint"].as_str().unwrap();
    let time = g["cosignature_time"].as_u64().unwrap();
    let note = SignedNote::parse(cosigned).unwrap();
    assert_eq!(note.verify_cosignature(&witness), Ok(time));
    // The log signature still verifies; the cosignature line is ignored by it.
    Checkpoint::verify_note(cosigned, &log_key).unwrap();
    // Keys of the wrong type are refused for each check.
    assert!(note.verify(&witness).is_err());
    assert!(note.verify_cosignature(&log_key).is_err());

    let seed =
        Secret32::from_slice(&hex::decode(g["cosigner_seed_hex"].as_str().unwrap()).unwrap())
            .unwrap();
    let cosigner = Cosigner::from_seed("intermediate.kokuho.example", &seed).unwrap();
    assert_eq!(cosigner.verifier_key(), &witness);
    let plain = SignedNote::parse(g["checkpoint"].as_str().unwrap()).unwrap();
    assert_eq!(cosigner.cosign(&plain, time).unwrap().to_text(), cosigned);
    // Cosigning twice replaces the witness's own line instead of adding a second one.
    let again = cosigner.cosign(&note, time + 1).unwrap();
    assert_eq!(again.signatures.len(), 2);
    assert_eq!(again.verify_cosignature(&witness), Ok(time + 1));

    // Every single-byte change breaks the log signature, the cosignature or both.
    let bytes = cosigned.as_bytes();
    for i in 0..bytes.len() {
        let mut b = bytes.to_vec();
        b[i] ^= 0x01;
        let Ok(text) = std::str::from_utf8(&b) else {
            continue;
        };
        let ok = Checkpoint::verify_note(text, &log_key).is_ok()
            && SignedNote::parse(text).is_ok_and(|n| n.verify_cosignature(&witness).is_ok());
        assert!(!ok, "flip of byte {i} accepted");
    }
}

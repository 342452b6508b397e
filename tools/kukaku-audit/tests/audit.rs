//! The auditor against bundles made by the server's store: they verify; every tampering the
//! suite tries is caught and located; state across runs proves append-only; cosignatures,
//! key windows, proofs and exit codes.
#![expect(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking: the panic is its report"
)]

use std::process::Command;

use kukaku::domain::InsurerNumber;
use kukaku::ledger::hash::Hash;
use kukaku::ledger::{Envelope, Kind, PartitionId};
use kukaku::ledger::{Seq, TreeSize};
use kukaku::store::{NewEntry, Paths, Store, StoreOptions};
use kukaku_audit::audit::{AuditError, Options};
use kukaku_audit::{State, Trust, verify_bundle, verify_proof};

fn pid(s: &str) -> PartitionId {
    InsurerNumber::parse(s).unwrap().partition_id()
}

fn options() -> StoreOptions {
    StoreOptions {
        block_cache_bytes: 8 << 20,
        write_buffer_manager_bytes: 8 << 20,
        // Rotate often so key events appear in the log.
        dek_rotate_after: 4,
        ..Default::default()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    paths: Paths,
    store: Store,
    ids: Vec<PartitionId>,
}

fn fixture(batches: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let store = Store::init(&paths, "hub.audit.example", options()).unwrap();
    let ids = vec![pid("131011"), pid("380014")];
    store.request_partitions(&ids).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    let f = Fixture {
        _dir: dir,
        paths,
        store,
        ids,
    };
    append(&f, batches);
    f
}

fn append(f: &Fixture, batches: usize) {
    for b in 0..batches {
        for p in &f.ids {
            let entries = (0..3)
                .map(|i| {
                    NewEntry::new(
                        Kind::HOUSEHOLD_SNAPSHOT,
                        20_000,
                        None,
                        format!("batch {b} item {i}").into_bytes(),
                    )
                    .unwrap()
                })
                .collect();
            f.store.append(p, entries).unwrap();
        }
    }
}

fn bundle(store: &Store, ids: &[PartitionId]) -> Vec<u8> {
    store.export_audit(ids, Vec::new(), &mut |_| {}).unwrap()
}

fn trust_of(store: &Store) -> Trust {
    Trust::parse(&format!("log {}\n", store.log_key().unwrap().to_text())).unwrap()
}

fn run(
    bytes: &[u8],
    trust: &Trust,
    previous: &State,
) -> Result<(kukaku_audit::Report, State), AuditError> {
    verify_bundle(
        bytes,
        &Options {
            trust,
            previous,
            quorum: 0,
        },
    )
}

/// Bundle records with their byte ranges: (tag, start of data, end of data).
fn records(b: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut at = kukaku::ledger::bundle::MAGIC.len();
    let mut out = Vec::new();
    while at < b.len() {
        let tag = b[at];
        let len = u32::from_be_bytes(b[at + 1..at + 5].try_into().unwrap()) as usize;
        out.push((tag, at + 5, at + 5 + len));
        at += 5 + len;
    }
    out
}

/// Re-frames records (tag, data) into a bundle with a correct trailer, as an attacker who
/// edits a bundle would.
fn reframe(parts: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = kukaku::ledger::bundle::MAGIC.to_vec();
    for (tag, data) in parts.iter().filter(|(t, _)| *t != 0xFF) {
        out.push(*tag);
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(data);
    }
    let sum = Hash::digest(&[&out]);
    out.extend_from_slice(&[0xFF, 0, 0, 0, 32]);
    out.extend_from_slice(sum.as_bytes());
    out
}

fn parts(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    records(b)
        .into_iter()
        .map(|(t, s, e)| (t, b[s..e].to_vec()))
        .collect()
}

fn must_fail(bytes: &[u8], trust: &Trust, previous: &State, what: &str) -> AuditError {
    match run(bytes, trust, previous) {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => {
            assert_eq!(e.exit_code(), 1, "{what}: {e}");
            e
        }
    }
}

#[test]
fn server_bundles_verify_and_report() {
    let f = fixture(3);
    let b = bundle(&f.store, &f.ids);
    let trust = trust_of(&f.store);
    let (report, state) = run(&b, &trust, &State::default()).unwrap();
    assert_eq!(report.partitions.len(), 2);
    for (r, p) in report.partitions.iter().zip(&f.ids) {
        assert_eq!(r.partition, p.as_str());
        assert_eq!(r.entries, f.store.size(p).unwrap());
        assert_eq!(
            r.checkpoints as usize,
            f.store.checkpoint_sizes(p).unwrap().len()
        );
        assert_eq!(r.kinds["household_snapshot"], 9);
        assert!(r.key_events.iter().any(|e| e.event == "create"));
        assert!(r.key_events.iter().any(|e| e.event == "rotate"), "{r:?}");
        assert_eq!(r.append_only_since, None);
        let st = &state.logs[&r.log];
        assert_eq!(st.size, r.entries);
    }
    // A partition-pinned key works for its partition only.
    let one = Trust::parse(&format!(
        "log {}\n",
        f.store.verifier_key(&f.ids[0]).unwrap().to_text()
    ))
    .unwrap();
    assert!(matches!(
        run(&b, &one, &State::default()),
        Err(AuditError::NotTrusted(_))
    ));
    run(&bundle(&f.store, &f.ids[..1]), &one, &State::default()).unwrap();
    // Another instance under the same origin: its key is pinned, the bundle's is not.
    let other = fixture(0);
    let e = must_fail(&b, &trust_of(&other.store), &State::default(), "other key");
    assert!(e.to_string().contains("not pinned"), "{e}");
    // Nothing pinned for this origin at all: a usage error (exit 2).
    let elsewhere = Trust::parse(
        "log hub.kokuho-13.example/131011+b49a58cb+ASFS+NGbeR0kRTJC4V8uq2y3z/p7al7TAJeWDgaYgdsS\n",
    )
    .unwrap();
    let e = run(&b, &elsewhere, &State::default()).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
}

/// Every single-byte change anywhere is rejected; with the trailer recomputed (an editing
/// attacker), every change to a hashed byte is still rejected and located. Only sealed bodies
/// and key ids lie outside the hash by design (docs/format.md §3: re-encryption changes them).
#[test]
fn every_single_byte_change_is_rejected() {
    let f = fixture(1);
    let b = bundle(&f.store, &f.ids[..1]);
    let trust = trust_of(&f.store);
    let none = State::default();
    for i in 0..b.len() {
        let mut m = b.clone();
        m[i] ^= 0x01;
        must_fail(&m, &trust, &none, &format!("raw flip at byte {i}"));
    }
    let recs = parts(&b);
    let mut checked = 0;
    for (r, (tag, data)) in recs.iter().enumerate() {
        if *tag == 0xFF {
            continue;
        }
        // Which bytes of this record are hashed (covered by leaf, commitment or signature).
        let hashed: Vec<usize> = match *tag {
            0x02 => {
                let env = Envelope::decode(data).unwrap();
                let sealed = env.key_id != 0;
                (0..data.len())
                    .filter(|&i| i < env.header_len || (!sealed && i >= env.header_len + 4))
                    .collect()
            }
            _ => (0..data.len()).collect(),
        };
        for i in hashed {
            let mut edited = recs.clone();
            edited[r].1[i] ^= 0x01;
            let e = must_fail(
                &reframe(&edited),
                &trust,
                &none,
                &format!("record {r} (tag {tag:#x}) byte {i}"),
            );
            if *tag == 0x02 && i < 40 {
                // Header edits name the partition and a seq.
                assert!(matches!(e, AuditError::Failed { .. }), "{e}");
            }
            checked += 1;
        }
    }
    assert!(checked > 500, "only {checked} bytes checked");
}

/// A bundle of many batches: the reading thread runs ahead of the verifier, so some batches
/// are decoded by the reader (the channel was full) and others by the verifier. Either way
/// the report counts every entry, and a change deep in the bundle, re-framed, is caught and
/// located at its seq.
#[test]
fn a_long_bundle_verifies_whichever_thread_decodes() {
    let f = fixture(0);
    let p = &f.ids[0];
    for b in 0..12u32 {
        let entries = (0..1000u32)
            .map(|i| {
                NewEntry::new(
                    Kind::HOUSEHOLD_SNAPSHOT,
                    20_000,
                    None,
                    vec![(b + i) as u8; 64],
                )
                .unwrap()
            })
            .collect();
        f.store.append(p, entries).unwrap();
    }
    let b = bundle(&f.store, std::slice::from_ref(p));
    let trust = trust_of(&f.store);
    let none = State::default();
    let (report, _) = run(&b, &trust, &none).unwrap();
    assert_eq!(report.partitions[0].entries, f.store.size(p).unwrap());
    assert_eq!(report.partitions[0].kinds["household_snapshot"], 12_000);

    let mut recs = parts(&b);
    let envs: Vec<usize> = (0..recs.len()).filter(|&i| recs[i].0 == 0x02).collect();
    let deep = envs[envs.len() - 100];
    let seq = Envelope::decode(&recs[deep].1).unwrap().header.seq;
    // Byte 20 of the header lies in its tx_time (docs/format.md §2: bytes 16..24 for a
    // 6-digit partition): hashed, so the leaf and the chain break.
    recs[deep].1[20] ^= 0x01;
    let e = must_fail(&reframe(&recs), &trust, &none, "deep edit");
    assert!(
        matches!(&e, AuditError::Failed { seq: s, .. } if *s == seq || *s == seq + 1),
        "{e}"
    );
}

#[test]
fn removed_duplicated_reordered_and_truncated_entries_are_rejected() {
    let f = fixture(2);
    let b = bundle(&f.store, &f.ids[..1]);
    let trust = trust_of(&f.store);
    let none = State::default();
    let recs = parts(&b);
    let envs: Vec<usize> = (0..recs.len()).filter(|&i| recs[i].0 == 0x02).collect();
    let mid = envs[envs.len() / 2];

    let mut removed = recs.clone();
    removed.remove(mid);
    let e = must_fail(&reframe(&removed), &trust, &none, "removed");
    assert!(e.to_string().contains("seq"), "{e}");

    let mut duplicated = recs.clone();
    duplicated.insert(mid, recs[mid].clone());
    must_fail(&reframe(&duplicated), &trust, &none, "duplicated");

    let mut swapped = recs.clone();
    swapped.swap(envs[2], envs[3]);
    must_fail(&reframe(&swapped), &trust, &none, "reordered");

    // Entries after the last checkpoint: not covered by a signature.
    let mut uncovered = recs.clone();
    let last_cp = uncovered.iter().rposition(|(t, _)| *t == 0x03).unwrap();
    uncovered.remove(last_cp);
    let e = must_fail(&reframe(&uncovered), &trust, &none, "uncovered tail");
    assert!(e.to_string().contains("not covered"), "{e}");

    // Truncated after an earlier checkpoint: valid alone, but a rollback for an auditor
    // who verified the full log before.
    let (_, state) = run(&b, &trust, &none).unwrap();
    let cps: Vec<usize> = (0..recs.len()).filter(|&i| recs[i].0 == 0x03).collect();
    let cut = cps[cps.len() - 2];
    let truncated: Vec<_> = recs[..=cut].to_vec();
    run(&reframe(&truncated), &trust, &none).unwrap();
    let e = must_fail(&reframe(&truncated), &trust, &state, "truncated");
    assert!(e.to_string().contains("shrank"), "{e}");
    // Cut without re-framing: no trailer.
    must_fail(&b[..records(&b)[cut].2], &trust, &none, "no trailer");
}

#[test]
fn state_proves_append_only_and_catches_a_rewritten_history() {
    let f = fixture(1);
    let trust = trust_of(&f.store);
    let p = &f.ids[..1];
    // Fork the instance: a copy of the data and key store directories shares the history so
    // far and the signing key.
    let fork_dir = tempfile::tempdir().unwrap();
    let fork_paths = Paths::under(fork_dir.path());
    let first = bundle(&f.store, p);
    let (_, state1) = run(&first, &trust, &State::default()).unwrap();
    let size1 = state1.logs.values().next().unwrap().size;

    // The log grows: the next run confirms the old root at the old size.
    append(&f, 1);
    let second = bundle(&f.store, p);
    let (report, state2) = run(&second, &trust, &state1).unwrap();
    assert_eq!(report.partitions[0].append_only_since, Some(size1));
    assert!(state2.logs.values().next().unwrap().size > size1);

    // A fork that rewrote history after size1 (same key) is caught at that size.
    let Fixture { store, paths, .. } = f;
    drop(store);
    copy_dir(&paths.data, &fork_paths.data);
    copy_dir(&paths.key_store, &fork_paths.key_store);
    std::fs::copy(&paths.kek, &fork_paths.kek).unwrap();
    let original = Store::open(&paths, options()).unwrap();
    let fork = Store::open(&fork_paths, options()).unwrap();
    // Diverge: the fork appends different entries than the original.
    fork.append(
        &p[0],
        vec![NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, b"forked".to_vec()).unwrap()],
    )
    .unwrap();
    original
        .append(
            &p[0],
            vec![NewEntry::new(Kind::HOUSEHOLD_SNAPSHOT, 1, None, b"honest".to_vec()).unwrap()],
        )
        .unwrap();
    let honest = bundle(&original, p);
    let (_, state3) = run(&honest, &trust, &state2).unwrap();
    let forked = bundle(&fork, p);
    run(&forked, &trust, &State::default()).unwrap();
    let e = must_fail(&forked, &trust, &state3, "fork");
    assert!(e.to_string().contains("rewritten"), "{e}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn key_windows_and_witness_cosignatures() {
    let f = fixture(1);
    let b = bundle(&f.store, &f.ids[..1]);
    let key = f.store.log_key().unwrap().to_text();
    let none = State::default();
    // A key whose window ended before these entries were appended.
    let expired = Trust::parse(&format!("log {key} until=2020-01-01\n")).unwrap();
    let e = must_fail(&b, &expired, &none, "expired key");
    assert!(e.to_string().contains("validity window"), "{e}");
    let future = Trust::parse(&format!("log {key} from=2999-01-01\n")).unwrap();
    must_fail(&b, &future, &none, "not yet valid key");
    let windowed = Trust::parse(&format!("log {key} from=2020-01-01 until=2999-01-01\n")).unwrap();
    run(&b, &windowed, &none).unwrap();

    // A witness cosigns the latest checkpoint; the hub keeps it; the bundle carries it.
    let wdir = tempfile::tempdir().unwrap();
    let witness = Store::init(
        &Paths::under(wdir.path()),
        "intermediate.audit.example",
        options(),
    )
    .unwrap();
    let p = &f.ids[0];
    let note = f.store.checkpoint(p).unwrap().unwrap();
    f.store
        .add_cosignature(
            p,
            &witness.cosign(&note).unwrap(),
            &[witness.cosigner_key()],
        )
        .unwrap();
    let b = bundle(&f.store, &f.ids[..1]);
    let trust = Trust::parse(&format!(
        "log {key}\nwitness {}\n",
        witness.cosigner_key().to_text()
    ))
    .unwrap();
    let opts = |quorum| Options {
        trust: &trust,
        previous: &none,
        quorum,
    };
    let (report, _) = verify_bundle(&b[..], &opts(1)).unwrap();
    let r = &report.partitions[0];
    assert_eq!(r.witnesses.len(), 1);
    assert_eq!(r.witnessed_size, Some(f.store.size(p).unwrap()));
    let e = verify_bundle(&b[..], &opts(2)).unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().contains("cosigned by 2"), "{e}");
    // Without the witness pinned, the cosignature is ignored and a warning-free report stays.
    run(&b, &trust_of(&f.store), &none).unwrap();
    // Issue 26: a witness pinned twice counted twice, so one witness met --quorum 2.
    let twice = Trust::parse(&format!(
        "log {key}\nwitness {w}\nwitness {w}\n",
        w = witness.cosigner_key().to_text()
    ))
    .unwrap();
    let e = verify_bundle(
        &b[..],
        &Options {
            trust: &twice,
            previous: &none,
            quorum: 2,
        },
    )
    .unwrap_err();
    assert!(e.to_string().contains("cosigned by 2"), "{e}");
}

#[test]
fn proofs_verify_and_advance_the_state() {
    let f = fixture(2);
    let p = &f.ids[0];
    let trust = trust_of(&f.store);
    let sizes = f.store.checkpoint_sizes(p).unwrap();
    let (old, new) = (sizes[1], *sizes.last().unwrap());
    let inclusion = serde_json::to_string(
        &f.store
            .prove_inclusion(p, Seq(2), Some(TreeSize(new)))
            .unwrap(),
    )
    .unwrap();
    let (r, advance) = verify_proof(&inclusion, &trust, &State::default()).unwrap();
    assert!(advance.is_none());
    assert!(
        matches!(r, kukaku_audit::ProofReport::Inclusion { tree_size, .. } if tree_size == new)
    );
    // Every single-character change of the JSON is rejected or does not parse.
    let bytes = inclusion.as_bytes();
    for i in 0..bytes.len() {
        let mut m = bytes.to_vec();
        m[i] ^= 0x01;
        if let Ok(t) = std::str::from_utf8(&m) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(t) {
                // A JSON-equal edit (whitespace inside the note's escape, say) is the same
                // proof; anything else must fail.
                if v == serde_json::from_str::<serde_json::Value>(&inclusion).unwrap() {
                    continue;
                }
            }
            assert!(
                verify_proof(t, &trust, &State::default()).is_err(),
                "byte {i}: {t}"
            );
        }
    }

    // Consistency from a state at `old` advances it to `new`.
    let mut state = State::default();
    let old_note = f.store.checkpoint_at(p, old).unwrap();
    let old_root =
        kukaku::ledger::Checkpoint::verify_note(&old_note, &f.store.verifier_key(p).unwrap())
            .unwrap()
            .root;
    let log = format!("hub.audit.example/{p}");
    state.logs.insert(
        log.clone(),
        kukaku_audit::state::LogState {
            size: old,
            root: old_root.to_base64(),
            checkpoint: old_note,
        },
    );
    let consistency = serde_json::to_string(
        &f.store
            .prove_consistency(p, TreeSize(old), Some(TreeSize(new)))
            .unwrap(),
    )
    .unwrap();
    let (_, advance) = verify_proof(&consistency, &trust, &state).unwrap();
    let (l, entry) = advance.unwrap();
    assert_eq!((l.as_str(), entry.size), (log.as_str(), new));
    // An error answer saved instead of a proof is named as such (exit 2).
    let e = verify_proof(
        r#"{"error":{"code":"no_checkpoint","message":"m","details":[]}}"#,
        &trust,
        &state,
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("error answer") && e.to_string().contains("no_checkpoint"));
    // From a state whose root differs (a split view), the same proof fails.
    state.logs.get_mut(&log).unwrap().root = Hash::from_bytes([7; 32]).to_base64();
    assert_eq!(
        verify_proof(&consistency, &trust, &state)
            .unwrap_err()
            .exit_code(),
        1
    );
}

fn audit_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kukaku-audit"))
}

#[test]
fn the_binary_exits_0_1_2_and_keeps_state() {
    let f = fixture(1);
    let dir = tempfile::tempdir().unwrap();
    let bundle_path = dir.path().join("audit.bin");
    std::fs::write(&bundle_path, bundle(&f.store, &f.ids)).unwrap();
    let trust = dir.path().join("trust.txt");
    std::fs::write(
        &trust,
        format!("log {}\n", f.store.log_key().unwrap().to_text()),
    )
    .unwrap();
    let state = dir.path().join("state.json");
    let out = audit_bin()
        .args([
            "verify",
            bundle_path.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
        ])
        .args(["--state", state.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("VERIFIED: 2 partition(s)"), "{text}");
    assert!(text.contains("partition 131011"), "{text}");
    assert!(state.exists());

    // JSON report, second run: append-only since the first.
    let out = audit_bin()
        .args([
            "verify",
            bundle_path.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
        ])
        .args(["--state", state.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], true);
    assert!(v["report"]["partitions"][0]["append_only_since"].is_u64());

    // A flipped byte: exit 1, naming partition and seq; the state is untouched.
    let before = std::fs::read(&state).unwrap();
    let mut b = std::fs::read(&bundle_path).unwrap();
    let recs = records(&b);
    let (_, start, _) = recs.iter().find(|(t, ..)| *t == 0x02).unwrap();
    b[start + 20] ^= 0x10;
    let tampered = dir.path().join("tampered.bin");
    std::fs::write(&tampered, &b).unwrap();
    let out = audit_bin()
        .args([
            "verify",
            tampered.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
        ])
        .args(["--state", state.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(v["failure"]["partition"], "131011");
    assert!(v["failure"]["seq"].is_u64());
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED: partition 131011 seq"));
    assert_eq!(std::fs::read(&state).unwrap(), before);

    // Usage and I/O errors: exit 2.
    for args in [
        vec![
            "verify",
            "/nonexistent/bundle",
            "--trust",
            trust.to_str().unwrap(),
        ],
        vec![
            "verify",
            bundle_path.to_str().unwrap(),
            "--trust",
            "/nonexistent/trust",
        ],
        vec!["verify", bundle_path.to_str().unwrap()],
        vec![
            "proof",
            trust.to_str().unwrap(),
            "--trust",
            trust.to_str().unwrap(),
        ],
    ] {
        let out = audit_bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Arbitrary bytes after a valid magic line never panic the reader and never verify.
    #[test]
    fn arbitrary_bundles_are_rejected(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        let mut b = kukaku::ledger::bundle::MAGIC.to_vec();
        b.extend_from_slice(&tail);
        let trust = Trust::parse(
            "log hub.kokuho-13.example/131011+b49a58cb+ASFS+NGbeR0kRTJC4V8uq2y3z/p7al7TAJeWDgaYgdsS\n",
        )
        .unwrap();
        let r = run(&b, &trust, &State::default());
        // Only an empty bundle with a correct trailer could pass, and random bytes do not
        // carry one.
        proptest::prop_assert!(r.is_err());
    }

    /// Arbitrary text never panics the proof, note or trust parsers.
    #[test]
    fn arbitrary_text_is_refused_cleanly(text in "\\PC{0,400}") {
        let trust = Trust::parse(
            "log hub.kokuho-13.example/131011+b49a58cb+ASFS+NGbeR0kRTJC4V8uq2y3z/p7al7TAJeWDgaYgdsS\n",
        )
        .unwrap();
        proptest::prop_assert!(verify_proof(&text, &trust, &State::default()).is_err());
        let _ = Trust::parse(&text);
        let _ = kukaku::ledger::SignedNote::parse(&text);
    }
}

/// A bundle from a checkpoint instead of genesis: anchored by the tree edge and the signed
/// checkpoint there, it continues the previous run's state; a forged edge or a missing
/// anchor is rejected.
#[test]
fn bundles_from_a_checkpoint_continue_the_previous_run() {
    let f = fixture(2);
    let trust = trust_of(&f.store);
    let ids = &f.ids[..1];
    let (_, state1) = run(&bundle(&f.store, ids), &trust, &State::default()).unwrap();
    let size1 = state1.logs.values().next().unwrap().size;
    append(&f, 2);
    let from = f
        .store
        .export_audit_from(ids, size1, None, Vec::new(), &mut |_| {})
        .unwrap();
    assert!(from.len() < bundle(&f.store, ids).len());
    let (report, state2) = run(&from, &trust, &state1).unwrap();
    let r = &report.partitions[0];
    assert_eq!(r.first_seq, size1);
    assert_eq!(r.append_only_since, Some(size1));
    assert_eq!(r.entries, f.store.size(&ids[0]).unwrap());
    assert!(state2.logs.values().next().unwrap().size > size1);
    // The library's plain verifier reads it too.
    let key = f.store.verifier_key(&ids[0]).unwrap();
    kukaku::ledger::bundle::verify(&from[..], &|_| Some(key.clone())).unwrap();

    // Every hashed byte of the start record and the anchor matters.
    let recs = parts(&from);
    let start = recs.iter().position(|(t, _)| *t == 0x04).unwrap();
    for i in 0..recs[start].1.len() {
        let mut edited = recs.clone();
        edited[start].1[i] ^= 0x01;
        must_fail(
            &reframe(&edited),
            &trust,
            &State::default(),
            &format!("start byte {i}"),
        );
    }
    let mut unanchored = recs.clone();
    unanchored.remove(start + 1);
    must_fail(
        &reframe(&unanchored),
        &trust,
        &State::default(),
        "no anchor",
    );
    // Only checkpointed sizes can start a bundle.
    assert!(
        f.store
            .export_audit_from(ids, size1 + 1, None, Vec::new(), &mut |_| {})
            .is_err()
    );
}

/// The auditor routes as input: envelope pages and checkpoints fetched with an auditor
/// credential verify like a bundle; a changed envelope, a missing page or a page of entries
/// without their checkpoint fails.
#[test]
fn saved_route_answers_verify_like_a_bundle() {
    use axum::body::Body;
    use axum::http::Request;
    use kukaku::api::{self, AppState, Limits, ServerRole};
    use kukaku::crypto::credential::{Reach, Role};
    use kukaku_audit::pages::verify_pages;
    use tower::ServiceExt;

    let f = fixture(3);
    let p = f.ids[0].clone();
    let size = f.store.size(&p).unwrap();
    let (token, _) = f
        .store
        .issue_credential(
            Role::Auditor,
            Reach::All,
            "auditor",
            kukaku::store::now_unix_ms() + 60_000,
        )
        .unwrap();
    let token = token.to_text().to_string();
    let Fixture { store, _dir, .. } = f;
    let store = std::sync::Arc::new(store);
    let app = api::router(
        AppState::new(std::sync::Arc::clone(&store), ServerRole::Hub),
        Limits::default(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let get = |uri: String| {
        let app = app.clone();
        let token = token.clone();
        rt.block_on(async move {
            let res = app
                .oneshot(
                    Request::get(uri)
                        .header("authorization", format!("Bearer {token}"))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert!(res.status().is_success(), "{}", res.status());
            let b = axum::body::to_bytes(res.into_body(), 1 << 24)
                .await
                .unwrap();
            String::from_utf8(b.to_vec()).unwrap()
        })
    };
    let half = size / 2;
    let files = vec![
        (
            "cp".to_owned(),
            get(format!("/v1/audit/partitions/{p}/checkpoints")),
        ),
        (
            "e2".to_owned(),
            get(format!(
                "/v1/audit/partitions/{p}/envelopes?from={half}&to={size}"
            )),
        ),
        (
            "e1".to_owned(),
            get(format!(
                "/v1/audit/partitions/{p}/envelopes?from=0&to={half}"
            )),
        ),
    ];
    let trust = trust_of(&store);
    let none = State::default();
    let opts = Options {
        trust: &trust,
        previous: &none,
        quorum: 0,
    };
    let (report, _) = verify_pages(&files, &opts).unwrap();
    assert_eq!(report.partitions[0].entries, size);

    // A changed envelope (its header's tx_time, re-encoded as base64).
    let mut tampered = files.clone();
    let mut v: serde_json::Value = serde_json::from_str(&tampered[2].1).unwrap();
    let e = v["envelopes"][1].as_str().unwrap().to_owned();
    let mut raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, e).unwrap();
    raw[20] ^= 1;
    v["envelopes"][1] =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, raw).into();
    tampered[2].1 = v.to_string();
    assert_eq!(verify_pages(&tampered, &opts).unwrap_err().exit_code(), 1);
    // A missing first page.
    let e = verify_pages(&files[..2], &opts).unwrap_err();
    assert!(e.to_string().contains("were not fetched"), "{e}");
    // Without the checkpoints, nothing is trusted: a usage error.
    assert_eq!(verify_pages(&files[1..], &opts).unwrap_err().exit_code(), 2);
}

/// Every key-lifecycle step (issue 8) shows up in the audit as a key event, and the log stays
/// append-only across them: rotation, KEK rewrap, re-encryption, retirement, destruction.
#[test]
fn key_lifecycle_steps_are_key_events_and_proofs_hold() {
    use kukaku::store::{DestroyScope, KeyActor};
    let f = fixture(3);
    let trust = trust_of(&f.store);
    let (_, before) = run(&bundle(&f.store, &f.ids), &trust, &State::default()).unwrap();
    let who = |r: &str| KeyActor {
        actor: "admin-cli".into(),
        reason: r.into(),
    };
    let (gone, kept) = (&f.ids[0], &f.ids[1]);
    for p in &f.ids {
        f.store.rotate_deks(p, who("annual")).unwrap();
    }
    f.store.rotate_kek(who("annual KEK")).unwrap();
    f.store
        .reencrypt(kept, who("to current"), 4, &mut |_| true)
        .unwrap();
    // With a nonce budget of 4 the job itself rotates; versions it filled stay in use.
    for k in f.store.key_status(kept).unwrap() {
        if k.status == "previous" && k.entries == 0 {
            f.store.retire(kept, k.key_id, who("unused")).unwrap();
        }
    }
    f.store
        .destroy(
            gone,
            DestroyScope::Partition,
            gone.as_str(),
            who("retention ended"),
        )
        .unwrap();
    let (report, _) = run(&bundle(&f.store, &f.ids), &trust, &before).unwrap();
    let events = |p: &PartitionId| -> Vec<&'static str> {
        report
            .partitions
            .iter()
            .find(|r| r.partition == p.as_str())
            .unwrap()
            .key_events
            .iter()
            .map(|e| e.event)
            .collect()
    };
    for p in &f.ids {
        let r = report
            .partitions
            .iter()
            .find(|r| r.partition == p.as_str())
            .unwrap();
        assert_eq!(r.append_only_since, Some(before.logs[&r.log].size), "{p}");
    }
    let k = events(kept);
    for e in [
        "rotate",
        "rewrap",
        "reencrypt_progress",
        "reencrypt_done",
        "retire",
    ] {
        assert!(k.contains(&e), "{e} missing from {k:?}");
    }
    let g = events(gone);
    assert!(g.contains(&"destroy") && g.contains(&"rewrap"), "{g:?}");
    let text = kukaku_audit::report::bundle_text(&report, "test");
    assert!(text.contains("DESTROYED key"), "{text}");
    assert!(text.contains("retention ended"), "{text}");
}

/// A signing-key rotation: with both keys pinned in the windows `kukaku public-keys` prints,
/// the whole log verifies; either key alone does not cover it.
#[test]
fn a_signing_key_rotation_verifies_with_windowed_trust() {
    use kukaku::store::KeyActor;
    let f = fixture(2);
    let who = |r: &str| KeyActor {
        actor: "admin-cli".into(),
        reason: r.into(),
    };
    f.store.rotate_signing_key(who("annual")).unwrap();
    append(&f, 1);
    // Entry times are in milliseconds, windows in seconds: step past the second boundary.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    f.store.finish_signing_rotation(who("pinned")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    append(&f, 1);
    let keys = f.store.signing_keys();
    let lines: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| k.trust_line(i == 0))
        .collect();
    assert!(
        lines[0].contains(" until=") && lines[1].contains(" from="),
        "{lines:?}"
    );
    let b = bundle(&f.store, &f.ids);
    let both = Trust::parse(&format!("{}\n{}\n", lines[0], lines[1])).unwrap();
    let (report, _) = run(&b, &both, &State::default()).unwrap();
    for r in &report.partitions {
        assert_eq!(r.signed_by.len(), 2, "{r:?}");
        let signing = r
            .key_events
            .iter()
            .filter(|e| e.event == "signing_key")
            .count();
        assert_eq!(signing, 2, "{r:?}");
    }
    for only in [&keys[0], &keys[1]] {
        let one = Trust::parse(&format!("log {}\n", only.key.to_text())).unwrap();
        assert!(
            run(&b, &one, &State::default()).is_err(),
            "v{}",
            only.version
        );
    }
}

/// Issue 26 item 1: a hub that forked its history after the auditor's last run hands over a
/// bundle that starts (`--from-size`) past the size in the auditor's state. Before the fix
/// the auditor warned, exited 0 and adopted the fork's root. Now the gap must be proven by a
/// consistency record from the saved size, and the state file stays byte-for-byte unchanged
/// when it is not.
#[test]
fn a_bundle_past_the_saved_size_needs_a_consistency_proof() {
    let f = fixture(1);
    let trust = trust_of(&f.store);
    let p = f.ids[..1].to_vec();
    // The fork shares the history up to here, then diverges before the auditor's next run.
    let Fixture { store, paths, .. } = f;
    drop(store);
    let fork_dir = tempfile::tempdir().unwrap();
    let fork_paths = Paths::under(fork_dir.path());
    copy_dir(&paths.data, &fork_paths.data);
    copy_dir(&paths.key_store, &fork_paths.key_store);
    std::fs::copy(&paths.kek, &fork_paths.kek).unwrap();
    let honest = Store::open(&paths, options()).unwrap();
    let fork = Store::open(&fork_paths, options()).unwrap();
    let grow = |s: &Store, what: &str, n: usize| {
        for i in 0..n {
            let e = NewEntry::new(
                Kind::HOUSEHOLD_SNAPSHOT,
                1,
                None,
                format!("{what} {i}").into(),
            )
            .unwrap();
            s.append(&p[0], vec![e]).unwrap();
        }
    };
    grow(&honest, "honest", 2);
    let (_, saved) = run(&bundle(&honest, &p), &trust, &State::default()).unwrap();
    let saved_size = saved.logs.values().next().unwrap().size;
    grow(&fork, "forked", 4);
    grow(&honest, "honest later", 2);
    let fork_start = *fork.checkpoint_sizes(&p[0]).unwrap().last().unwrap();
    let honest_start = *honest.checkpoint_sizes(&p[0]).unwrap().last().unwrap();
    assert!(fork_start > saved_size && honest_start > saved_size);
    let from = |s: &Store, start: u64, prove: Option<u64>| {
        s.export_audit_from(&p, start, prove, Vec::new(), &mut |_| {})
            .unwrap()
    };

    // The fork without a proof: refused, naming partition, saved size and start.
    let forked = from(&fork, fork_start, None);
    let e = must_fail(&forked, &trust, &saved, "fork past the saved size");
    let text = e.to_string();
    assert!(text.contains("partition 131011"), "{text}");
    assert!(
        text.contains(&format!("starts at size {fork_start}"))
            && text.contains(&format!("past size {saved_size}")),
        "{text}"
    );
    // The fork with a proof from the saved size: the proof's old root is the fork's.
    let forked = from(&fork, fork_start, Some(saved_size));
    let e = must_fail(&forked, &trust, &saved, "fork with its own proof");
    assert!(e.to_string().contains("rewritten"), "{e}");
    // A fork's proof re-labelled with the saved root does not verify.
    let mut recs = parts(&forked);
    let c = recs.iter().position(|(t, _)| *t == 0x05).unwrap();
    let saved_root = Hash::from_base64(&saved.logs.values().next().unwrap().root).unwrap();
    recs[c].1[8..40].copy_from_slice(saved_root.as_bytes());
    must_fail(&reframe(&recs), &trust, &saved, "fork with the saved root");

    // The honest continuation: without a proof it is just as unproven; with one it verifies
    // and advances the state; from the saved size itself it verifies by its entries.
    must_fail(
        &from(&honest, honest_start, None),
        &trust,
        &saved,
        "honest without proof",
    );
    let proven = from(&honest, honest_start, Some(saved_size));
    let (report, next) = run(&proven, &trust, &saved).unwrap();
    let r = &report.partitions[0];
    assert_eq!(r.append_only_since, Some(saved_size));
    assert_eq!(r.append_only_by, Some("consistency_proof"));
    assert_eq!(
        next.logs.values().next().unwrap().size,
        honest.size(&p[0]).unwrap()
    );
    let text = kukaku_audit::report::bundle_text(&report, "b");
    assert!(
        text.contains(&format!(
            "proven by the bundle's consistency proof from size {saved_size}"
        )),
        "{text}"
    );
    let (report, _) = run(&from(&honest, saved_size, None), &trust, &saved).unwrap();
    assert_eq!(report.partitions[0].append_only_by, Some("entries"));
    // The plain library verifier checks the proof too (against the root it carries).
    let key = honest.verifier_key(&p[0]).unwrap();
    kukaku::ledger::bundle::verify(&proven[..], &|_| Some(key.clone())).unwrap();
    // Every byte of the consistency record matters; it may appear once, after the anchor.
    let recs = parts(&proven);
    let c = recs.iter().position(|(t, _)| *t == 0x05).unwrap();
    for i in 0..recs[c].1.len() {
        let mut edited = recs.clone();
        edited[c].1[i] ^= 0x01;
        must_fail(&reframe(&edited), &trust, &saved, &format!("byte {i}"));
    }
    let mut twice = recs.clone();
    twice.insert(c, recs[c].clone());
    must_fail(&reframe(&twice), &trust, &saved, "two consistency records");
    let mut early = recs.clone();
    let moved = early.remove(c);
    early.insert(c - 1, moved);
    must_fail(&reframe(&early), &trust, &saved, "before the anchor");
    // A proof needs a start to prove to.
    assert!(
        honest
            .export_audit_from(&p, 0, Some(saved_size), Vec::new(), &mut |_| {})
            .is_err()
    );

    // Through the binary: exit 1, and the state file is byte-for-byte unchanged.
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    saved.save(&state_path).unwrap();
    let before = std::fs::read(&state_path).unwrap();
    let trust_path = dir.path().join("trust.txt");
    std::fs::write(
        &trust_path,
        format!("log {}\n", honest.log_key().unwrap().to_text()),
    )
    .unwrap();
    let verify = |bytes: &[u8], name: &str| {
        let b = dir.path().join(name);
        std::fs::write(&b, bytes).unwrap();
        audit_bin()
            .args(["verify", b.to_str().unwrap()])
            .args(["--trust", trust_path.to_str().unwrap()])
            .args(["--state", state_path.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = verify(&from(&fork, fork_start, None), "fork.bin");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FAILED") && err.contains("no consistency proof"),
        "{err}"
    );
    assert_eq!(std::fs::read(&state_path).unwrap(), before);
    let out = verify(&proven, "proven.bin");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(std::fs::read(&state_path).unwrap(), before);
}

/// Issue 26 item 4: a key event the auditor cannot decode used to be a warning (exit 0), so a
/// purge with a control character in its reason vanished from the report. A hand-made log
/// (genesis, then a `destroy` key event whose reason holds a newline, correctly chained,
/// tree-hashed and signed) now fails verification with exit 1; the same log with a clean
/// reason verifies and reports the purge.
#[test]
fn an_undecodable_key_event_fails_the_audit() {
    use kukaku::crypto::{CheckpointSigner, Secret32};
    use kukaku::ledger::hash::{chain_next, commitment};
    use kukaku::ledger::payload::{Genesis, KeyClass, KeyEvent, KeyEventKind};
    use kukaku::ledger::{Body, ChainVerifier, Header};

    let partition = pid("131011");
    let seed = Secret32::from_slice(&[7u8; 32]).unwrap();
    let signer = CheckpointSigner::from_seed("hub.handmade.example", &seed).unwrap();
    let trust = Trust::parse(&format!(
        "log {}\n",
        signer.verifier_key(&partition).unwrap().to_text()
    ))
    .unwrap();
    let log = |reason_byte: Option<u8>| {
        let genesis = Genesis {
            origin: "hub.handmade.example".into(),
        }
        .encode()
        .unwrap();
        let mut purge = KeyEvent {
            event: KeyEventKind::Destroy,
            key_id: 1,
            class: KeyClass::Resident,
            epoch: 0,
            version: 1,
            count: 0,
            actor: "admin-cli".into(),
            reason: "court order".into(),
        }
        .encode()
        .unwrap();
        if let Some(b) = reason_byte {
            // "court order" ends the payload: its space becomes the byte.
            let at = purge.len() - "order".len() - 1;
            purge[at] = b;
        }
        let mut v = ChainVerifier::new(partition.clone());
        let mut out = kukaku::ledger::bundle::BundleWriter::new(Vec::new()).unwrap();
        out.partition(&partition, &signer.verifier_key(&partition).unwrap())
            .unwrap();
        let mut prev = Hash::ZERO;
        for (seq, (kind, payload)) in [(Kind::GENESIS, genesis), (Kind::KEY_EVENT, purge)]
            .into_iter()
            .enumerate()
        {
            let salt = [seq as u8; 32];
            let header = Header {
                partition: partition.clone(),
                seq: seq as u64,
                tx_time: 1_780_000_000_000 + seq as u64,
                valid_from: 20_000,
                kind,
                ref_seq: None,
                prev_chain: prev,
                commitment: commitment(&salt, &payload),
            };
            let env = Envelope {
                header_len: header.encoded_len(),
                header,
                key_id: 0,
                body: Body::Open { salt, payload },
            };
            let bytes = env.encode();
            prev = chain_next(&prev, &env.leaf_hash());
            v.push(&bytes).unwrap();
            out.envelope(&bytes).unwrap();
        }
        out.checkpoint(&signer.sign_checkpoint(&partition, 2, v.root()))
            .unwrap();
        out.finish().unwrap()
    };
    let (report, _) = run(&log(None), &trust, &State::default()).unwrap();
    assert_eq!(report.partitions[0].key_events.len(), 1);
    assert!(kukaku_audit::audit::is_purge(
        &report.partitions[0].key_events[0]
    ));
    for b in [b'\n', 0x1b, 0x7f] {
        let e = must_fail(&log(Some(b)), &trust, &State::default(), "control byte");
        assert!(
            e.to_string().contains("seq 1") && e.to_string().contains("key event"),
            "{e}"
        );
    }
    // And through the binary: exit 1, FAILED on stderr.
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("handmade.bin");
    std::fs::write(&b, log(Some(b'\n'))).unwrap();
    let t = dir.path().join("trust.txt");
    std::fs::write(
        &t,
        format!(
            "log {}\n",
            signer.verifier_key(&partition).unwrap().to_text()
        ),
    )
    .unwrap();
    let out = audit_bin()
        .args([
            "verify",
            b.to_str().unwrap(),
            "--trust",
            t.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FAILED"));
}

/// Issue 26 item 6: `kukaku-audit proof` accepted any pinned key of the log, whatever its
/// validity window (a proof carried no time). Proofs now carry `newestEntry`: the header of
/// the checkpoint's last entry with its inclusion proof, which dates the checkpoint; a
/// windowed key must cover it, as in `verify`. Without `newestEntry` only keys without a
/// window are usable.
#[test]
fn proofs_apply_key_validity_windows() {
    let f = fixture(2);
    let p = &f.ids[0];
    let key = f.store.log_key().unwrap().to_text();
    let sizes = f.store.checkpoint_sizes(p).unwrap();
    let size = *sizes.last().unwrap();
    let inclusion = f
        .store
        .prove_inclusion(p, Seq(1), Some(TreeSize(size)))
        .unwrap();
    let consistency = f
        .store
        .prove_consistency(p, TreeSize(sizes[1]), Some(TreeSize(size)))
        .unwrap();
    assert!(inclusion.newest_entry.is_some() && consistency.newest_entry.is_some());
    let none = State::default();
    let trust = |line: &str| Trust::parse(&format!("log {key}{line}\n")).unwrap();
    let within = trust(" from=2020-01-01 until=2999-01-01");
    let expired = trust(" until=2020-01-01");
    let future = trust(" from=2999-01-01");
    let open = trust("");
    for proof in [
        serde_json::to_string(&inclusion).unwrap(),
        serde_json::to_string(&consistency).unwrap(),
    ] {
        verify_proof(&proof, &within, &none).unwrap();
        verify_proof(&proof, &open, &none).unwrap();
        for t in [&expired, &future] {
            let e = verify_proof(&proof, t, &none).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{e}");
            assert!(e.to_string().contains("validity window"), "{e}");
        }
        // Without newestEntry: a windowed key cannot be used; an open one can.
        let mut v: serde_json::Value = serde_json::from_str(&proof).unwrap();
        let newest = v.as_object_mut().unwrap().remove("newestEntry").unwrap();
        let bare = v.to_string();
        let e = verify_proof(&bare, &within, &none).unwrap_err();
        assert!(e.to_string().contains("newestEntry"), "{e}");
        verify_proof(&bare, &open, &none).unwrap();
        // A newest entry that is not the tree's last, or not in it, fails.
        let mut other = v.clone();
        let mut wrong = newest.clone();
        wrong["proof"] = serde_json::json!([]);
        other["newestEntry"] = wrong;
        assert_eq!(
            verify_proof(&other.to_string(), &open, &none)
                .unwrap_err()
                .exit_code(),
            1
        );
        let mut shifted = v.clone();
        let earlier = f
            .store
            .prove_inclusion(p, Seq(0), Some(TreeSize(sizes[1])))
            .unwrap();
        shifted["newestEntry"] = serde_json::to_value(earlier.newest_entry).unwrap();
        assert!(verify_proof(&shifted.to_string(), &within, &none).is_err());
    }
}

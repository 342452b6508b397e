//! The fuzz targets of fuzz/harness.rs, bounded, in CI: each target's seed corpus
//! (fuzz/corpus/<target>) mutated by proptest (bit flips, byte changes, cuts, splices,
//! inserted runs) plus arbitrary bytes. The coverage-guided runs of the same targets are
//! `tools/fuzz.sh` (cargo fuzz, libFuzzer). `KUKAKU_FUZZ_CASES` sets the cases per target
//! (default 256).

#[path = "../../fuzz/harness.rs"]
mod harness;

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("fuzz/corpus/{target}: {e} (run write_seed_corpora)"))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    Cut(usize),
    Drop(usize, usize),
    Insert(usize, Vec<u8>),
    Splice(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::SetByte(i, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Drop(i, n)),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..16),
                // Structure the parsers care about.
                prop::sample::select(vec![
                    b",".to_vec(),
                    b"\"".to_vec(),
                    b"\r\n".to_vec(),
                    b"\n".to_vec(),
                    b"\0".to_vec(),
                    "\u{2014} ".as_bytes().to_vec(),
                    b"99999999999999999999".to_vec(),
                    b"-1".to_vec(),
                    b"{}".to_vec(),
                    b"[]".to_vec(),
                    b"null".to_vec(),
                    vec![0xff; 9],
                    vec![0x82, 0xa0],
                ]),
            ]
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
    ]
}

fn apply(mut data: Vec<u8>, ms: &[Mutation], other: &[u8]) -> Vec<u8> {
    for m in ms {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
        match m {
            Mutation::FlipBit(i, b) if !data.is_empty() => {
                let i = at(*i, data.len());
                data[i] ^= 1 << b;
            }
            Mutation::SetByte(i, v) if !data.is_empty() => {
                let i = at(*i, data.len());
                data[i] = *v;
            }
            Mutation::Cut(i) => {
                let i = at(*i, data.len() + 1);
                data.truncate(i);
            }
            Mutation::Drop(i, n) if !data.is_empty() => {
                let i = at(*i, data.len());
                let end = (i + n).min(data.len());
                data.drain(i..end);
            }
            Mutation::Insert(i, v) => {
                let i = at(*i, data.len() + 1);
                data.splice(i..i, v.iter().copied());
            }
            Mutation::Splice(a, b) => {
                let a = at(*a, data.len() + 1);
                let b = at(*b, other.len() + 1);
                data.truncate(a);
                data.extend_from_slice(&other[b..]);
            }
            _ => {}
        }
    }
    data
}

fn cases() -> u32 {
    std::env::var("KUKAKU_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Every seed once, then mutated seeds and arbitrary bytes.
fn fuzz(target: &str) {
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "fuzz/corpus/{target} is empty");
    for s in &seeds {
        harness::run(target, s);
    }
    let n = seeds.len();
    let input = prop_oneof![
        4 => (0..n, 0..n, prop::collection::vec(mutation(), 1..6)).prop_map(
            move |(i, j, ms)| apply(seeds[i].clone(), &ms, &seeds[j])
        ),
        1 => prop::collection::vec(any::<u8>(), 0..512),
    ];
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&input, |data| {
            harness::run(target, &data);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("fuzz target {target}: {e}"));
}

#[test]
fn envelope() {
    fuzz("envelope");
}

#[test]
fn proof() {
    fuzz("proof");
}

#[test]
fn checkpoint() {
    fuzz("checkpoint");
}

#[test]
fn csv_import() {
    fuzz("csv_import");
}

#[test]
fn json_body() {
    fuzz("json_body");
}

/// The seeds are meaningful, not just bytes: each decodes, verifies or validates.
#[test]
fn seeds_are_accepted() {
    use kukaku::flows::transmission::Encoding;
    use kukaku::ledger::{Envelope, Header};
    for s in corpus("envelope") {
        assert!(Envelope::decode(&s).is_ok() || Header::decode(&s).is_ok());
    }
    let checkpoints = corpus("checkpoint");
    assert!(
        checkpoints
            .iter()
            .filter(|s| kukaku::ledger::SignedNote::parse(std::str::from_utf8(s).unwrap()).is_ok())
            .count()
            >= 2
    );
    let p = kukaku::ledger::PartitionId::parse("131011").unwrap();
    for s in corpus("csv_import") {
        let enc = if s[0] & 1 == 0 {
            Encoding::Utf8
        } else {
            Encoding::Cp932
        };
        if s[0] & 2 == 0 {
            let i = s.iter().skip(1).position(|b| *b == 0).unwrap() + 1;
            let never = |_: &str, _: &str| false;
            let ctx = kukaku::flows::transmission::Context {
                partition: &p,
                transmission_id: "FUZZ-1",
                encoding: enc,
                correction_target: &never,
                previous_members: &kukaku::flows::transmission::no_previous,
            };
            kukaku::flows::transmission::validate(&s[1..i], &s[i + 1..], &ctx).unwrap();
        } else {
            kukaku::flows::kogaku::validate(&s[1..], &p, "FUZZ-1", enc).unwrap();
        }
    }
    for s in corpus("json_body") {
        serde_json::from_slice::<serde_json::Value>(&s[1..]).unwrap();
    }
}

/// Writes the seeds of fuzz/harness.rs into fuzz/corpus/<target>/seed-NN (run after a format
/// change: `cargo test --test it -- --ignored fuzz::write_seed_corpora`).
#[test]
#[ignore]
fn write_seed_corpora() {
    for target in harness::TARGETS {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for old in std::fs::read_dir(&dir).unwrap() {
            let old = old.unwrap().path();
            if old
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")
            {
                std::fs::remove_file(old).unwrap();
            }
        }
        for (i, seed) in harness::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
        }
    }
}

//! Generated sample transmissions for the demo and tests: valid check digits, realistic
//! households (普通 and 擬制世帯主), deterministic from a seed. Every value is synthetic.

use crate::flows::transmission::{Encoding, KOJIN_HEADER, SETAI_HEADER};

const FAMILY: [&str; 12] = [
    "山田", "佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "中村", "小林", "加藤", "吉田", "山本",
];
const FAMILY_KANA: [&str; 12] = [
    "ヤマダ",
    "サトウ",
    "スズキ",
    "タカハシ",
    "タナカ",
    "イトウ",
    "ワタナベ",
    "ナカムラ",
    "コバヤシ",
    "カトウ",
    "ヨシダ",
    "ヤマモト",
];
const GIVEN: [(&str, &str, &str); 8] = [
    ("太郎", "タロウ", "1"),
    ("花子", "ハナコ", "2"),
    ("一郎", "イチロウ", "1"),
    ("美咲", "ミサキ", "2"),
    ("健", "ケン", "1"),
    ("陽菜", "ヒナ", "2"),
    ("翔", "ショウ", "1"),
    ("結衣", "ユイ", "2"),
];

/// A valid 個人番号 derived from `n` (check digit per DOMAIN.md §6.1).
pub fn kojin_no(n: u64) -> String {
    let body = format!("{:011}", n % 100_000_000_000);
    let weights = [6u32, 5, 4, 3, 2, 7, 6, 5, 4, 3, 2];
    let sum: u32 = body
        .bytes()
        .zip(weights)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let r = sum % 11;
    let check = if r <= 1 { 0 } else { 11 - r };
    format!("{body}{check}")
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> usize {
        (self.next() % n.max(1)) as usize
    }
}

fn pick<T: Copy + Default>(items: &[T], rng: &mut Rng) -> T {
    items
        .get(rng.below(items.len() as u64))
        .copied()
        .unwrap_or_default()
}

/// The municipalities of `kukaku demo`: (保険者番号, name, households).
pub const DEMO_MUNICIPALITIES: [(&str, &str, usize); 3] = [
    ("131011", "千代田区", 12),
    ("131029", "中央区", 9),
    ("131037", "港区", 7),
];

/// The transmission `kukaku demo` imports for `DEMO_MUNICIPALITIES[i]`.
pub fn demo_transmission(i: usize) -> Option<SampleFiles> {
    let (code, _, households) = DEMO_MUNICIPALITIES.get(i)?;
    let tid = format!("{code}-2024-0001");
    Some(transmission(code, &tid, *households, 1000 + i as u64))
}

/// The transmission `kukaku demo` shows being refused (it breaks two values of it first).
pub fn demo_refused() -> SampleFiles {
    transmission("131011", "131011-2024-0002", 3, 77)
}

/// The date the sample data describes: its moves start between 2024-04 and 2025-03, so a
/// continuity run as of this date holds them in its 12-month window (a run as of today
/// would list them as too old). `kukaku demo` and the tests extract as of it.
pub const AS_OF: &str = "2025-03-31";

/// The flow-4 move of `kukaku demo`: 千代田区 → 中央区.
pub fn demo_move() -> MoveFiles {
    same_prefecture_move("131011", "131029", 7)
}

/// The two files of a transmission, as text.
#[derive(Clone)]
pub struct SampleFiles {
    pub transmission_id: String,
    pub setai: String,
    pub kojin: String,
    /// Every 個人番号 in the files (for protected-identifier scans in tests).
    pub kojin_nos: Vec<String>,
    /// Every 番号 in the files.
    pub bangos: Vec<String>,
}

impl std::fmt::Debug for SampleFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SampleFiles({}, <redacted>)", self.transmission_id)
    }
}

fn csv_line(fields: &[String]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let _ = w.write_record(fields);
    w.into_inner()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// `households` households of partition `hokensha_no`; every fifth has a 擬制世帯主.
/// `seed` makes 個人番号 and names differ between municipalities and runs.
pub fn transmission(
    hokensha_no: &str,
    transmission_id: &str,
    households: usize,
    seed: u64,
) -> SampleFiles {
    let mut rng = Rng(seed);
    let mut setai = csv_line(&SETAI_HEADER.map(str::to_owned));
    let mut kojin = csv_line(&KOJIN_HEADER.map(str::to_owned));
    let mut kojin_nos = Vec::new();
    let mut bangos = Vec::new();
    let mut serial = seed.wrapping_mul(1_000_003) % 10_000_000_000;
    for h in 0..households {
        let fam = rng.below(FAMILY.len() as u64);
        let (family, family_kana) = (
            FAMILY.get(fam).copied().unwrap_or("山田"),
            FAMILY_KANA.get(fam).copied().unwrap_or("ヤマダ"),
        );
        let giji = h % 5 == 4;
        let members = 1 + rng.below(4);
        // Unique per (seed, household) for seeds below 10^8 and up to 100,000 households: a
        // 世帯番号 names one household, and a later transmission of it must send its members
        // again (issue 27 item 6), so two seeds must never share one.
        let setai_no = format!("S{:013}", seed % 100_000_000 * 100_000 + h as u64);
        let mut persons = Vec::new();
        let head_no = {
            serial += 1;
            kojin_no(serial)
        };
        for m in 0..(members + usize::from(giji)) {
            let no = if m == 0 {
                head_no.clone()
            } else {
                serial += 1;
                kojin_no(serial)
            };
            let (given, kana, sex) = pick(&GIVEN, &mut rng);
            let insured = !(giji && m == 0);
            let zokugara = match m {
                0 => "01",
                1 => "02",
                _ => "03",
            };
            let birth_year = if m <= 1 {
                1950 + rng.below(40)
            } else {
                1995 + rng.below(25)
            };
            let bango = format!("{:010}", 1_000_000_000 + serial % 9_000_000_000);
            let edaban = format!("{:02}", m);
            let mut row = vec![
                "kojin-v1".to_owned(),
                transmission_id.to_owned(),
                setai_no.clone(),
                no.clone(),
                String::new(),
                if insured {
                    bango.clone()
                } else {
                    String::new()
                },
                if insured { edaban } else { String::new() },
                format!("{family} {given}"),
                format!("{family_kana} {kana}"),
                format!(
                    "{birth_year}-{:02}-{:02}",
                    1 + rng.below(12),
                    1 + rng.below(28)
                ),
                sex.to_owned(),
                zokugara.to_owned(),
            ];
            if insured {
                bangos.push(bango);
                row.extend(
                    ["2024-04-01", "03", "", "", "2024-04-01", "", "30", "", "01"]
                        .map(str::to_owned),
                );
            } else {
                row.extend(["", "", "", "", "", "", "", "", ""].map(str::to_owned));
            }
            row.push(if insured { "0" } else { "1" }.to_owned());
            kojin_nos.push(no);
            persons.push(row);
        }
        setai.push_str(&csv_line(&[
            "setai-v1".to_owned(),
            transmission_id.to_owned(),
            hokensha_no.to_owned(),
            setai_no,
            "2024-04-01".to_owned(),
            // 取得: these households did not move within the prefecture (03 would make each
            // a possible move for the continuity job's reset-date check).
            "01".to_owned(),
            String::new(),
            head_no,
            if giji { "2" } else { "1" }.to_owned(),
            "あいう".to_owned(),
            format!("{:03}-{:04}", 100 + rng.below(900), rng.below(10_000)),
            format!(
                "東京都千代田区千代田{}-{}",
                1 + rng.below(9),
                1 + rng.below(30)
            ),
            persons.len().to_string(),
        ]));
        for p in persons {
            kojin.push_str(&csv_line(&p));
        }
    }
    SampleFiles {
        transmission_id: transmission_id.to_owned(),
        setai,
        kojin,
        kojin_nos,
        bangos,
    }
}

/// Encodes sample text in `enc` (CP932 via encoding_rs; the sample uses no unmappable
/// character).
pub fn encode(text: &str, enc: Encoding) -> Vec<u8> {
    match enc {
        Encoding::Utf8 => text.as_bytes().to_vec(),
        Encoding::Cp932 => encoding_rs::SHIFT_JIS.encode(text).0.into_owned(),
    }
}

/// A same-prefecture move for the flow-4 demo: the files of municipality A (the households
/// as they left), of B (as they arrived) and A's 高額該当情報ファイル.
#[derive(Clone)]
pub struct MoveFiles {
    pub a: SampleFiles,
    pub b: SampleFiles,
    pub kogaku_a: String,
}

impl std::fmt::Debug for MoveFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MoveFiles(<redacted>)")
    }
}

/// Two households move from `a` to `b` (same prefecture) on 2024-11-01: 山田 (a child who
/// left employee insurance joins in B: 参酌基準 case 3, contiguous) and 佐藤 (B's 国保適用開始 four days late: a 空白期間,
/// so a person must look). A paid 高額療養費 to 山田 in 2023-10, 2024-06 and 2024-09.
pub fn same_prefecture_move(a: &str, b: &str, seed: u64) -> MoveFiles {
    let base = 70_000_000_000 + seed % 1_000_000 * 1000;
    let (yamada, hanako, ichiro, sato) = (
        kojin_no(base + 1),
        kojin_no(base + 2),
        kojin_no(base + 3),
        kojin_no(base + 4),
    );
    // (個人番号, 氏名, カナ, 生年月日, 性別, 続柄, 資格取得, 適用開始, 適用終了)
    type Row<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
        &'a str,
    );
    let files = |hokensha: &str, tid: &str, households: &[(&str, &str, Vec<Row<'_>>)]| {
        let mut setai = csv_line(&SETAI_HEADER.map(str::to_owned));
        let mut kojin = csv_line(&KOJIN_HEADER.map(str::to_owned));
        let mut nos = Vec::new();
        let mut cards = Vec::new();
        for (setai_no, ido, people) in households {
            let jiyu = if people.iter().any(|p| !p.8.is_empty()) {
                "04"
            } else {
                "03"
            };
            setai.push_str(&csv_line(&[
                "setai-v1".to_owned(),
                tid.to_owned(),
                hokensha.to_owned(),
                (*setai_no).to_owned(),
                (*ido).to_owned(),
                jiyu.to_owned(),
                String::new(),
                people.first().map_or(String::new(), |p| p.0.to_owned()),
                "1".to_owned(),
                String::new(),
                String::new(),
                "東京都".to_owned(),
                people.len().to_string(),
            ]));
            for (i, p) in people.iter().enumerate() {
                // 10 digits, like the generator's: a scan can then look for them exactly.
                let card = format!(
                    "{:010}",
                    2_000_000_000 + seed % 1_000_000 * 1000 + nos.len() as u64
                );
                nos.push(p.0.to_owned());
                cards.push(card.clone());
                kojin.push_str(&csv_line(&[
                    "kojin-v1".to_owned(),
                    tid.to_owned(),
                    (*setai_no).to_owned(),
                    p.0.to_owned(),
                    String::new(),
                    card,
                    format!("{i:02}"),
                    p.1.to_owned(),
                    p.2.to_owned(),
                    p.3.to_owned(),
                    p.4.to_owned(),
                    p.5.to_owned(),
                    p.6.to_owned(),
                    "99".to_owned(),
                    String::new(),
                    String::new(),
                    p.7.to_owned(),
                    p.8.to_owned(),
                    "30".to_owned(),
                    String::new(),
                    "01".to_owned(),
                    "0".to_owned(),
                ]));
            }
        }
        SampleFiles {
            transmission_id: tid.to_owned(),
            setai,
            kojin,
            kojin_nos: nos,
            bangos: cards,
        }
    };
    let a_files = files(
        a,
        &format!("{a}-MOVE-OUT"),
        &[
            (
                "M100",
                "2024-10-31",
                vec![
                    (
                        &yamada,
                        "山田 太郎",
                        "ヤマダ タロウ",
                        "1975-04-02",
                        "1",
                        "01",
                        "2019-04-01",
                        "2019-04-01",
                        "2024-10-31",
                    ),
                    (
                        &hanako,
                        "山田 花子",
                        "ヤマダ ハナコ",
                        "1978-08-15",
                        "2",
                        "02",
                        "2019-04-01",
                        "2019-04-01",
                        "2024-10-31",
                    ),
                ],
            ),
            (
                "M101",
                "2024-10-31",
                vec![(
                    &sato,
                    "佐藤 次郎",
                    "サトウ ジロウ",
                    "1960-01-20",
                    "1",
                    "01",
                    "2018-06-01",
                    "2018-06-01",
                    "2024-10-31",
                )],
            ),
        ],
    );
    let b_files = files(
        b,
        &format!("{b}-MOVE-IN"),
        &[
            (
                "N200",
                "2024-11-01",
                vec![
                    (
                        &yamada,
                        "山田 太郎",
                        "ヤマダ タロウ",
                        "1975-04-02",
                        "1",
                        "01",
                        "2019-04-01",
                        "2024-11-01",
                        "",
                    ),
                    (
                        &hanako,
                        "山田 花子",
                        "ヤマダ ハナコ",
                        "1978-08-15",
                        "2",
                        "02",
                        "2019-04-01",
                        "2024-11-01",
                        "",
                    ),
                    (
                        &ichiro,
                        "山田 一郎",
                        "ヤマダ イチロウ",
                        "2005-05-05",
                        "1",
                        "03",
                        "2024-11-01",
                        "2024-11-01",
                        "",
                    ),
                ],
            ),
            (
                "N201",
                "2024-11-05",
                vec![(
                    &sato,
                    "佐藤 次郎",
                    "サトウ ジロウ",
                    "1960-01-20",
                    "1",
                    "01",
                    "2018-06-01",
                    "2024-11-05",
                    "",
                )],
            ),
        ],
    );
    let mut kogaku_a =
        "layout,transmission_id,hokensha_no,setai_no,shinryo_ym,shikyu_kubun,tasukai_nashi\r\n"
            .to_owned();
    for ym in ["2023-10", "2024-06", "2024-09"] {
        kogaku_a.push_str(&format!("kogaku-v1,{a}-KOGAKU,{a},M100,{ym},1,0\r\n"));
    }
    MoveFiles {
        a: a_files,
        b: b_files,
        kogaku_a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::transmission::{Context, validate};
    use crate::ledger::PartitionId;

    /// The demo's move passes every rule of layout v1 on both sides.
    #[test]
    fn the_sample_move_is_valid() {
        let m = same_prefecture_move("131011", "131029", 7);
        for (p, f) in [("131011", &m.a), ("131029", &m.b)] {
            let partition = PartitionId::parse(p).unwrap();
            let ctx = Context {
                partition: &partition,
                transmission_id: &f.transmission_id,
                encoding: Encoding::Utf8,
                correction_target: &|_, _| false,
                previous_members: &crate::flows::transmission::no_previous,
            };
            let r = validate(f.setai.as_bytes(), f.kojin.as_bytes(), &ctx);
            assert!(r.is_ok(), "{p}: {:?}", r.err());
        }
        let a = PartitionId::parse("131011").unwrap();
        let k = crate::flows::kogaku::validate(
            m.kogaku_a.as_bytes(),
            &a,
            "131011-KOGAKU",
            Encoding::Utf8,
        );
        assert!(k.is_ok(), "{:?}", k.err());
    }
}

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

/// A valid 個人番号 derived from `n` (check digit per docs/domain.md §6.1).
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

/// The 世帯番号 [`transmission`] gives household `h` of `seed`.
pub fn setai_no(seed: u64, h: usize) -> String {
    format!("S{:013}", seed % 100_000_000 * 100_000 + h as u64)
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
        let setai_no = setai_no(seed, h);
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

/// A member row of [`household_files`]: (個人番号, 氏名, カナ, 生年月日, 性別, 続柄, 資格取得,
/// 適用開始, 適用終了).
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

/// A transmission of whole households: (世帯番号, 異動年月日, 異動事由, members).
fn household_files(
    hokensha: &str,
    tid: &str,
    households: &[(&str, &str, &str, Vec<Row<'_>>)],
    seed: u64,
) -> SampleFiles {
    let mut setai = csv_line(&SETAI_HEADER.map(str::to_owned));
    let mut kojin = csv_line(&KOJIN_HEADER.map(str::to_owned));
    let mut nos = Vec::new();
    let mut cards = Vec::new();
    for (setai_no, ido, jiyu, people) in households {
        setai.push_str(&csv_line(&[
            "setai-v1".to_owned(),
            tid.to_owned(),
            hokensha.to_owned(),
            (*setai_no).to_owned(),
            (*ido).to_owned(),
            (*jiyu).to_owned(),
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
    let a_files = household_files(
        a,
        &format!("{a}-MOVE-OUT"),
        &[
            (
                "M100",
                "2024-10-31",
                "04",
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
                "04",
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
        seed,
    );
    let b_files = household_files(
        b,
        &format!("{b}-MOVE-IN"),
        &[
            (
                "N200",
                "2024-11-01",
                "03",
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
                "03",
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
        seed,
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

/// A 高額該当情報ファイル (kogaku-v1) of `hokensha_no`: household 支給 months (shikyu_kubun 1)
/// per 世帯番号.
pub fn kogaku_file(hokensha_no: &str, tid: &str, households: &[(String, Vec<&str>)]) -> String {
    let mut text =
        "layout,transmission_id,hokensha_no,setai_no,shinryo_ym,shikyu_kubun,tasukai_nashi\r\n"
            .to_owned();
    for (setai_no, months) in households {
        for ym in months {
            text.push_str(&format!(
                "kogaku-v1,{tid},{hokensha_no},{setai_no},{ym},1,0\r\n"
            ));
        }
    }
    text
}

/// `n` households that move from `a` to `b` within the prefecture, for the prefecture-scale
/// benchmark: how they were settled in A (取得 2019-04-01), A's 転出 (適用終了 2024-10-31),
/// B's 県内転入 (取得 kept, 適用開始 2024-11-01: contiguous, 参酌基準 case 1) and A's
/// 高額該当 months 2024-06 and 2024-09 for each. 1–3 members each; `seed` (below 10^5)
/// keeps 個人番号 and 世帯番号 apart from [`transmission`]'s and from other seeds'.
#[derive(Clone)]
pub struct Movers {
    pub settled: SampleFiles,
    pub leave: SampleFiles,
    pub arrive: SampleFiles,
    pub kogaku: String,
}

impl std::fmt::Debug for Movers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Movers(<redacted>)")
    }
}

/// One member of a moving household, as every side's files show them.
struct Member {
    kojin_no: String,
    shimei: String,
    kana: String,
    birth: String,
    sex: &'static str,
    zokugara: &'static str,
}

impl Member {
    /// The member's row with the household's 資格取得, 適用開始 and 適用終了 on that side.
    fn row<'a>(&'a self, [shutoku, start, end]: [&'a str; 3]) -> Row<'a> {
        (
            &self.kojin_no,
            &self.shimei,
            &self.kana,
            &self.birth,
            self.sex,
            self.zokugara,
            shutoku,
            start,
            end,
        )
    }
}

/// The [`Movers`] of `n` households from `a` to `b`.
pub fn movers(a: &str, b: &str, n: usize, seed: u64) -> Movers {
    let mut rng = Rng(seed ^ 0x6d6f_7665);
    // 9·10^10 + seed·10^5: beyond every serial `transmission` uses for seeds below 10^4.
    let base = 90_000_000_000 + seed % 100_000 * 100_000;
    let mut people: Vec<Vec<Member>> = Vec::new();
    for h in 0..n {
        let fam = rng.below(FAMILY.len() as u64);
        let family = FAMILY.get(fam).copied().unwrap_or("山田");
        let family_kana = FAMILY_KANA.get(fam).copied().unwrap_or("ヤマダ");
        let members = 1 + rng.below(3);
        people.push(
            (0..members)
                .map(|m| {
                    let (given, given_kana, sex) = pick(&GIVEN, &mut rng);
                    // Born before the 2019-04-01 取得 every side's files carry.
                    let year = if m <= 1 {
                        1950 + rng.below(40)
                    } else {
                        1995 + rng.below(20)
                    };
                    Member {
                        kojin_no: kojin_no(base + (h * 4 + m) as u64),
                        shimei: format!("{family} {given}"),
                        kana: format!("{family_kana} {given_kana}"),
                        birth: format!("{year}-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
                        sex,
                        zokugara: ["01", "02", "03"].get(m).copied().unwrap_or("03"),
                    }
                })
                .collect(),
        );
    }
    let numbers = |prefix: char| -> Vec<String> {
        (0..n)
            .map(|h| format!("{prefix}{:013}", seed % 100_000 * 100_000 + h as u64))
            .collect()
    };
    let (old_nos, new_nos) = (numbers('M'), numbers('N'));
    let side =
        |hokensha: &str, tid: String, nos: &[String], ido: &str, jiyu: &str, dates: [&str; 3]| {
            let households: Vec<(&str, &str, &str, Vec<Row<'_>>)> = nos
                .iter()
                .zip(&people)
                .map(|(no, members)| {
                    let rows = members.iter().map(|m| m.row(dates)).collect();
                    (no.as_str(), ido, jiyu, rows)
                })
                .collect();
            household_files(hokensha, &tid, &households, seed)
        };
    let settled = side(
        a,
        format!("{a}-SETTLED-{seed}"),
        &old_nos,
        "2019-04-01",
        "01",
        ["2019-04-01", "2019-04-01", ""],
    );
    let leave = side(
        a,
        format!("{a}-LEAVE-{seed}"),
        &old_nos,
        "2024-10-31",
        "04",
        ["2019-04-01", "2019-04-01", "2024-10-31"],
    );
    let arrive = side(
        b,
        format!("{b}-ARRIVE-{seed}"),
        &new_nos,
        "2024-11-01",
        "03",
        ["2019-04-01", "2024-11-01", ""],
    );
    let months: Vec<(String, Vec<&str>)> = old_nos
        .into_iter()
        .map(|no| (no, vec!["2024-06", "2024-09"]))
        .collect();
    Movers {
        settled,
        leave,
        arrive,
        kogaku: kogaku_file(a, &format!("{a}-KOGAKU-{seed}"), &months),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::transmission::{Context, validate};
    use crate::ledger::PartitionId;

    /// The benchmark's movers pass layout v1 on both sides (with no earlier snapshot).
    #[test]
    fn the_benchmark_movers_are_valid() {
        let m = movers("131011", "131029", 500, 3);
        for (p, f) in [
            ("131011", &m.settled),
            ("131011", &m.leave),
            ("131029", &m.arrive),
        ] {
            let partition = PartitionId::parse(p).unwrap();
            let ctx = Context {
                partition: &partition,
                transmission_id: &f.transmission_id,
                encoding: Encoding::Utf8,
                correction_target: &|_, _| false,
                previous_members: &crate::flows::transmission::no_previous,
            };
            let r = validate(f.setai.as_bytes(), f.kojin.as_bytes(), &ctx);
            assert!(r.is_ok(), "{p} {}: {:?}", f.transmission_id, r.err());
        }
        let a = PartitionId::parse("131011").unwrap();
        let tid = "131011-KOGAKU-3";
        let k = crate::flows::kogaku::validate(m.kogaku.as_bytes(), &a, tid, Encoding::Utf8);
        assert_eq!(k.map(|r| r.len()).ok(), Some(500));
    }

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

//! Generated sample transmissions for the demo and tests: valid check digits, realistic
//! households (普通 and 擬制世帯主), deterministic from a seed. Every value is synthetic.

use crate::flows::transmission::{Encoding, KOJIN_HEADER, SETAI_HEADER};

mod moves;

pub use moves::*;

pub(super) const FAMILY: [&str; 12] = [
    "山田", "佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "中村", "小林", "加藤", "吉田", "山本",
];
pub(super) const FAMILY_KANA: [&str; 12] = [
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
pub(super) const GIVEN: [(&str, &str, &str); 8] = [
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
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: u64) -> usize {
        (self.next() % n.max(1)) as usize
    }
}

pub(super) fn pick<T: Copy + Default>(items: &[T], rng: &mut Rng) -> T {
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

pub(super) fn csv_line(fields: &[String]) -> String {
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
    let mut g = Generator {
        rng: Rng(seed),
        serial: seed.wrapping_mul(1_000_003) % 10_000_000_000,
        tid: transmission_id,
        kojin_nos: Vec::new(),
        bangos: Vec::new(),
    };
    let mut setai = csv_line(&SETAI_HEADER.map(str::to_owned));
    let mut kojin = csv_line(&KOJIN_HEADER.map(str::to_owned));
    for h in 0..households {
        let (row, persons) = g.household(hokensha_no, seed, h);
        setai.push_str(&csv_line(&row));
        for p in persons {
            kojin.push_str(&csv_line(&p));
        }
    }
    SampleFiles {
        transmission_id: transmission_id.to_owned(),
        setai,
        kojin,
        kojin_nos: g.kojin_nos,
        bangos: g.bangos,
    }
}

/// The state of [`transmission`]'s generator: its random stream, the last 個人番号 serial,
/// and the numbers handed out so far.
struct Generator<'a> {
    rng: Rng,
    serial: u64,
    tid: &'a str,
    kojin_nos: Vec<String>,
    bangos: Vec<String>,
}

impl Generator<'_> {
    fn next_kojin_no(&mut self) -> String {
        self.serial += 1;
        kojin_no(self.serial)
    }

    /// Household `h`: its 世帯ファイル row and its members' 個人ファイル rows.
    fn household(
        &mut self,
        hokensha_no: &str,
        seed: u64,
        h: usize,
    ) -> (Vec<String>, Vec<Vec<String>>) {
        let fam = self.rng.below(FAMILY.len() as u64);
        let family = (
            FAMILY.get(fam).copied().unwrap_or("山田"),
            FAMILY_KANA.get(fam).copied().unwrap_or("ヤマダ"),
        );
        let giji = h % 5 == 4;
        let members = 1 + self.rng.below(4);
        // Unique per (seed, household) for seeds below 10^8 and up to 100,000 households: a
        // 世帯番号 names one household, and a later transmission of it must send its members
        // again (issue 27 item 6), so two seeds must never share one.
        let setai_no = setai_no(seed, h);
        let head_no = self.next_kojin_no();
        let mut persons = Vec::new();
        for m in 0..(members + usize::from(giji)) {
            let no = if m == 0 {
                head_no.clone()
            } else {
                self.next_kojin_no()
            };
            // A 擬制世帯主 (giji) is the head without being insured.
            let insured = !(giji && m == 0);
            persons.push(self.person(&setai_no, no, family, m, insured));
        }
        let rng = &mut self.rng;
        let row = vec![
            "setai-v1".to_owned(),
            self.tid.to_owned(),
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
        ];
        (row, persons)
    }

    /// Member `m` of a household: the 個人ファイル row (資格 fields only when `insured`).
    fn person(
        &mut self,
        setai_no: &str,
        no: String,
        (family, family_kana): (&str, &str),
        m: usize,
        insured: bool,
    ) -> Vec<String> {
        let rng = &mut self.rng;
        let (given, kana, sex) = pick(&GIVEN, rng);
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
        let bango = format!("{:010}", 1_000_000_000 + self.serial % 9_000_000_000);
        let edaban = format!("{:02}", m);
        let mut row = vec![
            "kojin-v1".to_owned(),
            self.tid.to_owned(),
            setai_no.to_owned(),
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
            self.bangos.push(bango);
            row.extend(
                ["2024-04-01", "03", "", "", "2024-04-01", "", "30", "", "01"].map(str::to_owned),
            );
        } else {
            row.extend(["", "", "", "", "", "", "", "", ""].map(str::to_owned));
        }
        row.push(if insured { "0" } else { "1" }.to_owned());
        self.kojin_nos.push(no);
        row
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::transmission::{Context, validate};
    use crate::ledger::PartitionId;

    /// `f` passes every rule of layout v1 as a first transmission to `p`.
    fn assert_valid(p: &str, f: &SampleFiles) {
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

    /// The benchmark's movers pass layout v1 on both sides (with no earlier snapshot).
    #[test]
    fn the_benchmark_movers_are_valid() {
        let m = movers("131011", "131029", 500, 3);
        for (p, f) in [
            ("131011", &m.settled),
            ("131011", &m.leave),
            ("131029", &m.arrive),
        ] {
            assert_valid(p, f);
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
            assert_valid(p, f);
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

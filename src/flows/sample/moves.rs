//! Sample moves within a prefecture: the demo's two households, the benchmark's movers, and
//! 高額該当情報ファイル for them.

use super::*;

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
pub(super) type Row<'a> = (
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

/// A member row from its 個人番号 and the other eight fields in order, separated by `|`.
pub(super) fn row<'a>(no: &'a str, fields: &'a str) -> Row<'a> {
    let mut f = fields.split('|');
    let mut next = || f.next().unwrap_or("");
    (
        no,
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
    )
}

/// A transmission of whole households: (世帯番号, 異動年月日, 異動事由, members).
pub(super) fn household_files(
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
                    row(
                        &yamada,
                        "山田 太郎|ヤマダ タロウ|1975-04-02|1|01|2019-04-01|2019-04-01|2024-10-31",
                    ),
                    row(
                        &hanako,
                        "山田 花子|ヤマダ ハナコ|1978-08-15|2|02|2019-04-01|2019-04-01|2024-10-31",
                    ),
                ],
            ),
            (
                "M101",
                "2024-10-31",
                "04",
                vec![row(
                    &sato,
                    "佐藤 次郎|サトウ ジロウ|1960-01-20|1|01|2018-06-01|2018-06-01|2024-10-31",
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
                    row(
                        &yamada,
                        "山田 太郎|ヤマダ タロウ|1975-04-02|1|01|2019-04-01|2024-11-01|",
                    ),
                    row(
                        &hanako,
                        "山田 花子|ヤマダ ハナコ|1978-08-15|2|02|2019-04-01|2024-11-01|",
                    ),
                    row(
                        &ichiro,
                        "山田 一郎|ヤマダ イチロウ|2005-05-05|1|03|2024-11-01|2024-11-01|",
                    ),
                ],
            ),
            (
                "N201",
                "2024-11-05",
                "03",
                vec![row(
                    &sato,
                    "佐藤 次郎|サトウ ジロウ|1960-01-20|1|01|2018-06-01|2024-11-05|",
                )],
            ),
        ],
        seed,
    );
    let paid = [("M100".to_owned(), vec!["2023-10", "2024-06", "2024-09"])];
    let kogaku_a = kogaku_file(a, &format!("{a}-KOGAKU"), &paid);
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
pub(super) struct Member {
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

/// `n` households of one to three members, 個人番号 from `base`.
fn moving_households(rng: &mut Rng, base: u64, n: usize) -> Vec<Vec<Member>> {
    let mut households: Vec<Vec<Member>> = Vec::new();
    for h in 0..n {
        let fam = rng.below(FAMILY.len() as u64);
        let family = FAMILY.get(fam).copied().unwrap_or("山田");
        let family_kana = FAMILY_KANA.get(fam).copied().unwrap_or("ヤマダ");
        let members = 1 + rng.below(3);
        households.push(
            (0..members)
                .map(|m| {
                    let (given, given_kana, sex) = pick(&GIVEN, rng);
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
    households
}

/// The [`Movers`] of `n` households from `a` to `b`.
pub fn movers(a: &str, b: &str, n: usize, seed: u64) -> Movers {
    let mut rng = Rng(seed ^ 0x6d6f_7665);
    // 9·10^10 + seed·10^5: beyond every serial `transmission` uses for seeds below 10^4.
    let base = 90_000_000_000 + seed % 100_000 * 100_000;
    let people = moving_households(&mut rng, base, n);
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

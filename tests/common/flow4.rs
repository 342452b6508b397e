//! Flow 4 fixtures: households written as layout-v1 files and imported.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "shared by several test binaries: an `expect` would be unfulfilled in those that use less of it"
)]

use kukaku::flows::import::{Importer, import};
use kukaku::flows::transmission::{Encoding, KOJIN_HEADER, SETAI_HEADER};
use kukaku::ledger::PartitionId;
use kukaku::store::Store;

pub const HEAD: &str = "123456789018";
pub const SPOUSE: &str = "123456789050";
pub const CHILD: &str = "314159265352";

pub fn who() -> Importer {
    Importer {
        actor: "admin-cli".into(),
        role: "admin".into(),
        route: "test".into(),
        request_id: "-".into(),
    }
}

/// The date the fixtures' moves are extracted as of (their moves start 2024-04..2025-03).
pub fn as_of() -> i32 {
    kukaku::domain::text::parse_date(kukaku::flows::sample::AS_OF).unwrap()
}

/// One person row: (個人番号, 氏名, 続柄, 取得, 適用開始, 適用終了).
pub type P<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

pub fn files(
    hokensha: &str,
    tid: &str,
    setai_no: &str,
    ido: (&str, &str),
    people: &[P<'_>],
) -> (String, String) {
    let line = |fields: Vec<String>| fields.join(",") + "\r\n";
    let mut setai = line(SETAI_HEADER.iter().map(|s| (*s).to_owned()).collect());
    setai += &line(
        [
            "setai-v1",
            tid,
            hokensha,
            setai_no,
            ido.0,
            ido.1,
            "",
            people[0].0,
            "1",
            "",
            "",
            "東京都",
            &people.len().to_string(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
    );
    let mut kojin = line(KOJIN_HEADER.iter().map(|s| (*s).to_owned()).collect());
    for (i, (no, name, zoku, shutoku, start, end)) in people.iter().enumerate() {
        kojin += &line(
            [
                "kojin-v1",
                tid,
                setai_no,
                no,
                "",
                &format!("{}", 100 + i),
                "00",
                name,
                "",
                "1980-01-01",
                "1",
                zoku,
                shutoku,
                "99",
                "",
                "",
                start,
                end,
                "30",
                "",
                "",
                "0",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        );
    }
    (setai, kojin)
}

pub fn load(
    store: &Store,
    p: &PartitionId,
    tid: &str,
    setai_no: &str,
    ido: (&str, &str),
    people: &[P<'_>],
) {
    let (s, k) = files(p.as_str(), tid, setai_no, ido, people);
    import_pair(store, p, tid, &s, &k);
}

/// Imports a 世帯ファイル and 個人ファイル pair (UTF-8) that must be accepted.
fn import_pair(store: &Store, p: &PartitionId, tid: &str, setai: &str, kojin: &str) {
    import(
        store,
        p,
        tid,
        Encoding::Utf8,
        setai.as_bytes(),
        kojin.as_bytes(),
        &who(),
    )
    .unwrap();
}

/// A 訂正 (異動事由 90) of transmission `of`: the household as it should have been sent.
pub fn load_correction(
    store: &Store,
    p: &PartitionId,
    tid: &str,
    of: &str,
    setai_no: &str,
    ido_date: &str,
    people: &[P<'_>],
) {
    let (s, k) = files(p.as_str(), tid, setai_no, (ido_date, "90"), people);
    let s = s.replacen(",90,,", &format!(",90,{of},"), 1);
    import_pair(store, p, tid, &s, &k);
}

/// A fresh instance under `origin` with `ids` provisioned.
pub fn instance(
    origin: &str,
    ids: &[PartitionId],
) -> (tempfile::TempDir, kukaku::store::Paths, Store) {
    let dir = tempfile::tempdir().unwrap();
    let paths = kukaku::store::Paths::under(dir.path());
    let store = super::init_store(&paths, origin, super::small()).unwrap();
    store.request_partitions(ids).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    (dir, paths, store)
}

/// 千代田区 (A, household A100) → 中央区 (B, B100) on 2024-11-01, A's 高額該当 months
/// 2024-06 and 2024-09: the smallest move with a carry-over.
pub fn tokyo_move() -> (
    tempfile::TempDir,
    kukaku::store::Paths,
    Store,
    PartitionId,
    PartitionId,
) {
    let (a, b) = (super::pid("131011"), super::pid("131029"));
    let (dir, paths, store) = instance("hub.kokuho-13.example", &[a.clone(), b.clone()]);
    tokyo_leaves(&store, &a);
    tokyo_arrives(&store, &b, "2024-11-01");
    kogaku(
        &store,
        &a,
        "KA",
        &[("A100", "2024-06"), ("A100", "2024-09")],
    );
    (dir, paths, store, a, b)
}

/// 中央区's (`b`) household B100: 山田 太郎 (in 国保 since 2020-01-01) moves in (03 転入) on
/// `date`, the arriving half of [`tokyo_move`] (there on 2024-11-01).
pub fn tokyo_arrives(store: &Store, b: &PartitionId, date: &str) {
    load(
        store,
        b,
        "B-1",
        "B100",
        (date, "03"),
        &[(HEAD, "山田 太郎", "01", "2020-01-01", date, "")],
    );
}

/// 千代田区's (`a`) household A100: its head 山田 太郎 (in since 2020-01-01) moved out
/// (04 転出) on 2024-10-31, the leaving half of [`tokyo_move`].
pub fn tokyo_leaves(store: &Store, a: &PartitionId) {
    load(
        store,
        a,
        "A-1",
        "A100",
        ("2024-10-31", "04"),
        &[(
            HEAD,
            "山田 太郎",
            "01",
            "2020-01-01",
            "2020-01-01",
            "2024-10-31",
        )],
    );
}

/// Imports a 高額該当情報ファイル of household 支給 months `(世帯番号, YYYY-MM)` into `p`.
pub fn kogaku(store: &Store, p: &PartitionId, tid: &str, rows: &[(&str, &str)]) {
    let mut text =
        "layout,transmission_id,hokensha_no,setai_no,shinryo_ym,shikyu_kubun,tasukai_nashi\r\n"
            .to_owned();
    for (setai, ym) in rows {
        text += &format!("kogaku-v1,{tid},{p},{setai},{ym},1,0\r\n");
    }
    kukaku::flows::kogaku::import(store, p, tid, Encoding::Utf8, text.as_bytes(), &who()).unwrap();
}

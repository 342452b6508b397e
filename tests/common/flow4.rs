//! Flow 4 fixtures: households written as layout-v1 files and imported.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
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
    import(
        store,
        p,
        tid,
        Encoding::Utf8,
        s.as_bytes(),
        k.as_bytes(),
        &who(),
    )
    .unwrap();
}

/// A fresh instance under `origin` with `ids` provisioned.
pub fn instance(
    origin: &str,
    ids: &[PartitionId],
) -> (tempfile::TempDir, kukaku::store::Paths, Store) {
    let dir = tempfile::tempdir().unwrap();
    let paths = kukaku::store::Paths::under(dir.path());
    let store = Store::init(&paths, origin, super::small()).unwrap();
    store.request_partitions(ids).unwrap();
    store.provision(&mut |_, _| {}).unwrap();
    (dir, paths, store)
}

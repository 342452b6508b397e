//! The rules of one row: every field of a 世帯ファイル or 個人ファイル record, by code
//! table, format and date order (docs/domain.md §9).

use super::*;

/// Field access and problem reporting for one row.
pub(crate) struct Check<'a> {
    pub(crate) file: FileKind,
    pub(crate) row: &'a Row,
    pub(crate) header: &'a [&'static str],
    pub(crate) problems: &'a mut Vec<Problem>,
}

impl Check<'_> {
    pub(crate) fn raw(&self, name: &'static str) -> &str {
        self.header
            .iter()
            .position(|h| *h == name)
            .and_then(|i| self.row.fields.get(i))
            .map_or("", String::as_str)
    }

    /// The `layout` and `transmission_id` columns every layout-v1 row starts with.
    pub(crate) fn layout_and_id(&mut self, layout: &str, transmission_id: &str) {
        if self.raw("layout") != layout {
            self.fail("layout", "layout");
        }
        let tid = self.raw("transmission_id");
        if !valid_transmission_id(tid) {
            self.fail("transmission_id", "format");
        } else if tid != transmission_id {
            self.fail("transmission_id", "transmission_id_mismatch");
        }
    }

    /// `hokensha_no`: a valid 保険者番号 equal to the caller's partition.
    pub(crate) fn hokensha_no(&mut self, partition: &PartitionId) {
        match InsurerNumber::parse(self.raw("hokensha_no")) {
            Ok(n) if &n.partition_id() == partition => {}
            Ok(_) => self.fail("hokensha_no", "other_partition"),
            Err(InsurerNumberError::CheckDigit) => self.fail("hokensha_no", "check_digit"),
            Err(_) => self.fail("hokensha_no", "format"),
        }
    }

    pub(crate) fn fail(&mut self, field: &'static str, reason: &'static str) {
        self.problems.push(Problem {
            file: self.file,
            line: self.row.line,
            field: Some(field),
            reason,
        });
    }

    /// A required field, text rules applied; `None` after reporting.
    fn required(&mut self, name: &'static str, max: usize) -> Option<String> {
        let v = self.raw(name).to_owned();
        if v.is_empty() {
            self.fail(name, "missing");
            return None;
        }
        match check_text(&v, max) {
            Ok(()) => Some(v),
            Err(e) => {
                self.fail(name, e.code());
                None
            }
        }
    }

    pub(crate) fn code(
        &mut self,
        name: &'static str,
        allowed: &[&str],
        required: bool,
    ) -> Option<String> {
        let v = self.raw(name).to_owned();
        if v.is_empty() {
            if required {
                self.fail(name, "missing");
            }
            return None;
        }
        if allowed.contains(&v.as_str()) {
            Some(v)
        } else {
            self.fail(name, "code");
            None
        }
    }

    /// A date field: `(text, day number)`.
    fn date(&mut self, name: &'static str, required: bool) -> Option<(String, i32)> {
        let v = self.raw(name).to_owned();
        if v.is_empty() {
            if required {
                self.fail(name, "missing");
            }
            return None;
        }
        match parse_date(&v) {
            Some(d) => Some((v, d)),
            None => {
                self.fail(name, "date");
                None
            }
        }
    }

    fn kojin_no(&mut self, name: &'static str) -> Option<KojinNo> {
        let v = self.raw(name);
        if v.is_empty() {
            self.fail(name, "missing");
            return None;
        }
        match KojinNo::parse(v) {
            Ok(k) => Some(k),
            Err(e) => {
                self.fail(name, e.code());
                None
            }
        }
    }

    fn kigo_bango(&mut self, name: &'static str) -> Result<Option<String>, ()> {
        let v = self.raw(name).to_owned();
        if v.is_empty() {
            return Ok(None);
        }
        match check_kigo_bango(&v, 20) {
            Ok(()) => Ok(Some(v)),
            Err(e) => {
                self.fail(name, e.code());
                Err(())
            }
        }
    }
}

pub(super) const IDO_JIYU: [&str; 9] = ["01", "02", "03", "04", "05", "06", "07", "90", "99"];
pub(super) const ZOKUGARA: [&str; 6] = ["01", "02", "03", "04", "05", "06"];
pub(super) const SHUTOKU_JIYU: [&str; 5] = ["01", "02", "03", "04", "99"];
pub(super) const SOSHITSU_JIYU: [&str; 4] = ["01", "02", "03", "99"];
pub(super) const FUTAN: [&str; 3] = ["10", "20", "30"];
pub(super) const SHOSHO: [&str; 7] = ["01", "02", "03", "04", "05", "06", "07"];

pub(super) fn gendo_ok(v: &str) -> bool {
    let (band, n) = v.split_at_checked(1).unwrap_or(("", ""));
    let n: u8 = if n.len() == 2 && n.bytes().all(|b| b.is_ascii_digit()) {
        n.parse().unwrap_or(0)
    } else {
        0
    };
    matches!((band, n), ("A", 1..=6) | ("B", 1..=10))
}

/// A household row while validating.
pub(super) struct SetaiDraft {
    pub(super) line: u64,
    pub(super) ido_date: Option<i32>,
    pub(super) head_kojin_no: Option<KojinNo>,
    pub(super) head_kubun: Option<String>,
    pub(super) person_rows: Option<u32>,
    pub(super) household: Household,
    pub(super) persons: Vec<(u64, KojinNo, Person, PersonDates)>,
}

#[derive(Clone, Copy, Default)]
pub(super) struct PersonDates {
    pub(super) shutoku: Option<i32>,
    pub(super) soshitsu: Option<i32>,
}

pub(super) fn setai_row(
    row: &Row,
    ctx: &Context<'_>,
    problems: &mut Vec<Problem>,
) -> Option<SetaiDraft> {
    let mut c = Check {
        file: FileKind::Setai,
        row,
        header: &SETAI_HEADER,
        problems,
    };
    let before = c.problems.len();
    c.layout_and_id("setai-v1", ctx.transmission_id);
    c.hokensha_no(ctx.partition);
    let setai_no = c.raw("setai_no").to_owned();
    if !valid_setai_no(&setai_no) {
        c.fail("setai_no", "format");
    }
    let ido = c.date("ido_date", true);
    let ido_jiyu = c.code("ido_jiyu", &IDO_JIYU, true);
    let teisei = c.raw("teisei_moto").to_owned();
    correction_of(&mut c, ctx, ido_jiyu.as_deref(), &teisei);
    let head = c.kojin_no("head_kojin_no");
    let head_kubun = c.code("head_kubun", &["1", "2"], true);
    let kigo = c.kigo_bango("kigo").ok().flatten();
    let yubin = c.raw("yubin_no").to_owned();
    if !(yubin.is_empty() || valid_yubin(&yubin)) {
        c.fail("yubin_no", "format");
    }
    let jusho = c.required("jusho", 200);
    let rows_text = c.raw("person_rows").to_owned();
    let person_rows = rows_text
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=99).contains(n) && !rows_text.starts_with('+'));
    if person_rows.is_none() {
        c.fail("person_rows", "format");
    }
    if c.problems.len() != before {
        return None;
    }
    Some(SetaiDraft {
        line: row.line,
        ido_date: ido.as_ref().map(|(_, d)| *d),
        head_kojin_no: head,
        head_kubun: head_kubun.clone(),
        person_rows,
        household: Household {
            schema: SNAPSHOT_SCHEMA.to_owned(),
            transmission_id: ctx.transmission_id.to_owned(),
            hokensha_no: ctx.partition.as_str().to_owned(),
            setai_no,
            ido_date: ido.map(|(t, _)| t).unwrap_or_default(),
            ido_jiyu: ido_jiyu.unwrap_or_default(),
            teisei_moto: (!teisei.is_empty()).then_some(teisei),
            head_kojin_no: String::new(),
            head_kubun: head_kubun.unwrap_or_default(),
            kigo,
            yubin_no: (!yubin.is_empty()).then_some(yubin),
            jusho: jusho.unwrap_or_default(),
            persons: Vec::new(),
        },
        persons: Vec::new(),
    })
}

pub(super) fn kojin_row(
    row: &Row,
    ctx: &Context<'_>,
    ido_dates: &BTreeMap<String, Option<i32>>,
    problems: &mut Vec<Problem>,
) -> Option<(String, KojinNo, Person, PersonDates)> {
    let mut c = Check {
        file: FileKind::Kojin,
        row,
        header: &KOJIN_HEADER,
        problems,
    };
    let before = c.problems.len();
    c.layout_and_id("kojin-v1", ctx.transmission_id);
    let setai_no = c.raw("setai_no").to_owned();
    if !valid_setai_no(&setai_no) {
        c.fail("setai_no", "format");
    } else if !ido_dates.contains_key(&setai_no) {
        c.fail("setai_no", "unknown_household");
    }
    let kojin = c.kojin_no("kojin_no");
    let giji = c.code("giji_head", &["0", "1"], true);
    let insured = giji.as_deref() == Some("0");
    let (kigo, bango, edaban) = insurance_numbers(&mut c, insured);
    let shimei = c.required("shimei", 100);
    let kana = c.raw("shimei_kana").to_owned();
    if !kana.is_empty()
        && let Err(e) = check_kana(&kana, 100)
    {
        c.fail("shimei_kana", e.code());
    }
    let birth = c.date("birth_date", true);
    let sex = c.code("sex", &["1", "2", "3"], true);
    let zokugara = c.code("zokugara", &ZOKUGARA, true);
    let ((shutoku, shutoku_jiyu), (soshitsu, soshitsu_jiyu)) = qualification(&mut c, insured);
    let start = c.date("tekiyo_start", insured);
    let end = c.date("tekiyo_end", false);
    let futan = c.code("futan_wariai", &FUTAN, insured);
    let gendo = c.raw("gendo_kubun").to_owned();
    if !gendo.is_empty() && !gendo_ok(&gendo) {
        c.fail("gendo_kubun", "code");
    }
    let shosho = c.code("shosho_kubun", &SHOSHO, false);
    let d = |x: &Option<(String, i32)>| x.as_ref().map(|(_, d)| *d);
    let ido = ido_dates.get(&setai_no).copied().flatten();
    date_order(
        &mut c,
        [&birth, &shutoku, &soshitsu, &start, &end].map(d),
        ido,
    );
    if c.problems.len() != before {
        return None;
    }
    let kojin = kojin?;
    let person = Person {
        kojin_no: String::from_utf8_lossy(kojin.expose()).into_owned(),
        kigo,
        bango,
        edaban: (!edaban.is_empty()).then_some(edaban),
        shimei: shimei?,
        shimei_kana: (!kana.is_empty()).then_some(kana),
        birth_date: birth.map(|(t, _)| t)?,
        sex: sex?,
        zokugara: zokugara?,
        shutoku_date: shutoku.as_ref().map(|(t, _)| t.clone()),
        shutoku_jiyu,
        soshitsu_date: soshitsu.as_ref().map(|(t, _)| t.clone()),
        soshitsu_jiyu,
        tekiyo_start: start.map(|(t, _)| t),
        tekiyo_end: end.map(|(t, _)| t),
        futan_wariai: futan,
        gendo_kubun: (!gendo.is_empty()).then_some(gendo),
        shosho_kubun: shosho,
        giji_head: !insured,
    };
    let dates = PersonDates {
        shutoku: d(&shutoku),
        soshitsu: d(&soshitsu),
    };
    Some((setai_no, kojin, person, dates))
}

/// 記号, 番号 and 枝番 of a person: 番号 and 枝番 are required when insured.
fn insurance_numbers(c: &mut Check<'_>, insured: bool) -> (Option<String>, Option<String>, String) {
    let kigo = c.kigo_bango("kigo").ok().flatten();
    let bango = c.kigo_bango("bango").ok().flatten();
    if insured && bango.is_none() && c.raw("bango").is_empty() {
        c.fail("bango", "missing");
    }
    let edaban = c.raw("edaban").to_owned();
    if edaban.is_empty() {
        if insured {
            c.fail("edaban", "missing");
        }
    } else if !(edaban.len() == 2 && edaban.bytes().all(|b| b.is_ascii_digit())) {
        c.fail("edaban", "format");
    }
    (kigo, bango, edaban)
}

/// A date and its 事由 code.
type Dated = (Option<(String, i32)>, Option<String>);

/// 資格取得 (date required when insured) and 資格喪失, each with its 事由: a 事由 without its
/// date is not allowed.
fn qualification(c: &mut Check<'_>, insured: bool) -> (Dated, Dated) {
    let shutoku = c.date("shutoku_date", insured);
    let shutoku_jiyu = c.code("shutoku_jiyu", &SHUTOKU_JIYU, shutoku.is_some());
    if shutoku.is_none() && !c.raw("shutoku_jiyu").is_empty() && !c.raw("shutoku_date").is_empty() {
        // reported with the date
    } else if shutoku.is_none() && !c.raw("shutoku_jiyu").is_empty() {
        c.fail("shutoku_jiyu", "not_allowed");
    }
    let soshitsu = c.date("soshitsu_date", false);
    let soshitsu_jiyu = c.code("soshitsu_jiyu", &SOSHITSU_JIYU, soshitsu.is_some());
    if c.raw("soshitsu_date").is_empty() && !c.raw("soshitsu_jiyu").is_empty() {
        c.fail("soshitsu_jiyu", "not_allowed");
    }
    ((shutoku, shutoku_jiyu), (soshitsu, soshitsu_jiyu))
}

/// The order of a person's dates (生年月日, 資格取得, 資格喪失, 適用開始, 適用終了, as days) and
/// the household's 異動年月日: born before both, 喪失 and 適用開始 not before 取得, 適用終了
/// not before 適用開始 and the day before 喪失.
fn date_order(c: &mut Check<'_>, dates: [Option<i32>; 5], ido: Option<i32>) {
    let [birth, shutoku, soshitsu, start, end] = dates;
    if let (Some(b), Some(s)) = (birth, shutoku)
        && b > s
    {
        c.fail("birth_date", "date_order");
    }
    if let (Some(b), Some(ido)) = (birth, ido)
        && b > ido
    {
        c.fail("birth_date", "date_order");
    }
    if let (Some(s), Some(l)) = (shutoku, soshitsu)
        && l < s
    {
        c.fail("soshitsu_date", "date_order");
    }
    if let (Some(s), Some(t)) = (shutoku, start)
        && t < s
    {
        c.fail("tekiyo_start", "date_order");
    }
    if let (Some(t), Some(e)) = (start, end)
        && e < t
    {
        c.fail("tekiyo_end", "date_order");
    }
    match (soshitsu, end, c.raw("tekiyo_end").is_empty()) {
        (Some(_), None, true) => c.fail("tekiyo_end", "missing"),
        (Some(l), Some(e), _) if e != l - 1 => c.fail("tekiyo_end", "not_day_before_soshitsu"),
        _ => {}
    }
}

/// 〒 as `NNN-NNNN`.
fn valid_yubin(yubin: &str) -> bool {
    yubin.len() == 8
        && yubin.bytes().enumerate().all(|(i, b)| {
            if i == 3 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// 訂正元: required (a known transmission of this household) exactly when 異動事由 is 90
/// (訂正).
fn correction_of(c: &mut Check<'_>, ctx: &Context<'_>, ido_jiyu: Option<&str>, teisei: &str) {
    match (ido_jiyu, teisei.is_empty()) {
        (Some("90"), true) => c.fail("teisei_moto", "missing"),
        (Some("90"), false) if !valid_transmission_id(teisei) => c.fail("teisei_moto", "format"),
        (Some("90"), false) if !(ctx.correction_target)(teisei, c.raw("setai_no")) => {
            c.fail("teisei_moto", "unknown_transmission")
        }
        (Some(j), false) if j != "90" => c.fail("teisei_moto", "not_allowed"),
        _ => {}
    }
}

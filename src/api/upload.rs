//! Flow 5 at the municipality terminal (issue 28 item 2): a clerk sends a 世帯ファイル and
//! 個人ファイル pair from the browser (a multipart form, CSRF checked, the transmission id
//! read from the files), with the same validation and all-or-nothing import as
//! `POST /v1/transmissions`; a refusal answers with the 処理結果, every problem by file,
//! line, field and reason (never a value), also as a CSV download. The 送信状況 page lists
//! the partition's transmissions: 受付済 (seqs, the checkpoint that covers them), then
//! 中間サーバー送付済 once a trusted witness (the intermediate) has cosigned a checkpoint
//! covering them, with the cosignature's time and the lag; and this server's refusals
//! (エラー), which are kept in memory only: nothing of a refused transmission is stored.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::AppState;
use super::error::ApiError;
use super::pages::{Terminal, api_error, jst_wareki, layout, page, page_error};
use crate::flows::import::{ImportError, ImportOutcome, Importer, import_checked};
use crate::flows::transmission::{Encoding, Problem, Rejected, declared_id};
use crate::ledger::PartitionId;
use crate::ledger::note::SignedNote;

/// The upload's path (its body limit is the transmissions' one).
pub const UPLOAD_PATH: &str = "/terminal/transmissions";
/// Refusals kept per partition (the oldest go first).
const KEPT_REFUSALS: usize = 50;

/// A refused upload, as the 送信状況 page lists it: no content, only that it was refused.
#[derive(Debug, Clone)]
struct Refusal {
    transmission_id: String,
    at_ms: u64,
    problems: usize,
    clerk: String,
}

/// This server's refused uploads per partition, in memory (a restart forgets them; the
/// files were never stored).
#[derive(Default)]
pub struct Refusals(Mutex<HashMap<PartitionId, VecDeque<Refusal>>>);

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refusals(..)")
    }
}

impl Refusals {
    fn add(&self, p: &PartitionId, r: Refusal) {
        if let Ok(mut map) = self.0.lock() {
            let list = map.entry(p.clone()).or_default();
            list.push_front(r);
            list.truncate(KEPT_REFUSALS);
        }
    }

    fn of(&self, p: &PartitionId) -> Vec<Refusal> {
        self.0
            .lock()
            .map(|m| {
                m.get(p)
                    .map(|l| l.iter().cloned().collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }
}

/// The upload form's fields, read whole before anything is checked.
#[derive(Default)]
struct Upload {
    csrf: String,
    encoding: String,
    setai: Zeroizing<Vec<u8>>,
    kojin: Zeroizing<Vec<u8>>,
}

async fn read_upload(mut form: Multipart) -> Result<Upload, ApiError> {
    let bad = |_| ApiError::bad_request("bad_form", "the upload form could not be read");
    let mut up = Upload::default();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = Zeroizing::new(field.bytes().await.map_err(bad)?.to_vec());
        match name.as_str() {
            "csrf" => up.csrf = String::from_utf8_lossy(&bytes).into_owned(),
            "encoding" => up.encoding = String::from_utf8_lossy(&bytes).into_owned(),
            "setai_file" => up.setai = bytes,
            "kojin_file" => up.kojin = bytes,
            _ => {}
        }
    }
    Ok(up)
}

async fn new_form(t: Terminal) -> Response {
    page(layout(
        "異動ファイル送信",
        Some(&t),
        html! {
            h2 { "異動ファイル送信（世帯ファイル・個人ファイル）" }
            p { "同じ送信の世帯ファイルと個人ファイルを選んで送信します。送信番号はファイルから読み取ります。1件でも誤りがあれば何も登録されず、処理結果に誤りの一覧が表示されます。" }
            form method="post" action=(UPLOAD_PATH) enctype="multipart/form-data" {
                input type="hidden" name="csrf" value=(t.csrf);
                label for="setai_file" { "世帯ファイル" }
                input id="setai_file" type="file" name="setai_file" accept=".csv,text/csv" required autofocus;
                label for="kojin_file" { "個人ファイル" }
                input id="kojin_file" type="file" name="kojin_file" accept=".csv,text/csv" required;
                label for="encoding" { "文字コード" }
                select id="encoding" name="encoding" {
                    option value="cp932" { "Shift_JIS（CP932）" }
                    option value="utf-8" { "UTF-8" }
                }
                p { button type="submit" { "送信" } }
            }
        },
    ))
}

async fn upload(State(state): State<Arc<AppState>>, t: Terminal, form: Multipart) -> Response {
    let up = match read_upload(form).await {
        Ok(up) => up,
        Err(e) => return api_error(e),
    };
    if let Some(r) = t.csrf_refusal(&up.csrf) {
        return r;
    }
    let Some(encoding) = Encoding::parse(&up.encoding) else {
        return page_error(StatusCode::BAD_REQUEST, "文字コードを選んでください。");
    };
    let Some(id) = declared_id(&up.setai, encoding) else {
        let none = Rejected {
            problems: vec![Problem {
                file: crate::flows::transmission::FileKind::Setai,
                line: 2,
                field: Some("transmission_id"),
                reason: "missing",
            }],
        };
        return refused(&state, &t, "（不明）", &none);
    };
    let who = Importer {
        actor: t.muni.actor.credential.to_string(),
        role: t.muni.actor.role.name().to_owned(),
        route: format!("POST {UPLOAD_PATH}"),
        request_id: super::request_id::current(),
    };
    let scope = t.muni.scope.clone();
    let tid = id.clone();
    let result = super::access::blocking(&state, move |s| {
        Ok(import_checked(
            s, &scope, &tid, encoding, &up.setai, &up.kojin, &who,
        ))
    })
    .await;
    match result {
        Ok(Ok(ImportOutcome { .. })) => {
            Redirect::to(&format!("{UPLOAD_PATH}?accepted={}", encode_query(&id))).into_response()
        }
        Ok(Err(ImportError::Rejected(r))) => refused(&state, &t, &id, &r),
        Ok(Err(ImportError::Conflict)) => page_error(
            StatusCode::CONFLICT,
            "この送信番号は別の内容で受付済みです。送信番号を確認してください。",
        ),
        Ok(Err(other)) => api_error(super::routes::import_error(other)),
        Err(e) => api_error(e),
    }
}

/// Percent-encodes a transmission id for the redirect's query (ids are ASCII letters,
/// digits and `-`, but the value came from a file).
fn encode_query(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The 処理結果 of a refused upload (422), noted for the 送信状況 page.
fn refused(state: &AppState, t: &Terminal, id: &str, r: &Rejected) -> Response {
    state.refusals.add(
        t.muni.scope.partition(),
        Refusal {
            transmission_id: id.to_owned(),
            at_ms: crate::store::now_unix_ms(),
            problems: r.problems.len(),
            clerk: t.muni.actor.display_name(),
        },
    );
    let mut res = page(layout(
        "処理結果",
        Some(t),
        html! {
            h2 { "処理結果：エラー" }
            p.error role="alert" {
                "送信番号 " (id) " は受け付けられませんでした。" (r.problems.len())
                " 件の誤りがあります。何も登録されていません。誤りを直して、もう一度送信してください。"
            }
            p { a download="shori-kekka.csv" href=(problems_csv_url(r)) { "誤りの一覧を CSV でダウンロード" } }
            (problems_table(r))
            p { a href="/terminal/transmissions/new" { "送信し直す" } }
        },
    ));
    *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    res
}

fn file_label(p: &Problem) -> &'static str {
    match p.file {
        crate::flows::transmission::FileKind::Setai => "世帯ファイル",
        crate::flows::transmission::FileKind::Kojin => "個人ファイル",
        crate::flows::transmission::FileKind::Kogaku => "高額該当情報ファイル",
    }
}

/// A reason code in the clerk's words (the code itself is in the CSV and the API).
fn reason_label(code: &str) -> &'static str {
    match code {
        "check_digit" => "検査用数字（チェックディジット）が合いません",
        "format" => "形式が誤っています",
        "missing" => "必須の項目が空です",
        "code" => "コードが定義にありません",
        "date" => "日付が誤っています",
        "date_order" => "日付の前後関係が誤っています",
        "duplicate" => "重複しています",
        "duplicate_card_number" => "記号・番号・枝番が重複しています",
        "header" => "見出し行が様式と違います",
        "column_count" => "項目数が様式と違います",
        "csv_syntax" => "CSV の書式が誤っています",
        "undecodable" => "選んだ文字コードで読めない文字があります",
        "empty_file" => "ファイルが空です",
        "file_too_large" => "ファイルが大きすぎます",
        "no_rows" => "データ行がありません",
        "too_long" => "長すぎます",
        "not_katakana" => "カタカナ以外の文字があります",
        "control_character" | "private_use_character" => "使えない文字があります",
        "transmission_id_mismatch" => "送信番号が世帯ファイルと一致しません",
        "member_missing" => "前回の世帯員が喪失なしで欠けています",
        "head_shikaku_closed" => "世帯主の資格が終了しています",
        "unknown_household" => "世帯ファイルにない世帯です",
        "unknown_transmission" => "訂正元の送信がありません",
        "other_partition" => "他の保険者のデータです",
        "person_rows_mismatch" => "世帯人数と個人ファイルの行数が合いません",
        _ => "様式の規則に合いません",
    }
}

fn problems_table(r: &Rejected) -> Markup {
    html! {
        table {
            thead { tr { th { "ファイル" } th { "行" } th { "項目" } th { "理由" } th { "理由コード" } } }
            tbody { @for p in &r.problems { tr {
                td { (file_label(p)) }
                td { @if p.line == 0 { "ファイル全体" } @else { (p.line) } }
                td { (p.field.unwrap_or("—")) }
                td { (reason_label(p.reason)) }
                td { (p.reason) }
            } } }
        }
    }
}

/// The problems as a CSV file in a `data:` URL (UTF-8 with a BOM, so that a spreadsheet
/// reads the Japanese header): where and why only, so nothing of the files is in it.
fn problems_csv_url(r: &Rejected) -> String {
    let mut csv = String::from("\u{FEFF}ファイル,行,項目,理由\r\n");
    for p in &r.problems {
        csv.push_str(&format!(
            "{},{},{},{}\r\n",
            p.file.name(),
            p.line,
            p.field.unwrap_or(""),
            p.reason
        ));
    }
    let mut url = String::from("data:text/csv;charset=utf-8,");
    for b in csv.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => url.push(b as char),
            _ => url.push_str(&format!("%{b:02X}")),
        }
    }
    url
}

/// One row of the 送信状況 list.
struct Row {
    id: String,
    at_ms: u64,
    households: usize,
    seqs: (u64, u64),
    checkpoint: Option<u64>,
    /// The time the intermediate cosigned a checkpoint covering the transmission.
    forwarded_ms: Option<u64>,
}

/// One page of the partition's transmissions, newest first, with their checkpoint and
/// forwarding (looked up for the page's rows only), and the number of transmissions.
fn rows(
    store: &crate::store::Store,
    p: &PartitionId,
    witnesses: &[crate::ledger::VerifierKey],
    page: Option<usize>,
) -> Result<(Vec<Row>, usize, usize, usize), ApiError> {
    let mut all = store.transmissions(p)?;
    all.sort_by_key(|(_, t)| std::cmp::Reverse(t.first_seq));
    let (range, page, pages) = super::pages::page_of(all.len(), page);
    let sizes = store.checkpoint_sizes(p)?;
    // A cosigned checkpoint covers many transmissions: its signature is checked once.
    let mut verified: HashMap<u64, Option<u64>> = HashMap::new();
    let mut out = Vec::new();
    for (id, t) in all.get(range).unwrap_or_default() {
        let end = t.first_seq + t.count;
        let checkpoint = sizes.get(sizes.partition_point(|s| *s < end)).copied();
        let forwarded_ms = match store.cosigned_at_or_after(p, end)? {
            None => None,
            Some((size, note)) => *verified
                .entry(size)
                .or_insert_with(|| cosigned_ms(&note, witnesses)),
        };
        out.push(Row {
            id: id.clone(),
            at_ms: t.tx_time_ms,
            households: t.households.len(),
            seqs: (t.first_seq, end.saturating_sub(1)),
            checkpoint,
            forwarded_ms,
        });
    }
    Ok((out, all.len(), page, pages))
}

/// The earliest time a trusted witness cosigned `note`, in ms; `None` if no trusted
/// witness's cosignature verifies (nothing is claimed that was not proven).
pub(super) fn cosigned_ms(note: &str, witnesses: &[crate::ledger::VerifierKey]) -> Option<u64> {
    let note = SignedNote::parse(note).ok()?;
    witnesses
        .iter()
        .filter_map(|w| note.verify_cosignature(w).ok())
        .min()
        .map(|secs| secs.saturating_mul(1000))
}

fn lag(ms: u64) -> String {
    match ms / 1000 {
        s if s < 120 => format!("{s} 秒"),
        s if s < 7200 => format!("{} 分", s / 60),
        s => format!("{} 時間", s / 3600),
    }
}

#[derive(Deserialize)]
struct ListParams {
    accepted: Option<String>,
    /// The page of the list (1-based).
    page: Option<usize>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    axum::extract::Query(q): axum::extract::Query<ListParams>,
) -> Response {
    let p = t.muni.scope.partition().clone();
    let witnesses = state.witnesses.clone();
    let wanted = q.page;
    let (rows, total, page_no, pages) =
        match super::access::blocking(&state, move |s| rows(s, &p, &witnesses, wanted)).await {
            Ok(r) => r,
            Err(e) => return api_error(e),
        };
    let refusals = state.refusals.of(t.muni.scope.partition());
    page(layout(
        "送信状況",
        Some(&t),
        html! {
            h2 { "送信状況" }
            @if let Some(id) = &q.accepted {
                p.flash role="status" { "送信番号 " (id) " を受け付けました。" }
            }
            p { (total) " 件" }
            (super::pages::pager(UPLOAD_PATH, "", page_no, pages))
            table {
                thead { tr {
                    th { "送信番号" } th { "受付日時" } th { "世帯数" } th { "番号範囲" }
                    th { "チェックポイント" } th { "状態" } th { "送付日時" } th { "所要" }
                } }
                tbody {
                    @for r in &rows { tr {
                        td { (r.id) }
                        td { (jst_wareki(r.at_ms)) }
                        td { (r.households) }
                        td { (r.seqs.0) "–" (r.seqs.1) }
                        td { @if let Some(c) = r.checkpoint { "サイズ " (c) } @else { "—" } }
                        @if let Some(f) = r.forwarded_ms {
                            td { span.tag.continue { "中間サーバー送付済" } }
                            td { (jst_wareki(f)) }
                            td { (lag(f.saturating_sub(r.at_ms))) }
                        } @else {
                            td { span.tag { "受付済" } }
                            td { "—" } td { "—" }
                        }
                    } }
                }
            }
            @if !refusals.is_empty() {
                h3 { "エラーになった送信（このサーバーの起動以降）" }
                table {
                    thead { tr { th { "送信番号" } th { "日時" } th { "誤りの件数" } th { "職員" } } }
                    tbody { @for r in &refusals { tr {
                        td { (r.transmission_id) } td { (jst_wareki(r.at_ms)) }
                        td { span.tag.not_continue { "エラー" } " " (r.problems) " 件" }
                        td { (r.clerk) }
                    } } }
                }
            }
        },
    ))
}

/// The terminal's flow-5 routes; the upload takes the transmissions' body limit.
pub fn router(limits: super::Limits) -> Router<Arc<AppState>> {
    Router::new()
        .route(
            UPLOAD_PATH,
            get(list)
                .post(upload)
                .layer(DefaultBodyLimit::max(limits.body_limit(UPLOAD_PATH))),
        )
        .route("/terminal/transmissions/new", get(new_form))
}

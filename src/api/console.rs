//! The 国保連合会 operator's console (issue 28 item 5): a continuity-operator credential logs
//! in at the terminal's login page and gets its prefecture only. Per municipality: the flow-4
//! counts (undecided, decided, confirmed, not continued, anomalies open) and how far the
//! intermediate has verified its log (entries not yet cosigned, the last cosignature's time);
//! it runs the extraction (as of a date) and the confirmation, with the same idempotency as
//! the API, and shows each run's report. Counts only: no name, 世帯番号 or month of a
//! household is on these pages; reading a municipality's candidates to count them is an
//! access record there.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{Markup, html};
use serde::Deserialize;

use super::AppState;
use super::access::partition_names;
use super::auth::ContinuityOperator;
use super::pages::{
    AnySession, api_error, csrf_refusal, frame, jst_wareki, logout_button, page, page_error,
};
use crate::flows::decision::{ConfirmReport, Workload};
use crate::flows::import::Importer;
use crate::ledger::PartitionId;

pub use super::pages::CONSOLE_PATH;

/// A logged-in operator: the prefecture's scope comes from the credential.
pub struct Console {
    op: ContinuityOperator,
    csrf: String,
    names: HashMap<PartitionId, String>,
}

impl FromRequestParts<Arc<AppState>> for Console {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let s = AnySession::from_request_parts(parts, state).await?;
        match ContinuityOperator::from_verified(s.verified) {
            Ok(op) => Ok(Console {
                op,
                csrf: s.csrf,
                names: partition_names(state).await,
            }),
            Err(_) => Err(page_error(
                StatusCode::FORBIDDEN,
                "この画面は国保連合会の運用担当が使います。",
            )),
        }
    }
}

impl Console {
    fn insurer(&self, number: &str) -> String {
        match PartitionId::parse(number)
            .ok()
            .and_then(|p| self.names.get(&p))
        {
            Some(name) => format!("{number} {name}"),
            None => number.to_owned(),
        }
    }

    fn importer(&self, route: &str) -> Importer {
        super::continuity::importer(&self.op.actor, route)
    }
}

fn layout(c: &Console, title: &str, body: Markup) -> Markup {
    let pref = &c.op.prefecture;
    let header = html! {
        h1 { "国保連合会 ・ 継続世帯の運用" }
        nav { a href=(CONSOLE_PATH) { "市町村ごとの状況" } }
        span { "都道府県 " (pref) " " (crate::domain::insurer::prefecture_name(pref).unwrap_or("")) }
        span { "担当 " (c.op.actor.display_name()) }
        (logout_button(&c.csrf))
    };
    frame(&format!("{title} — kukaku 国保連合会"), header, body)
}

/// How far the intermediate has verified a partition: entries not yet covered by a trusted
/// witness's cosignature, and that cosignature's time.
struct Forwarding {
    behind: u64,
    last_ms: Option<u64>,
}

fn forwarding(
    store: &crate::store::Store,
    p: &PartitionId,
    witnesses: &[crate::ledger::VerifierKey],
) -> Result<Forwarding, super::error::ApiError> {
    let size = store.size(p)?;
    let cosigned = store.latest_cosigned_size(p)?;
    let last_ms = match cosigned {
        Some(at) => store
            .cosigned_checkpoint_at(p, at)?
            .and_then(|note| super::upload::cosigned_ms(&note, witnesses)),
        None => None,
    };
    // Only a cosignature that verifies counts as forwarded.
    let covered = if last_ms.is_some() {
        cosigned.unwrap_or(0)
    } else {
        0
    };
    Ok(Forwarding {
        behind: size.saturating_sub(covered),
        last_ms,
    })
}

/// Per municipality of the operator's prefecture: the flow-4 counts and the forwarding.
async fn workload(
    state: &Arc<AppState>,
    c: &Console,
) -> Result<Vec<(Workload, Forwarding)>, super::error::ApiError> {
    let scope = c.op.scope()?;
    let who = c.importer("GET /terminal/console");
    let witnesses = state.witnesses.clone();
    super::access::blocking(state, move |s| {
        let work = crate::flows::decision::prefecture_workload(s, &scope, &who)
            .map_err(super::continuity::decision_error)?;
        work.into_iter()
            .map(|w| {
                let p = PartitionId::parse(&w.partition)
                    .map_err(|_| super::error::ApiError::internal("partition id"))?;
                Ok((w, forwarding(s, &p, &witnesses)?))
            })
            .collect()
    })
    .await
}

/// The operator's own last actions (an unreadable log shows none).
async fn own_actions(state: &Arc<AppState>, c: &Console) -> Vec<crate::store::OperatorAction> {
    let (prefecture, credential) = (c.op.prefecture.clone(), c.op.actor.credential.to_string());
    super::access::blocking(state, move |s| {
        s.operator_actions(&prefecture, &credential, 20)
            .map_err(super::error::ApiError::internal)
    })
    .await
    .unwrap_or_default()
}

async fn overview(State(state): State<Arc<AppState>>, c: Console) -> Response {
    let rows = match workload(&state, &c).await {
        Ok(r) => r,
        Err(e) => return api_error(e),
    };
    let actions = own_actions(&state, &c).await;
    let today = crate::domain::text::format_date(crate::store::today_jst());
    page(layout(
        &c,
        "市町村ごとの状況",
        html! {
            h2 { "市町村ごとの状況（継続世帯・送付）" }
            table {
                thead { tr {
                    th { "保険者" } th { "未確定" } th { "確定指示済（確定待ち）" } th { "確定済" }
                    th { "継続しない" } th { "要確認（未対応）" } th { "中間サーバー未送付" } th { "最終送付" }
                } }
                tbody { @for (w, f) in &rows { tr {
                    td { (c.insurer(&w.partition)) }
                    td { (w.undecided) }
                    td { (w.decided) }
                    td { (w.confirmed) }
                    td { (w.not_continued) }
                    td { @if w.anomalies_open > 0 { span.tag.manual { (w.anomalies_open) } } @else { "0" } }
                    td { (f.behind) " 件" }
                    td { @if let Some(ms) = f.last_ms { (jst_wareki(ms)) } @else { "—" } }
                } } }
            }
            form method="post" action={ (CONSOLE_PATH) "/extract" } {
                input type="hidden" name="csrf" value=(c.csrf);
                fieldset {
                    legend { "継続候補世帯の抽出（4-②）" }
                    label for="as_of" { "基準日（この日を含む12か月に始まった異動が対象）" }
                    input id="as_of" name="as_of" value=(today) size="10" required;
                    p { button type="submit" { "抽出を実行" } }
                }
            }
            form method="post" action={ (CONSOLE_PATH) "/confirm" } {
                input type="hidden" name="csrf" value=(c.csrf);
                fieldset {
                    legend { "継続世帯の確定と高額該当回数の引継（4-③④）" }
                    p { "確定指示済の世帯を確定し、引継情報を作成します。何度実行しても同じ世帯が二重に確定されることはありません。" }
                    p { button type="submit" { "確定処理を実行" } }
                }
            }
            h3 { "自分の操作の記録（新しい順、20件まで）" }
            @if actions.is_empty() {
                p { "まだ操作の記録はありません。" }
            } @else {
                table {
                    thead { tr { th { "日時" } th { "操作" } th { "経路" } th { "結果" } } }
                    tbody { @for a in &actions { tr {
                        td { (jst_wareki(a.at_ms)) }
                        td { @if a.action == "extract" { "抽出" } @else { "確定処理" } }
                        td { @if a.via == "console" { "画面" } @else { "API" } }
                        td.wrap { (a.summary) }
                    } } }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
struct ExtractForm {
    csrf: String,
    as_of: String,
}

async fn extract(
    State(state): State<Arc<AppState>>,
    c: Console,
    Form(f): Form<ExtractForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&c.csrf, &f.csrf) {
        return r;
    }
    let Some(as_of) = crate::domain::text::parse_date(f.as_of.trim()) else {
        return page_error(
            StatusCode::BAD_REQUEST,
            "基準日は YYYY-MM-DD で入力してください。",
        );
    };
    let scope = match c.op.scope() {
        Ok(s) => s,
        Err(e) => return api_error(e),
    };
    let who = c.importer("POST /terminal/console/extract");
    let rules = state.continuity_rules.clone();
    let report = super::access::blocking(&state, move |s| {
        crate::flows::continuity::extract(s, &scope, &rules, &who, as_of)
            .map_err(super::error::ApiError::internal)
    })
    .await;
    let r = match report {
        Ok(r) => r,
        Err(e) => return api_error(e),
    };
    let summary = super::continuity::extract_summary(&r);
    super::continuity::log_action(&state, &c.op, "extract", "console", summary).await;
    page(layout(
        &c,
        "抽出結果",
        html! {
            h2 { "抽出結果（基準日 " (crate::domain::wareki::form_date(&r.as_of)) "）" }
            p.flash role="status" {
                (r.partitions) " 市町村の " (r.households_read) " 世帯を読み、新しい候補 "
                (r.candidates.len()) " 件（作成済 " (r.already_extracted) " 件）。"
            }
            @if !r.candidates.is_empty() {
                table {
                    thead { tr { th { "転入先" } th { "転出元" } th { "提案" } th { "要確認" } } }
                    tbody { @for m in &r.candidates { tr {
                        td { (c.insurer(&m.partition)) }
                        td { (c.insurer(&m.old_hokensha_no)) }
                        td { (m.suggestion) }
                        td { (m.anomalies.join(" ")) }
                    } } }
                }
            }
            @if !r.outside_window.is_empty() {
                h3 { "期間外の異動（候補にしていません）" }
                table {
                    thead { tr { th { "転入先" } th { "転出元" } th { "異動年月日" } } }
                    tbody { @for o in &r.outside_window { tr {
                        td { (c.insurer(&o.partition)) }
                        td { (c.insurer(&o.old_hokensha_no)) }
                        td { (crate::domain::wareki::form_date(&o.ido_date)) }
                    } } }
                }
            }
            p { a href=(CONSOLE_PATH) { "市町村ごとの状況に戻る" } }
        },
    ))
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: String,
}

async fn confirm(
    State(state): State<Arc<AppState>>,
    c: Console,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = csrf_refusal(&c.csrf, &f.csrf) {
        return r;
    }
    let scope = match c.op.scope() {
        Ok(s) => s,
        Err(e) => return api_error(e),
    };
    let who = c.importer("POST /terminal/console/confirm");
    let rules = state.continuity_rules.clone();
    let now = crate::ledger::format_utc_ms(crate::store::now_unix_ms());
    let report = super::access::blocking(&state, move |s| {
        crate::flows::decision::confirm_with(s, &scope, &rules, &who, &now)
            .map_err(super::continuity::decision_error)
    })
    .await;
    let r: ConfirmReport = match report {
        Ok(r) => r,
        Err(e) => return api_error(e),
    };
    let summary = super::continuity::confirm_summary(&r);
    super::continuity::log_action(&state, &c.op, "confirm", "console", summary).await;
    page(layout(
        &c,
        "確定処理の結果",
        html! {
            h2 { "確定処理の結果" }
            p.flash role="status" {
                "確定 " (r.confirmed.len()) " 世帯、追加 " (r.added.len()) " 世帯、取消 "
                (r.cancelled.len()) " 世帯（確定済 " (r.already_confirmed) " 世帯、未確定 " (r.undecided) " 世帯）。"
            }
            p { a href=(CONSOLE_PATH) { "市町村ごとの状況に戻る" } }
        },
    ))
}

/// The console's routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(CONSOLE_PATH, get(overview))
        .route("/terminal/console/extract", post(extract))
        .route("/terminal/console/confirm", post(confirm))
}

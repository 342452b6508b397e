//! The terminal's disclosure record (本人開示, issue 28 item 6): a clerk handling a person's
//! request enters the 個人番号 in a form (POST body only: never in a URL, never echoed, never
//! logged) and gets every access, provision and forwarding record that touched the person's
//! entries in this municipality, each with an inclusion proof against one signed
//! checkpoint: a printable page, or the same as JSON to hand over. The request itself is an
//! access record.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Form, Router};
use maud::html;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::AppState;
use super::pages::{Terminal, api_error, jst_wareki, layout, page, page_error};
use crate::flows::disclosure::{Disclosure, DisclosureError, disclose};

const PATH: &str = "/terminal/disclosure";

async fn form_page(t: Terminal) -> Response {
    page(layout(
        "本人開示",
        Some(&t),
        html! {
            h2 { "本人開示（情報提供等記録・アクセス記録）" }
            p { "本人からの開示請求に応じて、この市町村の記録のうち、その方の情報に触れたアクセス・提供・送付の記録を、改ざんされていないことの証明（包含証明）とともに出力します。個人番号は照合にのみ使い、保存・表示しません。" }
            form method="post" action=(PATH) autocomplete="off" {
                input type="hidden" name="csrf" value=(t.csrf);
                label for="kojin_no" { "個人番号（12桁）" }
                input id="kojin_no" name="kojin_no" type="password" inputmode="numeric" maxlength="12" required autofocus;
                label for="format" { "出力" }
                select id="format" name="format" {
                    option value="html" { "画面（印刷用）" }
                    option value="json" { "JSON（証明つき）" }
                }
                p { button type="submit" { "開示記録を作成" } }
            }
        },
    ))
}

#[derive(Deserialize)]
struct Request {
    csrf: String,
    /// Wiped as soon as the request is read (`Zeroizing` below).
    kojin_no: String,
    format: String,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DisclosureRequest(<redacted>)")
    }
}

fn purpose_label(code: &str) -> &'static str {
    match code {
        "forward_to_intermediate" => "中間サーバーへの送付",
        "kogaku_carry_over" => "高額該当回数の引継（提供）",
        "shikaku_rireki_file" => "資格履歴ファイルの作成（提供）",
        "lookup" | "entry_read" => "照会",
        "transmission_import" => "異動ファイルの受付",
        "kogaku_import" => "高額該当情報の受付",
        "disclosure" => "本人開示",
        p if p.starts_with("terminal_") => "窓口端末での閲覧",
        p if p.starts_with("continuity_") => "継続世帯の処理",
        _ => "その他の処理",
    }
}

async fn create(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    Form(f): Form<Request>,
) -> Response {
    if let Some(r) = t.csrf_refusal(&f.csrf) {
        return r;
    }
    let scope = t.muni.scope.clone();
    let who = super::continuity::importer(&t.muni.actor, "POST /terminal/disclosure");
    let kojin = Zeroizing::new(f.kojin_no);
    let result =
        super::access::blocking(&state, move |s| Ok(disclose(s, &scope, kojin.trim(), &who))).await;
    let d = match result {
        Ok(Ok(d)) => d,
        Ok(Err(DisclosureError::KojinNo)) => {
            return page_error(
                StatusCode::BAD_REQUEST,
                "個人番号の形式または検査用数字が正しくありません。",
            );
        }
        Ok(Err(DisclosureError::NotFound)) => {
            return page_error(
                StatusCode::NOT_FOUND,
                "この市町村の記録に、その方の情報はありません。",
            );
        }
        Ok(Err(e)) => return api_error(super::error::ApiError::failed(&e)),
        Err(e) => return api_error(e),
    };
    if f.format == "json" {
        return json(&d);
    }
    printable(&t, &d)
}

fn json(d: &Disclosure) -> Response {
    let Ok(body) = serde_json::to_vec_pretty(d) else {
        return api_error(super::error::ApiError::internal("disclosure JSON"));
    };
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"kaiji-kiroku.json\""),
    );
    res
}

fn printable(t: &Terminal, d: &Disclosure) -> Response {
    page(layout(
        "本人開示記録",
        Some(t),
        html! {
            h2 { "本人開示記録（情報提供等記録・アクセス記録）" }
            table.meta {
                tr { th { "保険者" } td { (t.own_insurer()) } th { "作成日時" } td { (jst_wareki(crate::store::now_unix_ms())) } }
                tr { th { "対象の記録" } td { (d.entries.len()) " 件" } th { "作成者" } td { (t.muni.actor.display_name()) } }
                tr { th { "証明の基準" } td colspan="3" { "署名付きチェックポイント（サイズ " (d.tree_size) "）に対する包含証明 " (d.handled.len()) " 件" } }
            }
            h3 { "その方の情報に触れた記録" }
            table {
                thead { tr { th { "番号" } th { "日時" } th { "種別" } th { "誰が・どこへ" } th { "役割" } th { "目的" } } }
                tbody { @for h in &d.handled { tr {
                    td { (h.seq) }
                    td { (jst_wareki(h.tx_time_ms)) }
                    td { @if h.kind == "provision_record" { "提供" } @else { "アクセス" } }
                    td { (h.who) }
                    td { (h.role) }
                    td.wrap { (purpose_label(&h.purpose)) " (" (h.purpose) ")" }
                } } }
            }
            p { "各記録の包含証明と署名付きチェックポイントは JSON 出力に含まれます。ログの検証鍵で、誰でも記録が改ざんされていないことを確かめられます。" }
            table.stamps {
                caption { "確認欄" }
                tr { th { "担当" } th { "確認" } }
                tr { td {} td {} }
            }
        },
    ))
}

/// The disclosure routes.
pub fn router() -> Router<Arc<AppState>> {
    Router::new().route(PATH, get(form_page).post(create))
}

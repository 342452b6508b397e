//! The municipality terminal's pages (flow 4, docs/design.md §11): server-rendered HTML with
//! Japanese labels, no script. Log in with the municipality credential; the session lives in
//! server memory behind an HttpOnly, SameSite=Strict cookie (Secure over TLS), every form
//! carries the session's CSRF token, and every page that shows personal data appends an
//! access record (through the same reads as the API). The partition comes from the session's
//! credential, never from the request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::AppState;
use super::auth::{Connection, Municipality, source_of, verify_token};
use super::continuity::{
    AcknowledgeRequest, DecisionRequest, append_acknowledgement, append_decision, matches,
    read_candidates,
};
use super::error::ApiError;
use crate::crypto::credential::Verified;
use crate::flows::decision::CandidateState;

/// The 国保連合会 operator's console (`api::console`), where an operator's login lands.
pub const CONSOLE_PATH: &str = "/terminal/console";

/// Name of the session cookie.
pub const COOKIE: &str = "kukaku_session";
/// Sessions end after this long without a request unless the server sets another
/// (`AppState::session_idle`).
pub const DEFAULT_SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// Most sessions held at once (memory bound); past it a new login is refused (503), never
/// another credential's session dropped.
const MAX_SESSIONS: usize = 10_000;
/// Numbers logins in order (ties of `last_ms` within one millisecond).
static SESSION_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Most sessions of one credential; its own oldest is dropped beyond, so one tenant can
/// never end another's sessions.
pub const SESSIONS_PER_CREDENTIAL: usize = 32;

struct Session {
    /// The municipality credential the user logged in with; checked again on every request,
    /// so a revoked or expired credential ends the session at once.
    token: Zeroizing<String>,
    /// Whose session it is, for the per-credential cap.
    credential: crate::crypto::credential::CredentialId,
    /// Login order, to end the oldest of equally idle sessions first.
    serial: u64,
    csrf: String,
    last_ms: u64,
}

/// Terminal sessions, in memory only (a restart logs everyone out).
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Session>>);

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|m| m.len()).unwrap_or(0);
        write!(f, "Sessions({n})")
    }
}

fn random_id() -> Result<String, ApiError> {
    let bytes: [u8; 32] = crate::crypto::random().map_err(ApiError::internal)?;
    Ok(B64URL.encode(bytes))
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A logged-in terminal: the municipality (scope from the credential) and the CSRF token.
pub struct Terminal {
    pub muni: Municipality,
    pub csrf: String,
    /// The registry's partition names (public), to show beside 保険者番号.
    names: HashMap<crate::ledger::PartitionId, String>,
}

/// Not logged in (or the session ended): to the login page.
pub struct LoginRequired;

impl IntoResponse for LoginRequired {
    fn into_response(self) -> Response {
        Redirect::to("/terminal/login").into_response()
    }
}

/// The session's credential, verified again now, with the session's CSRF token and id; the
/// login page when there is no live session or its credential no longer verifies (the
/// session then ends).
pub(super) async fn session(
    parts: &Parts,
    state: &Arc<AppState>,
) -> Result<(Verified, String, String), Response> {
    let id = cookie_value(&parts.headers, COOKIE)
        .ok_or_else(|| LoginRequired.into_response())?
        .to_owned();
    let now = crate::store::now_unix_ms();
    let idle_ms = u64::try_from(state.session_idle.as_millis()).unwrap_or(u64::MAX);
    let (token, csrf) = {
        let mut map = state
            .sessions
            .0
            .lock()
            .map_err(|_| ApiError::internal("session lock poisoned").into_response())?;
        let s = map
            .get_mut(&id)
            .filter(|s| now.saturating_sub(s.last_ms) < idle_ms)
            .ok_or_else(|| LoginRequired.into_response())?;
        s.last_ms = now;
        (s.token.clone(), s.csrf.clone())
    };
    // The same check as a bearer token: revocation and expiry act at once.
    let peer = parts
        .extensions
        .get::<super::auth::PeerCertificate>()
        .map(|p| p.0);
    match verify_token(state, &token, peer, source_of(parts)).await {
        Ok(v) => Ok((v, csrf, id)),
        // Too many failures from this source: answered, but the session stays (it is not
        // the credential that failed).
        Err(e) if e.status() == StatusCode::TOO_MANY_REQUESTS => Err(api_error(e)),
        Err(_) => {
            if let Ok(mut map) = state.sessions.0.lock() {
                map.remove(&id);
            }
            Err(LoginRequired.into_response())
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Terminal {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let (v, csrf, _) = session(parts, state).await?;
        match Municipality::from_verified(&v) {
            Ok(muni) => Ok(Terminal {
                muni,
                csrf,
                // Names are a convenience: a registry that cannot be read shows numbers.
                names: state.store.partition_names().unwrap_or_default(),
            }),
            // The operator's session belongs on the console.
            Err(_) if v.role() == crate::crypto::credential::Role::ContinuityOperator => {
                Err(Redirect::to(CONSOLE_PATH).into_response())
            }
            Err(_) => Err(page_error(
                StatusCode::FORBIDDEN,
                "この画面は市町村の職員が使います。",
            )),
        }
    }
}

impl Terminal {
    /// A 保険者番号 with its name when the registry has one: `131011 千代田区`.
    pub(super) fn insurer(&self, number: &str) -> String {
        match crate::ledger::PartitionId::parse(number)
            .ok()
            .and_then(|p| self.names.get(&p))
        {
            Some(name) => format!("{number} {name}"),
            None => number.to_owned(),
        }
    }

    /// This terminal's own municipality, number and name.
    pub(super) fn own_insurer(&self) -> String {
        self.insurer(self.muni.scope.partition().as_str())
    }

    /// `None` when the form's CSRF token is the session's; else the page to answer.
    pub(super) fn csrf_refusal(&self, sent: &str) -> Option<Response> {
        csrf_refusal(&self.csrf, sent)
    }
}

/// `None` when `sent` is the session's CSRF token (constant-time compare); else the page to
/// answer.
pub(super) fn csrf_refusal(session: &str, sent: &str) -> Option<Response> {
    if bool::from(sent.as_bytes().ct_eq(session.as_bytes())) {
        None
    } else {
        Some(page_error(
            StatusCode::FORBIDDEN,
            "フォームの有効期限が切れました。もう一度お試しください。",
        ))
    }
}

/// Ends a session (logout).
pub(super) fn end_session(state: &AppState, id: &str) {
    if let Ok(mut map) = state.sessions.0.lock() {
        map.remove(id);
    }
}

pub(super) const STYLE: &str = r#"
:root { font-family: "Noto Sans JP", "Hiragino Sans", "Yu Gothic", Meiryo, sans-serif; color: #1a1a1a; }
body { margin: 0; background: #f5f6f8; }
header { background: #1f3a5f; color: #fff; padding: .6rem 1.5rem; display: flex; flex-wrap: wrap; gap: .5rem 2rem; align-items: center; }
header h1 { font-size: 1.1rem; margin: 0; white-space: nowrap; }
header nav a { color: #fff; margin-right: 1.2rem; white-space: nowrap; }
header span, header button { white-space: nowrap; }
header form { margin-left: auto; }
main { max-width: 72rem; margin: 1.5rem auto; background: #fff; padding: 1.5rem 2rem; border: 1px solid #d8dce3; }
h2 { font-size: 1.3rem; border-bottom: 2px solid #1f3a5f; padding-bottom: .3rem; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { border: 1px solid #c5cad3; padding: .4rem .6rem; text-align: left; vertical-align: top; }
th { background: #eef1f5; white-space: nowrap; }
td { white-space: nowrap; } td.wrap { white-space: normal; }
a:focus, button:focus, input:focus, select:focus, textarea:focus { outline: 3px solid #f0a000; outline-offset: 1px; }
button { font-size: 1rem; padding: .4rem 1.2rem; background: #1f3a5f; color: #fff; border: 0; cursor: pointer; }
.flash { background: #e6f4ea; border: 1px solid #7bb88a; padding: .5rem 1rem; }
.error { background: #fdecea; border: 1px solid #e0837a; padding: .5rem 1rem; }
.tag { display: inline-block; padding: 0 .5rem; border-radius: .2rem; background: #eef1f5; }
.tag.manual { background: #fff3cd; } .tag.continue { background: #e6f4ea; } .tag.not_continue { background: #fdecea; }
label { display: block; margin-top: .8rem; font-weight: bold; }
fieldset { border: 1px solid #c5cad3; margin-top: 1rem; }
@media print {
  @page { size: A4 landscape; margin: 12mm; }
  .sheet { break-after: page; } .sheet:last-of-type { break-after: auto; }
  header, nav, .noprint { display: none !important; }
  body { background: #fff; } main { border: 0; margin: 0; padding: 0; max-width: none; }
  table { font-size: 9pt; } th, td { white-space: nowrap; padding: .2rem .4rem; }
  tr { page-break-inside: avoid; } thead { display: table-header-group; }
}
table.stamps { width: auto; margin-left: auto; } table.stamps td { width: 5.5rem; height: 4.5rem; }
p.pageno { text-align: center; font-size: 9pt; }
tfoot td { font-weight: bold; background: #eef1f5; }
"#;

/// A page: the header names the municipality and the logged-in clerk when there is a
/// session (`t`).
pub(super) fn layout(title: &str, t: Option<&Terminal>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="ja" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — kukaku 国保総合PC" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { "国保総合PC ・ 継続世帯" }
                    @if let Some(t) = t {
                        nav {
                            a href="/terminal/transmissions/new" { "異動ファイル送信" }
                            a href="/terminal/transmissions" { "送信状況" }
                            a href="/terminal/candidates" { "継続候補世帯リスト" }
                            a href="/terminal/results" { "確定結果" }
                            a href="/terminal/results/print" { "継続世帯確定リスト（印刷）" }
                            a href="/terminal/carryover.csv" { "引継情報連携ファイル" }
                            a href="/terminal/disclosure" { "本人開示" }
                        }
                        span { "保険者 " (t.own_insurer()) }
                        span { "職員 " (t.muni.actor.display_name()) }
                        form method="post" action="/terminal/logout" {
                            input type="hidden" name="csrf" value=(t.csrf);
                            button type="submit" { "ログアウト" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A time as the municipality reads it: JST (UTC+9, no daylight saving),
/// `2024-11-01 09:30:00`.
pub(super) fn jst(unix_ms: u64) -> String {
    let ms = unix_ms + 9 * 3_600_000;
    let (y, m, d) = crate::ledger::civil_from_days(i32::try_from(ms / 86_400_000).unwrap_or(0));
    let t = ms % 86_400_000;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        t / 3_600_000,
        t / 60_000 % 60,
        t / 1000 % 60
    )
}

/// A time in JST with its date in 和暦: `令和6年11月1日 09:30` (the ISO date in the title).
pub(super) fn jst_wareki(unix_ms: u64) -> Markup {
    let text = jst(unix_ms);
    let (date, time) = text.split_once(' ').unwrap_or((&text, ""));
    let wareki = crate::domain::wareki::wareki(date).unwrap_or_else(|| date.to_owned());
    html! { span title=(text) { (wareki) " " (time.get(..5).unwrap_or(time)) } }
}

/// A date (`YYYY-MM-DD`) in 和暦 for a table cell, the ISO date in its title; text that is
/// not a date as it is.
pub(super) fn date_cell(iso: &str) -> Markup {
    match crate::domain::wareki::wareki(iso) {
        Some(w) => html! { span title=(iso) { (w) } },
        None => html! { (iso) },
    }
}

/// Milliseconds since 1970 of an RFC 3339 time as the flows write it (`…Z` or `…+09:00`).
fn rfc3339_ms(text: &str) -> Option<u64> {
    let day = i64::from(crate::domain::text::parse_date(text.get(..10)?)?);
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let local = day * 86_400_000 + (h * 3600 + m * 60 + sec) * 1000;
    let offset_ms = if text.ends_with('Z') {
        0
    } else {
        let tz = text.get(text.len().checked_sub(6)?..)?;
        let mins = tz.get(1..3)?.parse::<i64>().ok()? * 60 + tz.get(4..6)?.parse::<i64>().ok()?;
        match tz.as_bytes().first()? {
            b'+' => mins * 60_000,
            b'-' => -mins * 60_000,
            _ => return None,
        }
    };
    u64::try_from(local - offset_ms).ok()
}

/// A time the flows wrote (RFC 3339) in JST with 和暦; the text as it is if it is not one.
pub(super) fn time_cell(rfc3339: &str) -> Markup {
    match rfc3339_ms(rfc3339) {
        Some(ms) => jst_wareki(ms),
        None => html! { (rfc3339) },
    }
}

/// Rows per page of the terminal's long lists (candidates, transmissions).
pub(super) const PAGE_ROWS: usize = 100;

/// Page `page` (1-based, clamped) of `n` rows: the rows it shows, the page and the number
/// of pages (at least one).
pub(super) fn page_of(n: usize, page: Option<usize>) -> (std::ops::Range<usize>, usize, usize) {
    let pages = n.div_ceil(PAGE_ROWS).max(1);
    let page = page.unwrap_or(1).clamp(1, pages);
    let start = (page - 1) * PAGE_ROWS;
    (start..(start + PAGE_ROWS).min(n), page, pages)
}

/// Links to the previous and next page of a list; `query` is the list's other parameters
/// (`state=undecided&`, or empty).
pub(super) fn pager(path: &str, query: &str, page: usize, pages: usize) -> Markup {
    html! {
        @if pages > 1 {
            nav.pager.noprint aria-label="ページ" {
                @if page > 1 { a href={ (path) "?" (query) "page=" (page - 1) } rel="prev" { "前へ" } " " }
                span { (page) " / " (pages) " ページ" }
                @if page < pages { " " a href={ (path) "?" (query) "page=" (page + 1) } rel="next" { "次へ" } }
            }
        }
    }
}

pub(super) fn page(markup: Markup) -> Response {
    let mut res = Html(markup.into_string()).into_response();
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    res
}

pub(super) fn page_error(status: StatusCode, message: &str) -> Response {
    let mut res = page(layout(
        "エラー",
        None,
        html! { p.error role="alert" { (message) } p { a href="/terminal/candidates" { "戻る" } } },
    ));
    *res.status_mut() = status;
    res
}

pub(super) fn api_error(e: ApiError) -> Response {
    let status = e.status();
    if status.is_server_error() {
        // The cause is logged by the error's own response; the page says nothing of it.
        let _ = e.into_response();
        page_error(
            status,
            "処理できませんでした。時間をおいてもう一度お試しください。",
        )
    } else if status == StatusCode::NOT_FOUND {
        page_error(status, "該当する候補世帯はありません。")
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        page_error(
            status,
            "この端末からの認証の失敗が多すぎます。1分ほど待ってからもう一度お試しください。",
        )
    } else if status == StatusCode::FORBIDDEN {
        page_error(status, "この操作は許可されていません。")
    } else {
        page_error(status, "入力内容を確認してください。")
    }
}

/// An anomaly of a candidate (issue 27), in the clerk's words.
fn anomaly_label(code: &str) -> &'static str {
    match code {
        "gap" => "空白期間があります（旧住所地の適用終了と当市町村の適用開始が連続していません）",
        "overlap" => "重複期間があります（旧住所地の適用終了が当市町村の適用開始以後です）",
        "old_not_ended" => "旧住所地の適用終了が記録されていません",
        "shutoku_reset" => {
            "資格取得年月日が転入日になっています（県内転入では旧住所地での取得日を引き継ぎます）"
        }
        "ambiguous" => {
            "同じ方が県内の複数の世帯に属していました。どの世帯からの異動か確認してください"
        }
        _ => "確認が必要です",
    }
}

/// The changed fields of a version, in the clerk's words, each once.
fn changes_text(fields: &[String]) -> String {
    let mut labels: Vec<&str> = fields.iter().map(|f| change_label(f)).collect();
    labels.dedup();
    labels.join("、")
}

/// A changed candidate field, as the clerk reads it.
fn change_label(field: &str) -> &'static str {
    match field {
        "members_before" => "異動前の世帯員",
        "members_after" => "異動後の世帯員",
        "case" | "case_label" => "参酌基準",
        "suggestion" => "提案",
        "period" | "period_days" => "適用期間",
        "old_tekiyo_end" => "旧住所地の適用終了",
        "old_setai_no" => "旧世帯番号",
        "new_setai_no" => "新世帯番号",
        "ido_date" => "異動年月日",
        "anomalies" => "要確認事項",
        _ => "その他",
    }
}

fn suggestion_label(code: &str) -> &'static str {
    match code {
        "continue" => "継続",
        "not_continue" => "非継続",
        _ => "要確認",
    }
}

fn decision_label(code: &str) -> &'static str {
    match code {
        "continue" => "継続する",
        _ => "継続しない",
    }
}

fn period_label(code: &str, days: i32) -> String {
    match code {
        "contiguous" => "連続".to_owned(),
        "gap" => format!("空白期間 {days} 日"),
        "overlap" => format!("重複期間 {days} 日"),
        _ => "旧住所地の適用終了なし".to_owned(),
    }
}

fn state_label(c: &CandidateState) -> &'static str {
    match (&c.decision, &c.confirmation) {
        (None, _) => "未確定",
        (Some(_), None) => "確定指示済",
        (Some(_), Some(_)) => "確定済",
    }
}

// ---- login ----

async fn login_form() -> Response {
    page(layout(
        "ログイン",
        None,
        html! {
            h2 { "ログイン" }
            p { "市町村のクレデンシャル（トークン）でログインします。" }
            form method="post" action="/terminal/login" {
                label for="token" { "トークン" }
                input id="token" name="token" type="password" autocomplete="off" size="70" required autofocus;
                p { button type="submit" { "ログイン" } }
            }
        },
    ))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// Login CSRF: a browser names the page a form came from (`Sec-Fetch-Site`, `Origin`); a
/// login posted from another site is refused. Clients that send neither (curl) are not
/// browsers and cannot be made to post by another site.
fn cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if fetch_site.is_some_and(|v| v != b"same-origin" && v != b"none") {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    origin_host.is_none() || origin_host != host
}

async fn login(
    State(state): State<Arc<AppState>>,
    conn: Connection,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if cross_site(&headers) {
        return page_error(
            StatusCode::FORBIDDEN,
            "別のサイトから送られたログインは受け付けません。ログイン画面から操作してください。",
        );
    }
    let refused = || {
        let mut res = page(layout(
            "ログイン",
            None,
            html! {
                h2 { "ログイン" }
                p.error role="alert" { "トークンが正しくないか、市町村の職員または国保連合会の運用担当のクレデンシャルではありません。" }
                p { a href="/terminal/login" { "もう一度ログイン" } }
            },
        ));
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        res
    };
    let raw = Zeroizing::new(f.token);
    let text = raw.trim().to_owned();
    // A municipality's clerk goes to the candidates, the 連合会's operator to the console.
    let (credential, home) = match verify_token(&state, &text, conn.peer_cert, conn.source).await {
        Ok(v) if Municipality::from_verified(&v).is_ok() => (v.id(), "/terminal/candidates"),
        Ok(v) if super::auth::ContinuityOperator::from_verified(v.clone()).is_ok() => {
            (v.id(), CONSOLE_PATH)
        }
        Err(e) if e.status() == StatusCode::TOO_MANY_REQUESTS => return api_error(e),
        Ok(_) | Err(_) => return refused(),
    };
    let (Ok(id), Ok(csrf)) = (random_id(), random_id()) else {
        return api_error(ApiError::internal("no randomness"));
    };
    let now = crate::store::now_unix_ms();
    let Ok(mut map) = state.sessions.0.lock() else {
        return api_error(ApiError::internal("session lock poisoned"));
    };
    // Ended sessions go first; then a credential over its cap loses its own oldest
    // session, never another credential's.
    let idle_ms = u64::try_from(state.session_idle.as_millis()).unwrap_or(u64::MAX);
    map.retain(|_, s| now.saturating_sub(s.last_ms) < idle_ms);
    let mine: Vec<(String, (u64, u64))> = map
        .iter()
        .filter(|(_, s)| s.credential == credential)
        .map(|(k, s)| (k.clone(), (s.last_ms, s.serial)))
        .collect();
    if mine.len() >= SESSIONS_PER_CREDENTIAL
        && let Some((oldest, _)) = mine.iter().min_by_key(|(_, t)| *t)
    {
        map.remove(oldest);
    }
    if map.len() >= MAX_SESSIONS {
        drop(map);
        return api_error(ApiError::unavailable(
            "the terminal holds as many sessions as it can; try again later",
        ));
    }
    map.insert(
        id.clone(),
        Session {
            token: Zeroizing::new(text),
            credential,
            serial: SESSION_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            csrf,
            last_ms: now,
        },
    );
    drop(map);
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={id}; Path=/terminal; HttpOnly; SameSite=Strict{secure}");
    let mut res = Redirect::to(home).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// A live session of either role (a clerk's or the operator's).
pub(super) struct AnySession {
    pub verified: Verified,
    pub csrf: String,
    pub id: String,
}

impl FromRequestParts<Arc<AppState>> for AnySession {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let (verified, csrf, id) = session(parts, state).await?;
        Ok(AnySession { verified, csrf, id })
    }
}

async fn logout(
    State(state): State<Arc<AppState>>,
    s: AnySession,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&s.csrf, &f.csrf) {
        return r;
    }
    end_session(&state, &s.id);
    let mut res = Redirect::to("/terminal/login").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "kukaku_session=; Path=/terminal; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    res
}

// ---- pages ----

#[derive(Deserialize)]
struct ListParams {
    state: Option<String>,
    /// Decisions a bulk 確定指示 just registered.
    bulk: Option<usize>,
    /// The page of the list (1-based).
    page: Option<usize>,
}

async fn candidates_page(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    axum::extract::Query(q): axum::extract::Query<ListParams>,
) -> Response {
    let filter = q
        .state
        .filter(|s| ["undecided", "decided", "confirmed", "anomalies"].contains(&s.as_str()));
    let (all, _) = match read_candidates(
        &state,
        &t.muni,
        "GET /terminal/candidates",
        "terminal_candidates",
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return api_error(e),
    };
    let matching: Vec<&CandidateState> = all
        .iter()
        .filter(|c| matches(c, filter.as_deref(), None))
        .collect();
    let (range, page_no, pages) = page_of(matching.len(), q.page);
    let shown = matching.get(range).unwrap_or_default();
    let query = filter
        .as_deref()
        .map_or(String::new(), |f| format!("state={f}&"));
    page(layout(
        "継続候補世帯リスト",
        Some(&t),
        html! {
            h2 { "継続候補世帯リスト" }
            form method="get" action="/terminal/candidates" class="noprint" {
                label for="state" { "表示" }
                select id="state" name="state" {
                    option value="" selected[filter.is_none()] { "すべて" }
                    option value="undecided" selected[filter.as_deref() == Some("undecided")] { "未確定" }
                    option value="decided" selected[filter.as_deref() == Some("decided")] { "確定指示済" }
                    option value="confirmed" selected[filter.as_deref() == Some("confirmed")] { "確定済" }
                    option value="anomalies" selected[filter.as_deref() == Some("anomalies")] { "要確認（未対応）" }
                }
                " " button type="submit" { "絞り込み" }
            }
            @if let Some(n) = q.bulk { p.flash role="status" { (n) " 件の確定指示を登録しました。" } }
            p { (matching.len()) " 件" }
            (pager("/terminal/candidates", &query, page_no, pages))
            form method="post" action=(BULK_PATH) class="bulk" {
            input type="hidden" name="csrf" value=(t.csrf);
            table {
                thead { tr {
                    th { span.noprint { "選択" } } th { "候補番号" } th { "新世帯番号" } th { "旧保険者番号" } th { "旧世帯番号" }
                    th { "異動年月日" } th { "世帯主" } th { "参酌基準" } th { "適用期間" } th { "提案" } th { "状態" }
                } }
                tbody {
                    @for c in shown {
                        tr {
                            td.noprint {
                                @if c.decision.is_none() {
                                    input type="checkbox" name={ "seq_" (c.seq) } value="1" aria-label={ "候補 " (c.seq) " を選択" };
                                }
                            }
                            td { a href={ "/terminal/candidates/" (c.seq) } { (c.seq) } }
                            td { (c.candidate.new_setai_no) }
                            td { (t.insurer(&c.candidate.old_hokensha_no)) }
                            td { (c.candidate.old_setai_no) }
                            td { (date_cell(&c.candidate.ido_date)) }
                            td { @for m in c.candidate.members_after.iter().filter(|m| m.head) { (m.shimei) } }
                            td.wrap {
                                (c.candidate.case_label)
                                @if !c.open_anomalies().is_empty() { " " span.tag.manual { "要確認" } }
                            }
                            td { (period_label(&c.candidate.period, c.candidate.period_days)) }
                            td { span class={ "tag " (c.candidate.suggestion) } { (suggestion_label(&c.candidate.suggestion)) } }
                            td { (state_label(c)) }
                        }
                    }
                }
            }
            fieldset.noprint {
                legend { "選択した候補に一括で確定指示" }
                // No choice is pre-selected here either.
                label { input type="radio" name="decision" value="continue" required; " 継続する" }
                label { input type="radio" name="decision" value="not_continue"; " 継続しない" }
                label for="bulk-reason" { "理由（任意）" }
                textarea id="bulk-reason" name="reason" rows="2" cols="60" maxlength="1000" {}
                input type="hidden" name="stage" value="review";
                p { button type="submit" { "確認へ進む" } }
            }
            }
        },
    ))
}

/// The bulk decision's path (not under `/terminal/candidates/`, whose paths name a move).
const BULK_PATH: &str = "/terminal/bulk-decision";

/// The bulk 確定指示: `seq_<N>` for each selected move, the decision, a reason, and the
/// stage (`review` shows what will be registered, `commit` registers it).
async fn bulk_decision(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Some(r) = t.csrf_refusal(f.get("csrf").map_or("", String::as_str)) {
        return r;
    }
    let mut seqs: Vec<u64> = f
        .keys()
        .filter_map(|k| k.strip_prefix("seq_")?.parse().ok())
        .collect();
    seqs.sort_unstable();
    let decision = f.get("decision").map_or("", String::as_str);
    if seqs.is_empty() {
        return page_error(
            StatusCode::BAD_REQUEST,
            "確定指示する候補を選んでください。",
        );
    }
    if !matches!(decision, "continue" | "not_continue") {
        return page_error(
            StatusCode::BAD_REQUEST,
            "継続する・継続しないのどちらかを選んでください。",
        );
    }
    let reason = f.get("reason").cloned().filter(|r| !r.trim().is_empty());
    if f.get("stage").map(String::as_str) == Some("commit") {
        let scope = t.muni.scope.clone();
        let operator = t.muni.actor.display_name();
        let who = super::continuity::importer(&t.muni.actor, "POST /terminal/bulk-decision");
        let decision = decision.to_owned();
        let done = super::access::blocking(&state, move |s| {
            crate::flows::decision::decide_all(
                s,
                &scope,
                &seqs,
                &decision,
                reason.as_deref(),
                &operator,
                &who,
            )
            .map_err(super::continuity::decision_error)
        })
        .await;
        return match done {
            Ok(d) => {
                Redirect::to(&format!("/terminal/candidates?bulk={}", d.len())).into_response()
            }
            Err(e) => api_error(e),
        };
    }
    let (all, _) = match read_candidates(
        &state,
        &t.muni,
        "POST /terminal/bulk-decision",
        "terminal_bulk_review",
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return api_error(e),
    };
    let chosen: Vec<&CandidateState> = all.iter().filter(|c| seqs.contains(&c.seq)).collect();
    if chosen.len() != seqs.len() {
        return page_error(StatusCode::NOT_FOUND, "該当する候補世帯はありません。");
    }
    let differ = chosen
        .iter()
        .filter(|c| c.candidate.suggestion != decision)
        .count();
    let anomalous = chosen
        .iter()
        .filter(|c| !c.open_anomalies().is_empty())
        .count();
    page(layout(
        "一括確定指示の確認",
        Some(&t),
        html! {
            h2 { "一括確定指示の確認" }
            p { "次の " (chosen.len()) " 件に「" (decision_label(decision)) "」の確定指示を登録します。" }
            @if differ > 0 { p.error role="alert" { (differ) " 件は提案と異なる指示です。" } }
            @if anomalous > 0 { p.error role="alert" { (anomalous) " 件に未確認の要確認事項があります。" } }
            table {
                thead { tr { th { "候補番号" } th { "新世帯番号" } th { "旧保険者番号" } th { "世帯主" } th { "提案" } } }
                tbody { @for c in &chosen { tr {
                    td { (c.seq) }
                    td { (c.candidate.new_setai_no) }
                    td { (t.insurer(&c.candidate.old_hokensha_no)) }
                    td { @for m in c.candidate.members_after.iter().filter(|m| m.head) { (m.shimei) } }
                    td { span class={ "tag " (c.candidate.suggestion) } { (suggestion_label(&c.candidate.suggestion)) } }
                } } }
            }
            form method="post" action=(BULK_PATH) {
                input type="hidden" name="csrf" value=(t.csrf);
                input type="hidden" name="decision" value=(decision);
                input type="hidden" name="reason" value=(f.get("reason").map_or("", String::as_str));
                input type="hidden" name="stage" value="commit";
                @for c in &chosen { input type="hidden" name={ "seq_" (c.seq) } value="1"; }
                p { "操作者: " (t.muni.actor.display_name()) }
                p { button type="submit" { "確定指示を登録" } " " a href="/terminal/candidates" { "戻る" } }
            }
        },
    ))
}

fn members_table(title: &str, members: &[crate::flows::continuity::MemberView]) -> Markup {
    html! {
        h3 { (title) }
        table {
            thead { tr { th { "氏名" } th { "生年月日" } th { "続柄" } } }
            tbody { @for m in members { tr {
                td { (m.shimei) @if m.head { " （世帯主）" } }
                td { (date_cell(&m.birth_date)) }
                td { (zokugara(&m.zokugara)) }
            } } }
        }
    }
}

fn zokugara(code: &str) -> &'static str {
    match code {
        "01" => "世帯主",
        "02" => "配偶者",
        "03" => "子",
        "04" => "父母",
        "05" => "他の親族",
        _ => "親族以外",
    }
}

#[derive(Deserialize)]
struct Flash {
    done: Option<u64>,
    acknowledged: Option<u64>,
}

async fn candidate_page(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    axum::extract::Path(seq): axum::extract::Path<u64>,
    axum::extract::Query(flash): axum::extract::Query<Flash>,
) -> Response {
    let (all, _) = match read_candidates(
        &state,
        &t.muni,
        "GET /terminal/candidates/{seq}",
        "terminal_candidate",
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return api_error(e),
    };
    let Some(c) = all.into_iter().find(|c| c.seq == seq) else {
        return page_error(StatusCode::NOT_FOUND, "該当する候補世帯はありません。");
    };
    let k = &c.candidate;
    let open = c.open_anomalies();
    page(layout(
        "候補世帯",
        Some(&t),
        html! {
            h2 { "継続候補世帯 " (c.seq) }
            @if flash.done.is_some() { p.flash role="status" { "確定指示を登録しました。" } }
            @if flash.acknowledged.is_some() { p.flash role="status" { "要確認事項を確認済にしました。" } }
            table {
                tr { th { "旧保険者番号・旧世帯番号" } td { (t.insurer(&k.old_hokensha_no)) " ・ " (k.old_setai_no) } }
                tr { th { "新世帯番号" } td { (k.new_setai_no) } }
                tr { th { "異動年月日（適用開始）" } td { (crate::domain::wareki::form_date(&k.ido_date)) } }
                tr { th { "旧住所地の適用終了" } td { (k.old_tekiyo_end.as_deref().map_or_else(|| "—".to_owned(), crate::domain::wareki::form_date)) } }
                tr { th { "適用期間" } td { (period_label(&k.period, k.period_days)) } }
                tr { th { "参酌基準" } td {
                    @if k.cases.is_empty() {
                        (k.case_label)
                    } @else {
                        ul.cases { @for c in &k.cases {
                            li { (c.label) " — " span class={ "tag " (c.suggestion) } { (suggestion_label(&c.suggestion)) } }
                        } }
                    }
                } }
                tr { th { "提案" } td { span class={ "tag " (k.suggestion) } { (suggestion_label(&k.suggestion)) } " （提案であり、判断は市町村が行います）" } }
                @if !k.anomalies.is_empty() {
                    tr { th { "要確認" } td {
                        ul { @for a in &k.anomalies {
                            @if open.contains(a) { li.error { (anomaly_label(a)) } }
                            @else { li { (anomaly_label(a)) " （確認済）" } }
                        } }
                    } }
                }
                tr { th { "版" } td {
                    (c.versions.len())
                    @if !k.changes.is_empty() {
                        " （最新版での変更: " (changes_text(&k.changes)) "）"
                    }
                } }
            }
            @if c.suggestion_changed_since_decision() {
                p.error role="alert" { "確定指示の後に届いた異動・訂正で提案が変わりました。内容を確認し、必要なら確定指示を登録し直してください。" }
            }
            (members_table("異動前の世帯員", &k.members_before))
            (members_table("異動後の世帯員", &k.members_after))
            @if !c.decisions.is_empty() {
                h3 { "確定指示の履歴" }
                table {
                    thead { tr { th { "番号" } th { "指示" } th { "理由" } th { "操作者" } } }
                    tbody { @for (s, d) in &c.decisions { tr {
                        td { (s) } td { (decision_label(&d.decision)) } td.wrap { (d.reason.as_deref().unwrap_or("")) } td { (d.operator) }
                    } } }
                }
            }
            @if !c.acknowledgements.is_empty() {
                h3 { "要確認事項の確認の履歴" }
                table {
                    thead { tr { th { "番号" } th { "確認した事項" } th { "確認内容" } th { "操作者" } } }
                    tbody { @for (s, a) in &c.acknowledgements { tr {
                        td { (s) }
                        td { @for (i, x) in a.anomalies.iter().enumerate() { @if i > 0 { "、" } (anomaly_label(x)) } }
                        td.wrap { (a.note) }
                        td { (a.operator) }
                    } } }
                }
            }
            @if !open.is_empty() {
                form method="post" action={ "/terminal/candidates/" (c.seq) "/acknowledgement" } class="noprint" {
                    input type="hidden" name="csrf" value=(t.csrf);
                    fieldset {
                        legend { "要確認事項の確認" }
                        p { "確定指示とは別に、上の要確認事項を確認した内容を記録します。" }
                        label for="note" { "確認内容（必須）" }
                        textarea id="note" name="note" rows="2" cols="60" maxlength="1000" required {}
                        p { "操作者: " (t.muni.actor.display_name()) }
                        p { button type="submit" { "確認済にする" } }
                    }
                }
            }
            @if c.confirmation.is_some() {
                p.flash { "確定済です。訂正する場合は新しい確定指示を登録してください（確定結果・引継結果は新たに作成されます）。" }
            }
            form method="post" action={ "/terminal/candidates/" (c.seq) "/decision" } class="noprint" {
                input type="hidden" name="csrf" value=(t.csrf);
                fieldset {
                    legend { "確定指示" }
                    // No choice is pre-selected: the clerk decides, the suggestion only informs.
                    label { input type="radio" name="decision" value="continue" required; " 継続する" }
                    label { input type="radio" name="decision" value="not_continue"; " 継続しない" }
                    label for="reason" { "理由（任意）" }
                    textarea id="reason" name="reason" rows="2" cols="60" maxlength="1000" {}
                    p { "操作者: " (t.muni.actor.display_name()) " （ログインした職員として記録されます）" }
                    p { button type="submit" { "確定指示を送信" } }
                }
            }
        },
    ))
}

#[derive(Deserialize)]
struct DecisionForm {
    csrf: String,
    decision: String,
    reason: Option<String>,
}

async fn decide(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    axum::extract::Path(seq): axum::extract::Path<u64>,
    Form(f): Form<DecisionForm>,
) -> Response {
    if let Some(r) = t.csrf_refusal(&f.csrf) {
        return r;
    }
    let req = DecisionRequest {
        decision: f.decision,
        reason: f.reason,
        // The logged-in clerk, never a typed name.
        operator: None,
    };
    match append_decision(
        &state,
        &t.muni,
        seq,
        req,
        "POST /terminal/candidates/{seq}/decision",
    )
    .await
    {
        Ok(d) => Redirect::to(&format!("/terminal/candidates/{seq}?done={d}")).into_response(),
        Err(e) => api_error(e),
    }
}

#[derive(Deserialize)]
struct AcknowledgeForm {
    csrf: String,
    note: String,
}

async fn acknowledge(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    axum::extract::Path(seq): axum::extract::Path<u64>,
    Form(f): Form<AcknowledgeForm>,
) -> Response {
    if let Some(r) = t.csrf_refusal(&f.csrf) {
        return r;
    }
    let req = AcknowledgeRequest {
        note: f.note,
        operator: None,
    };
    let route = "POST /terminal/candidates/{seq}/acknowledgement";
    match append_acknowledgement(&state, &t.muni, seq, req, route).await {
        Ok(a) => {
            Redirect::to(&format!("/terminal/candidates/{seq}?acknowledged={a}")).into_response()
        }
        Err(e) => api_error(e),
    }
}

/// The results table; with `totals` (households, carried months), a totals line.
fn results_table(t: &Terminal, rows: &[&CandidateState], totals: Option<(usize, usize)>) -> Markup {
    html! {
        table {
            thead { tr {
                th { "候補番号" } th { "新世帯番号" } th { "旧保険者番号" } th { "旧世帯番号" } th { "異動年月日" }
                th { "世帯主" } th { "確定指示" } th { "確定日時" } th { "引継月" } th { "高額該当回数" }
            } }
            tbody { @for c in rows {
                tr {
                    td { (c.seq) }
                    td { (c.candidate.new_setai_no) }
                    td { (t.insurer(&c.candidate.old_hokensha_no)) }
                    td { (c.candidate.old_setai_no) }
                    td { (date_cell(&c.candidate.ido_date)) }
                    td { @for m in c.candidate.members_after.iter().filter(|m| m.head) { (m.shimei) } }
                    td { @if let Some((_, d)) = &c.decision { (decision_label(&d.decision)) } }
                    td { @if let Some((_, k)) = &c.confirmation { (time_cell(&k.confirmed_at)) } @else { "未確定" } }
                    // What B holds now: 新規 and 追加 rows less 取消 (late 支給 included).
                    td { @if !c.rows.is_empty() { (c.held().into_iter().collect::<Vec<_>>().join(", ")) } }
                    td { @if !c.rows.is_empty() { (c.held().len()) } }
                }
            } }
            @if let Some((households, months)) = totals {
                tfoot { tr {
                    td colspan="8" { "合計 " (households) " 世帯" }
                    td colspan="2" { "引継月 計 " (months) " か月" }
                } }
            }
        }
    }
}

async fn results_page(State(state): State<Arc<AppState>>, t: Terminal) -> Response {
    let (all, _) =
        match read_candidates(&state, &t.muni, "GET /terminal/results", "terminal_results").await {
            Ok(x) => x,
            Err(e) => return api_error(e),
        };
    let rows: Vec<&CandidateState> = all.iter().filter(|c| c.decision.is_some()).collect();
    page(layout(
        "確定結果",
        Some(&t),
        html! {
            h2 { "継続世帯確定結果・高額該当回数引継結果" }
            (results_table(&t, &rows, None))
            p.noprint {
                a href="/terminal/results/print" { "継続世帯確定リストを印刷" } " ・ "
                "高額該当回数引継情報連携ファイル（CSV）をダウンロード： "
                a href="/terminal/carryover.csv" { "UTF-8" } " ・ "
                a href="/terminal/carryover.csv?encoding=cp932" { "Shift_JIS (CP932)" }
            }
        },
    ))
}

/// Households per printed A4 sheet of the 継続世帯確定リスト (landscape, 9 pt): the page
/// numbers are the server's, so they hold in any browser.
const ROWS_PER_SHEET: usize = 15;

/// The rows of each printed sheet: at least one sheet, even for no rows.
fn sheets(rows: usize) -> Vec<std::ops::Range<usize>> {
    let n = rows.div_ceil(ROWS_PER_SHEET).max(1);
    (0..n)
        .map(|i| i * ROWS_PER_SHEET..((i + 1) * ROWS_PER_SHEET).min(rows))
        .collect()
}

#[derive(Deserialize)]
struct PrintParams {
    /// Confirmation dates to list, `YYYY-MM-DD` (JST), inclusive; default: all.
    from: Option<String>,
    to: Option<String>,
}

/// The printed 継続世帯確定リスト (4-⑥), a municipal document: A4, title, 保険者番号, the
/// period, page numbers (n / N, printed by the browser from the page's CSS), a totals line,
/// 作成日時 in JST, the clerk who printed it, and a 確認欄.
async fn print_page(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    axum::extract::Query(q): axum::extract::Query<PrintParams>,
) -> Response {
    let day = |d: &Option<String>| {
        d.as_deref()
            .filter(|d| !d.is_empty())
            .map(crate::domain::text::parse_date)
    };
    let (from, to) = match (day(&q.from), day(&q.to)) {
        (Some(None), _) | (_, Some(None)) => {
            return page_error(
                StatusCode::BAD_REQUEST,
                "期間は YYYY-MM-DD で指定してください。",
            );
        }
        (from, to) => (from.flatten(), to.flatten()),
    };
    let (all, _) = match read_candidates(
        &state,
        &t.muni,
        "GET /terminal/results/print",
        "terminal_print",
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return api_error(e),
    };
    // The JST day of a confirmation.
    let confirmed_day = |c: &CandidateState| {
        let (_, k) = c.confirmation.as_ref()?;
        let ms = rfc3339_ms(&k.confirmed_at)? + 9 * 3_600_000;
        i32::try_from(ms / 86_400_000).ok()
    };
    let rows: Vec<&CandidateState> = all
        .iter()
        .filter(|c| {
            c.decision
                .as_ref()
                .is_some_and(|(_, d)| d.decision == "continue")
        })
        .filter(|c| {
            confirmed_day(c)
                .is_some_and(|d| from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t))
        })
        .collect();
    let days: Vec<i32> = rows.iter().filter_map(|c| confirmed_day(c)).collect();
    let period = |d: Option<i32>| {
        d.map(crate::domain::text::format_date)
            .and_then(|iso| crate::domain::wareki::wareki(&iso))
            .unwrap_or_else(|| "—".to_owned())
    };
    let (first, last) = (
        from.or(days.iter().min().copied()),
        to.or(days.iter().max().copied()),
    );
    let months: usize = rows.iter().map(|c| c.held().len()).sum();
    let now = crate::store::now_unix_ms();
    page(layout(
        "継続世帯確定リスト",
        Some(&t),
        html! {
            h2 { "継続世帯確定リスト" }
            table.meta {
                tr { th { "保険者" } td { (t.own_insurer()) } th { "作成日時" } td { (jst_wareki(now)) } }
                tr { th { "対象期間（確定日）" } td { (period(first)) " 〜 " (period(last)) } th { "作成者" } td { (t.muni.actor.display_name()) } }
            }
            form method="get" action="/terminal/results/print" class="noprint" {
                label for="from" { "確定日の期間（YYYY-MM-DD、空欄はすべて）" }
                input id="from" name="from" value=(q.from.as_deref().unwrap_or("")) size="10";
                " 〜 "
                input id="to" name="to" aria-label="期間の終わり" value=(q.to.as_deref().unwrap_or("")) size="10";
                " " button type="submit" { "表示" }
            }
            @let sheets = sheets(rows.len());
            @for (n, range) in sheets.iter().enumerate() {
                section.sheet {
                    @if n > 0 { h3 { "継続世帯確定リスト（続き）" } }
                    @let last = n + 1 == sheets.len();
                    (results_table(&t, rows.get(range.clone()).unwrap_or_default(), last.then_some((rows.len(), months))))
                    @if last {
                        table.stamps {
                            caption { "確認欄" }
                            tr { th { "担当" } th { "確認" } th { "決裁" } }
                            tr { td {} td {} td {} }
                        }
                    }
                    p.pageno { (n + 1) " / " (sheets.len()) }
                }
            }
            p.noprint { "ブラウザーの印刷機能で A4 横に印刷できます（" (ROWS_PER_SHEET) " 世帯ごとに改ページし、ページ番号が入ります）。" }
        },
    ))
}

async fn carryover(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    axum::extract::Query(q): axum::extract::Query<super::continuity::FileQuery>,
) -> Response {
    let enc = match super::continuity::file_encoding(&q) {
        Ok(e) => e,
        Err(e) => return api_error(e),
    };
    match super::continuity::carryover_file(
        &state,
        &t.muni,
        enc,
        "GET /terminal/carryover.csv",
        "terminal_carryover_file",
    )
    .await
    {
        Ok(mut res) => {
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => api_error(e),
    }
}

async fn index() -> Redirect {
    Redirect::to("/terminal/candidates")
}

/// The terminal's routes (hub only), merged into the API router.
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/terminal", get(index))
        .route("/terminal/login", get(login_form).post(login))
        .route("/terminal/logout", post(logout))
        .route("/terminal/candidates", get(candidates_page))
        .route("/terminal/candidates/{seq}", get(candidate_page))
        .route("/terminal/candidates/{seq}/decision", post(decide))
        .route(BULK_PATH, post(bulk_decision))
        .route(
            "/terminal/candidates/{seq}/acknowledgement",
            post(acknowledge),
        )
        .route("/terminal/results", get(results_page))
        .route("/terminal/results/print", get(print_page))
        .route("/terminal/carryover.csv", get(carryover))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Times the flows write, read back as instants; JST as the municipality reads them.
    #[test]
    fn times_in_jst() {
        // 2025-01-10T01:00:00Z = 1736470800000 ms.
        for (text, want) in [
            ("2025-01-10T10:00:00+09:00", Some(1_736_470_800_000)),
            ("2025-01-10T01:00:00Z", Some(1_736_470_800_000)),
            ("2025-01-10T01:00:00.123Z", Some(1_736_470_800_000)),
            ("2025-01-09T20:00:00-05:00", Some(1_736_470_800_000)),
            ("2025-01-10", None),
            ("2025-02-30T01:00:00Z", None),
            ("2025-01-10T01:00:00*09:00", None),
        ] {
            assert_eq!(rfc3339_ms(text), want, "{text}");
        }
        assert_eq!(jst(1_736_470_800_000), "2025-01-10 10:00:00");
        // 15:00 UTC is the next day in Japan.
        assert_eq!(jst(1_736_521_200_000), "2025-01-11 00:00:00");
        assert_eq!(page_of(0, None), (0..0, 1, 1));
        assert_eq!(page_of(250, None), (0..100, 1, 3));
        assert_eq!(page_of(250, Some(3)), (200..250, 3, 3));
        assert_eq!(
            page_of(250, Some(9)),
            (200..250, 3, 3),
            "past the end: the last page"
        );
        assert_eq!(page_of(250, Some(0)), (0..100, 1, 3));
        assert_eq!(sheets(0), vec![0..0]);
        assert_eq!(sheets(1), vec![0..1]);
        assert_eq!(sheets(ROWS_PER_SHEET), vec![0..ROWS_PER_SHEET]);
        assert_eq!(
            sheets(ROWS_PER_SHEET + 1),
            vec![0..ROWS_PER_SHEET, ROWS_PER_SHEET..ROWS_PER_SHEET + 1]
        );
        assert!(
            jst_wareki(1_736_470_800_000)
                .into_string()
                .contains("令和7年1月10日 10:00")
        );
    }
}

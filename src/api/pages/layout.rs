//! The terminal's page frame, errors, dates (JST, 和暦) and pagination.

use super::*;

const STYLE: &str = r#"
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

/// The frame every page shares, the terminal's and the console's: `<head>` with the style,
/// the header's contents, the page's body.
pub(crate) fn frame(title: &str, header: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="ja" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { (header) }
                main { (body) }
            }
        }
    }
}

/// The header's logout button (a POST with the session's CSRF token).
pub(crate) fn logout_button(csrf: &str) -> Markup {
    html! {
        form method="post" action="/terminal/logout" {
            input type="hidden" name="csrf" value=(csrf);
            button type="submit" { "ログアウト" }
        }
    }
}

/// A page: the header names the municipality and the logged-in clerk when there is a
/// session (`t`).
pub(crate) fn layout(title: &str, t: Option<&Terminal>, body: Markup) -> Markup {
    let header = html! {
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
            (logout_button(&t.csrf))
        }
    };
    frame(&format!("{title} — kukaku 国保総合PC"), header, body)
}

/// A time as the municipality reads it: JST (UTC+9, no daylight saving),
/// `2024-11-01 09:30:00`.
pub(crate) fn jst(unix_ms: u64) -> String {
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
pub(crate) fn jst_wareki(unix_ms: u64) -> Markup {
    let text = jst(unix_ms);
    let (date, time) = text.split_once(' ').unwrap_or((&text, ""));
    let wareki = crate::domain::wareki::wareki(date).unwrap_or_else(|| date.to_owned());
    html! { span title=(text) { (wareki) " " (time.get(..5).unwrap_or(time)) } }
}

/// A date (`YYYY-MM-DD`) in 和暦 for a table cell, the ISO date in its title; text that is
/// not a date as it is.
pub(crate) fn date_cell(iso: &str) -> Markup {
    match crate::domain::wareki::wareki(iso) {
        Some(w) => html! { span title=(iso) { (w) } },
        None => html! { (iso) },
    }
}

/// Milliseconds since 1970 of an RFC 3339 time as the flows write it (`…Z` or `…+09:00`).
pub(crate) fn rfc3339_ms(text: &str) -> Option<u64> {
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
pub(crate) fn time_cell(rfc3339: &str) -> Markup {
    match rfc3339_ms(rfc3339) {
        Some(ms) => jst_wareki(ms),
        None => html! { (rfc3339) },
    }
}

/// Rows per page of the terminal's long lists (candidates, transmissions).
pub(crate) const PAGE_ROWS: usize = 100;

/// Page `page` (1-based, clamped) of `n` rows: the rows it shows, the page and the number
/// of pages (at least one).
pub(crate) fn page_of(n: usize, page: Option<usize>) -> (std::ops::Range<usize>, usize, usize) {
    let pages = n.div_ceil(PAGE_ROWS).max(1);
    let page = page.unwrap_or(1).clamp(1, pages);
    let start = (page - 1) * PAGE_ROWS;
    (start..(start + PAGE_ROWS).min(n), page, pages)
}

/// Links to the previous and next page of a list; `query` is the list's other parameters
/// (`state=undecided&`, or empty).
pub(crate) fn pager(path: &str, query: &str, page: usize, pages: usize) -> Markup {
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

pub(crate) fn page(markup: Markup) -> Response {
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

pub(crate) fn page_error(status: StatusCode, message: &str) -> Response {
    let mut res = page(layout(
        "エラー",
        None,
        html! { p.error role="alert" { (message) } p { a href="/terminal/candidates" { "戻る" } } },
    ));
    *res.status_mut() = status;
    res
}

pub(crate) fn api_error(e: ApiError) -> Response {
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

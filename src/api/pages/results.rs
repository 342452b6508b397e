//! Flow 4's results at the terminal: 確定結果, the printed 継続世帯確定リスト and the
//! 連携ファイル download.

use super::*;

/// The results table; with `totals` (households, carried months), a totals line.
pub(crate) fn results_table(
    t: &Terminal,
    rows: &[&CandidateState],
    totals: Option<(usize, usize)>,
) -> Markup {
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

pub(crate) async fn results_page(State(state): State<Arc<AppState>>, t: Terminal) -> Response {
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
pub(crate) const ROWS_PER_SHEET: usize = 15;

/// The rows of each printed sheet: at least one sheet, even for no rows.
pub(crate) fn sheets(rows: usize) -> Vec<std::ops::Range<usize>> {
    let n = rows.div_ceil(ROWS_PER_SHEET).max(1);
    (0..n)
        .map(|i| i * ROWS_PER_SHEET..((i + 1) * ROWS_PER_SHEET).min(rows))
        .collect()
}

#[derive(Deserialize)]
pub(crate) struct PrintParams {
    /// Confirmation dates to list, `YYYY-MM-DD` (JST), inclusive; default: all.
    from: Option<String>,
    to: Option<String>,
}

/// The printed 継続世帯確定リスト (4-⑥), a municipal document: A4, title, 保険者番号, the
/// period, page numbers (n / N, printed by the browser from the page's CSS), a totals line,
/// 作成日時 in JST, the clerk who printed it, and a 確認欄.
impl PrintParams {
    /// The period's first and last day (days since 1970-01-01), each optional; `None` when a
    /// given day is not a date.
    fn days(&self) -> Option<(Option<i32>, Option<i32>)> {
        let day = |d: &Option<String>| match d.as_deref().filter(|d| !d.is_empty()) {
            None => Some(None),
            Some(text) => crate::domain::text::parse_date(text).map(Some),
        };
        Some((day(&self.from)?, day(&self.to)?))
    }
}

/// The JST day of a move's confirmation.
fn confirmed_day(c: &CandidateState) -> Option<i32> {
    let (_, k) = c.confirmation.as_ref()?;
    let ms = rfc3339_ms(&k.confirmed_at)? + 9 * 3_600_000;
    i32::try_from(ms / 86_400_000).ok()
}

/// A day in 和暦, or a dash.
fn period_day(d: Option<i32>) -> String {
    d.map(crate::domain::text::format_date)
        .and_then(|iso| crate::domain::wareki::wareki(&iso))
        .unwrap_or_else(|| "—".to_owned())
}

pub(crate) async fn print_page(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    axum::extract::Query(q): axum::extract::Query<PrintParams>,
) -> Response {
    let Some((from, to)) = q.days() else {
        return page_error(
            StatusCode::BAD_REQUEST,
            "期間は YYYY-MM-DD で指定してください。",
        );
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
    // The moves confirmed to continue within the period.
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
    let period = (
        from.or(days.iter().min().copied()),
        to.or(days.iter().max().copied()),
    );
    print_sheets(&t, &q, &rows, period)
}

/// The printed list: the heading, the period form, the numbered sheets, the 確認欄.
fn print_sheets(
    t: &Terminal,
    q: &PrintParams,
    rows: &[&CandidateState],
    (first, last): (Option<i32>, Option<i32>),
) -> Response {
    let months: usize = rows.iter().map(|c| c.held().len()).sum();
    let now = crate::store::now_unix_ms();
    page(layout(
        "継続世帯確定リスト",
        Some(t),
        html! {
            h2 { "継続世帯確定リスト" }
            table.meta {
                tr { th { "保険者" } td { (t.own_insurer()) } th { "作成日時" } td { (jst_wareki(now)) } }
                tr { th { "対象期間（確定日）" } td { (period_day(first)) " 〜 " (period_day(last)) } th { "作成者" } td { (t.muni.actor.display_name()) } }
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
                    (results_table(t, rows.get(range.clone()).unwrap_or_default(), last.then_some((rows.len(), months))))
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

pub(crate) async fn carryover(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    axum::extract::Query(q): axum::extract::Query<crate::api::continuity::FileQuery>,
) -> Response {
    let enc = match crate::api::continuity::file_encoding(&q) {
        Ok(e) => e,
        Err(e) => return api_error(e),
    };
    match crate::api::continuity::carryover_file(
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

//! Flow 4 at the terminal: the candidate list (filters, pages, bulk 確定指示), a candidate
//! with its versions, cases, anomalies and decision history, the decision and the
//! acknowledgement forms.

use super::*;

/// An anomaly of a candidate (issue 27), in the clerk's words.
pub(crate) fn anomaly_label(code: &str) -> &'static str {
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
pub(crate) fn changes_text(fields: &[String]) -> String {
    let mut labels: Vec<&str> = fields.iter().map(|f| change_label(f)).collect();
    labels.dedup();
    labels.join("、")
}

/// A changed candidate field, as the clerk reads it.
pub(crate) fn change_label(field: &str) -> &'static str {
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

pub(crate) fn suggestion_label(code: &str) -> &'static str {
    match code {
        "continue" => "継続",
        "not_continue" => "非継続",
        _ => "要確認",
    }
}

pub(crate) fn decision_label(code: &str) -> &'static str {
    match code {
        "continue" => "継続する",
        _ => "継続しない",
    }
}

pub(crate) fn period_label(code: &str, days: i32) -> String {
    match code {
        "contiguous" => "連続".to_owned(),
        "gap" => format!("空白期間 {days} 日"),
        "overlap" => format!("重複期間 {days} 日"),
        _ => "旧住所地の適用終了なし".to_owned(),
    }
}

pub(crate) fn state_label(c: &CandidateState) -> &'static str {
    match (&c.decision, &c.confirmation) {
        (None, _) => "未確定",
        (Some(_), None) => "確定指示済",
        (Some(_), Some(_)) => "確定済",
    }
}

// ---- pages ----

#[derive(Deserialize)]
pub(crate) struct ListParams {
    state: Option<String>,
    /// Decisions a bulk 確定指示 just registered.
    bulk: Option<usize>,
    /// The page of the list (1-based).
    page: Option<usize>,
}

pub(crate) async fn candidates_page(
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
            (filter_form(filter.as_deref()))
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
                        (candidate_row(c, &t))
                    }
                }
            }
            (bulk_fieldset())
            }
        },
    ))
}

/// The list's filter by state.
fn filter_form(filter: Option<&str>) -> Markup {
    html! {
        form method="get" action="/terminal/candidates" class="noprint" {
            label for="state" { "表示" }
            select id="state" name="state" {
                option value="" selected[filter.is_none()] { "すべて" }
                option value="undecided" selected[filter == Some("undecided")] { "未確定" }
                option value="decided" selected[filter == Some("decided")] { "確定指示済" }
                option value="confirmed" selected[filter == Some("confirmed")] { "確定済" }
                option value="anomalies" selected[filter == Some("anomalies")] { "要確認（未対応）" }
            }
            " " button type="submit" { "絞り込み" }
        }
    }
}

/// One move of the list; undecided ones can be selected for a bulk decision.
fn candidate_row(c: &CandidateState, t: &Terminal) -> Markup {
    html! {
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

/// The bulk decision of the selected moves: no choice is pre-selected here either.
fn bulk_fieldset() -> Markup {
    html! {
        fieldset.noprint {
            legend { "選択した候補に一括で確定指示" }
            label { input type="radio" name="decision" value="continue" required; " 継続する" }
            label { input type="radio" name="decision" value="not_continue"; " 継続しない" }
            label for="bulk-reason" { "理由（任意）" }
            textarea id="bulk-reason" name="reason" rows="2" cols="60" maxlength="1000" {}
            input type="hidden" name="stage" value="review";
            p { button type="submit" { "確認へ進む" } }
        }
    }
}

/// The bulk decision's path (not under `/terminal/candidates/`, whose paths name a move).
pub(crate) const BULK_PATH: &str = "/terminal/bulk-decision";

/// The bulk 確定指示: `seq_<N>` for each selected move, the decision, a reason, and the
/// stage (`review` shows what will be registered, `commit` registers it).
/// What a bulk 確定指示 form asks for.
pub(crate) struct Bulk {
    seqs: Vec<u64>,
    decision: String,
    reason: Option<String>,
}

impl Bulk {
    /// The selected moves (`seq_<N>`), the decision and the reason; else what is missing, in
    /// the clerk's words.
    fn read(f: &HashMap<String, String>) -> Result<Bulk, &'static str> {
        let mut seqs: Vec<u64> = f
            .keys()
            .filter_map(|k| k.strip_prefix("seq_")?.parse().ok())
            .collect();
        seqs.sort_unstable();
        let decision = f.get("decision").map_or("", String::as_str);
        if seqs.is_empty() {
            return Err("確定指示する候補を選んでください。");
        }
        if !matches!(decision, "continue" | "not_continue") {
            return Err("継続する・継続しないのどちらかを選んでください。");
        }
        Ok(Bulk {
            seqs,
            decision: decision.to_owned(),
            reason: f.get("reason").cloned().filter(|r| !r.trim().is_empty()),
        })
    }
}

pub(crate) async fn bulk_decision(
    State(state): State<Arc<AppState>>,
    t: Terminal,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Some(r) = t.csrf_refusal(f.get("csrf").map_or("", String::as_str)) {
        return r;
    }
    let bulk = match Bulk::read(&f) {
        Ok(b) => b,
        Err(missing) => return page_error(StatusCode::BAD_REQUEST, missing),
    };
    if f.get("stage").map(String::as_str) == Some("commit") {
        bulk_commit(&state, &t, bulk).await
    } else {
        bulk_review(&state, &t, bulk).await
    }
}

/// Registers every decision of a reviewed bulk 確定指示, in one batch.
async fn bulk_commit(state: &Arc<AppState>, t: &Terminal, b: Bulk) -> Response {
    let operator = t.muni.actor.display_name();
    let route = "POST /terminal/bulk-decision";
    let done = crate::api::continuity::on_partition(
        state,
        &t.muni,
        operator,
        route,
        move |s, scope, name, who| {
            let reason = b.reason.as_deref();
            crate::flows::decision::decide_all(s, scope, &b.seqs, &b.decision, reason, name, who)
        },
    )
    .await;
    match done {
        Ok(d) => Redirect::to(&format!("/terminal/candidates?bulk={}", d.len())).into_response(),
        Err(e) => api_error(e),
    }
}

/// The review step: what will be registered, and where it differs from the suggestion or an
/// anomaly is open.
async fn bulk_review(state: &Arc<AppState>, t: &Terminal, b: Bulk) -> Response {
    let (all, _) = match read_candidates(
        state,
        &t.muni,
        "POST /terminal/bulk-decision",
        "terminal_bulk_review",
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return api_error(e),
    };
    let chosen: Vec<&CandidateState> = all.iter().filter(|c| b.seqs.contains(&c.seq)).collect();
    if chosen.len() != b.seqs.len() {
        return page_error(StatusCode::NOT_FOUND, "該当する候補世帯はありません。");
    }
    let decision = b.decision.as_str();
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
        Some(t),
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
                input type="hidden" name="reason" value=(b.reason.as_deref().unwrap_or(""));
                input type="hidden" name="stage" value="commit";
                @for c in &chosen { input type="hidden" name={ "seq_" (c.seq) } value="1"; }
                p { "操作者: " (t.muni.actor.display_name()) }
                p { button type="submit" { "確定指示を登録" } " " a href="/terminal/candidates" { "戻る" } }
            }
        },
    ))
}

pub(crate) fn members_table(
    title: &str,
    members: &[crate::flows::continuity::MemberView],
) -> Markup {
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

pub(crate) fn zokugara(code: &str) -> &'static str {
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
pub(crate) struct Flash {
    done: Option<u64>,
    acknowledged: Option<u64>,
}

pub(crate) async fn candidate_page(
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
    let flashes = html! {
        @if flash.done.is_some() { p.flash role="status" { "確定指示を登録しました。" } }
        @if flash.acknowledged.is_some() { p.flash role="status" { "要確認事項を確認済にしました。" } }
    };
    page(layout(
        "候補世帯",
        Some(&t),
        html! {
            h2 { "継続候補世帯 " (c.seq) }
            (flashes)
            (candidate_summary(&t, &c))
            @if c.suggestion_changed_since_decision() {
                p.error role="alert" { "確定指示の後に届いた異動・訂正で提案が変わりました。内容を確認し、必要なら確定指示を登録し直してください。" }
            }
            (members_table("異動前の世帯員", &c.candidate.members_before))
            (members_table("異動後の世帯員", &c.candidate.members_after))
            (candidate_history(&c))
            (candidate_forms(&t, &c))
        },
    ))
}

/// What the move is: where from, when, the period, every 参酌基準 case, the suggestion,
/// the anomalies (open or acknowledged) and its versions.
fn candidate_summary(t: &Terminal, c: &CandidateState) -> Markup {
    let k = &c.candidate;
    let open = c.open_anomalies();
    html! {
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
    }
}

/// The move's decisions and anomaly acknowledgements, oldest first.
fn candidate_history(c: &CandidateState) -> Markup {
    html! {
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
    }
}

/// The acknowledgement form (while an anomaly is open) and the 確定指示 form, with no
/// choice pre-selected.
fn candidate_forms(t: &Terminal, c: &CandidateState) -> Markup {
    html! {
        @if !c.open_anomalies().is_empty() {
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
    }
}

#[derive(Deserialize)]
pub(crate) struct DecisionForm {
    csrf: String,
    decision: String,
    reason: Option<String>,
}

pub(crate) async fn decide(
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
pub(crate) struct AcknowledgeForm {
    csrf: String,
    note: String,
}

pub(crate) async fn acknowledge(
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

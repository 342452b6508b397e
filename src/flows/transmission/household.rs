//! The rules of a whole household: its persons filed under it, completeness against the
//! previous snapshot, one head, the head's 資格 (docs/domain.md §9.3).

use super::*;

/// The households of a 世帯ファイル as drafts, by 世帯番号 (a refused row stays `None` so
/// its persons are not reported twice).
pub(super) struct Drafts {
    pub(super) list: Vec<Option<SetaiDraft>>,
    pub(super) index: BTreeMap<String, usize>,
}

impl Drafts {
    pub(super) fn of(rows: &[Row], ctx: &Context<'_>, problems: &mut Vec<Problem>) -> Drafts {
        let mut d = Drafts {
            list: Vec::new(),
            index: BTreeMap::new(),
        };
        for row in rows {
            let draft = setai_row(row, ctx, problems);
            let setai_no = row.fields.get(3).cloned().unwrap_or_default();
            if valid_setai_no(&setai_no) {
                if d.index.contains_key(&setai_no) {
                    problems.push(Problem {
                        file: FileKind::Setai,
                        line: row.line,
                        field: Some("setai_no"),
                        reason: "duplicate",
                    });
                    continue;
                }
                d.index.insert(setai_no, d.list.len());
            }
            d.list.push(draft);
        }
        d
    }

    /// Each household's 異動年月日, by 世帯番号 (a person's dates are checked against it).
    fn ido_dates(&self) -> BTreeMap<String, Option<i32>> {
        self.index
            .iter()
            .map(|(k, &i)| {
                let ido = self
                    .list
                    .get(i)
                    .and_then(Option::as_ref)
                    .and_then(|x| x.ido_date);
                (k.clone(), ido)
            })
            .collect()
    }

    /// Files each person row under its household; returns the households with a refused
    /// person row, whose household-level checks would only echo that row's problem.
    pub(super) fn add_persons(
        &mut self,
        rows: &[Row],
        ctx: &Context<'_>,
        problems: &mut Vec<Problem>,
    ) -> BTreeSet<String> {
        let ido_dates = self.ido_dates();
        let mut seen_kojin: BTreeSet<KojinNo> = BTreeSet::new();
        let mut incomplete: BTreeSet<String> = BTreeSet::new();
        let mut seen_card: BTreeSet<(String, String, String)> = BTreeSet::new();
        for row in rows {
            let Some((setai_no, kojin, person, dates)) = kojin_row(row, ctx, &ido_dates, problems)
            else {
                if let Some(s) = row.fields.get(2) {
                    incomplete.insert(s.clone());
                }
                continue;
            };
            let at = |field, reason| Problem {
                file: FileKind::Kojin,
                line: row.line,
                field: Some(field),
                reason,
            };
            if !seen_kojin.insert(kojin.clone()) {
                problems.push(at("kojin_no", "duplicate"));
                incomplete.insert(setai_no);
                continue;
            }
            let Some(draft) = self
                .index
                .get(&setai_no)
                .and_then(|&i| self.list.get_mut(i))
                .and_then(Option::as_mut)
            else {
                continue; // its household row had problems, already reported
            };
            if !person.giji_head {
                let kigo = person
                    .kigo
                    .clone()
                    .or_else(|| draft.household.kigo.clone())
                    .unwrap_or_default();
                let card = (
                    kigo,
                    person.bango.clone().unwrap_or_default(),
                    person.edaban.clone().unwrap_or_default(),
                );
                if !seen_card.insert(card) {
                    problems.push(at("bango", "duplicate_card_number"));
                    incomplete.insert(setai_no);
                    continue;
                }
            }
            draft.persons.push((row.line, kojin, person, dates));
        }
        incomplete
    }
}

/// The household rules (docs/domain.md §9.3 items 3–4) on one complete draft: the
/// household, or `None` with its problems added.
pub(super) fn household_rules(
    draft: SetaiDraft,
    ctx: &Context<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Household> {
    let before = problems.len();
    let at = |field, reason| Problem {
        file: FileKind::Setai,
        line: draft.line,
        field,
        reason,
    };
    // Every member of the previous snapshot is sent again (docs/domain.md §4.5, issue 27
    // item 6): one problem per member missing, on the household's line.
    if let Some(before) = (ctx.previous_members)(&draft.household.setai_no) {
        for kojin in &before {
            let sent = draft
                .persons
                .iter()
                .any(|(_, k, _, _)| k.expose() == kojin.as_bytes());
            if !sent {
                problems.push(at(Some("person_rows"), "member_missing"));
            }
        }
    }
    if draft.person_rows != Some(draft.persons.len() as u32) {
        problems.push(at(Some("person_rows"), "person_rows_mismatch"));
    }
    head_rules(&draft, problems);
    for (line, _, p, _) in &draft.persons {
        if p.giji_head && p.zokugara != "01" {
            problems.push(Problem {
                file: FileKind::Kojin,
                line: *line,
                field: Some("giji_head"),
                reason: "giji_head_not_head",
            });
        }
    }
    if !draft.persons.iter().any(|(_, _, p, _)| !p.giji_head) {
        problems.push(at(None, "no_insured"));
    }
    if problems.len() > before {
        return None;
    }
    let mut h = draft.household.clone();
    h.head_kojin_no = draft
        .head_kojin_no
        .as_ref()
        .map(|k| String::from_utf8_lossy(k.expose()).into_owned())
        .unwrap_or_default();
    h.persons = draft.persons.iter().map(|(_, _, p, _)| p.clone()).collect();
    Some(h)
}

/// One head per household, the one the 世帯ファイル names, insured (普通, head_kubun 1) with
/// an open 資格 or a 擬制世帯主 (2) without one.
pub(super) fn head_rules(draft: &SetaiDraft, problems: &mut Vec<Problem>) {
    let at = |field, reason| Problem {
        file: FileKind::Setai,
        line: draft.line,
        field,
        reason,
    };
    let heads: Vec<_> = draft
        .persons
        .iter()
        .filter(|(_, _, p, _)| p.zokugara == "01")
        .collect();
    let [(_, kojin, head, dates)] = heads.as_slice() else {
        problems.push(at(
            None,
            if heads.is_empty() {
                "no_head"
            } else {
                "multiple_heads"
            },
        ));
        return;
    };
    if draft.head_kojin_no.as_ref() != Some(kojin) {
        problems.push(at(Some("head_kojin_no"), "head_kojin_no_mismatch"));
    }
    match draft.head_kubun.as_deref() {
        Some("1") if head.giji_head => problems.push(at(Some("head_kubun"), "head_not_insured")),
        // An insured head (普通) whose own 資格 has ended by the 異動年月日 is no longer
        // insured: the household needs another head or 擬制 (docs/domain.md §9.3 rule 4;
        // issue 27 item 6).
        Some("1")
            if dates
                .soshitsu
                .zip(draft.ido_date)
                .is_some_and(|(lost, ido)| lost <= ido) =>
        {
            problems.push(at(Some("head_kubun"), "head_shikaku_closed"));
        }
        Some("2") if !head.giji_head => problems.push(at(Some("head_kubun"), "head_not_giji")),
        Some("2") => {
            let open = match (dates.shutoku, draft.ido_date) {
                (Some(s), Some(ido)) => s <= ido && dates.soshitsu.is_none_or(|l| l > ido),
                _ => false,
            };
            if open {
                problems.push(at(Some("head_kubun"), "giji_head_has_shikaku"));
            }
        }
        _ => {}
    }
}

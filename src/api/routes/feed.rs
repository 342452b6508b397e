//! The replicator's signed feed and the witness's cosignatures.

use super::*;
use crate::ledger::{Seq, TreeSize};

// ---- replicator: the signed feed ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FeedQuery {
    from_size: u64,
    limit: Option<u64>,
}

/// Picks the page end: the largest checkpointed size in `(from, from + limit]`, else the
/// smallest checkpointed size above `from` (one batch larger than a page goes whole).
pub(crate) fn feed_end(sizes: &[u64], from: u64, limit: u64) -> Option<u64> {
    let cap = from.saturating_add(limit);
    sizes
        .iter()
        .copied()
        .filter(|&s| s > from && s <= cap)
        .max()
        .or_else(|| sizes.iter().copied().find(|&s| s > from))
}

pub(crate) struct FeedPage {
    response: FeedResponse,
    sealed: Vec<(u64, u16)>,
}

pub(crate) fn feed_page(
    store: &Store,
    scope: &PartitionScope,
    from: u64,
    limit: u64,
) -> Result<FeedPage, ApiError> {
    let p = scope.partition();
    let sizes = store.checkpoint_sizes(p)?;
    if from != 0 && !sizes.contains(&from) {
        return Err(ApiError::bad_request(
            "from_size_not_checkpointed",
            "from_size must be 0 or a checkpointed tree size (one the replica verified)",
        ));
    }
    let to = feed_end(&sizes, from, limit).unwrap_or(from);
    let mut entries = Vec::new();
    let mut sealed = Vec::new();
    for seq in from..to {
        let raw = store.envelopes(p, Seq(seq), Seq(seq + 1))?;
        let header = raw
            .first()
            .and_then(|r| crate::ledger::Header::decode_prefix(r).ok())
            .map(|(h, _)| h)
            .ok_or_else(|| ApiError::internal("unreadable envelope"))?;
        let kind = header.kind;
        let shared = kind.class() == Class::Open || forwarded_kind(kind);
        let (salt, payload) = if shared {
            let e = store.read_entry(scope, seq)?;
            if kind.class() == Class::Sealed {
                sealed.push((seq, kind.code()));
            }
            (Some(B64.encode(e.salt)), Some(B64.encode(&e.payload[..])))
        } else {
            (None, None)
        };
        entries.push(FeedEntry {
            seq,
            kind: kind.name().to_owned(),
            header: B64.encode(header.encode()),
            salt,
            payload,
        });
    }
    let checkpoint = store.checkpoint_at(p, to)?;
    let consistency = if from == 0 || from == to {
        None
    } else {
        Some(store.prove_consistency(p, TreeSize(from), Some(TreeSize(to)))?)
    };
    Ok(FeedPage {
        response: FeedResponse {
            partition: p.to_string(),
            from_size: from,
            to_size: to,
            entries,
            checkpoint,
            consistency,
            access_record_seq: None,
        },
        sealed,
    })
}

pub(crate) async fn feed(
    State(state): State<Arc<AppState>>,
    who: Replicator,
    ApiPath(partition): ApiPath<String>,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Json<FeedResponse>, ApiError> {
    let p = PartitionId::parse(&partition).map_err(|_| ApiError::not_found("partition"))?;
    let scope = who.scope(&p)?;
    let limit = page_limit(q.limit, MAX_ENTRIES_PER_PAGE)?;
    let from = q.from_size;
    let page = blocking(&state, move |s| feed_page(s, &scope, from, limit)).await?;
    let mut response = page.response;
    // Handing sealed flow-5 entries to the intermediate is a provision: a 提供記録 (which
    // doubles as the access record). Open entries alone record nothing, so an idle poll adds
    // no entry.
    if let (Some(first), Some(last)) = (page.sealed.first(), page.sealed.last()) {
        let record = ProvisionRecord {
            provider: format!("{}/{}", state.store.origin(), p),
            recipient: format!("replicator {}", who.actor.credential),
            items: vec!["資格情報(世帯)".into(), "資格情報(個人)".into()],
            nondisclosure: false,
            purpose: "forward_to_intermediate".into(),
            first_seq: first.0,
            count: last.0 - first.0 + 1,
            checkpoint_size: response.to_size,
            request_id: request_id::current(),
        };
        let payload = record.encode().map_err(ApiError::internal)?;
        let entry = NewEntry::new(
            Kind::PROVISION_RECORD,
            crate::store::today_days(),
            None,
            payload,
        )?;
        let receipt = state.store.append_async(&p, vec![entry]).await?;
        response.access_record_seq = receipt.entries.first().map(|(seq, _)| *seq);
    }
    Ok(Json(response))
}

pub(crate) async fn post_cosignature(
    State(state): State<Arc<AppState>>,
    who: Replicator,
    ApiPath(partition): ApiPath<String>,
    ApiJson(req): ApiJson<CosignatureRequest>,
) -> Result<Json<CosignatureResponse>, ApiError> {
    use crate::store::CosignError;
    let p = PartitionId::parse(&partition).map_err(|_| ApiError::not_found("partition"))?;
    who.scope(&p)?;
    let witnesses = state.witnesses.clone();
    let accepted = blocking(&state, move |s| {
        s.add_cosignature(&p, &req.checkpoint, &witnesses)
            .map_err(|e| {
                let unprocessable = |code, msg: &str| {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg.to_owned())
                };
                match e {
                    CosignError::NotOurs { .. } => unprocessable(
                        "not_our_checkpoint",
                        "the note is not a checkpoint this hub signed for the partition",
                    ),
                    CosignError::UnknownCheckpoint { .. } => unprocessable(
                        "unknown_checkpoint",
                        "this hub stored no checkpoint at that size",
                    ),
                    CosignError::Conflict { partition, size } => {
                        tracing::error!(
                            %partition,
                            size,
                            "a cosigned checkpoint differs from the stored one"
                        );
                        ApiError::new(
                            StatusCode::CONFLICT,
                            "conflicting_checkpoint",
                            "the checkpoint differs from the one stored at that size",
                        )
                    }
                    CosignError::UntrustedWitness => unprocessable(
                        "untrusted_witness",
                        "no cosignature by a witness this hub trusts",
                    ),
                    CosignError::BadCosignature(_) => unprocessable(
                        "bad_cosignature",
                        "a cosignature by a trusted witness does not verify",
                    ),
                    CosignError::Note(_) => {
                        ApiError::bad_request("bad_note", "the checkpoint is not a signed note")
                    }
                    CosignError::Read(r) => ApiError::from(r),
                    other => ApiError::failed(&other),
                }
            })
    })
    .await?;
    tracing::info!(size = accepted.size, witnesses = ?accepted.witnesses, "cosignature stored");
    Ok(Json(CosignatureResponse {
        size: accepted.size,
        witnesses: accepted.witnesses,
    }))
}

#[cfg(test)]
mod tests {
    use super::feed_end;

    #[test]
    fn feed_pages_end_on_checkpoints() {
        let sizes = [2, 3, 5, 9, 300];
        assert_eq!(feed_end(&sizes, 0, 100), Some(9));
        assert_eq!(feed_end(&sizes, 3, 2), Some(5));
        assert_eq!(feed_end(&sizes, 3, 1), Some(5));
        assert_eq!(feed_end(&sizes, 9, 100), Some(300));
        assert_eq!(feed_end(&sizes, 300, 100), None);
    }
}

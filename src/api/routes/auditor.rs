//! The auditor's routes: headers, envelopes, checkpoints and proofs, never plaintext.

use super::*;
use crate::ledger::Seq;

// ---- auditor: no plaintext ----

#[derive(Serialize)]
pub struct AuditPartition {
    pub partition: String,
    pub size: u64,
    pub verifier_key: String,
}

pub(crate) async fn audit_partitions(
    State(state): State<Arc<AppState>>,
    who: Auditor,
) -> Result<Json<Vec<AuditPartition>>, ApiError> {
    let list = blocking(&state, move |s| {
        let mut out = Vec::new();
        for info in s.partitions().map_err(ApiError::internal)? {
            if info.status != PartitionStatus::Active || !who.reaches(&info.partition) {
                continue;
            }
            let key = s
                .verifier_key(&info.partition)
                .ok_or_else(|| ApiError::internal("no verifier key"))?;
            out.push(AuditPartition {
                size: s.size(&info.partition)?,
                partition: info.partition.to_string(),
                verifier_key: key.to_text(),
            });
        }
        Ok(out)
    })
    .await?;
    Ok(Json(list))
}

pub(crate) fn audit_partition(who: &Auditor, text: &str) -> Result<PartitionId, ApiError> {
    let p = PartitionId::parse(text).map_err(|_| ApiError::not_found("partition"))?;
    who.check(&p)?;
    Ok(p)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvelopeQuery {
    from: u64,
    to: u64,
}

#[derive(Serialize)]
pub struct EnvelopesResponse {
    pub partition: String,
    pub from: u64,
    pub to: u64,
    /// Stored envelopes (docs/format.md §4), base64: headers in clear, sealed bodies still
    /// encrypted.
    pub envelopes: Vec<String>,
}

pub(crate) async fn audit_envelopes(
    State(state): State<Arc<AppState>>,
    who: Auditor,
    ApiPath(partition): ApiPath<String>,
    ApiQuery(q): ApiQuery<EnvelopeQuery>,
) -> Result<Json<EnvelopesResponse>, ApiError> {
    let p = audit_partition(&who, &partition)?;
    if q.to < q.from || q.to - q.from > MAX_ENVELOPES_PER_PAGE {
        return Err(ApiError::bad_request(
            "bad_range",
            format!("need from <= to and at most {MAX_ENVELOPES_PER_PAGE} envelopes"),
        ));
    }
    let pp = p.clone();
    let raw = blocking(&state, move |s| {
        Ok(s.envelopes(&pp, Seq(q.from), Seq(q.to))?)
    })
    .await?;
    Ok(Json(EnvelopesResponse {
        partition: p.to_string(),
        from: q.from,
        to: q.from + raw.len() as u64,
        envelopes: raw.iter().map(|e| B64.encode(e)).collect(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckpointsQuery {
    from_size: Option<u64>,
    limit: Option<usize>,
}

#[derive(Serialize)]
pub struct CheckpointsResponse {
    pub partition: String,
    pub verifier_key: String,
    /// Signed checkpoints with size ≥ `from_size`, ascending.
    pub checkpoints: Vec<String>,
    /// `from_size` of the next page, if any.
    pub next: Option<u64>,
}

pub(crate) async fn audit_checkpoints(
    State(state): State<Arc<AppState>>,
    who: Auditor,
    ApiPath(partition): ApiPath<String>,
    ApiQuery(q): ApiQuery<CheckpointsQuery>,
) -> Result<Json<CheckpointsResponse>, ApiError> {
    let p = audit_partition(&who, &partition)?;
    let limit = page_limit(q.limit.map(|l| l as u64), MAX_CHECKPOINTS_PER_PAGE as u64)? as usize;
    let from = q.from_size.unwrap_or(0);
    Ok(Json(
        blocking(&state, move |s| {
            let sizes: Vec<u64> = s
                .checkpoint_sizes(&p)?
                .into_iter()
                .filter(|&n| n >= from)
                .collect();
            let mut checkpoints = Vec::new();
            for &n in sizes.iter().take(limit) {
                checkpoints.push(s.checkpoint_at(&p, n)?);
            }
            Ok(CheckpointsResponse {
                partition: p.to_string(),
                verifier_key: s
                    .verifier_key(&p)
                    .ok_or_else(|| ApiError::internal("no verifier key"))?
                    .to_text(),
                checkpoints,
                next: sizes.get(limit).copied(),
            })
        })
        .await?,
    ))
}

pub(crate) async fn audit_inclusion(
    State(state): State<Arc<AppState>>,
    who: Auditor,
    ApiPath(partition): ApiPath<String>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> Result<Json<InclusionProofJson>, ApiError> {
    let p = audit_partition(&who, &partition)?;
    inclusion(&state, p, q).await
}

pub(crate) async fn audit_consistency(
    State(state): State<Arc<AppState>>,
    who: Auditor,
    ApiPath(partition): ApiPath<String>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProofJson>, ApiError> {
    let p = audit_partition(&who, &partition)?;
    consistency(&state, p, q).await
}

//! ops-support: the 資格履歴ファイル (5-⑤).

use super::*;

// ---- ops-support: 資格履歴ファイル (5-⑤) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// Partitions to export (default: every partition of the credential).
    pub partitions: Option<Vec<String>>,
    /// Only persons touched by copies at or after this local seq (default 0: everything).
    pub since_seq: Option<u64>,
}

#[derive(Serialize)]
pub struct ExportResponse {
    pub manifest: crate::flows::history::Manifest,
    /// The 資格履歴ファイル (UTF-8 CSV), base64. Holds protected identifiers: it is only ever
    /// sent over this connection, never stored by kukaku.
    pub file: String,
}

pub(crate) async fn export_history(
    State(state): State<Arc<AppState>>,
    who: OpsSupport,
    ApiJson(req): ApiJson<ExportRequest>,
) -> Result<Json<ExportResponse>, ApiError> {
    use crate::flows::history::{Exporter, export};
    let ids: Vec<PartitionId> = match req.partitions {
        None => who.partitions(),
        Some(list) => list
            .iter()
            .map(|t| PartitionId::parse(t).map_err(|_| ApiError::not_found("partition")))
            .collect::<Result<_, _>>()?,
    };
    let scopes = ids
        .iter()
        .map(|p| who.scope(p))
        .collect::<Result<Vec<_>, _>>()?;
    let exporter = Exporter {
        recipient: format!("ops-support {}", who.actor.credential),
        request_id: request_id::current(),
    };
    let since = req.since_seq.unwrap_or(0);
    let (file, manifest) = blocking(&state, move |s| {
        export(s, &scopes, since, &exporter, &mut |_, _| {}).map_err(|e| match e {
            crate::flows::history::HistoryError::Read(r) => ApiError::from(r),
            other => ApiError::failed(&other),
        })
    })
    .await?;
    Ok(Json(ExportResponse {
        manifest,
        file: B64.encode(&file[..]),
    }))
}

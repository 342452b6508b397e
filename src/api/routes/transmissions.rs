//! Flow 5's imports from a municipality: transmissions, 高額該当情報ファイル, and a
//! transmission's record.

use super::*;

// ---- municipality: flow 5 transmissions ----

/// `POST /v1/transmissions`: both files of a transmission, base64, with the declared
/// encoding.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransmissionRequest {
    pub transmission_id: String,
    /// `utf-8` or `cp932`.
    pub encoding: String,
    /// 世帯ファイル, base64.
    pub setai_file: String,
    /// 個人ファイル, base64.
    pub kojin_file: String,
}

impl std::fmt::Debug for TransmissionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransmissionRequest(<redacted>)")
    }
}

pub(crate) fn rejected(r: crate::flows::transmission::Rejected) -> ApiError {
    use crate::flows::transmission::MAX_LISTED_PROBLEMS;
    let total = r.problems.len();
    let details = r
        .problems
        .iter()
        .take(MAX_LISTED_PROBLEMS)
        .map(|p| Detail {
            file: Some(p.file.name().to_owned()),
            line: Some(p.line),
            field: p.field.map(str::to_owned),
            reason: p.reason.to_owned(),
        })
        .collect();
    let listed = total.min(MAX_LISTED_PROBLEMS);
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        format!("transmission rejected, nothing stored: {total} problem(s), {listed} listed"),
    )
    .with_details(details)
}

pub(crate) async fn post_transmission(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiJson(req): ApiJson<TransmissionRequest>,
) -> Result<(StatusCode, Json<crate::flows::import::ImportOutcome>), ApiError> {
    use crate::flows::import::{Importer, import_checked};
    use crate::flows::transmission::Encoding;
    let encoding = Encoding::parse(&req.encoding).ok_or_else(|| {
        ApiError::bad_request("unknown_encoding", "encoding must be utf-8 or cp932")
    })?;
    let decode = |field: &str, text: &str| {
        B64.decode(text).map_err(|_| {
            ApiError::bad_request("bad_base64", "a file is not valid base64").with_details(vec![
                Detail {
                    file: None,
                    line: None,
                    field: Some(field.to_owned()),
                    reason: "base64".into(),
                },
            ])
        })
    };
    let setai = zeroize::Zeroizing::new(decode("setai_file", &req.setai_file)?);
    let kojin = zeroize::Zeroizing::new(decode("kojin_file", &req.kojin_file)?);
    drop(req.setai_file);
    drop(req.kojin_file);
    let importer = Importer {
        actor: who.actor.credential.to_string(),
        role: who.actor.role.name().to_owned(),
        route: format!("POST {TRANSMISSIONS_PATH}"),
        request_id: request_id::current(),
    };
    let scope = who.scope;
    let id = req.transmission_id;
    let outcome = blocking(&state, move |s| {
        import_checked(s, &scope, &id, encoding, &setai, &kojin, &importer).map_err(import_error)
    })
    .await?;
    Ok((created_or_replayed(&outcome), Json(outcome)))
}

pub(crate) fn import_error(e: crate::flows::import::ImportError) -> ApiError {
    use crate::flows::import::ImportError;
    match e {
        ImportError::Rejected(r) => rejected(r),
        ImportError::Conflict => ApiError::new(
            StatusCode::CONFLICT,
            "transmission_conflict",
            "this transmission id was already used with different content",
        ),
        ImportError::Encoding => {
            ApiError::bad_request("unknown_encoding", "encoding must be utf-8 or cp932")
        }
        ImportError::Append(a) => ApiError::from(a),
        ImportError::Read(r) => ApiError::from(r),
        other => ApiError::failed(&other),
    }
}

pub(crate) fn created_or_replayed(outcome: &crate::flows::import::ImportOutcome) -> StatusCode {
    if outcome.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// A 高額該当情報ファイル (docs/domain.md §9.4) in the declared encoding.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KogakuRequest {
    pub transmission_id: String,
    /// `utf-8` or `cp932`.
    pub encoding: String,
    /// 高額該当情報ファイル, base64.
    pub kogaku_file: String,
}

impl std::fmt::Debug for KogakuRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KogakuRequest(<redacted>)")
    }
}

pub(crate) async fn post_kogaku(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiJson(req): ApiJson<KogakuRequest>,
) -> Result<(StatusCode, Json<crate::flows::import::ImportOutcome>), ApiError> {
    use crate::flows::import::Importer;
    use crate::flows::transmission::Encoding;
    let encoding = Encoding::parse(&req.encoding).ok_or_else(|| {
        ApiError::bad_request("unknown_encoding", "encoding must be utf-8 or cp932")
    })?;
    let file = zeroize::Zeroizing::new(B64.decode(&req.kogaku_file).map_err(|_| {
        ApiError::bad_request("bad_base64", "a file is not valid base64").with_details(vec![
            Detail {
                file: None,
                line: None,
                field: Some("kogaku_file".to_owned()),
                reason: "base64".into(),
            },
        ])
    })?);
    drop(req.kogaku_file);
    let importer = Importer {
        actor: who.actor.credential.to_string(),
        role: who.actor.role.name().to_owned(),
        route: format!("POST {KOGAKU_PATH}"),
        request_id: request_id::current(),
    };
    let p = who.scope.partition().clone();
    let id = req.transmission_id;
    let outcome = blocking(&state, move |s| {
        crate::flows::kogaku::import(s, &p, &id, encoding, &file, &importer).map_err(import_error)
    })
    .await?;
    Ok((created_or_replayed(&outcome), Json(outcome)))
}

#[derive(Serialize)]
pub struct TransmissionJson {
    pub transmission_id: String,
    pub households: Vec<String>,
    pub first_seq: u64,
    pub count: u64,
    pub tx_time_ms: u64,
}

pub(crate) async fn get_transmission(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TransmissionJson>, ApiError> {
    let p = who.scope.partition().clone();
    let t = blocking(&state, move |s| {
        let t = s
            .transmission(&p, &id)?
            .ok_or_else(|| ApiError::not_found("transmission"))?;
        Ok((id, t))
    })
    .await?;
    Ok(Json(TransmissionJson {
        transmission_id: t.0,
        households: t.1.households,
        first_seq: t.1.first_seq,
        count: t.1.count,
        tx_time_ms: t.1.tx_time_ms,
    }))
}

/// `POST /v1/lookups`: the current snapshot of a household, found by a member's 個人番号
/// (through the blind index) or by 世帯番号. In the body, never in the URL.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    pub kojin_no: Option<String>,
    pub setai_no: Option<String>,
}

#[derive(Serialize)]
pub struct LookupResponse {
    /// The latest entry filed under the key.
    pub entry: EntryJson,
    /// Every seq filed under the key, ascending (history).
    pub history: Vec<u64>,
    pub access_record_seq: Option<u64>,
}

pub(crate) async fn lookup(
    State(state): State<Arc<AppState>>,
    who: Municipality,
    ApiJson(req): ApiJson<LookupRequest>,
) -> Result<Json<LookupResponse>, ApiError> {
    use crate::store::IndexKind;
    let scope = who.scope.clone();
    let (kind, key) = match (req.kojin_no, req.setai_no) {
        (Some(k), None) => {
            let kojin = zeroize::Zeroizing::new(k);
            crate::domain::KojinNo::parse(&kojin)
                .map_err(|e| ApiError::bad_request("bad_kojin_no", format!("kojin_no: {e}")))?;
            let p = scope.partition().clone();
            let token = blocking(&state, move |s| {
                Ok(s.index_key(&p)
                    .map_err(ApiError::internal)?
                    .token("kojin", kojin.as_bytes()))
            })
            .await?;
            (IndexKind::Person, token.to_vec())
        }
        (None, Some(setai)) => (IndexKind::Household, setai.into_bytes()),
        _ => {
            return Err(ApiError::bad_request(
                "bad_lookup",
                "give exactly one of kojin_no and setai_no",
            ));
        }
    };
    let read_scope = scope.clone();
    let (entry, history) = blocking(&state, move |s| {
        let history = s.index_seqs(read_scope.partition(), kind, &key)?;
        let last = *history
            .last()
            .ok_or_else(|| ApiError::not_found("household"))?;
        Ok((s.read_entry(&read_scope, last)?, history))
    })
    .await?;
    let access_record_seq = Some(
        record_access(
            &state,
            scope.partition(),
            &who.actor,
            Touched {
                route: "POST /v1/lookups",
                purpose: "lookup",
                kinds: [entry.header.kind.code()].into(),
                first_seq: entry.header.seq,
                count: 1,
            },
        )
        .await?,
    );
    Ok(Json(LookupResponse {
        entry: entry_json(&entry),
        history,
        access_record_seq,
    }))
}

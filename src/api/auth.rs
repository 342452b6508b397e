//! One extractor per role. Each authenticates the bearer token against the store and yields a
//! type that carries only what that role may use:
//!
//! | extractor | yields |
//! |---|---|
//! | [`Municipality`] | a `PartitionScope` for the credential's one partition |
//! | [`ContinuityOperator`] | a prefecture code |
//! | [`Replicator`] | `PartitionScope`s for partitions of its set, on request |
//! | [`OpsSupport`] | partitions of its set |
//! | [`Auditor`] | a reach check; no `PartitionScope` at all, so no plaintext |
//!
//! No credential or an unusable one: 401. A valid credential of another role: 403. A partition
//! outside the credential's reach: 404, as if it did not exist.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use super::guesses::Source;
use super::placement::Placement;
use crate::crypto::PartitionScope;
use crate::crypto::credential::{CredentialId, Reach, Role, Token, Verified};
use crate::ledger::PartitionId;
use crate::store::AuthError;

/// SHA-256 of the client certificate the connection presented (mTLS), set by the listener
/// on every request; absent on plain connections and in `oneshot` tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCertificate(pub [u8; 32]);

/// The peer address of the connection, set by the listener on every request; absent in
/// `oneshot` tests (those count as one in-process source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::IpAddr);

/// Who sent a request, as the failed-authentication limits count it.
pub(crate) fn source_of(parts: &Parts) -> Source {
    Source::of(parts.extensions.get::<PeerAddr>().map(|p| p.0))
}

/// The connection a request came on, for handlers that check a token from a form (the
/// terminal's login): its [`Source`] and the client certificate it presented (mTLS).
pub struct Connection {
    pub source: Source,
    pub peer_cert: Option<[u8; 32]>,
}

impl<S: Send + Sync> FromRequestParts<S> for Connection {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Connection {
            source: source_of(parts),
            peer_cert: parts.extensions.get::<PeerCertificate>().map(|p| p.0),
        })
    }
}

/// Who is calling, for access records.
#[derive(Debug, Clone)]
pub struct Actor {
    pub credential: CredentialId,
    pub role: Role,
    /// The credential's label: a clerk's display name (`credentials issue --label`).
    pub name: String,
}

async fn authenticate(parts: &Parts, state: &Arc<AppState>) -> Result<Verified, ApiError> {
    let Some(header) = parts.headers.get(AUTHORIZATION) else {
        metrics::counter!(crate::telemetry::AUTH_FAILURES).increment(1);
        return Err(ApiError::unauthorized());
    };
    let text = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(ApiError::unauthorized)?;
    let peer = parts.extensions.get::<PeerCertificate>().map(|p| p.0);
    verify_token(state, text, peer, source_of(parts)).await
}

/// Checks a token's text against the store (constant-time secret compare, revocation,
/// expiry, bound client certificate): 401 when refused, 429 while `source` has failed too
/// often (whatever credential it names: limits never follow the target's id).
pub(crate) async fn verify_token(
    state: &Arc<AppState>,
    text: &str,
    peer: Option<[u8; 32]>,
    source: Source,
) -> Result<Verified, ApiError> {
    let now = std::time::Instant::now();
    if let Some(wait) = state.guesses.blocked(source, now) {
        tracing::warn!(%source, "authentication refused: too many failed attempts from this source");
        return Err(ApiError::too_many_failures(wait));
    }
    let Ok(token) = Token::parse(text.trim()) else {
        metrics::counter!(crate::telemetry::AUTH_FAILURES).increment(1);
        let failures = state.guesses.failed(source, now);
        tracing::warn!(%source, failures, "malformed token refused");
        return Err(ApiError::unauthorized());
    };
    let id = token.id();
    // A credential in memory (nearly always: credentials are few and read on every
    // request) is checked here; one that needs a disk read goes to the blocking pool.
    let result = match state.store.authenticate_in_memory(&token, peer.as_ref()) {
        Some(result) => result,
        None => {
            let store = Arc::clone(&state.store);
            tokio::task::spawn_blocking(move || store.authenticate(&token, peer.as_ref()))
                .await
                .map_err(ApiError::internal)?
        }
    };
    match result {
        Ok(v) => Ok(v),
        Err(AuthError::Refused(why)) => {
            metrics::counter!(crate::telemetry::AUTH_FAILURES).increment(1);
            let failures = state.guesses.failed(source, now);
            tracing::warn!(credential = %id, %source, reason = %why, failures, "credential refused");
            Err(ApiError::unauthorized())
        }
        Err(AuthError::Store(e)) => Err(ApiError::failed(&e)),
    }
}

async fn with_role(parts: &Parts, state: &Arc<AppState>, role: Role) -> Result<Verified, ApiError> {
    let v = authenticate(parts, state).await?;
    if v.role() != role {
        return Err(ApiError::forbidden());
    }
    tracing::Span::current().record("credential", tracing::field::display(v.id()));
    Ok(v)
}

impl Actor {
    /// The name to record and show for this caller: the credential's label (a clerk's
    /// display name), else its id.
    pub fn display_name(&self) -> String {
        if self.name.trim().is_empty() {
            self.credential.to_string()
        } else {
            self.name.clone()
        }
    }
}

fn actor(v: &Verified) -> Actor {
    Actor {
        credential: v.id(),
        role: v.role(),
        name: v.label().to_owned(),
    }
}

/// A municipality terminal. Its partition comes from the credential, never from the request.
#[derive(Debug)]
pub struct Municipality {
    pub scope: PartitionScope,
    pub actor: Actor,
}

impl Municipality {
    /// From a verified credential: 403 unless it is a municipality's.
    pub(crate) fn from_verified(v: &Verified) -> Result<Self, ApiError> {
        if v.role() != Role::Municipality {
            return Err(ApiError::forbidden());
        }
        let scope = v.municipality_scope().ok_or_else(ApiError::forbidden)?;
        Ok(Municipality {
            scope,
            actor: actor(v),
        })
    }
}

impl FromRequestParts<Arc<AppState>> for Municipality {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let v = with_role(parts, state, Role::Municipality).await?;
        let m = Municipality::from_verified(&v)?;
        state.placement.check(m.scope.partition())?;
        Ok(m)
    }
}

/// The prefecture's continuity operator (flow 4): the partitions of one prefecture.
#[derive(Debug)]
pub struct ContinuityOperator {
    pub prefecture: String,
    pub actor: Actor,
    verified: Verified,
}

impl ContinuityOperator {
    /// Whether `partition` is in the operator's prefecture (else answer 404).
    pub fn reaches(&self, partition: &PartitionId) -> bool {
        self.verified.reaches(partition)
    }

    /// The continuity job's scope: the credential's prefecture, and nothing else.
    pub fn scope(&self) -> Result<crate::crypto::PrefectureScope, ApiError> {
        self.verified
            .continuity_scope()
            .ok_or_else(ApiError::forbidden)
    }
}

impl FromRequestParts<Arc<AppState>> for ContinuityOperator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let v = with_role(parts, state, Role::ContinuityOperator).await?;
        ContinuityOperator::from_verified(v)
    }
}

impl ContinuityOperator {
    /// From a verified credential: 403 unless it is a prefecture's continuity operator.
    pub(crate) fn from_verified(v: Verified) -> Result<Self, ApiError> {
        if v.role() != Role::ContinuityOperator {
            return Err(ApiError::forbidden());
        }
        let Reach::Prefecture(code) = v.reach() else {
            return Err(ApiError::forbidden());
        };
        Ok(ContinuityOperator {
            prefecture: code.clone(),
            actor: actor(&v),
            verified: v,
        })
    }
}

/// The intermediate server's replicator: a set of partitions.
#[derive(Debug)]
pub struct Replicator {
    pub actor: Actor,
    verified: Verified,
    placement: Arc<Placement>,
}

impl Replicator {
    /// The scope of `partition` if it is in the set (otherwise 404) and served here
    /// (otherwise 421 naming its cell).
    pub fn scope(&self, partition: &PartitionId) -> Result<PartitionScope, ApiError> {
        let scope = self
            .verified
            .replicator_scope(partition)
            .ok_or_else(|| ApiError::not_found("partition"))?;
        self.placement.check(partition)?;
        Ok(scope)
    }
}

impl FromRequestParts<Arc<AppState>> for Replicator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let v = with_role(parts, state, Role::Replicator).await?;
        Ok(Replicator {
            actor: actor(&v),
            verified: v,
            placement: Arc::clone(&state.placement),
        })
    }
}

/// The intermediate's ops-support environment: a set of partitions (exports come with flow 5).
#[derive(Debug)]
pub struct OpsSupport {
    pub actor: Actor,
    verified: Verified,
    placement: Arc<Placement>,
}

impl OpsSupport {
    /// Whether `partition` is in the set (else answer 404).
    pub fn reaches(&self, partition: &PartitionId) -> bool {
        self.verified.reaches(partition)
    }

    /// The scope of `partition` if it is in the set (otherwise 404) and served here
    /// (otherwise 421 naming its cell).
    pub fn scope(&self, partition: &PartitionId) -> Result<PartitionScope, ApiError> {
        let scope = self
            .verified
            .ops_support_scope(partition)
            .ok_or_else(|| ApiError::not_found("partition"))?;
        self.placement.check(partition)?;
        Ok(scope)
    }

    /// Every partition of the set.
    pub fn partitions(&self) -> Vec<PartitionId> {
        match self.verified.reach() {
            Reach::Partitions(set) => set.iter().cloned().collect(),
            _ => Vec::new(),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for OpsSupport {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let v = with_role(parts, state, Role::OpsSupport).await?;
        Ok(OpsSupport {
            actor: actor(&v),
            verified: v,
            placement: Arc::clone(&state.placement),
        })
    }
}

/// An auditor: headers, envelopes, checkpoints and proofs of its reach. There is no way from
/// here to a `PartitionScope`, so no auditor route can decrypt.
#[derive(Debug)]
pub struct Auditor {
    pub actor: Actor,
    verified: Verified,
    placement: Arc<Placement>,
}

impl Auditor {
    /// `Ok` if `partition` is in the auditor's reach (otherwise 404) and served here
    /// (otherwise 421 naming its cell).
    pub fn check(&self, partition: &PartitionId) -> Result<(), ApiError> {
        if !self.verified.reaches(partition) {
            return Err(ApiError::not_found("partition"));
        }
        self.placement.check(partition)
    }

    pub fn reaches(&self, partition: &PartitionId) -> bool {
        self.verified.reaches(partition)
    }
}

impl FromRequestParts<Arc<AppState>> for Auditor {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let v = with_role(parts, state, Role::Auditor).await?;
        Ok(Auditor {
            actor: actor(&v),
            verified: v,
            placement: Arc::clone(&state.placement),
        })
    }
}

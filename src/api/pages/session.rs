//! Terminal sessions: login (a clerk's or the operator's credential), the session in
//! server memory behind an HttpOnly, SameSite=Strict cookie, its CSRF token, idle time and
//! logout, and the extractors that check the credential again on every request.

use super::*;
use crate::api::access::partition_names;

/// The 国保連合会 operator's console (`api::console`), where an operator's login lands.
pub const CONSOLE_PATH: &str = "/terminal/console";

/// Name of the session cookie.
pub const COOKIE: &str = "kukaku_session";
/// Sessions end after this long without a request unless the server sets another
/// (`AppState::session_idle`).
pub const DEFAULT_SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(30 * 60);
/// Most sessions held at once (memory bound); past it a new login is refused (503), never
/// another credential's session dropped.
pub(crate) const MAX_SESSIONS: usize = 10_000;
/// Numbers logins in order (ties of `last_ms` within one millisecond).
pub(crate) static SESSION_SERIAL: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);
/// Most sessions of one credential; its own oldest is dropped beyond, so one tenant can
/// never end another's sessions.
pub const SESSIONS_PER_CREDENTIAL: usize = 32;

pub(crate) struct Session {
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

pub(crate) fn random_id() -> Result<String, ApiError> {
    let bytes: [u8; 32] = crate::crypto::random().map_err(ApiError::internal)?;
    Ok(B64URL.encode(bytes))
}

pub(crate) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
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
pub(crate) async fn session(
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
        .get::<crate::api::auth::PeerCertificate>()
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
            Ok(muni) => match state.placement.elsewhere(muni.scope.partition()) {
                Some((cell, url)) => Err(page_error(
                    StatusCode::MISDIRECTED_REQUEST,
                    &format!(
                        "この区画は別のセル（{cell}: {url}）で扱っています。そちらから操作してください。"
                    ),
                )),
                None => Ok(Terminal {
                    muni,
                    csrf,
                    // Names are a convenience: a registry that cannot be read shows numbers.
                    names: partition_names(state).await,
                }),
            },
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
    pub(crate) fn insurer(&self, number: &str) -> String {
        match crate::ledger::PartitionId::parse(number)
            .ok()
            .and_then(|p| self.names.get(&p))
        {
            Some(name) => format!("{number} {name}"),
            None => number.to_owned(),
        }
    }

    /// This terminal's own municipality, number and name.
    pub(crate) fn own_insurer(&self) -> String {
        self.insurer(self.muni.scope.partition().as_str())
    }

    /// `None` when the form's CSRF token is the session's; else the page to answer.
    pub(crate) fn csrf_refusal(&self, sent: &str) -> Option<Response> {
        csrf_refusal(&self.csrf, sent)
    }
}

/// `None` when `sent` is the session's CSRF token (constant-time compare); else the page to
/// answer.
pub(crate) fn csrf_refusal(session: &str, sent: &str) -> Option<Response> {
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
pub(crate) fn end_session(state: &AppState, id: &str) {
    if let Ok(mut map) = state.sessions.0.lock() {
        map.remove(id);
    }
}

// ---- login ----

pub(crate) async fn login_form() -> Response {
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
pub(crate) struct LoginForm {
    token: String,
}

/// Login CSRF: a browser names the page a form came from (`Sec-Fetch-Site`, `Origin`); a
/// login posted from another site is refused. Clients that send neither (curl) are not
/// browsers and cannot be made to post by another site.
pub(crate) fn cross_site(headers: &HeaderMap) -> bool {
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

/// The answer to a token that is wrong or not a clerk's or the operator's.
fn login_refused() -> Response {
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
}

/// Before a new session of `credential`: ended sessions go first; then a credential at its
/// cap loses its own oldest session, never another credential's.
fn make_room(
    map: &mut HashMap<String, Session>,
    credential: crate::crypto::credential::CredentialId,
    now: u64,
    idle_ms: u64,
) {
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
}

pub(crate) async fn login(
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
    let raw = Zeroizing::new(f.token);
    let text = raw.trim().to_owned();
    // A municipality's clerk goes to the candidates, the 連合会's operator to the console.
    let (credential, home) = match verify_token(&state, &text, conn.peer_cert, conn.source).await {
        Ok(v) if Municipality::from_verified(&v).is_ok() => (v.id(), "/terminal/candidates"),
        Ok(v) if crate::api::auth::ContinuityOperator::from_verified(v.clone()).is_ok() => {
            (v.id(), CONSOLE_PATH)
        }
        Err(e) if e.status() == StatusCode::TOO_MANY_REQUESTS => return api_error(e),
        Ok(_) | Err(_) => return login_refused(),
    };
    let (Ok(id), Ok(csrf)) = (random_id(), random_id()) else {
        return api_error(ApiError::internal("no randomness"));
    };
    let now = crate::store::now_unix_ms();
    let Ok(mut map) = state.sessions.0.lock() else {
        return api_error(ApiError::internal("session lock poisoned"));
    };
    let idle_ms = u64::try_from(state.session_idle.as_millis()).unwrap_or(u64::MAX);
    make_room(&mut map, credential, now, idle_ms);
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
pub(crate) struct CsrfForm {
    csrf: String,
}

/// A live session of either role (a clerk's or the operator's).
pub(crate) struct AnySession {
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

pub(crate) async fn logout(
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

//! Signing operators in: one password (`KILN_DASHBOARD_PASSWORD`), kept
//! only as a keyed hash made at start and compared in constant time; a
//! session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS)
//! whose token Postgres knows only by hash; a CSRF token per session that
//! every form sends back; and a limit on failed sign-ins per client
//! address.
//!
//! This module decides who is signed in; it shows nothing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_core::auth::{constant_time_eq, hmac_sha256};
use kiln_core::id::random_alphanumeric;
use rand::RngCore;

use crate::Dashboard;
use crate::error::DashboardError;

pub(crate) const COOKIE_NAME: &str = "kiln_session";
/// How long a sign-in lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Failed sign-ins one client address may make per window before it must
/// wait for the window to end.
pub(crate) const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// The key session tokens are hashed with before they reach Postgres. Not a
/// secret: the tokens are random, the hash only keeps the table useless to
/// whoever reads it.
const SESSION_HASH_KEY: &[u8] = b"kiln.dashboard.session";

/// The operator's password as a keyed hash, and the failed attempts.
pub struct Gate {
    key: [u8; 32],
    password_mac: [u8; 32],
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    secure_cookie: bool,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("secure_cookie", &self.secure_cookie)
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// Hashes `password` with a key made now; the password itself is not
    /// kept. `secure_cookie`: kiln is reached over HTTPS.
    pub fn new(password: &str, secure_cookie: bool) -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self {
            password_mac: hmac_sha256(&key, password.as_bytes()),
            key,
            failures: Mutex::new(HashMap::new()),
            secure_cookie,
        }
    }

    fn password_matches(&self, attempt: &str) -> bool {
        constant_time_eq(&hmac_sha256(&self.key, attempt.as_bytes()), &self.password_mac)
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds `client` must still wait, if it used up its failures.
    fn locked_out(&self, client: IpAddr) -> Option<u64> {
        let failures = self.failures();
        let (count, since) = failures.get(&client)?;
        let left = FAILURE_WINDOW.checked_sub(since.elapsed())?;
        (*count >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    fn record_failure(&self, client: IpAddr) {
        let mut failures = self.failures();
        failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        let entry = failures.entry(client).or_insert((0, Instant::now()));
        entry.0 += 1;
    }

    /// Checks a sign-in attempt from `client`.
    pub(crate) fn check(&self, client: IpAddr, attempt: &str) -> Result<(), DashboardError> {
        if let Some(wait) = self.locked_out(client) {
            return Err(DashboardError::TooManyAttempts(wait));
        }
        if self.password_matches(attempt) {
            self.failures().remove(&client);
            Ok(())
        } else {
            self.record_failure(client);
            tracing::warn!(%client, "dashboard sign-in refused");
            Err(DashboardError::Forbidden("wrong password".into()))
        }
    }

    pub(crate) fn session_cookie(&self, token: &str) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!(
            "{COOKIE_NAME}={token}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_LIFETIME.as_secs()
        )
    }

    pub(crate) fn cleared_cookie(&self) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        format!("{COOKIE_NAME}=; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
    }
}

fn token_hash(token: &str) -> [u8; 32] {
    hmac_sha256(SESSION_HASH_KEY, token.as_bytes())
}

/// Characters of a session token: 320 random bits.
const TOKEN_LEN: usize = 64;

/// Starts a session; answers the cookie's token.
pub(crate) async fn start_session(dashboard: &Dashboard) -> Result<String, DashboardError> {
    let token = random_alphanumeric(TOKEN_LEN);
    let expires = chrono::Utc::now()
        + chrono::Duration::from_std(SESSION_LIFETIME).unwrap_or_else(|_| chrono::Duration::hours(12));
    dashboard
        .app
        .store
        .create_dashboard_session(&token_hash(&token), &random_alphanumeric(48), expires)
        .await?;
    Ok(token)
}

pub(crate) async fn end_session(dashboard: &Dashboard, token: &str) -> Result<(), DashboardError> {
    dashboard.app.store.delete_dashboard_session(&token_hash(token)).await?;
    Ok(())
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
        .filter(|value| value.len() == TOKEN_LEN && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// A signed-in operator: what every page but sign-in needs.
#[derive(Debug, Clone)]
pub struct Operator {
    pub csrf_token: String,
    pub(crate) session_token: String,
}

impl Operator {
    /// Refuses a form whose CSRF token is not this session's.
    pub(crate) fn check_csrf(&self, sent: Option<&str>) -> Result<(), DashboardError> {
        match sent {
            Some(sent) if constant_time_eq(sent.as_bytes(), self.csrf_token.as_bytes()) => Ok(()),
            _ => Err(DashboardError::Forbidden(
                "this form's CSRF token is missing or stale; reload the page and try again".into(),
            )),
        }
    }
}

/// A form a signed-in operator posted, its CSRF token checked: what every
/// action takes, so none can skip the check. Not signed in: sent to sign
/// in; a missing or stale token: 403.
pub(crate) struct Action {
    pub operator: Operator,
    pub form: HashMap<String, String>,
}

impl FromRequest<Dashboard> for Action {
    type Rejection = Response;

    async fn from_request(request: Request, dashboard: &Dashboard) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let operator = Operator::from_request_parts(&mut parts, dashboard).await?;
        let Form(form) = Form::<HashMap<String, String>>::from_request(Request::from_parts(parts, body), &())
            .await
            .map_err(IntoResponse::into_response)?;
        operator
            .check_csrf(form.get("csrf").map(String::as_str))
            .map_err(IntoResponse::into_response)?;
        Ok(Action { operator, form })
    }
}

/// Where a visitor who is not signed in is sent.
fn to_sign_in(parts: &Parts) -> Response {
    let next = parts.uri.path_and_query().map_or("/dashboard", |p| p.as_str());
    let target = format!(
        "/dashboard/sign-in?next={}",
        askama::filters::urlencode(next).map_or_else(|_| String::new(), |e| e.to_string())
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&target) {
        response.headers_mut().insert(LOCATION, value);
    }
    response
}

impl FromRequestParts<Dashboard> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, dashboard: &Dashboard) -> Result<Self, Response> {
        let Some(token) = session_token(&parts.headers) else {
            return Err(to_sign_in(parts));
        };
        match dashboard.app.store.dashboard_session(&token_hash(&token)).await {
            Ok(Some(session)) => Ok(Operator {
                csrf_token: session.csrf_token,
                session_token: token,
            }),
            Ok(None) => Err(to_sign_in(parts)),
            Err(error) => Err(DashboardError::from(error).into_response()),
        }
    }
}

/// The `Set-Cookie` header for `cookie`.
pub(crate) fn set_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_password_matches_and_failures_lock_the_address_out() {
        let gate = Gate::new("correct horse battery", false);
        let client: IpAddr = "10.0.0.1".parse().expect("an address");
        let other: IpAddr = "10.0.0.2".parse().expect("an address");
        assert!(gate.check(client, "correct horse battery").is_ok());
        for _ in 0..MAX_FAILURES {
            assert!(matches!(gate.check(client, "guess"), Err(DashboardError::Forbidden(_))));
        }
        assert!(matches!(
            gate.check(client, "correct horse battery"),
            Err(DashboardError::TooManyAttempts(_))
        ));
        assert!(gate.check(other, "correct horse battery").is_ok());
    }

    #[test]
    fn the_cookie_carries_its_flags() {
        let plain = Gate::new("pw-pw-pw-pw-pw", false).session_cookie("ab");
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict") && !plain.contains("Secure"));
        let secure = Gate::new("pw-pw-pw-pw-pw", true).session_cookie("ab");
        assert!(secure.ends_with("; Secure"));
    }

    #[test]
    fn a_cookie_token_must_look_like_one() {
        let mut headers = HeaderMap::new();
        let token = "a".repeat(64);
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("x=1; {COOKIE_NAME}={token}")).expect("header"),
        );
        assert_eq!(session_token(&headers), Some(token));
        headers.insert(COOKIE, HeaderValue::from_static("kiln_session=zz"));
        assert_eq!(session_token(&headers), None);
    }
}

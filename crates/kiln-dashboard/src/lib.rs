//! kiln's dashboard: see, find and act on runs in a browser, served by
//! the kiln binary at `/dashboard`.
//!
//! Pages are rendered on the server from templates checked at compile
//! time (askama), so reading needs no JavaScript; one small embedded
//! script swaps in fresh content when the run change feed says a run
//! changed. Actions are HTML forms that carry the session's CSRF token.
//! Every answer carries a content security policy that allows nothing
//! from another origin, and `X-Frame-Options: DENY`; every run value is
//! escaped by the templates (payloads are untrusted).
//!
//! The dashboard acts through the same store and API functions the HTTP
//! API uses (cancel, replay, reschedule, keys), so a run canceled here is
//! canceled exactly as `runs.cancel` would; it holds no rules of its own
//! about runs. Without `KILN_DASHBOARD_PASSWORD` every route says the
//! dashboard is off.
//!
//! # Layout
//!
//! - [`auth`]: the password, sessions, CSRF tokens, failed sign-ins.
//! - `runs`: the runs list, a run's page and its live feed, run actions.
//! - `queues`: queues with depth, throughput, pause and resume.
//! - `admin`: schedules, secret keys, workers and task hosts.
//! - `view`: the templates' data; `assets`: the stylesheet and script.

mod admin;
mod assets;
pub mod auth;
mod error;
mod queues;
mod runs;
mod view;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use kiln_api::AppState;
use kiln_core::auth::Environment;

pub use error::DashboardError;

/// What the dashboard needs besides the API's state.
#[derive(Clone, Default)]
pub struct DashboardConfig {
    /// `KILN_DASHBOARD_PASSWORD`; `None` turns the dashboard off.
    pub password: Option<String>,
    /// kiln is reached over HTTPS (`KILN_PUBLIC_URL`), so the session
    /// cookie is marked `Secure`.
    pub secure_cookies: bool,
    /// Where runs' files are, to show a preview's pages and a conversion's
    /// PDF; `None` shows none.
    pub storage: Option<(kiln_storage::Storage, kiln_storage::StorageScopes)>,
}

/// The handlers' state: the API's, and the sign-in gate.
#[derive(Clone)]
pub struct Dashboard(Arc<Inner>);

pub struct Inner {
    pub(crate) app: AppState,
    pub(crate) gate: auth::Gate,
    pub(crate) storage: Option<(kiln_storage::Storage, kiln_storage::StorageScopes)>,
}

impl std::ops::Deref for Dashboard {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The routes under `/dashboard`, to merge beside the API's.
pub fn router(app: AppState, config: DashboardConfig) -> Router {
    let Some(password) = config.password else {
        return Router::new()
            .route("/dashboard", axum::routing::any(off))
            .route("/dashboard/", axum::routing::any(off))
            .route("/dashboard/{*rest}", axum::routing::any(off))
            .layer(axum::middleware::map_response(secure_headers));
    };
    let dashboard = Dashboard(Arc::new(Inner {
        app,
        gate: auth::Gate::new(&password, config.secure_cookies),
        storage: config.storage,
    }));
    Router::new()
        .route("/dashboard", get(home))
        .route("/dashboard/", get(home))
        .route("/dashboard/sign-in", get(sign_in_page).post(sign_in))
        .route("/dashboard/sign-out", post(sign_out))
        .route("/dashboard/assets/{name}", get(assets::serve))
        .route("/dashboard/keys", get(admin::keys).post(admin::create_key))
        .route("/dashboard/keys/{id}/revoke", post(admin::revoke_key))
        .route("/dashboard/{env}", get(environment_home))
        .route("/dashboard/{env}/runs", get(runs::list))
        .route("/dashboard/{env}/runs/bulk", post(runs::bulk))
        .route("/dashboard/{env}/runs/events", get(runs::list_events))
        .route("/dashboard/{env}/runs/{id}", get(runs::show))
        .route("/dashboard/{env}/runs/{id}/events", get(runs::events))
        .route("/dashboard/{env}/runs/{id}/file", get(runs::file))
        .route("/dashboard/{env}/runs/{id}/cancel", post(runs::cancel))
        .route("/dashboard/{env}/runs/{id}/replay", post(runs::replay))
        .route("/dashboard/{env}/runs/{id}/reschedule", post(runs::reschedule))
        .route("/dashboard/{env}/queues", get(queues::list))
        .route("/dashboard/{env}/queues/pause", post(queues::pause))
        .route("/dashboard/{env}/queues/resume", post(queues::resume))
        .route("/dashboard/{env}/schedules", get(admin::schedules))
        .route(
            "/dashboard/{env}/schedules/{id}/activate",
            post(admin::activate_schedule),
        )
        .route(
            "/dashboard/{env}/schedules/{id}/deactivate",
            post(admin::deactivate_schedule),
        )
        .route("/dashboard/{env}/workers", get(admin::workers))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(dashboard)
}

/// Nothing may load from another origin, nothing may frame a page, and no
/// page is cached (they show live state and CSRF tokens).
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: &'static str, value: &'static str| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    };
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, "x-frame-options", "DENY");
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "same-origin");
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn off() -> Response {
    let page = view::OffPage {};
    (StatusCode::NOT_FOUND, Html(view::render_or_plain(&page))).into_response()
}

async fn home(_operator: auth::Operator) -> Redirect {
    Redirect::to("/dashboard/prod/runs")
}

async fn environment_home(
    _operator: auth::Operator,
    axum::extract::Path(env): axum::extract::Path<String>,
) -> Result<Redirect, DashboardError> {
    let environment = environment(&env)?;
    Ok(Redirect::to(&format!("/dashboard/{}/runs", environment.as_str())))
}

/// The environment a path names.
pub(crate) fn environment(segment: &str) -> Result<Environment, DashboardError> {
    Environment::parse(segment)
        .ok_or_else(|| DashboardError::NotFound(format!("there is no environment {segment:?} (dev or prod)")))
}

/// A sign-in's `next`: a dashboard page, never another site.
fn safe_next(next: Option<&String>) -> String {
    match next {
        Some(next) if next.starts_with("/dashboard") && !next.starts_with("//") && !next.contains('\\') => next.clone(),
        _ => "/dashboard/prod/runs".to_owned(),
    }
}

async fn sign_in_page(
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Result<Html<String>, DashboardError> {
    let page = view::SignInPage {
        next: safe_next(query.get("next")),
        message: String::new(),
    };
    Ok(Html(view::render(&page)?))
}

/// The client's address, as the listener saw it (behind a proxy, the
/// proxy's: failed sign-ins are then counted together).
fn client_address(request_extensions: &axum::http::Extensions) -> IpAddr {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip())
}

async fn sign_in(State(dashboard): State<Dashboard>, request: Request) -> Result<Response, DashboardError> {
    let client = client_address(request.extensions());
    let Form(form): Form<HashMap<String, String>> = Form::from_request(request, &())
        .await
        .map_err(|_| DashboardError::BadRequest("expected a sign-in form".into()))?;
    let next = safe_next(form.get("next"));
    let attempt = form.get("password").map_or("", String::as_str);
    if let Err(error) = dashboard.gate.check(client, attempt) {
        let status = match &error {
            DashboardError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::UNAUTHORIZED,
        };
        let page = view::SignInPage {
            next,
            message: error.to_string(),
        };
        return Ok(error.answer(status, view::render(&page)?));
    }
    let token = auth::start_session(&dashboard).await?;
    let mut response = (StatusCode::SEE_OTHER, [(LOCATION, next)]).into_response();
    auth::set_cookie(&mut response, &dashboard.gate.session_cookie(&token));
    Ok(response)
}

async fn sign_out(
    State(dashboard): State<Dashboard>,
    auth::Action { operator, .. }: auth::Action,
) -> Result<Response, DashboardError> {
    auth::end_session(&dashboard, &operator.session_token).await?;
    let mut response = Redirect::to("/dashboard/sign-in").into_response();
    auth::set_cookie(&mut response, &dashboard.gate.cleared_cookie());
    Ok(response)
}

//! kiln's HTTP API: Trigger.dev's routes and JSON shapes, so the official
//! `@trigger.dev/sdk` works against kiln unchanged, plus health checks.
//!
//! Handlers validate, record in Postgres (the run exists once the answer is
//! sent), and push ready runs to Redis; they never run a task. Errors are
//! mapped to statuses in one place, [`error::ApiError`].
//!
//! # Layout
//!
//! - [`routes`]: one module per group of endpoints.
//! - [`presenter`]: runs in the shape the SDK's schemas demand.
//! - [`auth`]: secret keys and the tokens signed with them.
//! - [`extract`]: JSON body and caller extractors with JSON errors.
//! - [`recorder`]: group-committed run inserts followed by one Redis push.
//! - [`hosts`]: the task ids task hosts serve, as last read.

pub mod auth;
pub mod error;
pub mod extract;
pub mod hosts;
pub mod presenter;
pub mod recorder;
pub mod routes;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use kiln_core::auth::KeyVault;
use kiln_core::registry::TaskRegistry;
use kiln_queue::Queue;
use kiln_store::Store;
use tracing::Instrument;

pub use error::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// How long a found key is trusted before Postgres is asked again
    /// (how soon a revocation takes effect).
    pub key_cache_ttl: std::time::Duration,
    /// Live realtime requests one key (with every public token it signed)
    /// may hold open in this process; more are answered 429.
    pub live_subscriptions_per_key: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 10 * 1024 * 1024,
            key_cache_ttl: auth::KEY_CACHE_TTL,
            live_subscriptions_per_key: 5_000,
        }
    }
}

/// What the handlers share. The router's layers and extractors clone it
/// for every request, so it is one `Arc`; the parts are read through it.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

#[derive(Clone)]
pub struct SharedState {
    pub store: Store,
    pub queue: Queue,
    pub registry: Arc<TaskRegistry>,
    pub keys: Arc<auth::KeyCache>,
    pub recorder: recorder::RunRecorder,
    pub limits: Limits,
    /// The local storage backend, whose signed links this API serves;
    /// `None` with S3.
    pub local_objects: Option<Arc<kiln_storage::LocalStore>>,
    /// Where packets the SDK offloads (large payloads) are uploaded;
    /// `None` refuses them.
    pub storage: Option<kiln_storage::Storage>,
    /// Browser origins that may read runs and the realtime feed.
    pub cors_origins: Vec<String>,
    /// When set, `/metrics` wants it as a bearer token.
    pub metrics_token: Option<String>,
    /// Renders this process's counters and histograms (the binary's
    /// Prometheus recorder); `None` reports the gauges only.
    pub process_metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The last gauges read from Postgres, shared by concurrent scrapes.
    pub gauges: Arc<routes::metrics::GaugeCache>,
    /// Live realtime requests open, per key.
    pub subscriptions: Arc<routes::realtime::OpenSubscriptions>,
    /// The task ids task hosts serve.
    pub hosts: Arc<hosts::HostDirectory>,
    /// The run change feed, started by the first live realtime request.
    changes: Arc<std::sync::OnceLock<kiln_store::RunChanges>>,
}

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

impl AppState {
    pub fn new(store: Store, queue: Queue, registry: Arc<TaskRegistry>, vault: KeyVault, limits: Limits) -> Self {
        Self(Arc::new(SharedState {
            keys: Arc::new(auth::KeyCache::new(store.clone(), vault).with_ttl(limits.key_cache_ttl)),
            recorder: recorder::RunRecorder::new(store.clone(), queue.clone()),
            store,
            queue,
            registry,
            limits,
            local_objects: None,
            storage: None,
            cors_origins: Vec::new(),
            metrics_token: None,
            process_metrics: None,
            gauges: Arc::default(),
            subscriptions: Arc::default(),
            hosts: Arc::default(),
            changes: Arc::default(),
        }))
    }

    /// The defaults runs of `task_id` get in `environment`: kiln's own
    /// task (native or HTTP) when there is one, else the one a task host
    /// serves there. `None`: nobody serves it.
    pub fn task_defaults(
        &self,
        environment: kiln_core::auth::Environment,
        task_id: &str,
    ) -> Option<kiln_core::options::TaskDefaults> {
        match self.registry.get(task_id) {
            Some(task) => Some(task.defaults.clone()),
            None => self.hosts.defaults(environment, task_id),
        }
    }

    /// Reads the task hosts' ids again if one of `task_ids` is unknown, so
    /// a task registered through another process a moment ago is found.
    pub async fn look_for_tasks<'a>(
        &self,
        environment: kiln_core::auth::Environment,
        task_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ApiError> {
        if task_ids
            .into_iter()
            .any(|id| self.task_defaults(environment, id).is_none())
        {
            self.hosts.refresh_if_older(&self.store, hosts::MISS_REFRESH).await?;
        }
        Ok(())
    }

    /// This process's run change feed; the first call starts it, for the
    /// life of the process.
    pub fn run_changes(&self) -> &kiln_store::RunChanges {
        self.changes
            .get_or_init(|| self.store.run_changes(tokio_util::sync::CancellationToken::new()))
    }

    /// Takes the SDK's offloaded packets into this storage.
    pub fn with_storage(mut self, storage: kiln_storage::Storage) -> Self {
        Arc::make_mut(&mut self.0).storage = Some(storage);
        self
    }

    /// Serves the signed links of this local storage backend.
    pub fn with_local_objects(mut self, store: Arc<kiln_storage::LocalStore>) -> Self {
        Arc::make_mut(&mut self.0).local_objects = Some(store);
        self
    }

    /// Puts `/metrics` behind this bearer token.
    pub fn with_metrics_token(mut self, token: Option<String>) -> Self {
        Arc::make_mut(&mut self.0).metrics_token = token;
        self
    }

    /// Puts this process's counters and histograms on `/metrics`.
    pub fn with_process_metrics(mut self, render: Arc<dyn Fn() -> String + Send + Sync>) -> Self {
        Arc::make_mut(&mut self.0).process_metrics = Some(render);
        self
    }

    /// Lets pages on these origins read runs and their realtime feed from
    /// a browser (Supermark's progress bar), preflight included.
    pub fn with_cors_origins(mut self, origins: Vec<String>) -> Self {
        Arc::make_mut(&mut self.0).cors_origins = origins;
        self
    }
}

/// The routes a browser may call from another origin: reading runs and
/// subscribing to them. Triggering, keys and everything else stay
/// same-origin only.
fn browser_readable(path: &str) -> bool {
    path.starts_with("/realtime/") || path.starts_with("/api/v3/runs/") || path == "/api/v1/runs"
}

fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
    let origins: Vec<axum::http::HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, request| {
            origins.contains(origin) && browser_readable(request.uri.path())
        }))
        .allow_methods([Method::GET, Method::HEAD])
        .allow_headers(AllowHeaders::mirror_request())
        // The Electric shape stream's client reads these.
        .expose_headers(ExposeHeaders::list(
            [
                "electric-offset",
                "electric-handle",
                "electric-schema",
                "electric-cursor",
                "electric-up-to-date",
            ]
            .map(HeaderName::from_static),
        ))
        .max_age(std::time::Duration::from_secs(600))
}

pub fn router(state: AppState) -> Router {
    let limit = state.limits.max_body_bytes;
    let cors_origins = state.cors_origins.clone();
    let router = routes::routes()
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(log_request));
    let router = if cors_origins.is_empty() {
        router
    } else {
        router.layer(cors(&cors_origins))
    };
    router.with_state(state)
}

/// One span per request, named after its route so traces group by
/// operation; a trigger records the `run_id` it made on it.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let span = tracing::info_span!(
        "request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        run_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    tracing::debug!(parent: &span, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    response
}

/// Serves the API on `listener` until `shutdown` fires, then finishes the
/// requests in flight.
/// Serves only `GET /metrics` with this process's counters and histograms
/// (behind `token` when there is one): for processes without the API.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let (render, token) = (Arc::clone(&render), token.clone());
            async move {
                routes::metrics::check_token(token.as_deref(), &headers)?;
                Ok::<_, error::ApiError>(routes::metrics::text(render()))
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// Serves `app` (the API's router, with whatever the binary merged beside
/// it) until `shutdown` fires; handlers can read the client's address
/// (`ConnectInfo<SocketAddr>`).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

//! Configuration, read from the environment once at start-up. Each value is
//! validated here, and an error names the variable, so a misconfigured kiln
//! stops at once with a message instead of failing later. `.env.example`
//! lists every variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kiln_core::retry::RetryPolicy;

#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

fn error(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        message: message.into(),
    }
}

/// Reads a variable; empty counts as unset.
fn var(name: &'static str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn required(name: &'static str, hint: &str) -> Result<String, ConfigError> {
    var(name).ok_or_else(|| error(name, format!("is not set ({hint})")))
}

fn parsed<T: std::str::FromStr>(name: &'static str, default: T, expected: &str) -> Result<T, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(text) => text
            .parse()
            .map_err(|_| error(name, format!("{text:?} is not {expected}"))),
    }
}

fn duration(name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
    match var(name) {
        None => Ok(default),
        Some(text) => kiln_core::duration::parse(&text).map_err(|e| error(name, e.to_string())),
    }
}

fn list(name: &'static str) -> Vec<String> {
    var(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Postgres, for every command.
#[derive(Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

impl DatabaseConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let url = required("DATABASE_URL", "e.g. postgres://postgres@127.0.0.1:5432/kiln")?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(error("DATABASE_URL", "must start with postgres:// or postgresql://"));
        }
        let max_connections = parsed("KILN_DB_MAX_CONNECTIONS", 16u32, "a number of connections")?;
        if max_connections == 0 {
            return Err(error("KILN_DB_MAX_CONNECTIONS", "must be at least 1"));
        }
        Ok(Self { url, max_connections })
    }
}

/// The server secret that encrypts keys at rest.
/// Trigger.dev's self-hosted `ENCRYPTION_KEY` plays the same part and is
/// accepted in its place.
pub fn server_secret() -> Result<String, ConfigError> {
    let (name, secret) = var_or("KILN_SECRET", "ENCRYPTION_KEY").ok_or_else(|| {
        error(
            "KILN_SECRET",
            "is not set (a random string of at least 32 characters; `openssl rand -hex 32` makes one)",
        )
    })?;
    if secret.len() < 32 {
        return Err(error(name, "must be at least 32 characters"));
    }
    Ok(secret)
}

/// Everything `serve`, `worker` and `dev` need besides Postgres.
#[derive(Clone)]
pub struct RuntimeConfig {
    pub redis_url: String,
    pub redis_prefix: String,
    pub addr: SocketAddr,
    pub max_payload_bytes: usize,
    pub worker_concurrency: usize,
    pub worker_queues: Vec<String>,
    pub lease: Duration,
    pub heartbeat: Duration,
    pub shutdown_grace: Duration,
    pub scheduler_tick: Duration,
    pub queue_window: usize,
    pub requeue_after: Duration,
    /// Finished runs older than this are deleted; `None` keeps them all.
    pub run_retention: Option<Duration>,
    pub retry: RetryPolicy,
    pub tasks_file: Option<PathBuf>,
    pub preview: PreviewSettings,
    pub office: OfficeSettings,
    pub http_signing_secret: Option<String>,
    pub http_allowed_hosts: Vec<String>,
    pub http_allow_private: bool,
    pub http_timeout: Duration,
    /// When `kiln.exports.cleanup` runs (UTC); `None`: never.
    pub exports_cleanup_cron: Option<kiln_core::schedule::CronSchedule>,
    /// Browser origins allowed to read runs and the realtime feed.
    pub cors_origins: Vec<String>,
    /// Where each environment's objects live in kiln's storage.
    pub storage_scopes: kiln_storage::StorageScopes,
    /// How much one `kiln.export.zip` may bundle.
    pub export_limits: kiln_worker_export::ExportLimits,
    /// How soon a revoked key stops working in a running API.
    pub key_cache_ttl: Duration,
    /// Live realtime requests one key may hold open per process.
    pub realtime_max_per_key: usize,
    /// When set, `/metrics` wants it as a bearer token.
    pub metrics_token: Option<String>,
    /// `KILN_DASHBOARD_PASSWORD`: the operators' password for
    /// `/dashboard`; `None` leaves the dashboard off.
    pub dashboard_password: Option<String>,
    /// kiln is reached over HTTPS (`KILN_PUBLIC_URL` says so): the
    /// dashboard's session cookie is then `Secure`.
    pub served_over_https: bool,
    /// Where a process without the API role (`kiln worker`, `kiln
    /// scheduler`) serves its own `/metrics`; `None`: it serves none.
    pub metrics_addr: Option<SocketAddr>,
    /// Supermark's document tasks, when its database is configured.
    pub supermark: Option<kiln_app_supermark::SupermarkConfig>,
    /// How often due cron schedules are looked for.
    pub cron_tick: Duration,
}

/// A URL with its password, if any, replaced: for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

// Written by hand: the URLs carry passwords, and a `?config` in a log line
// must not print them or the signing secret.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl std::fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("addr", &self.addr)
            .field("worker_concurrency", &self.worker_concurrency)
            .field("worker_queues", &self.worker_queues)
            .field("tasks_file", &self.tasks_file)
            .field("http_signing_secret", &self.http_signing_secret.as_ref().map(|_| "***"))
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .field("http_allowed_hosts", &self.http_allowed_hosts)
            .field("cors_origins", &self.cors_origins)
            .field("storage_scopes", &self.storage_scopes)
            .field("supermark", &self.supermark)
            .finish_non_exhaustive()
    }
}

impl RuntimeConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let redis_url = var("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        match kiln_queue::SentinelUrl::parse(&redis_url) {
            Some(Err(why)) => return Err(error("REDIS_URL", format!("is a Sentinel URL that {why}"))),
            Some(Ok(_)) => {}
            None if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) => {
                return Err(error(
                    "REDIS_URL",
                    "must start with redis://, rediss:// or redis+sentinel://",
                ));
            }
            None => {}
        }
        let redis_prefix = var("KILN_REDIS_PREFIX").unwrap_or_else(|| "kiln".into());
        if redis_prefix.contains(char::is_whitespace) {
            return Err(error("KILN_REDIS_PREFIX", "must not contain spaces"));
        }
        // `PORT` (Trigger.dev's and most platforms' variable) listens on
        // every interface, as a container expects; KILN_ADDR says exactly.
        let default_addr = match var("PORT") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(port) => SocketAddr::from((
                [0, 0, 0, 0],
                port.parse::<u16>()
                    .map_err(|_| error("PORT", format!("{port:?} is not a port number")))?,
            )),
        };
        let addr = parsed("KILN_ADDR", default_addr, "a listen address like 127.0.0.1:8080")?;
        let max_payload_bytes = parsed("KILN_MAX_PAYLOAD_BYTES", 10 * 1024 * 1024usize, "a number of bytes")?;
        if max_payload_bytes < 1024 {
            return Err(error("KILN_MAX_PAYLOAD_BYTES", "must be at least 1024"));
        }
        let worker_concurrency = parsed("KILN_WORKER_CONCURRENCY", 50usize, "a number of concurrent runs")?;
        if !(1..=10_000).contains(&worker_concurrency) {
            return Err(error("KILN_WORKER_CONCURRENCY", "must be between 1 and 10000"));
        }
        let lease = duration("KILN_LEASE", Duration::from_secs(30))?;
        let heartbeat = duration("KILN_HEARTBEAT", Duration::from_secs(2))?;
        if heartbeat.is_zero() || heartbeat * 2 > lease {
            return Err(error(
                "KILN_HEARTBEAT",
                format!("must be non-zero and at most half of KILN_LEASE ({lease:?})"),
            ));
        }
        let scheduler_tick = duration("KILN_SCHEDULER_TICK", Duration::from_millis(100))?;
        if scheduler_tick.is_zero() {
            return Err(error("KILN_SCHEDULER_TICK", "must be non-zero"));
        }
        let queue_window = parsed("KILN_QUEUE_WINDOW", kiln_queue::DEFAULT_WINDOW, "a number of run ids")?;
        if !(1..=1_000_000).contains(&queue_window) {
            return Err(error("KILN_QUEUE_WINDOW", "must be between 1 and 1000000"));
        }
        let requeue_after = duration("KILN_REQUEUE_AFTER", Duration::from_secs(30))?;
        let run_retention = match var("KILN_RUN_RETENTION").as_deref() {
            Some("off") => None,
            _ => {
                let retention = duration("KILN_RUN_RETENTION", Duration::from_secs(30 * 24 * 3600))?;
                if retention < Duration::from_secs(3600) {
                    return Err(error(
                        "KILN_RUN_RETENTION",
                        "must be at least 1h (or off, to keep every run)",
                    ));
                }
                Some(retention)
            }
        };
        if requeue_after < Duration::from_secs(1) {
            return Err(error("KILN_REQUEUE_AFTER", "must be at least 1s"));
        }
        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            min_delay: duration("KILN_RETRY_MIN_DELAY", defaults.min_delay)?,
            max_delay: duration("KILN_RETRY_MAX_DELAY", defaults.max_delay)?,
            factor: parsed("KILN_RETRY_FACTOR", defaults.factor, "a number")?,
            ..defaults
        };
        if !(retry.factor >= 1.0 && retry.factor <= 10.0) {
            return Err(error("KILN_RETRY_FACTOR", "must be between 1 and 10"));
        }
        let exports_cleanup_cron = match var("KILN_EXPORTS_CLEANUP_CRON").as_deref() {
            Some("off") => None,
            other => Some(
                kiln_core::schedule::CronSchedule::parse(other.unwrap_or("0 2 * * *"), None)
                    .map_err(|e| error("KILN_EXPORTS_CLEANUP_CRON", format!("{e} (or \"off\")")))?,
            ),
        };
        let cron_tick = duration("KILN_CRON_TICK", Duration::from_secs(1))?;
        if cron_tick < Duration::from_millis(100) || cron_tick > Duration::from_secs(60) {
            return Err(error("KILN_CRON_TICK", "must be between 100ms and 60s"));
        }
        if retry.min_delay > retry.max_delay {
            return Err(error("KILN_RETRY_MIN_DELAY", "must not exceed KILN_RETRY_MAX_DELAY"));
        }
        Ok(Self {
            redis_url,
            redis_prefix,
            addr,
            max_payload_bytes,
            worker_concurrency,
            worker_queues: list("KILN_WORKER_QUEUES"),
            lease,
            heartbeat,
            shutdown_grace: duration("KILN_SHUTDOWN_GRACE", Duration::from_secs(30))?,
            scheduler_tick,
            queue_window,
            requeue_after,
            run_retention,
            retry,
            tasks_file: var("KILN_TASKS_FILE").map(PathBuf::from),
            preview: PreviewSettings::from_env()?,
            office: OfficeSettings::from_env()?,
            http_signing_secret: var("KILN_HTTP_SIGNING_SECRET"),
            http_allowed_hosts: list("KILN_HTTP_ALLOWED_HOSTS"),
            http_allow_private: parsed("KILN_HTTP_ALLOW_PRIVATE", false, "true or false")?,
            http_timeout: duration("KILN_HTTP_TIMEOUT", Duration::from_secs(30))?,
            exports_cleanup_cron,
            cron_tick,
            cors_origins: cors_origins()?,
            storage_scopes: storage_scopes()?,
            key_cache_ttl: duration("KILN_KEY_CACHE_TTL", Duration::from_secs(30))?,
            realtime_max_per_key: {
                let max = parsed("KILN_REALTIME_MAX_PER_KEY", 5_000usize, "a number of subscriptions")?;
                if max == 0 {
                    return Err(error("KILN_REALTIME_MAX_PER_KEY", "must be at least 1"));
                }
                max
            },
            metrics_token: var("KILN_METRICS_TOKEN"),
            dashboard_password: dashboard_password()?,
            served_over_https: var_or("KILN_PUBLIC_URL", "API_ORIGIN")
                .is_some_and(|(_, url)| url.starts_with("https://")),
            metrics_addr: var("KILN_METRICS_ADDR")
                .map(|addr| {
                    addr.parse().map_err(|_| {
                        error(
                            "KILN_METRICS_ADDR",
                            format!("{addr:?} is not a listen address like 0.0.0.0:9464"),
                        )
                    })
                })
                .transpose()?,
            export_limits: kiln_worker_export::ExportLimits {
                max_files: parsed("KILN_EXPORT_MAX_FILES", 10_000usize, "a number of files")?.max(1),
                max_bytes: parsed("KILN_EXPORT_MAX_MB", 10_240u64, "a number of MiB")?.max(1) * 1024 * 1024,
            },
            supermark: kiln_app_supermark::SupermarkConfig::from_lookup(var).map_err(|e| ConfigError {
                variable: e.variable,
                message: e.message,
            })?,
        })
    }
}

/// The dashboard's password: long enough that the sign-in limit (a few
/// failures a minute per address) makes guessing hopeless.
const MIN_DASHBOARD_PASSWORD: usize = 12;

fn dashboard_password() -> Result<Option<String>, ConfigError> {
    match std::env::var("KILN_DASHBOARD_PASSWORD") {
        Ok(password) if password.is_empty() => Ok(None),
        Ok(password) if password.chars().count() < MIN_DASHBOARD_PASSWORD => Err(error(
            "KILN_DASHBOARD_PASSWORD",
            format!("must be at least {MIN_DASHBOARD_PASSWORD} characters"),
        )),
        Ok(password) => Ok(Some(password)),
        Err(_) => Ok(None),
    }
}

/// `KILN_STORAGE_ROOT_DEV` (default `dev/`) and `KILN_STORAGE_ROOT_PROD`
/// (default the top of the store): each a prefix ending with `/`, or empty.
fn storage_scopes() -> Result<kiln_storage::StorageScopes, ConfigError> {
    let root = |name| std::env::var(name).ok().map(|v| v.trim().to_owned());
    let dev = root("KILN_STORAGE_ROOT_DEV").unwrap_or_else(|| "dev/".to_owned());
    let prod = root("KILN_STORAGE_ROOT_PROD").unwrap_or_default();
    kiln_storage::StorageScopes::new(&dev, &prod).map_err(|e| {
        let variable = match e {
            kiln_storage::ScopeError::BadRoot(ref bad) if *bad == prod => "KILN_STORAGE_ROOT_PROD",
            _ => "KILN_STORAGE_ROOT_DEV",
        };
        error(variable, e.to_string())
    })
}

/// `KILN_CORS_ORIGINS`: origins as a browser sends them (scheme, host,
/// port; no path).
fn cors_origins() -> Result<Vec<String>, ConfigError> {
    let origins = list("KILN_CORS_ORIGINS");
    for origin in &origins {
        let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
            && !origin
                .trim_end_matches('/')
                .split("://")
                .nth(1)
                .unwrap_or("")
                .contains('/')
            && origin.chars().all(|c| c.is_ascii_graphic());
        if !valid {
            return Err(error(
                "KILN_CORS_ORIGINS",
                format!("{origin:?} is not an origin (like https://app.example.com, without a path)"),
            ));
        }
    }
    Ok(origins
        .into_iter()
        .map(|o| o.trim_end_matches('/').to_owned())
        .collect())
}

/// Where workers keep files: a local folder or an S3-compatible bucket.
#[derive(Debug, Clone)]
pub enum StorageConfig {
    Local {
        dir: PathBuf,
        /// Where kiln's API is reached from outside, for download links;
        /// `None`: the address the API listens on.
        public_url: Option<String>,
    },
    S3(kiln_storage::S3Config),
}

/// A kiln variable, or else the name Supermark or Trigger.dev gives the
/// same setting, so that their `.env` files work as they are. Answers which
/// name was read, for error messages.
fn var_or(name: &'static str, other_name: &'static str) -> Option<(&'static str, String)> {
    var(name)
        .map(|value| (name, value))
        .or_else(|| var(other_name).map(|value| (other_name, value)))
}

impl StorageConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let bucket = var_or("KILN_S3_BUCKET", "NEXT_PRIVATE_UPLOAD_BUCKET");
        let backend = match var("KILN_STORAGE_BACKEND").as_deref() {
            None if bucket.is_some() => "s3",
            None => "local",
            Some("s3") => "s3",
            Some("local") => "local",
            Some(other) => {
                return Err(error(
                    "KILN_STORAGE_BACKEND",
                    format!("{other:?} is not a backend; use local or s3"),
                ));
            }
        };
        // Trigger.dev's self-hosted name for the same address.
        let public_url = var_or("KILN_PUBLIC_URL", "API_ORIGIN").map(|(_, url)| url);
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(error(
                "KILN_PUBLIC_URL",
                "must start with http:// or https:// (API_ORIGIN is read when it is not set)",
            ));
        }
        if backend == "local" {
            let dir = var("KILN_STORAGE_DIR").map_or_else(|| PathBuf::from("kiln-data/objects"), PathBuf::from);
            return Ok(Self::Local { dir, public_url });
        }
        let (_, bucket) = bucket.ok_or_else(|| {
            error(
                "KILN_S3_BUCKET",
                "is not set, and KILN_STORAGE_BACKEND is s3 (NEXT_PRIVATE_UPLOAD_BUCKET is accepted too)",
            )
        })?;
        let endpoint = var_or("KILN_S3_ENDPOINT", "NEXT_PRIVATE_UPLOAD_ENDPOINT");
        if let Some((name, url)) = &endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(error(name, "must start with http:// or https://"));
        }
        let public_endpoint = var("KILN_S3_PUBLIC_ENDPOINT");
        if let Some(url) = &public_endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(error("KILN_S3_PUBLIC_ENDPOINT", "must start with http:// or https://"));
        }
        let credential = |name, supermark_name| {
            var_or(name, supermark_name)
                .map(|(_, value)| value)
                .ok_or_else(|| error(name, format!("is not set ({supermark_name} is accepted too)")))
        };
        let part_mib = parsed("KILN_S3_PART_SIZE_MIB", 8usize, "a number of MiB")?;
        if !(5..=1024).contains(&part_mib) {
            return Err(error("KILN_S3_PART_SIZE_MIB", "must be between 5 and 1024"));
        }
        Ok(Self::S3(kiln_storage::S3Config {
            bucket,
            // MinIO and most S3-compatible servers want the bucket in the
            // path; AWS itself takes either.
            force_path_style: parsed("KILN_S3_FORCE_PATH_STYLE", endpoint.is_some(), "true or false")?,
            endpoint: endpoint.map(|(_, url)| url),
            region: var_or("KILN_S3_REGION", "NEXT_PRIVATE_UPLOAD_REGION")
                .map_or_else(|| "us-east-1".to_owned(), |(_, region)| region),
            access_key_id: credential("KILN_S3_ACCESS_KEY_ID", "NEXT_PRIVATE_UPLOAD_ACCESS_KEY_ID")?,
            secret_access_key: credential("KILN_S3_SECRET_ACCESS_KEY", "NEXT_PRIVATE_UPLOAD_SECRET_ACCESS_KEY")?,
            part_size: part_mib * 1024 * 1024,
            public_endpoint,
        }))
    }
}

/// The preview worker's limits (`kiln.pdf.preview`).
#[derive(Debug, Clone)]
pub struct PreviewSettings {
    /// `PDFIUM_LIB_PATH`, when set.
    pub pdfium_lib_path: Option<PathBuf>,
    pub parallelism: usize,
    pub memory_limit_bytes: u64,
    pub page_timeout: Duration,
    pub max_source_bytes: u64,
    pub max_pages: u32,
}

impl PreviewSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let parallelism = parsed("KILN_PREVIEW_PARALLELISM", cores, "a number of renderer processes")?;
        if parallelism == 0 {
            return Err(error("KILN_PREVIEW_PARALLELISM", "must be at least 1"));
        }
        let memory_mb = parsed("KILN_PREVIEW_MEMORY_LIMIT_MB", 2048u64, "a number of MiB")?;
        if memory_mb < 256 {
            return Err(error(
                "KILN_PREVIEW_MEMORY_LIMIT_MB",
                "must be at least 256 (pdfium itself needs room)",
            ));
        }
        let page_timeout = duration("KILN_PREVIEW_PAGE_TIMEOUT", Duration::from_secs(60))?;
        if page_timeout.is_zero() {
            return Err(error("KILN_PREVIEW_PAGE_TIMEOUT", "must be longer than 0s"));
        }
        let max_source_mb = parsed("KILN_PREVIEW_MAX_SOURCE_MB", 256u64, "a number of MiB")?;
        let max_pages = parsed("KILN_PREVIEW_MAX_PAGES", 2000u32, "a number of pages")?;
        if max_pages == 0 {
            return Err(error("KILN_PREVIEW_MAX_PAGES", "must be at least 1"));
        }
        Ok(Self {
            pdfium_lib_path: var("PDFIUM_LIB_PATH").map(PathBuf::from),
            parallelism,
            memory_limit_bytes: memory_mb * 1024 * 1024,
            page_timeout,
            max_source_bytes: max_source_mb * 1024 * 1024,
            max_pages,
        })
    }
}

/// The office conversion worker's pool and limits (`kiln.office.to-pdf`).
#[derive(Debug, Clone)]
pub struct OfficeSettings {
    pub pool_size: usize,
    pub soffice: PathBuf,
    pub python: PathBuf,
    pub timeout: Duration,
    pub memory_limit_bytes: u64,
    pub max_source_bytes: u64,
    /// Start every instance when a worker starts, not at the first document.
    pub warm_up: bool,
}

impl OfficeSettings {
    pub fn from_env() -> Result<Self, ConfigError> {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let pool_size = parsed("KILN_OFFICE_POOL_SIZE", cores, "a number of LibreOffice instances")?;
        if pool_size == 0 {
            return Err(error("KILN_OFFICE_POOL_SIZE", "must be at least 1"));
        }
        let timeout = duration("KILN_OFFICE_TIMEOUT", Duration::from_secs(120))?;
        if timeout.is_zero() {
            return Err(error("KILN_OFFICE_TIMEOUT", "must be longer than 0s"));
        }
        let memory_mb = parsed("KILN_OFFICE_MEMORY_LIMIT_MB", 4096u64, "a number of MiB")?;
        if memory_mb < 512 {
            return Err(error(
                "KILN_OFFICE_MEMORY_LIMIT_MB",
                "must be at least 512 (LibreOffice itself needs room)",
            ));
        }
        let max_source_mb = parsed("KILN_OFFICE_MAX_SOURCE_MB", 256u64, "a number of MiB")?;
        Ok(Self {
            pool_size,
            soffice: var("KILN_SOFFICE_PATH").map_or_else(
                || PathBuf::from("/usr/lib/libreoffice/program/soffice.bin"),
                PathBuf::from,
            ),
            python: var("KILN_OFFICE_PYTHON").map_or_else(|| PathBuf::from("/usr/bin/python3"), PathBuf::from),
            timeout,
            memory_limit_bytes: memory_mb * 1024 * 1024,
            max_source_bytes: max_source_mb * 1024 * 1024,
            warm_up: parsed("KILN_OFFICE_WARM_UP", true, "true or false")?,
        })
    }
}

/// Logs and traces: how log lines are written, and where spans are
/// exported (OpenTelemetry's own variables, so a collector set up for
/// other services needs nothing new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    pub json_logs: bool,
    /// The OTLP/HTTP traces URL; `None`: no export.
    pub traces_endpoint: Option<String>,
    pub service_name: String,
}

impl TelemetryConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(var)
    }

    fn from_lookup(var: impl Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        let json_logs = var("KILN_LOG_FORMAT").is_some_and(|f| f == "json");
        // As OpenTelemetry's SDKs read them: the signal's own URL is used as
        // it is; the general one is a base that /v1/traces is added to.
        let traces_endpoint = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => Some(otlp_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &url)?.to_owned()),
            (None, Some(base)) => Some(format!(
                "{}/v1/traces",
                otlp_url("OTEL_EXPORTER_OTLP_ENDPOINT", &base)?.trim_end_matches('/')
            )),
            (None, None) => None,
        };
        if traces_endpoint.is_some() {
            for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
                if let Some(protocol) = var(name).filter(|p| p != "http/protobuf") {
                    return Err(error(
                        name,
                        format!("{protocol:?} is not supported; kiln exports traces as http/protobuf"),
                    ));
                }
            }
        }
        let service_name = var("OTEL_SERVICE_NAME").unwrap_or_else(|| "kiln".into());
        Ok(Self {
            json_logs,
            traces_endpoint,
            service_name,
        })
    }
}

fn otlp_url<'a>(name: &'static str, url: &'a str) -> Result<&'a str, ConfigError> {
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .map(|rest| rest.split(['/', '?']).next().unwrap_or_default());
    match host {
        Some(host) if !host.is_empty() => Ok(url),
        _ => Err(error(
            name,
            format!("{url:?} is not an http:// or https:// URL (e.g. http://otel-collector:4318)"),
        )),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn debug_output_hides_passwords_and_secrets() {
        let database = DatabaseConfig {
            url: "postgres://kiln:hunter2@db:5432/kiln".into(),
            max_connections: 4,
        };
        let shown = format!("{database:?}");
        assert!(!shown.contains("hunter2") && shown.contains("kiln:***@db"), "{shown}");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact_url("redis://:pw@r:6379/0"), "redis://:***@r:6379/0");
    }
    use super::*;

    fn telemetry(vars: &[(&str, &str)]) -> Result<TelemetryConfig, ConfigError> {
        TelemetryConfig::from_lookup(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn traces_are_exported_only_when_an_endpoint_is_set() {
        let config = telemetry(&[]).expect("valid");
        assert_eq!(config.traces_endpoint, None);
        assert_eq!(config.service_name, "kiln");
        assert!(!config.json_logs);
    }

    #[test]
    fn the_general_endpoint_is_a_base_and_the_traces_endpoint_is_used_as_it_is() {
        let base = telemetry(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).expect("valid");
        assert_eq!(base.traces_endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
        let own = telemetry(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example/ingest"),
            ("OTEL_SERVICE_NAME", "kiln-eu"),
        ])
        .expect("valid");
        assert_eq!(own.traces_endpoint.as_deref(), Some("https://traces.example/ingest"));
        assert_eq!(own.service_name, "kiln-eu");
    }

    #[test]
    fn a_bad_endpoint_or_protocol_names_its_variable() {
        let error = telemetry(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).expect_err("no scheme");
        assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_ENDPOINT");
        let error = telemetry(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://")]).expect_err("no host");
        assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let error = telemetry(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .expect_err("grpc");
        assert_eq!(error.variable, "OTEL_EXPORTER_OTLP_PROTOCOL");
        // The protocol does not matter while nothing is exported.
        assert!(telemetry(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).is_ok());
    }
}

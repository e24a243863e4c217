//! Wiring: connects the store and the queue, builds the task registry, and
//! runs the roles a command asks for (API, workers, scheduler) until a
//! shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use kiln_api::{AppState, Limits};
use kiln_app_supermark::{Supermark, SupermarkDb};
use kiln_core::auth::{Environment, KeyVault};
use kiln_core::options::{TaskAccess, TaskDefaults};
use kiln_core::registry::TaskRegistry;
use kiln_core::schedule::CronSchedule;
use kiln_queue::Queue;
use kiln_runtime::cron::DeclaredSchedule;
use kiln_runtime::{CronRunner, QueueSelection, Scheduler, SchedulerConfig, Worker, WorkerConfig};
use kiln_storage::{LinkSigner, LocalStore, S3Store, Storage};
use kiln_store::{Store, StoreOptions};
use kiln_worker_builtin::http::{BoundHttpTask, EgressPolicy, HttpSender, HttpTask};
use kiln_worker_builtin::{Fail, Noop, Sleep};
use kiln_worker_convert::OfficeToPdf;
use kiln_worker_convert::pool::{Containment, OfficePool, PoolConfig};
use kiln_worker_export::{CleanupExports, ExportZip};
use kiln_worker_preview::{PageRenderer, PdfPreview, PreviewConfig, RendererCommand};
use tokio_util::sync::CancellationToken;

use crate::config::{DatabaseConfig, RuntimeConfig, StorageConfig};
use crate::tasks_file::TasksFile;

/// Which parts a process runs.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub api: bool,
    pub worker: bool,
    pub scheduler: bool,
}

pub fn connect_store(database: &DatabaseConfig) -> anyhow::Result<Store> {
    let options = StoreOptions {
        max_connections: database.max_connections,
        ..StoreOptions::default()
    };
    Store::connect_lazy(&database.url, &options).context("DATABASE_URL")
}

/// The storage workers use and, for the local backend, the store whose
/// links the API serves.
pub struct OpenedStorage {
    pub storage: Storage,
    pub local: Option<Arc<LocalStore>>,
}

/// Opens the configured backend. `api_addr` is where this process's API
/// listens, the default base of the local backend's links.
pub async fn open_storage(config: &StorageConfig, api_addr: Option<SocketAddr>) -> anyhow::Result<OpenedStorage> {
    match config {
        StorageConfig::Local { dir, public_url } => {
            let base_url = match (public_url, api_addr) {
                (Some(url), _) => url.clone(),
                (None, Some(addr)) => format!("http://{addr}"),
                (None, None) => {
                    tracing::warn!(
                        "KILN_PUBLIC_URL is not set: this process has no API, so its exports cannot make download links"
                    );
                    String::new()
                }
            };
            let secret = crate::config::server_secret()?;
            let store = LocalStore::open(dir, LinkSigner::new(&base_url, secret.as_bytes()))
                .with_context(|| format!("KILN_STORAGE_DIR: cannot use {}", dir.display()))?;
            tracing::info!(dir = %dir.display(), links = %base_url, "storage: local folder");
            let local = Arc::new(store);
            Ok(OpenedStorage {
                storage: local.clone(),
                local: Some(local),
            })
        }
        StorageConfig::S3(s3) => {
            let store = S3Store::new(s3).context("KILN_S3_BUCKET: cannot configure S3")?;
            // A missing bucket is created; an unreachable server is only
            // reported, since S3 may come up after kiln.
            if let Err(error) = store.ensure_bucket().await {
                tracing::warn!(%error, bucket = %s3.bucket, "storage: cannot check or create the bucket");
            }
            tracing::info!(bucket = %s3.bucket, endpoint = ?s3.endpoint, "storage: S3");
            Ok(OpenedStorage {
                storage: Arc::new(store),
                local: None,
            })
        }
    }
}

/// The pool of LibreOffice instances; none starts until a worker warms it
/// or a conversion needs one.
pub fn office_pool(config: &RuntimeConfig) -> Arc<OfficePool> {
    let office = &config.office;
    Arc::new(OfficePool::new(PoolConfig {
        size: office.pool_size,
        soffice: office.soffice.clone(),
        python: office.python.clone(),
        conversion_timeout: office.timeout,
        memory_limit: office.memory_limit_bytes,
        work_dir: std::env::temp_dir(),
        containment: containment().clone(),
    }))
}

/// How this machine lets kiln contain document processes, probed once.
fn containment() -> &'static Containment {
    static PROBED: std::sync::OnceLock<Containment> = std::sync::OnceLock::new();
    PROBED.get_or_init(Containment::probe)
}

/// The renderer pool every page-making task of this process shares.
pub fn page_renderer(config: &RuntimeConfig) -> anyhow::Result<PageRenderer> {
    Ok(PageRenderer::new(preview_config(&config.preview)?))
}

/// Supermark's tasks, when Supermark is configured: its database (not
/// connected until used) and its bucket.
pub fn supermark(
    config: &RuntimeConfig,
    renderer: &PageRenderer,
    office: &Arc<OfficePool>,
) -> anyhow::Result<Option<Supermark>> {
    let Some(settings) = &config.supermark else {
        return Ok(None);
    };
    let db = SupermarkDb::connect_lazy(settings).context("KILN_SUPERMARK_DATABASE_URL or POSTGRES_PRISMA_URL")?;
    let bucket = S3Store::new(&settings.storage).context("NEXT_PRIVATE_UPLOAD_BUCKET: cannot configure S3")?;
    tracing::info!(bucket = %settings.storage.bucket, app = ?settings.app_url, "serving Supermark's document tasks");
    let supermark = Supermark::new(
        settings.clone(),
        db,
        Arc::new(bucket),
        renderer.clone(),
        Arc::clone(office),
    )
    .context("cannot build the HTTP client for Supermark")?;
    Ok(Some(supermark))
}

pub fn build_registry(
    config: &RuntimeConfig,
    tasks: &TasksFile,
    storage: &Storage,
    office: &Arc<OfficePool>,
) -> anyhow::Result<TaskRegistry> {
    let renderer = page_renderer(config)?;
    let policy = EgressPolicy {
        allowed_hosts: config.http_allowed_hosts.clone(),
        allow_private: config.http_allow_private,
    };
    let sender = HttpSender::new(policy, config.http_signing_secret.clone(), config.http_timeout)
        .context("cannot build the HTTP client")?;
    let mut registry = TaskRegistry::new();
    registry.register("kiln.noop", Arc::new(Noop), TaskDefaults::for_task("kiln.noop"));
    registry.register("kiln.sleep", Arc::new(Sleep), TaskDefaults::for_task("kiln.sleep"));
    registry.register("kiln.fail", Arc::new(Fail), TaskDefaults::for_task("kiln.fail"));
    registry.register(
        "kiln.http",
        Arc::new(HttpTask { sender: sender.clone() }),
        TaskDefaults::for_task("kiln.http"),
    );
    let mut export_defaults = TaskDefaults::for_task("kiln.export.zip");
    // Supermark's bulk-download retries twice.
    export_defaults.max_attempts = 3;
    registry.register(
        "kiln.export.zip",
        Arc::new(ExportZip {
            storage: Arc::clone(storage),
            scopes: config.storage_scopes.clone(),
            limits: config.export_limits,
        }),
        export_defaults,
    );
    let mut cleanup_defaults = TaskDefaults::for_task("kiln.exports.cleanup");
    // It deletes what any environment exported: only kiln's schedule runs it.
    cleanup_defaults.access = TaskAccess::Internal;
    registry.register(
        "kiln.exports.cleanup",
        Arc::new(CleanupExports {
            storage: Arc::clone(storage),
            // An hour's upload link, and an hour's grace for a trigger
            // that reads it late.
            packet_lifetime: std::time::Duration::from_secs(2 * 3600),
        }),
        cleanup_defaults,
    );
    registry.register(
        "kiln.pdf.preview",
        Arc::new(PdfPreview::new(
            Arc::clone(storage),
            Arc::new(sender.clone()),
            renderer.clone(),
            config.storage_scopes.clone(),
        )),
        TaskDefaults::for_task("kiln.pdf.preview"),
    );
    registry.register(
        "kiln.office.to-pdf",
        Arc::new(OfficeToPdf {
            storage: Arc::clone(storage),
            fetcher: Arc::new(sender.clone()),
            pool: Arc::clone(office),
            work_dir: std::env::temp_dir(),
            max_source_bytes: config.office.max_source_bytes,
            scopes: config.storage_scopes.clone(),
        }),
        TaskDefaults::for_task("kiln.office.to-pdf"),
    );
    if let Some(supermark) = supermark(config, &renderer, office)? {
        for task in supermark.tasks() {
            let mut defaults = TaskDefaults::for_task(task.id);
            defaults.max_attempts = task.max_attempts;
            // Supermark's tables and bucket belong to one environment.
            defaults.access = TaskAccess::Only(task.environment);
            registry.register(task.id, task.handler, defaults);
        }
    }
    for task in &tasks.tasks {
        let mut defaults = TaskDefaults::for_task(&task.id);
        if let Some(queue) = &task.queue {
            defaults.queue.clone_from(queue);
        }
        if let Some(max_attempts) = task.max_attempts {
            defaults.max_attempts = max_attempts;
        }
        if let Some(text) = &task.max_duration {
            defaults.max_duration = Some(kiln_core::duration::parse(text)?);
        }
        let handler = BoundHttpTask {
            sender: sender.clone(),
            url: task.url.clone(),
            method: task.method.clone(),
            headers: task.headers.clone(),
        };
        registry.register(task.id.clone(), Arc::new(handler), defaults);
    }
    Ok(registry)
}

/// The preview worker's settings. A missing libpdfium is reported here, at
/// start-up; the task stays registered and its runs fail with the same
/// message until the library is installed.
fn preview_config(settings: &crate::config::PreviewSettings) -> anyhow::Result<PreviewConfig> {
    let library = kiln_worker_preview::library::locate(settings.pdfium_lib_path.as_deref());
    match &library {
        Ok(path) => tracing::info!(library = %path.display(), "kiln.pdf.preview renders with pdfium"),
        Err(error) => tracing::error!(%error, "kiln.pdf.preview cannot render until libpdfium is installed"),
    }
    let program = std::env::current_exe().context("cannot find the kiln binary to start renderers from")?;
    let contained = containment().command_line(&[]);
    Ok(PreviewConfig {
        // Contained as LibreOffice is: no network, no capabilities, no new
        // privileges, file limits, and killed by the kernel when its worker
        // dies. Its memory limit it sets itself (RendererArgs).
        renderer: RendererCommand {
            program: std::path::PathBuf::from(&contained[0]),
            leading_args: contained[1..]
                .iter()
                .cloned()
                .chain([
                    program.to_string_lossy().into_owned(),
                    crate::RENDER_PDF_COMMAND.to_owned(),
                ])
                .collect(),
            env: crate::RENDERER_ENVIRONMENT
                .iter()
                .map(|&(name, value)| (name.to_owned(), value.to_owned()))
                .collect(),
        },
        library,
        parallelism: settings.parallelism,
        memory_limit: settings.memory_limit_bytes,
        page_timeout: settings.page_timeout,
        max_source_bytes: settings.max_source_bytes,
        max_pages: settings.max_pages,
        work_dir: std::env::temp_dir(),
    })
}

/// The schedules kiln's configuration declares: the tasks file's, and the
/// daily export cleanup unless KILN_EXPORTS_CLEANUP_CRON is `off`.
fn declared_schedules(
    config: &RuntimeConfig,
    tasks: &TasksFile,
    registry: &TaskRegistry,
) -> anyhow::Result<Vec<DeclaredSchedule>> {
    let mut declared = Vec::new();
    if let Some(cron) = &config.exports_cleanup_cron {
        declared.push(DeclaredSchedule {
            task: "kiln.exports.cleanup".into(),
            cron: cron.clone(),
            environment: Environment::Prod,
        });
    }
    for schedule in &tasks.schedules {
        if registry.get(&schedule.task).is_none() {
            anyhow::bail!(
                "KILN_TASKS_FILE: a schedule names task {:?}, which kiln does not know",
                schedule.task
            );
        }
        let cron = CronSchedule::parse(&schedule.cron, schedule.timezone.as_deref())
            .with_context(|| format!("KILN_TASKS_FILE: schedule for {}", schedule.task))?;
        let environment = match schedule.environment.as_deref() {
            Some("dev") => Environment::Dev,
            _ => Environment::Prod,
        };
        declared.push(DeclaredSchedule {
            task: schedule.task.clone(),
            cron,
            environment,
        });
    }
    Ok(declared)
}

/// A name unique to this process, for leases.
fn worker_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "kiln".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        kiln_core::id::random_alphanumeric(6)
    )
}

/// Runs `roles` until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(
    roles: Roles,
    database: DatabaseConfig,
    config: RuntimeConfig,
    storage_config: StorageConfig,
    queues_flag: Option<Vec<String>>,
    concurrency_flag: Option<usize>,
) -> anyhow::Result<()> {
    // Non-dumpable: no other process of this user (a document process
    // that escaped its containment included) may read this one's memory or
    // its /proc files, where its secrets are (environ above all); only a
    // process with CAP_SYS_PTRACE may.
    if let Err(error) = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable) {
        tracing::warn!(%error, "cannot make this process non-dumpable");
    }
    let tasks = match &config.tasks_file {
        Some(path) => TasksFile::load(path)?,
        None => TasksFile::default(),
    };
    // The API binds first: the local storage backend's links use its
    // address when KILN_PUBLIC_URL is not set.
    let listener = if roles.api {
        Some(bind_api(&config).await?)
    } else {
        None
    };
    let api_addr = listener.as_ref().map(tokio::net::TcpListener::local_addr).transpose()?;
    let storage = open_storage(&storage_config, api_addr).await?;
    let office = office_pool(&config);
    let registry = Arc::new(build_registry(&config, &tasks, &storage.storage, &office)?);
    if roles.worker && config.office.warm_up {
        warm_office_in_background(&office);
    }
    let store = connect_store(&database)?;
    let queue = Queue::connect_lazy(&config.redis_url, &config.redis_prefix)
        .context("REDIS_URL")?
        .with_window(config.queue_window);
    prepare_database(roles, &config, &tasks, &registry, &store).await?;

    let process_metrics = crate::process_metrics::install()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(forward_signals(shutdown.clone()));
    let mut parts = tokio::task::JoinSet::new();
    if roles.scheduler {
        spawn_scheduler(&mut parts, &config, &store, &queue, &registry, &shutdown).await;
    }
    if roles.worker {
        let worker_config = worker_config(&config, queues_flag, concurrency_flag);
        let worker = Worker::new(store.clone(), queue.clone(), Arc::clone(&registry), worker_config);
        let token = shutdown.clone();
        parts.spawn(async move {
            worker.run(token).await;
            Ok("worker")
        });
    }
    if let (false, Some(addr)) = (roles.api, config.metrics_addr) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("KILN_METRICS_ADDR: cannot listen on {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "metrics listening");
        let (render, token, stop) = (
            Arc::clone(&process_metrics),
            config.metrics_token.clone(),
            shutdown.clone(),
        );
        parts.spawn(async move {
            kiln_api::serve_metrics(listener, render, token, stop.cancelled_owned())
                .await
                .context("the metrics server failed")?;
            Ok("metrics")
        });
    }
    if let Some(listener) = listener {
        let state = api_state(&config, &store, &queue, &registry, &storage)?.with_process_metrics(process_metrics);
        let dashboard = kiln_dashboard::router(
            state.clone(),
            kiln_dashboard::DashboardConfig {
                password: config.dashboard_password.clone(),
                secure_cookies: config.served_over_https,
                storage: Some((Arc::clone(&storage.storage), config.storage_scopes.clone())),
            },
        );
        let local = listener.local_addr()?;
        tracing::info!(addr = %local, dashboard = config.dashboard_password.is_some(), "api listening");
        // Tests and scripts read this line to find the port.
        println!("kiln listening on http://{local}");
        let token = shutdown.clone();
        parts.spawn(async move {
            kiln_api::serve_router(
                listener,
                kiln_api::router(state).merge(dashboard),
                token.cancelled_owned(),
            )
            .await
            .context("the api server failed")?;
            Ok("api")
        });
    }
    wait_for_parts(parts, &shutdown).await
}

/// The part of a process that is running: its name once it stops.
type Parts = tokio::task::JoinSet<anyhow::Result<&'static str>>;

async fn bind_api(config: &RuntimeConfig) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("KILN_ADDR: cannot listen on {}", config.addr))
}

fn warm_office_in_background(office: &Arc<OfficePool>) {
    let office = Arc::clone(office);
    tokio::spawn(async move {
        match office.warm_up().await {
            Ok(()) => tracing::info!("LibreOffice pool warm"),
            Err(error) => tracing::error!(%error, "kiln.office.to-pdf cannot convert until LibreOffice starts"),
        }
    });
}

/// Migrations (by the API), the queues' declared limits, and (by the
/// scheduler) the declared schedules.
async fn prepare_database(
    roles: Roles,
    config: &RuntimeConfig,
    tasks: &TasksFile,
    registry: &TaskRegistry,
    store: &Store,
) -> anyhow::Result<()> {
    if roles.api {
        store
            .migrate()
            .await
            .context("cannot apply migrations (is Postgres up? see DATABASE_URL)")?;
    }
    let mut limits: Vec<(&str, Option<u32>)> = Vec::new();
    if config.supermark.is_some() {
        // Supermark's plan queues get their default limits unless the
        // tasks file sets them.
        limits.extend(
            kiln_app_supermark::PLAN_QUEUE_LIMITS
                .iter()
                .filter(|(name, _)| !tasks.queues.contains_key(*name))
                .map(|(name, limit)| (*name, Some(*limit))),
        );
    }
    limits.extend(
        tasks
            .queues
            .iter()
            .map(|(name, queue)| (name.as_str(), queue.concurrency_limit)),
    );
    for (name, limit) in limits {
        store
            .declare_queue_limit(name, limit)
            .await
            .with_context(|| format!("cannot set the limit of queue {name}"))?;
    }
    if roles.scheduler {
        let declared = declared_schedules(config, tasks, registry)?;
        kiln_runtime::cron::sync_declared(store, &declared)
            .await
            .context("cannot record the configured schedules (is Postgres up? see DATABASE_URL)")?;
    }
    Ok(())
}

/// The scheduler and the cron runner.
async fn spawn_scheduler(
    parts: &mut Parts,
    config: &RuntimeConfig,
    store: &Store,
    queue: &Queue,
    registry: &Arc<TaskRegistry>,
    shutdown: &CancellationToken,
) {
    let scheduler = Scheduler::new(
        store.clone(),
        queue.clone(),
        SchedulerConfig {
            tick: config.scheduler_tick,
            requeue_after: config.requeue_after,
            retention: config.run_retention,
            ..SchedulerConfig::default()
        },
    );
    // Before the API or a worker pushes anything (see check_epoch).
    match tokio::time::timeout(std::time::Duration::from_secs(2), scheduler.check_epoch()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "cannot compare redis's epoch yet; the scheduler will"),
        Err(_) => tracing::warn!("redis did not answer; the scheduler compares its epoch later"),
    }
    let token = shutdown.clone();
    parts.spawn(async move {
        scheduler.run(token).await;
        Ok("scheduler")
    });
    let cron = CronRunner::new(store.clone(), queue.clone(), Arc::clone(registry), config.cron_tick);
    let token = shutdown.clone();
    parts.spawn(async move {
        cron.run(token).await;
        Ok("cron")
    });
}

fn worker_config(
    config: &RuntimeConfig,
    queues_flag: Option<Vec<String>>,
    concurrency_flag: Option<usize>,
) -> WorkerConfig {
    let mut worker_config = WorkerConfig::new(worker_id());
    worker_config.concurrency = concurrency_flag.unwrap_or(config.worker_concurrency);
    let queues = queues_flag.unwrap_or_else(|| config.worker_queues.clone());
    worker_config.queues = if queues.is_empty() {
        QueueSelection::All
    } else {
        QueueSelection::Only(queues)
    };
    worker_config.lease = config.lease;
    worker_config.heartbeat = config.heartbeat;
    worker_config.shutdown_grace = config.shutdown_grace;
    worker_config.retry = config.retry;
    worker_config
}

fn api_state(
    config: &RuntimeConfig,
    store: &Store,
    queue: &Queue,
    registry: &Arc<TaskRegistry>,
    storage: &OpenedStorage,
) -> anyhow::Result<AppState> {
    let vault = KeyVault::new(&crate::config::server_secret()?);
    let mut state = AppState::new(
        store.clone(),
        queue.clone(),
        Arc::clone(registry),
        vault,
        Limits {
            max_body_bytes: config.max_payload_bytes,
            key_cache_ttl: config.key_cache_ttl,
            live_subscriptions_per_key: config.realtime_max_per_key,
        },
    )
    .with_storage(Arc::clone(&storage.storage))
    .with_cors_origins(config.cors_origins.clone())
    .with_metrics_token(config.metrics_token.clone());
    if let Some(local) = storage.local.clone() {
        state = state.with_local_objects(local);
    }
    Ok(state)
}

/// Waits for every part to stop. A part that fails stops the others, and
/// the process then exits non-zero, so a supervisor restarts it.
async fn wait_for_parts(mut parts: Parts, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut failure: Option<anyhow::Error> = None;
    while let Some(ended) = parts.join_next().await {
        match ended {
            Ok(Ok(part)) => tracing::info!(part, "stopped"),
            Ok(Err(error)) => {
                tracing::error!(%error, "a part of kiln failed; shutting down");
                shutdown.cancel();
                failure.get_or_insert(error);
            }
            Err(error) => {
                tracing::error!(%error, "a part of kiln panicked; shutting down");
                shutdown.cancel();
                failure.get_or_insert_with(|| anyhow::anyhow!("a part of kiln panicked: {error}"));
            }
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

async fn forward_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot listen for signals");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part that waits for the shutdown, as the worker and the API do.
    fn waiting_part(parts: &mut Parts, shutdown: &CancellationToken, name: &'static str) {
        let token = shutdown.clone();
        parts.spawn(async move {
            token.cancelled().await;
            Ok(name)
        });
    }

    #[tokio::test]
    async fn a_failed_part_stops_the_others_and_the_process_exits_with_its_error() {
        let shutdown = CancellationToken::new();
        let mut parts = Parts::new();
        waiting_part(&mut parts, &shutdown, "worker");
        waiting_part(&mut parts, &shutdown, "scheduler");
        parts.spawn(async { Err(anyhow::anyhow!("the api server failed")) });
        let ended = wait_for_parts(parts, &shutdown).await;
        assert!(shutdown.is_cancelled(), "the others were told to stop");
        let error = ended.expect_err("a supervisor must see a failure");
        assert_eq!(error.to_string(), "the api server failed");
    }

    #[tokio::test]
    async fn a_panicking_part_is_a_failure_too() {
        let shutdown = CancellationToken::new();
        let mut parts = Parts::new();
        waiting_part(&mut parts, &shutdown, "worker");
        parts.spawn(async { panic!("a part panicked") });
        let ended = wait_for_parts(parts, &shutdown).await;
        assert!(shutdown.is_cancelled());
        assert!(ended.is_err());
    }

    #[tokio::test]
    async fn parts_stopped_by_a_signal_end_cleanly() {
        let shutdown = CancellationToken::new();
        let mut parts = Parts::new();
        waiting_part(&mut parts, &shutdown, "worker");
        waiting_part(&mut parts, &shutdown, "api");
        shutdown.cancel();
        assert!(wait_for_parts(parts, &shutdown).await.is_ok());
    }
}

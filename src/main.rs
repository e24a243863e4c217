//! `kiln`: a self-hosted background-job runtime that speaks Trigger.dev's
//! HTTP API. One binary: the API, the workers and the scheduler, together
//! (`kiln dev`) or apart (`kiln serve`, `kiln worker`), over Postgres (the
//! run history) and Redis (delivery).
//!
//! This file only parses the command line and reports how a command ended;
//! `app` wires the crates together and `config` reads the environment.

// The modules below are private to the binary; `pub` marks their interface.
#![allow(unreachable_pub)]

mod app;
mod config;
mod doctor;
mod process_metrics;
mod task_host;
mod tasks_file;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kiln_core::auth::{Environment, KeyVault};

use crate::app::Roles;
use crate::config::{DatabaseConfig, RuntimeConfig, StorageConfig};

/// mimalloc rather than glibc's malloc: a run makes and drops many small
/// objects in the API and the worker (requests, JSON, rows), on which
/// glibc's malloc spent an eighth of their CPU under load (docs/architecture.md,
/// "Allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The environment of `kiln render-pdf`, which starts otherwise empty.
/// mimalloc reserves address space a gigabyte at a time, which would count
/// against the limit a renderer puts on its own address space before it
/// loads pdfium; with no reserve, it maps memory as it needs it.
pub const RENDERER_ENVIRONMENT: &[(&str, &str)] = &[("MIMALLOC_ARENA_RESERVE", "0")];

/// A self-hosted background-job runtime that speaks Trigger.dev's HTTP API.
///
/// Configuration comes from environment variables (see .env.example):
/// DATABASE_URL, REDIS_URL, KILN_SECRET and KILN_ADDR above all.
#[derive(Debug, Parser)]
#[command(name = "kiln", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the HTTP API and the scheduler; applies migrations first.
    Serve,
    /// Runs workers (and the scheduler) without the API.
    Worker {
        /// Serve only these queues (comma-separated); default: every queue.
        #[arg(long, value_delimiter = ',')]
        queues: Option<Vec<String>>,
        /// Runs executed at once by this process (default KILN_WORKER_CONCURRENCY or 50).
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Runs the API, the scheduler and every worker in one process: kiln on
    /// one machine.
    Dev {
        /// Runs executed at once (default KILN_WORKER_CONCURRENCY or 50).
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Applies the database migrations and exits.
    Migrate,
    /// Checks the configuration, Postgres, Redis, storage, libpdfium and
    /// LibreOffice, and prints what is missing and how to fix it; exits 1
    /// when anything is.
    Doctor,
    /// Runs an app's own Trigger.dev task files (SDK 3.3 or 4.x) for kiln,
    /// with the app's Node and SDK; needs TRIGGER_API_URL and
    /// TRIGGER_SECRET_KEY (see docs/task-host.md).
    TaskHost {
        /// The app's directory, holding trigger.config.ts and node_modules.
        #[arg(long, default_value = ".")]
        app: std::path::PathBuf,
        /// Attempts run at once (default KILN_HOST_SLOTS or 2).
        #[arg(long)]
        slots: Option<usize>,
        /// Writes the host script to standard output and exits, for an app
        /// image without kiln: run it there with `node`.
        #[arg(long)]
        print_script: bool,
    },
    /// Manages secret keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Creates a secret key and prints it as the last line of output; use
    /// it as TRIGGER_SECRET_KEY.
    Create {
        /// The environment the key's runs belong to; the key starts
        /// tr_dev_ or tr_prod_ accordingly.
        #[arg(long, value_enum)]
        env: KeyEnv,
    },
    /// Lists the keys: id, environment, when created and, if so, revoked
    /// (never the keys themselves).
    List,
    /// Revokes a key by its id (from `kiln keys list`): running APIs refuse
    /// it within KILN_KEY_CACHE_TTL (30 s), and so are the public tokens it
    /// signed.
    Revoke {
        /// The key's id, `key_…`.
        id: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyEnv {
    Dev,
    Prod,
}

/// The hidden command a preview worker starts its renderers with.
pub const RENDER_PDF_COMMAND: &str = "render-pdf";

/// `kiln render-pdf`: one renderer process of the preview worker (see
/// `kiln_worker_preview::renderer`). Not for people; the worker passes
/// every argument.
#[derive(Debug, Parser)]
#[command(name = "kiln render-pdf", hide = true)]
struct RenderPdfArgs {
    #[arg(long)]
    input: std::path::PathBuf,
    #[arg(long)]
    output_dir: std::path::PathBuf,
    /// `k/n`: this process renders pages i with i % n == k.
    #[arg(long, default_value = "0/1")]
    shard: String,
    /// A folder the renderers of one document share: each takes the next
    /// page no one has taken (by creating its claim file there), instead
    /// of a fixed share, so that none sits idle while another has pages
    /// left.
    #[arg(long)]
    claims: Option<std::path::PathBuf>,
    #[arg(long)]
    library: std::path::PathBuf,
    /// Address-space limit in bytes.
    #[arg(long)]
    memory_limit: Option<u64>,
    #[arg(long, default_value_t = 2000)]
    max_pages: u32,
    /// How pages are sized: kiln or supermark.
    #[arg(long, default_value = "kiln")]
    layout: String,
    /// The input is a repaired copy: a page that cannot be loaded is drawn
    /// blank instead of failing the document.
    #[arg(long)]
    lenient: bool,
    /// Writes a repaired copy of the input into the output folder with
    /// this tool (mutool or qpdf) instead of rendering.
    #[arg(long)]
    repair_with: Option<String>,
}

fn render_pdf(args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    let args = RenderPdfArgs::parse_from(args);
    let shard = args
        .shard
        .split_once('/')
        .and_then(|(k, n)| Some((k.parse::<u32>().ok()?, n.parse::<u32>().ok()?)))
        .filter(|(k, n)| k < n);
    let Some((shard, shards)) = shard else {
        eprintln!("kiln render-pdf: --shard must be k/n with k < n");
        return ExitCode::FAILURE;
    };
    if let Some(tool) = &args.repair_with {
        let Some(tool) = kiln_worker_preview::renderer::RepairTool::from_name(tool) else {
            eprintln!("kiln render-pdf: --repair-with must be mutool or qpdf");
            return ExitCode::FAILURE;
        };
        return kiln_worker_preview::renderer::repair(tool, &args.input, &args.output_dir, args.memory_limit);
    }
    let Some(layout) = kiln_worker_preview::layout::LayoutRule::from_name(&args.layout) else {
        eprintln!("kiln render-pdf: --layout must be kiln or supermark");
        return ExitCode::FAILURE;
    };
    kiln_worker_preview::renderer::run(&kiln_worker_preview::renderer::RendererArgs {
        input: args.input,
        output_dir: args.output_dir,
        shard,
        shards,
        claims: args.claims,
        memory_limit: args.memory_limit,
        library: args.library,
        max_pages: args.max_pages,
        layout,
        lenient: args.lenient,
    })
}

fn main() -> ExitCode {
    // Renderers start before anything else: no runtime, no logging setup,
    // nothing read from the environment.
    if std::env::args_os().nth(1).is_some_and(|a| a == RENDER_PDF_COMMAND) {
        return render_pdf(std::env::args_os().skip(1));
    }
    let cli = Cli::parse();
    let telemetry = match config::TelemetryConfig::from_env()
        .map_err(anyhow::Error::from)
        .and_then(|config| Ok(telemetry::init(&config)?))
    {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("kiln: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("kiln: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ended = runtime.block_on(execute(cli.command));
    drop(runtime);
    telemetry.shutdown();
    match ended {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kiln: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<()> {
    if let Command::TaskHost {
        app,
        slots,
        print_script,
    } = &command
    {
        if *print_script {
            print!("{}", task_host::SCRIPT);
            return Ok(());
        }
        return task_host::run(app, *slots);
    }
    if let Command::Doctor = command {
        return if doctor::run().await? {
            Ok(())
        } else {
            Err(anyhow::anyhow!("kiln doctor found something missing"))
        };
    }
    let database = DatabaseConfig::from_env()?;
    match command {
        Command::Doctor | Command::TaskHost { .. } => Ok(()),
        Command::Migrate => {
            app::connect_store(&database)?.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Create { env },
        } => create_key(&database, env).await,
        Command::Keys {
            command: KeysCommand::List,
        } => {
            let store = app::connect_store(&database)?;
            store.migrate().await?;
            for key in store.list_keys().await? {
                let revoked = key
                    .revoked_at
                    .map_or_else(|| "live".to_owned(), |at| format!("revoked {}", at.to_rfc3339()));
                println!(
                    "{}  {:<4}  created {}  {revoked}",
                    key.id,
                    key.environment,
                    key.created_at.to_rfc3339()
                );
            }
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Revoke { id },
        } => {
            let store = app::connect_store(&database)?;
            if store.revoke_key(&id).await? {
                println!("revoked {id}");
                Ok(())
            } else {
                anyhow::bail!("no live key {id} (see kiln keys list)")
            }
        }
        Command::Serve => {
            let config = RuntimeConfig::from_env()?;
            config::server_secret()?;
            app::run(
                Roles {
                    api: true,
                    worker: false,
                    scheduler: true,
                },
                database,
                config,
                StorageConfig::from_env()?,
                None,
                None,
            )
            .await
        }
        Command::Worker { queues, concurrency } => {
            let config = RuntimeConfig::from_env()?;
            app::run(
                Roles {
                    api: false,
                    worker: true,
                    scheduler: true,
                },
                database,
                config,
                StorageConfig::from_env()?,
                queues,
                concurrency,
            )
            .await
        }
        Command::Dev { concurrency } => {
            let config = RuntimeConfig::from_env()?;
            config::server_secret()?;
            app::run(
                Roles {
                    api: true,
                    worker: true,
                    scheduler: true,
                },
                database,
                config,
                StorageConfig::from_env()?,
                None,
                concurrency,
            )
            .await
        }
    }
}

async fn create_key(database: &DatabaseConfig, env: KeyEnv) -> anyhow::Result<()> {
    let vault = KeyVault::new(&config::server_secret()?);
    let store = app::connect_store(database)?;
    store.migrate().await?;
    let environment = match env {
        KeyEnv::Dev => Environment::Dev,
        KeyEnv::Prod => Environment::Prod,
    };
    let (id, key) = kiln_api::auth::create_key(&store, &vault, environment).await?;
    println!(
        "created {} key {id}; set it as TRIGGER_SECRET_KEY:",
        environment.as_str()
    );
    println!("{}", key.expose());
    Ok(())
}

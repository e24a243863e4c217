//! `Kiln::spawn`: the real `kiln` binary on a random port, with a fresh
//! Postgres database and a fresh Redis key prefix, so every test is isolated
//! and tests run in parallel. Typed helpers call its API the way a client
//! would.
//!
//! Postgres and Redis are the machine's (127.0.0.1:5432 and :6379 unless
//! `KILN_TEST_PG_ADMIN_URL` / `KILN_TEST_REDIS_URL` say otherwise);
//! `scripts/test` starts them when they are not running.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};

pub const SERVER_SECRET: &str = "test-server-secret-0123456789abcdef";

pub fn admin_url() -> String {
    std::env::var("KILN_TEST_PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("KILN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn random_suffix() -> String {
    let mut rng = rand::rng();
    (0..12).map(|_| (b'a' + rng.random_range(0..26)) as char).collect()
}

/// A new, empty database; its URL.
pub async fn fresh_database() -> String {
    let name = format!("kiln_t_{}", random_suffix());
    let mut admin = PgConnection::connect(&admin_url()).await.expect("connect to Postgres as admin (is it running?)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let base = admin_url();
    let base = base.rsplit_once('/').map_or(base.as_str(), |(b, _)| b).to_owned();
    format!("{base}/{name}")
}

pub fn kiln_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiln")
}

/// What a test's kiln runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// API, scheduler and workers (`kiln dev`).
    Dev,
    /// API and scheduler, no worker (`kiln serve`).
    Serve,
}

pub struct Kiln {
    pub base_url: String,
    pub key: String,
    pub database_url: String,
    pub redis_prefix: String,
    pub http: reqwest::Client,
    pub log_path: PathBuf,
    child: Child,
    pool: Option<PgPool>,
}

impl Drop for Kiln {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct KilnBuilder {
    mode: Mode,
    env: Vec<(String, String)>,
}

impl KilnBuilder {
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub async fn spawn(self) -> Kiln {
        let database_url = fresh_database().await;
        let redis_prefix = format!("kiln_t_{}", random_suffix());
        let base_env = vec![
            ("DATABASE_URL".to_owned(), database_url.clone()),
            ("REDIS_URL".to_owned(), redis_url()),
            ("KILN_REDIS_PREFIX".to_owned(), redis_prefix.clone()),
            ("KILN_SECRET".to_owned(), SERVER_SECRET.to_owned()),
            ("KILN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            ("KILN_HEARTBEAT".to_owned(), "200ms".to_owned()),
            ("RUST_LOG".to_owned(), "info,kiln_runtime=debug,sqlx=warn".to_owned()),
        ];
        let env: Vec<(String, String)> = base_env.into_iter().chain(self.env).collect();

        let created = Command::new(kiln_bin())
            .args(["keys", "create", "--env", "dev"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run kiln keys create");
        assert!(created.status.success(), "kiln keys create failed: {}", String::from_utf8_lossy(&created.stderr));
        let key = String::from_utf8_lossy(&created.stdout).lines().last().unwrap_or_default().trim().to_owned();

        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-logs");
        std::fs::create_dir_all(&log_dir).expect("create log dir");
        let log_path = log_dir.join(format!("{redis_prefix}.log"));
        let log = std::fs::File::create(&log_path).expect("create log file");
        let command = if self.mode == Mode::Dev { "dev" } else { "serve" };
        let mut child = Command::new(kiln_bin())
            .arg(command)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn kiln");
        let stdout = child.stdout.take().expect("kiln stdout");
        let base_url = tokio::task::spawn_blocking(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("kiln listening on ") {
                    return Some(url.trim().to_owned());
                }
            }
            None
        });
        let base_url = tokio::time::timeout(Duration::from_secs(30), base_url)
            .await
            .expect("kiln did not start listening within 30 s")
            .expect("join")
            .unwrap_or_else(|| panic!("kiln exited before listening; see {}", log_path.display()));
        Kiln {
            base_url,
            key,
            database_url,
            redis_prefix,
            http: reqwest::Client::new(),
            log_path,
            child,
            pool: None,
        }
    }
}

impl Kiln {
    pub fn builder(mode: Mode) -> KilnBuilder {
        KilnBuilder { mode, env: Vec::new() }
    }

    /// `kiln dev` with defaults.
    pub async fn dev() -> Kiln {
        Self::builder(Mode::Dev).spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn db(&mut self) -> PgPool {
        if self.pool.is_none() {
            self.pool = Some(PgPool::connect(&self.database_url).await.expect("connect to test database"));
        }
        self.pool.clone().expect("pool")
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Triggers `task` and answers the new run's id.
    pub async fn trigger(&self, task: &str, body: Value) -> String {
        let response = self.post(&format!("/api/v1/tasks/{task}/trigger"), &body).await;
        let status = response.status();
        let answer: Value = response.json().await.expect("json answer");
        assert_eq!(status, 200, "trigger {task} answered {status}: {answer}");
        answer["id"].as_str().expect("run id").to_owned()
    }

    pub async fn retrieve(&self, run_id: &str) -> Value {
        let response = self
            .http
            .get(self.url(&format!("/api/v3/runs/{run_id}")))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200, "retrieve {run_id}");
        response.json().await.expect("json")
    }

    /// Polls the run until `done` holds, up to `within`; answers the run.
    pub async fn wait_for(&self, run_id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let run = self.retrieve(run_id).await;
            if done(&run) {
                return run;
            }
            assert!(Instant::now() < deadline, "run {run_id} did not reach the expected state within {within:?}: {run}\nlog: {}", self.log_path.display());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn wait_for_status(&self, run_id: &str, status: &str, within: Duration) -> Value {
        self.wait_for(run_id, within, |run| run["status"] == status).await
    }
}

pub fn noop_body(payload: Value) -> Value {
    json!({ "payload": payload })
}

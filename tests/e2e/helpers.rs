//! `Kiln::spawn`: the real `kiln` binary on a random port, with a fresh
//! Postgres database and a fresh Redis key prefix, so every test is isolated
//! and tests run in parallel. Typed helpers call its API the way a client
//! would.
//!
//! Postgres and Redis are the machine's (127.0.0.1:5432 and :6379 unless
//! `KILN_TEST_PG_ADMIN_URL` / `KILN_TEST_REDIS_URL` say otherwise);
//! `scripts/test` starts them when they are not running.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
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
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("connect to Postgres as admin (is it running?)");
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
    /// The environment the kiln processes were started with.
    pub env: Vec<(String, String)>,
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
    redis_url: Option<String>,
    postgres_port: Option<u16>,
}

impl KilnBuilder {
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Uses this Redis instead of the machine's.
    pub fn redis(mut self, url: &str) -> Self {
        self.redis_url = Some(url.to_owned());
        self
    }

    /// kiln's processes reach Postgres through this local port (a proxy
    /// the test controls); the test itself connects directly.
    pub fn postgres_port(mut self, port: u16) -> Self {
        self.postgres_port = Some(port);
        self
    }

    pub async fn spawn(self) -> Kiln {
        let database_url = fresh_database().await;
        let redis_prefix = format!("kiln_t_{}", random_suffix());
        let kiln_database_url = match self.postgres_port {
            Some(port) => database_url.replace(":5432/", &format!(":{port}/")),
            None => database_url.clone(),
        };
        let base_env = vec![
            ("DATABASE_URL".to_owned(), database_url.clone()),
            ("REDIS_URL".to_owned(), self.redis_url.clone().unwrap_or_else(redis_url)),
            ("KILN_REDIS_PREFIX".to_owned(), redis_prefix.clone()),
            ("KILN_SECRET".to_owned(), SERVER_SECRET.to_owned()),
            ("KILN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            ("KILN_HEARTBEAT".to_owned(), "200ms".to_owned()),
            // The local storage backend's folder, unless the test names one.
            (
                "KILN_STORAGE_DIR".to_owned(),
                temp_dir("objects").to_string_lossy().into_owned(),
            ),
            // Tests run side by side, each with several kiln processes, and
            // Postgres accepts 100 connections in all.
            ("KILN_DB_MAX_CONNECTIONS".to_owned(), "4".to_owned()),
            ("RUST_LOG".to_owned(), "info,kiln_runtime=debug,sqlx=warn".to_owned()),
            // LibreOffice starts only in the tests that convert documents.
            ("KILN_OFFICE_WARM_UP".to_owned(), "false".to_owned()),
            // The tests' keys are dev keys: dev's objects at the top of the
            // test's storage keep the keys a test writes and reads as they
            // are (prod's under prod/). tests/e2e/isolation.rs checks the
            // default roots.
            ("KILN_STORAGE_ROOT_DEV".to_owned(), String::new()),
            ("KILN_STORAGE_ROOT_PROD".to_owned(), "prod/".to_owned()),
        ];
        let env: Vec<(String, String)> = base_env.into_iter().chain(self.env).collect();

        let created = Command::new(kiln_bin())
            .args(["keys", "create", "--env", "dev"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run kiln keys create");
        assert!(
            created.status.success(),
            "kiln keys create failed: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        let key = String::from_utf8_lossy(&created.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| {
                if k == "DATABASE_URL" {
                    (k, kiln_database_url.clone())
                } else {
                    (k, v)
                }
            })
            .collect();

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
            env,
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
        KilnBuilder {
            mode,
            env: Vec::new(),
            redis_url: None,
            postgres_port: None,
        }
    }

    /// Starts a `kiln worker` process with this kiln's environment (and
    /// `extra`); it is killed when dropped.
    pub fn spawn_worker(&self, extra: &[(&str, &str)]) -> Process {
        self.spawn_worker_through(&[], extra)
    }

    /// `kiln worker` started through `wrapper` (a program and its
    /// arguments that then run kiln, e.g. setpriv as another user).
    pub fn spawn_worker_through(&self, wrapper: &[&str], extra: &[(&str, &str)]) -> Process {
        let log_path = self.log_path.with_extension(format!("worker-{}.log", random_suffix()));
        let log = std::fs::File::create(&log_path).expect("create worker log");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(kiln_bin());
                command
            }
            None => Command::new(kiln_bin()),
        };
        let child = command
            .arg("worker")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn kiln worker");
        Process { child, log_path }
    }

    /// `kiln dev` with defaults.
    pub async fn dev() -> Kiln {
        Self::builder(Mode::Dev).spawn().await
    }

    /// The kiln process's id, to read its memory use from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn db(&mut self) -> PgPool {
        if self.pool.is_none() {
            self.pool = Some(
                PgPool::connect(&self.database_url)
                    .await
                    .expect("connect to test database"),
            );
        }
        self.pool.clone().expect("pool")
    }

    /// A new secret key of `environment` (`dev` or `prod`), made by `kiln
    /// keys create` as an operator makes one.
    pub fn new_key(&self, environment: &str) -> String {
        let created = Command::new(kiln_bin())
            .args(["keys", "create", "--env", environment])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("kiln keys create");
        assert!(created.status.success(), "kiln keys create --env {environment} failed");
        String::from_utf8_lossy(&created.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned()
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

    /// `method path` with `key` (and `body` as JSON, if any); answers the
    /// status and the JSON answer.
    pub async fn call_as(&self, method: reqwest::Method, path: &str, key: &str, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
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
            assert!(
                Instant::now() < deadline,
                "run {run_id} did not reach the expected state within {within:?}: {run}\nlog: {}",
                self.log_path.display()
            );
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

/// A child process killed when dropped.
pub struct Process {
    pub child: Child,
    pub log_path: PathBuf,
}

impl Process {
    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// Sends SIGKILL, as the OOM killer or a lost machine would.
    pub fn kill_hard(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A Redis server of the test's own, so the test may flush or stop it.
pub struct RedisServer {
    pub url: String,
    process: Process,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        // A free port may be taken by another test between the look and
        // the bind: then the server exits at once, and another port is tried.
        for _ in 0..5 {
            if let Some(server) = Self::try_start_on(free_port()).await {
                return server;
            }
        }
        panic!("redis-server did not start on any of five free ports");
    }

    /// Starts a server on `port`: a restart of one that was stopped.
    pub async fn start_on(port: u16) -> RedisServer {
        Self::try_start_on(port)
            .await
            .unwrap_or_else(|| panic!("redis-server did not start on port {port}"))
    }

    /// A server on `port`, or `None` when it exited (the port was taken).
    async fn try_start_on(port: u16) -> Option<RedisServer> {
        let log_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("redis-{port}.log"));
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::fs::File::create(&log_path).expect("redis log"))
            .spawn()
            .expect("start redis-server (is it installed?)");
        let url = format!("redis://127.0.0.1:{port}");
        let mut server = RedisServer {
            url,
            process: Process { child, log_path },
        };
        let client = redis::Client::open(server.url.as_str()).expect("url");
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get_multiplexed_async_connection().await.is_err() {
            if matches!(server.process.child.try_wait(), Ok(Some(_))) {
                return None;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(server)
    }

    pub fn port(&self) -> u16 {
        self.url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0)
    }

    /// Stops the server at once, losing its data (it keeps none on disk).
    pub fn stop(mut self) {
        self.process.kill_hard();
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis")
    }
}

/// A TCP proxy the test can cut, to take a service away from kiln (as a
/// stopped server or a network partition would) without stopping the
/// machine's own server, which other tests share.
pub struct TcpProxy {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TcpProxy {
    pub async fn start(target: &'static str) -> TcpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (accept_open, accept_connections) = (open.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_open.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                accept_connections.lock().expect("lock").push(task.abort_handle());
            }
        });
        TcpProxy {
            port,
            open,
            connections,
        }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for connection in self.connections.lock().expect("lock").drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Counts runs by status.
pub async fn count_status(db: &PgPool, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = $1")
        .bind(status)
        .fetch_one(db)
        .await
        .expect("count")
}

/// Waits until `count` runs have `status`, for as long as the count keeps
/// growing: it fails once the count has not grown for `stall`, so a slow
/// machine only makes the wait longer, and a stuck kiln still fails it.
pub async fn wait_for_count(db: &PgPool, status: &str, count: i64, stall: Duration) {
    let mut deadline = Instant::now() + stall;
    let mut seen = i64::MIN;
    loop {
        let now = count_status(db, status).await;
        if now >= count {
            return;
        }
        if now > seen {
            seen = now;
            deadline = Instant::now() + stall;
        }
        assert!(
            Instant::now() < deadline,
            "only {now} of {count} runs reached {status}, and none more in the last {stall:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An S3-compatible server of the test's own: `s3s-fs` on a free loopback
/// port over a fresh folder. It checks request signatures, so tampered or
/// expired presigned links fail as they would on S3. `scripts/test`
/// installs it; `KILN_TEST_S3S_FS` names the binary if it is elsewhere.
pub struct S3Server {
    pub endpoint: String,
    _process: Process,
}

pub const S3_ACCESS_KEY: &str = "kiln-test-access";
pub const S3_SECRET_KEY: &str = "kiln-test-secret-0123456789";

impl S3Server {
    pub async fn start() -> S3Server {
        // Where scripts/test builds it, unless told otherwise.
        let installed = std::env::var("HOME").map(|home| format!("{home}/.cache/kiln/tools/bin/s3s-fs"));
        let binary = std::env::var("KILN_TEST_S3S_FS")
            .ok()
            .or_else(|| installed.ok().filter(|path| Path::new(path).exists()))
            .unwrap_or_else(|| "s3s-fs".into());
        let port = free_port();
        let root = temp_dir("s3");
        let log_path = root.with_extension("log");
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("s3s-fs log"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} ({e}); scripts/test installs it, or set KILN_TEST_S3S_FS")
            });
        let process = Process { child, log_path };
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            _process: process,
        }
    }

    /// A store on a new bucket of this server.
    pub async fn store(&self, part_size: usize) -> kiln_storage::S3Store {
        let bucket = format!("kiln-{}", random_suffix());
        let store = kiln_storage::S3Store::new(&self.config(&bucket, part_size)).expect("S3 config");
        store.ensure_bucket().await.expect("create bucket");
        store
    }

    pub fn config(&self, bucket: &str, part_size: usize) -> kiln_storage::S3Config {
        kiln_storage::S3Config {
            bucket: bucket.to_owned(),
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            access_key_id: S3_ACCESS_KEY.into(),
            secret_access_key: S3_SECRET_KEY.into(),
            force_path_style: true,
            part_size,
            public_endpoint: None,
        }
    }

    /// The environment that points a kiln process at `bucket` on this
    /// server, under Supermark's variable names.
    pub fn supermark_env(&self, bucket: &str) -> Vec<(&'static str, String)> {
        vec![
            ("NEXT_PRIVATE_UPLOAD_BUCKET", bucket.to_owned()),
            ("NEXT_PRIVATE_UPLOAD_ENDPOINT", self.endpoint.clone()),
            ("NEXT_PRIVATE_UPLOAD_REGION", "us-east-1".into()),
            ("NEXT_PRIVATE_UPLOAD_ACCESS_KEY_ID", S3_ACCESS_KEY.into()),
            ("NEXT_PRIVATE_UPLOAD_SECRET_ACCESS_KEY", S3_SECRET_KEY.into()),
        ]
    }
}

/// A fresh, empty folder under cargo's temporary directory for tests.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{label}-{}", random_suffix()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// `kiln dev` whose local storage folder is a fresh one the test can
/// write sources into (a file put there is an object), with `extra` env.
pub async fn kiln_with_storage(label: &str, extra: &[(&str, &str)]) -> (Kiln, PathBuf) {
    let dir = temp_dir(label);
    let mut builder = Kiln::builder(Mode::Dev).env("KILN_STORAGE_DIR", dir.to_string_lossy());
    for (name, value) in extra {
        builder = builder.env(name, *value);
    }
    (builder.spawn().await, dir)
}

/// Writes `bytes` as the object `key` of a local storage folder.
pub fn put_object(storage: &Path, key: &str, bytes: &[u8]) {
    let path = storage.join(key);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write source");
}

/// Asserts that the process at `/proc/<pid>` (`proc_dir`), a document
/// process of the kiln process `kiln_pid`, runs contained: without kiln's
/// secrets in its environment, unable to gain privileges, without
/// capabilities, in a network namespace other than kiln's, and with file
/// limits; `what` names it in messages.
pub fn assert_contained(proc_dir: &Path, kiln_pid: u32, what: &str) {
    let environ = std::fs::read(proc_dir.join("environ")).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    for secret in ["KILN_SECRET", "DATABASE_URL", "REDIS_URL", SERVER_SECRET] {
        assert!(!environ.contains(secret), "{what} has {secret} in its environment");
    }
    let status = std::fs::read_to_string(proc_dir.join("status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(field("NoNewPrivs:"), "1", "{what} may gain privileges");
    assert_eq!(field("CapEff:"), "0000000000000000", "{what} holds capabilities");
    assert_eq!(field("CapBnd:"), "0000000000000000", "{what} may regain capabilities");
    let network = std::fs::read_link(proc_dir.join("ns/net")).expect("its network namespace");
    let kiln_network = std::fs::read_link(format!("/proc/{kiln_pid}/ns/net")).expect("kiln's network namespace");
    assert_ne!(network, kiln_network, "{what} shares kiln's network");
    let limits = std::fs::read_to_string(proc_dir.join("limits")).expect("limits");
    let limit = |name: &str| {
        limits
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line[name.len()..].split_whitespace().next())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(limit("Max file size"), "2147483648", "{what}: {limits}");
    assert_eq!(limit("Max core file size"), "0", "{what}: {limits}");
}

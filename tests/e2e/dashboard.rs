//! The dashboard, driven as an operator drives it: in Chromium (Debian's
//! `chromium` and `chromium-driver`, through fantoccini), against the real
//! kiln binary. One browser test walks every action, writing a screenshot
//! of each page to `target/dashboard-screenshots/`; the security tests
//! speak plain HTTP, as an attacker would.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::{Kiln, Mode, free_port, noop_body};

const PASSWORD: &str = "correct horse battery staple";

/// Polls `check` every 100 ms until it answers `Some`, or panics naming
/// `what` after `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn kiln_with_dashboard(extra: &[(&str, &str)]) -> Kiln {
    let mut builder = Kiln::builder(Mode::Dev)
        .env("KILN_DASHBOARD_PASSWORD", PASSWORD)
        // A revoked key is refused at once.
        .env("KILN_KEY_CACHE_TTL", "1ms");
    for (name, value) in extra {
        builder = builder.env(name, *value);
    }
    builder.spawn().await
}

/// chromedriver on a free port, and a headless Chromium session through it.
struct Browser {
    client: Client,
    driver: Child,
    base: String,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn open(base: &str) -> Browser {
        // Another test of this process may have installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (Debian's chromium-driver; scripts/test installs it)");
        let url = format!("http://127.0.0.1:{port}");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             "--window-size=1400,1000"] }),
        );
        let client = eventually(Duration::from_secs(30), "chromedriver accepts a session", || {
            let (url, capabilities) = (url.clone(), capabilities.clone());
            async move {
                ClientBuilder::rustls()
                    .ok()?
                    .capabilities(capabilities)
                    .connect(&url)
                    .await
                    .ok()
            }
        })
        .await;
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
        std::fs::create_dir_all(&shots).expect("create the screenshots folder");
        Browser {
            client,
            driver,
            base: base.to_owned(),
            shots,
        }
    }

    async fn go(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("current url");
        format!(
            "{}{}",
            url.path(),
            url.query().map(|q| format!("?{q}")).unwrap_or_default()
        )
    }

    /// The element's text, read in one script (a live region may replace
    /// it between finding and reading).
    async fn text(&self, css: &str) -> String {
        let text = self
            .client
            .execute(
                "const element = document.querySelector(arguments[0]); return element ? element.innerText.trim() : null;",
                vec![json!(css)],
            )
            .await
            .unwrap_or_else(|e| panic!("read {css}: {e}"));
        text.as_str().unwrap_or_else(|| panic!("no element {css}")).to_owned()
    }

    /// Clicks the element; on a live page it may be replaced between
    /// finding and clicking it, and is then found again.
    async fn click(&self, css: &str) {
        for _ in 0..5 {
            let element = self
                .client
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("find {css}: {e}"));
            match element.click().await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference =>
                {
                    continue;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
        panic!("click {css}: the element kept being replaced");
    }

    /// Clicks a button that submits a form, and waits for the page it
    /// leads to (a new document, loaded).
    async fn submit(&self, css: &str) {
        self.client
            .execute("window.kilnOldPage = true; return true;", vec![])
            .await
            .expect("mark the page");
        self.click(css).await;
        eventually(Duration::from_secs(20), "the next page loads", || async {
            let loaded = self
                .client
                .execute(
                    "return window.kilnOldPage !== true && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .ok()?;
            (loaded == json!(true)).then_some(())
        })
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"));
        field.clear().await.expect("clear the field");
        field.send_keys(text).await.expect("type");
    }

    /// Marks the open page, so [`Browser::still_marked`] can tell it was
    /// updated in place rather than loaded again.
    async fn mark_page(&self) {
        self.client
            .execute("window.kilnNotReloaded = true; return true;", vec![])
            .await
            .expect("mark the page");
    }

    async fn still_marked(&self) -> bool {
        self.client
            .execute("return window.kilnNotReloaded === true;", vec![])
            .await
            .expect("read the mark")
            == json!(true)
    }

    /// Waits until the live region `id` listens on its event stream.
    async fn wait_until_listening(&self, id: &str) {
        eventually(Duration::from_secs(20), "the live region listens", || async {
            let state = self
                .client
                .execute(
                    "const region = document.getElementById(arguments[0]); return region ? region.dataset.liveState || '' : '';",
                    vec![json!(id)],
                )
                .await
                .ok()?;
            (state == "listening").then_some(())
        })
        .await;
    }

    /// Picks the option `value` of the select `css`.
    async fn choose(&self, css: &str, value: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("choose {value} in {css}: {e}"));
    }

    /// The run ids of the runs table's rows, read in one script: the live
    /// list may replace its rows between two WebDriver calls.
    async fn listed_runs(&self) -> BTreeSet<String> {
        let ids = self
            .client
            .execute(
                "return Array.from(document.querySelectorAll('#runs tr[data-run]')).map(row => row.dataset.run);",
                vec![],
            )
            .await
            .expect("read the runs rows");
        ids.as_array()
            .expect("an array of ids")
            .iter()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("write the screenshot");
    }
}

async fn status_of(kiln: &Kiln, run_id: &str) -> String {
    kiln.retrieve(run_id).await["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn trigger_tagged(kiln: &Kiln, task: &str, payload: Value, options: Value) -> String {
    kiln.trigger(task, json!({ "payload": payload, "options": options }))
        .await
}

#[tokio::test]
async fn an_operator_finds_watches_and_acts_on_runs_in_a_browser() {
    let kiln = kiln_with_dashboard(&[]).await;
    let red: Vec<String> = futures::future::join_all(
        (0..3).map(|i| trigger_tagged(&kiln, "kiln.noop", json!({ "i": i }), json!({ "tags": ["red"] }))),
    )
    .await;
    let _blue = trigger_tagged(&kiln, "kiln.noop", json!({}), json!({ "tags": ["blue"] })).await;
    let failed = trigger_tagged(
        &kiln,
        "kiln.fail",
        json!({}),
        json!({ "tags": ["red"], "maxAttempts": 1 }),
    )
    .await;
    kiln.wait_for_status(&failed, "FAILED", Duration::from_secs(30)).await;
    for id in &red {
        kiln.wait_for_status(id, "COMPLETED", Duration::from_secs(30)).await;
    }

    let browser = Browser::open(&kiln.base_url).await;

    // Signing in: any page sends a stranger to the sign-in form first.
    browser.go("/dashboard/dev/runs").await;
    assert!(browser.path().await.starts_with("/dashboard/sign-in"));
    browser.screenshot("sign-in").await;
    browser.type_into("#password", PASSWORD).await;
    browser.submit("#sign-in").await;
    assert_eq!(browser.path().await, "/dashboard/dev/runs");
    assert!(browser.listed_runs().await.len() >= 5);
    browser.screenshot("runs").await;

    // A run triggered while the list is open appears in it, without a
    // reload.
    browser.mark_page().await;
    browser.wait_until_listening("live-runs").await;
    let newcomer = kiln.trigger("kiln.noop", noop_body(json!({ "new": true }))).await;
    eventually(
        Duration::from_secs(20),
        "the new run shows in the open list",
        || async { browser.listed_runs().await.contains(&newcomer).then_some(()) },
    )
    .await;
    assert!(browser.still_marked().await, "the list reloaded instead of updating");

    // Filtering by tag and status.
    browser.type_into("#filter-tag", "red").await;
    browser.choose("#filter-status", "FAILED").await;
    browser.submit("#apply-filters").await;
    assert_eq!(browser.listed_runs().await, BTreeSet::from([failed.clone()]));
    browser.type_into("#filter-tag", "red").await;
    browser.choose("#filter-status", "COMPLETED").await;
    browser.submit("#apply-filters").await;
    assert_eq!(browser.listed_runs().await, red.iter().cloned().collect());

    // Replaying the failed run: a new run of the same task and payload.
    browser.go(&format!("/dashboard/dev/runs/{failed}")).await;
    assert_eq!(browser.text("#run-status").await, "FAILED");
    assert!(browser.text("#run-error").await.contains("kiln.fail failed"));
    browser.submit("#replay-run").await;
    let replay_path = browser.path().await;
    let replay = replay_path
        .trim_start_matches("/dashboard/dev/runs/")
        .split('?')
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(replay.starts_with("run_") && replay != failed, "{replay_path}");
    assert_eq!(kiln.retrieve(&replay).await["taskIdentifier"], "kiln.fail");
    assert!(browser.text("#notice").await.contains("replay"));

    // Watching a run's progress change live, without reloading the page.
    let sleeper = kiln.trigger("kiln.sleep", noop_body(json!({ "ms": 8000 }))).await;
    browser.go(&format!("/dashboard/dev/runs/{sleeper}")).await;
    browser.mark_page().await;
    browser.wait_until_listening("live").await;
    let first = eventually(Duration::from_secs(20), "a progress figure shows", || async {
        let text = browser
            .client
            .find(Locator::Css("#run-progress-text"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(text)
    })
    .await;
    browser.screenshot("run").await;
    let later = eventually(
        Duration::from_secs(30),
        "the progress moves on the open page",
        || async {
            let text = browser
                .client
                .find(Locator::Css("#run-progress-text"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text != first).then_some(text)
        },
    )
    .await;
    assert_ne!(later, first);
    assert!(browser.still_marked().await, "the page reloaded instead of updating");
    eventually(Duration::from_secs(30), "the page shows the run completed", || async {
        let status = browser
            .client
            .find(Locator::Css("#run-status"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (status == "COMPLETED").then_some(())
    })
    .await;

    // Canceling a delayed run.
    let delayed = kiln
        .trigger("kiln.noop", json!({ "payload": {}, "options": { "delay": "1h" } }))
        .await;
    browser.go(&format!("/dashboard/dev/runs/{delayed}")).await;
    assert_eq!(browser.text("#run-status").await, "DELAYED");
    browser.submit("#cancel-run").await;
    assert_eq!(browser.text("#run-status").await, "CANCELED");
    assert_eq!(status_of(&kiln, &delayed).await, "CANCELED");

    // Bulk-canceling twenty runs, after a confirmation that counts them.
    let bulk: Vec<String> = futures::future::join_all((0..20).map(|i| {
        trigger_tagged(
            &kiln,
            "kiln.noop",
            json!({ "i": i }),
            json!({ "delay": "1h", "tags": ["bulk"] }),
        )
    }))
    .await;
    browser.go("/dashboard/dev/runs?tag=bulk").await;
    assert_eq!(browser.listed_runs().await.len(), 20);
    browser.submit("#bulk-cancel").await;
    assert!(browser.text("#bulk-count").await.contains("20 runs"));
    browser.screenshot("bulk-confirm").await;
    browser.submit("#confirm-bulk").await;
    assert!(browser.text("#notice").await.contains("20 runs were canceled"));
    for id in &bulk {
        assert_eq!(status_of(&kiln, id).await, "CANCELED");
    }

    // Pausing a queue: its run waits; resuming it lets the run complete.
    let warm = kiln
        .trigger(
            "kiln.noop",
            json!({ "payload": {}, "options": { "queue": { "name": "paused-q" } } }),
        )
        .await;
    kiln.wait_for_status(&warm, "COMPLETED", Duration::from_secs(30)).await;
    browser.go("/dashboard/dev/queues").await;
    browser.submit("tr[data-queue='paused-q'] .queue-action").await;
    assert!(browser.text("#notice").await.contains("paused"));
    let waiting = kiln
        .trigger(
            "kiln.noop",
            json!({ "payload": {}, "options": { "queue": { "name": "paused-q" } } }),
        )
        .await;
    // The run reaches a worker (which parks it) well within this time; a
    // run that started would be COMPLETED by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status_of(&kiln, &waiting).await, "QUEUED");
    browser.go("/dashboard/dev/queues").await;
    assert_eq!(browser.text("tr[data-queue='paused-q'] .queued").await, "1");
    browser.screenshot("queues").await;
    browser.submit("tr[data-queue='paused-q'] .queue-action").await;
    assert!(browser.text("#notice").await.contains("resumed"));
    kiln.wait_for_status(&waiting, "COMPLETED", Duration::from_secs(30))
        .await;

    // A key: made (shown once), working, revoked, refused.
    browser.go("/dashboard/keys").await;
    browser.choose("#new-key-environment", "dev").await;
    browser.submit("#create-key").await;
    let secret = browser.text("#new-key-secret").await;
    assert!(secret.starts_with("tr_dev_"), "{secret}");
    browser.screenshot("keys").await;
    let (status, _) = kiln.call_as(reqwest::Method::GET, "/api/v1/runs", &secret, None).await;
    assert_eq!(status, 200);
    browser.go("/dashboard/keys").await;
    assert!(!browser.client.source().await.expect("page source").contains(&secret));
    let rows = browser
        .client
        .find_all(Locator::Css("#keys tr[data-key]"))
        .await
        .expect("key rows");
    assert_eq!(rows.len(), 2, "the test's own key and the new one");
    browser.submit("#keys tr[data-key]:last-child .revoke-key").await;
    assert!(browser.text("#notice").await.contains("revoked"));
    eventually(Duration::from_secs(10), "the revoked key is refused", || async {
        let (status, _) = kiln.call_as(reqwest::Method::GET, "/api/v1/runs", &secret, None).await;
        (status == 401).then_some(())
    })
    .await;
    let (status, _) = kiln
        .call_as(reqwest::Method::GET, "/api/v1/runs", &kiln.key, None)
        .await;
    assert_eq!(status, 200, "the other key still works");

    for page in ["schedules", "workers"] {
        browser.go(&format!("/dashboard/dev/{page}")).await;
        browser.screenshot(page).await;
    }
    browser.submit("#sign-out").await;
    assert!(browser.path().await.starts_with("/dashboard/sign-in"));
    browser.go("/dashboard/dev/runs").await;
    assert!(
        browser.path().await.starts_with("/dashboard/sign-in"),
        "signed out means signed out"
    );
    let _ = browser.client.clone().close().await;
}

/// A client that keeps no cookies and follows no redirects, to read each
/// answer as it is.
fn plain_http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

async fn sign_in(http: &reqwest::Client, kiln: &Kiln, password: &str) -> reqwest::Response {
    http.post(kiln.url("/dashboard/sign-in"))
        .form(&[("password", password), ("next", "/dashboard/dev/runs")])
        .send()
        .await
        .expect("post the sign-in form")
}

/// The session cookie a successful sign-in sets, as `name=value`.
async fn session(http: &reqwest::Client, kiln: &Kiln) -> String {
    let signed_in = sign_in(http, kiln, PASSWORD).await;
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    cookie.split(';').next().unwrap_or_default().to_owned()
}

/// `GET path` with the session `cookie`.
async fn get_signed_in(http: &reqwest::Client, kiln: &Kiln, cookie: &str, path: &str) -> reqwest::Response {
    http.get(kiln.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {path}: {e}"))
}

/// `POST path` of `form` with the session `cookie`.
async fn post_signed_in(
    http: &reqwest::Client,
    kiln: &Kiln,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    http.post(kiln.url(path))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap_or_else(|e| panic!("post {path}: {e}"))
}

async fn page(http: &reqwest::Client, kiln: &Kiln, cookie: &str, path: &str) -> (u16, String) {
    let answer = get_signed_in(http, kiln, cookie, path).await;
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap_or_default())
}

/// The session's CSRF token, read from a page's forms.
fn csrf_token(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a form with a CSRF token") + marker.len();
    html[start..].split('"').next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn run_data_is_shown_as_text_and_forms_need_their_csrf_token() {
    let kiln = kiln_with_dashboard(&[]).await;
    let http = plain_http();
    let cookie = session(&http, &kiln).await;
    let run = kiln
        .trigger(
            "kiln.noop",
            json!({ "payload": { "html": "<script>alert('x')</script><img src=x onerror=alert(1)>" },
                    "options": { "delay": "1h", "tags": ["<b>tag</b>"] } }),
        )
        .await;
    let (status, html) = page(&http, &kiln, &cookie, &format!("/dashboard/dev/runs/{run}")).await;
    assert_eq!(status, 200);
    assert!(
        !html.contains("<script>alert"),
        "a payload's script reached the page as markup"
    );
    assert!(!html.contains("<img src=x"));
    assert!(!html.contains("<b>tag</b>"));
    assert!(html.contains("&#60;script&#62;alert("), "the payload is shown, escaped");
    let (_, list) = page(&http, &kiln, &cookie, "/dashboard/dev/runs").await;
    assert!(list.contains("&#60;b&#62;tag&#60;/b&#62;") && !list.contains("<b>tag</b>"));

    // Every page forbids framing and other origins.
    let answer = get_signed_in(&http, &kiln, &cookie, &format!("/dashboard/dev/runs/{run}")).await;
    assert_eq!(answer.headers()["x-frame-options"], "DENY");
    let policy = answer.headers()["content-security-policy"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        policy.contains("default-src 'none'") && policy.contains("script-src 'self'"),
        "{policy}"
    );

    // A cancel without the token, or with another, is refused; the run
    // keeps its status.
    let cancel = format!("/dashboard/dev/runs/{run}/cancel");
    let wrong = "0".repeat(48);
    for form in [&[][..], &[("csrf", wrong.as_str())][..]] {
        let refused = post_signed_in(&http, &kiln, &cookie, &cancel, form).await;
        assert_eq!(refused.status(), 403);
        assert_eq!(status_of(&kiln, &run).await, "DELAYED");
    }
    // With the session's own token it is done.
    let token = csrf_token(&html);
    let done = post_signed_in(&http, &kiln, &cookie, &cancel, &[("csrf", token.as_str())]).await;
    assert_eq!(done.status(), 303);
    assert_eq!(status_of(&kiln, &run).await, "CANCELED");

    // Without a session, an action sends the visitor to sign in.
    let stranger = http
        .post(kiln.url("/dashboard/dev/queues/pause"))
        .form(&[("csrf", token.as_str()), ("queue", "q")])
        .send()
        .await
        .expect("post a pause");
    assert_eq!(stranger.status(), 303);
    assert!(
        stranger.headers()["location"]
            .to_str()
            .unwrap_or_default()
            .starts_with("/dashboard/sign-in")
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_repeated_failures_are_held_off() {
    let kiln = kiln_with_dashboard(&[]).await;
    let http = plain_http();
    for _ in 0..5 {
        let refused = sign_in(&http, &kiln, "not the password at all").await;
        assert_eq!(refused.status(), 401);
        assert!(refused.headers().get("set-cookie").is_none());
    }
    // The sixth try is held off, even with the right password.
    let held = sign_in(&http, &kiln, PASSWORD).await;
    assert_eq!(held.status(), 429);
    assert!(held.headers().get("retry-after").is_some());
    assert!(held.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn the_session_cookie_carries_its_flags_and_signing_out_ends_it() {
    let kiln = kiln_with_dashboard(&[("KILN_PUBLIC_URL", "https://kiln.example.com")]).await;
    let http = plain_http();
    let signed_in = sign_in(&http, &kiln, PASSWORD).await;
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/dashboard"] {
        assert!(cookie.contains(flag), "{flag} missing from {cookie}");
    }
    let session = cookie.split(';').next().unwrap_or_default().to_owned();
    let (status, html) = page(&http, &kiln, &session, "/dashboard/dev/runs").await;
    assert_eq!(status, 200);
    let token = csrf_token(&html);
    let out = post_signed_in(
        &http,
        &kiln,
        &session,
        "/dashboard/sign-out",
        &[("csrf", token.as_str())],
    )
    .await;
    assert_eq!(out.status(), 303);
    let (status, _) = page(&http, &kiln, &session, "/dashboard/dev/runs").await;
    assert_eq!(status, 303, "the old cookie no longer signs in");
}

#[tokio::test]
async fn without_a_password_every_dashboard_route_says_it_is_off() {
    let kiln = Kiln::builder(Mode::Dev).spawn().await;
    let http = plain_http();
    for path in [
        "/dashboard",
        "/dashboard/",
        "/dashboard/sign-in",
        "/dashboard/dev/runs",
        "/dashboard/prod/queues",
        "/dashboard/keys",
        "/dashboard/assets/style.css",
    ] {
        let answer = http.get(kiln.url(path)).send().await.expect("get");
        assert_eq!(answer.status(), 404, "{path}");
        let text = answer.text().await.unwrap_or_default();
        assert!(text.contains("KILN_DASHBOARD_PASSWORD"), "{path}: {text}");
    }
    let posted = sign_in(&http, &kiln, "anything at all here").await;
    assert_eq!(posted.status(), 404);
    assert!(posted.headers().get("set-cookie").is_none());
}

#[tokio::test]
async fn the_runs_of_one_batch_are_listed_by_its_id_in_the_api_and_the_dashboard() {
    let kiln = kiln_with_dashboard(&[]).await;
    let _other = kiln.trigger("kiln.noop", noop_body(json!({ "alone": true }))).await;
    let items: Vec<Value> = (0..3)
        .map(|i| json!({ "task": "kiln.noop", "payload": { "i": i }, "options": { "delay": "1h" } }))
        .collect();
    let (status, batch) = kiln
        .call_as(
            reqwest::Method::POST,
            "/api/v1/tasks/batch",
            &kiln.key,
            Some(&json!({ "items": items })),
        )
        .await;
    assert_eq!(status, 200, "{batch}");
    let batch_id = batch["id"].as_str().expect("a batch id").to_owned();
    let (status, listing) = kiln
        .call_as(
            reqwest::Method::GET,
            &format!("/api/v1/runs?filter%5Bbatch%5D={batch_id}"),
            &kiln.key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{listing}");
    let listed: BTreeSet<String> = listing["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|run| run["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(listed.len(), 3);
    for run in &listed {
        assert!(kiln.retrieve(run).await["payload"]["i"].is_number());
    }
    // Another environment's key finds nothing of the batch.
    let prod = kiln.new_key("prod");
    let (_, elsewhere) = kiln
        .call_as(
            reqwest::Method::GET,
            &format!("/api/v1/runs?filter%5Bbatch%5D={batch_id}"),
            &prod,
            None,
        )
        .await;
    assert_eq!(elsewhere["data"].as_array().map(Vec::len), Some(0));

    let http = plain_http();
    let cookie = session(&http, &kiln).await;
    let (status, html) = page(&http, &kiln, &cookie, &format!("/dashboard/dev/runs?batch={batch_id}")).await;
    assert_eq!(status, 200);
    let shown: BTreeSet<String> = listed
        .iter()
        .filter(|id| html.contains(&format!("data-run=\"{id}\"")))
        .cloned()
        .collect();
    assert_eq!(shown, listed);
    assert_eq!(html.matches("data-run=\"").count(), 3);
}

#[tokio::test]
async fn a_preview_runs_pages_show_as_thumbnails_served_from_the_dashboard() {
    let (kiln, storage) =
        crate::helpers::kiln_with_storage("dashboard-objects", &[("KILN_DASHBOARD_PASSWORD", PASSWORD)]).await;
    let pdf = crate::pdfgen::build(&[
        crate::pdfgen::Page::new(612.0, 792.0).with_text(&["First page"]),
        crate::pdfgen::Page::new(612.0, 792.0).with_text(&["Second page"]),
    ]);
    crate::helpers::put_object(&storage, "docs/two.pdf", &pdf);
    let run = kiln
        .trigger(
            "kiln.pdf.preview",
            json!({ "payload": { "source": { "key": "docs/two.pdf" }, "outputPrefix": "previews/two" } }),
        )
        .await;
    let done = kiln
        .wait_for(&run, Duration::from_secs(240), |run| run["isCompleted"] == true)
        .await;
    assert_eq!(done["status"], "COMPLETED", "{done}");

    let browser = Browser::open(&kiln.base_url).await;
    browser.go("/dashboard/sign-in").await;
    browser.type_into("#password", PASSWORD).await;
    browser.submit("#sign-in").await;
    browser.go(&format!("/dashboard/dev/runs/{run}")).await;
    let loaded = eventually(Duration::from_secs(20), "both thumbnails load", || async {
        let widths = browser
            .client
            .execute(
                "return Array.from(document.querySelectorAll('#files img')).map(img => img.complete ? img.naturalWidth : 0);",
                vec![],
            )
            .await
            .ok()?;
        let widths: Vec<u64> = widths.as_array()?.iter().filter_map(Value::as_u64).collect();
        (widths.len() == 2 && widths.iter().all(|w| *w > 0)).then_some(widths)
    })
    .await;
    assert_eq!(loaded.len(), 2);
    browser.screenshot("preview-run").await;

    // Only the keys the output names are served.
    let http = plain_http();
    let cookie = session(&http, &kiln).await;
    let (status, _) = page(
        &http,
        &kiln,
        &cookie,
        &format!("/dashboard/dev/runs/{run}/file?key=docs/two.pdf"),
    )
    .await;
    assert_eq!(status, 404, "the source is not a file the run's output names");
    let first = done["output"]["pages"][0]["key"]
        .as_str()
        .expect("a page key")
        .to_owned();
    let answer = get_signed_in(
        &http,
        &kiln,
        &cookie,
        &format!("/dashboard/dev/runs/{run}/file?key={first}"),
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("image/")
    );
    let _ = browser.client.clone().close().await;
}

#[tokio::test]
async fn the_runs_a_schedule_fired_are_listed_by_its_id_in_the_api_and_the_dashboard() {
    let kiln = kiln_with_dashboard(&[("KILN_CRON_TICK", "100ms")]).await;
    let unscheduled = kiln.trigger("kiln.noop", noop_body(json!({ "by": "hand" }))).await;
    let (status, schedule) = kiln
        .call_as(
            reqwest::Method::POST,
            "/api/v1/schedules",
            &kiln.key,
            Some(&json!({ "task": "kiln.noop", "cron": "* * * * * *" })),
        )
        .await;
    assert_eq!(status, 200, "{schedule}");
    let schedule_id = schedule["id"].as_str().expect("a schedule id").to_owned();
    let list_query = format!("/api/v1/runs?filter%5Bschedule%5D={schedule_id}");
    eventually(Duration::from_secs(30), "the schedule fires twice", || async {
        let (_, listing) = kiln.call_as(reqwest::Method::GET, &list_query, &kiln.key, None).await;
        (listing["data"].as_array().map_or(0, Vec::len) >= 2).then_some(())
    })
    .await;
    let (status, _) = kiln
        .call_as(
            reqwest::Method::POST,
            &format!("/api/v1/schedules/{schedule_id}/deactivate"),
            &kiln.key,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, listing) = kiln.call_as(reqwest::Method::GET, &list_query, &kiln.key, None).await;
    let listed: Vec<String> = listing["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|run| run["id"].as_str().map(str::to_owned))
        .collect();
    assert!(listed.len() >= 2 && !listed.contains(&unscheduled));
    for run in &listed {
        assert_eq!(kiln.retrieve(run).await["payload"]["scheduleId"], schedule_id.as_str());
    }

    let http = plain_http();
    let cookie = session(&http, &kiln).await;
    let (_, schedules) = page(&http, &kiln, &cookie, "/dashboard/dev/schedules").await;
    assert!(schedules.contains(&format!("/dashboard/dev/runs?schedule={schedule_id}")));
    let (status, html) = page(
        &http,
        &kiln,
        &cookie,
        &format!("/dashboard/dev/runs?schedule={schedule_id}"),
    )
    .await;
    assert_eq!(status, 200);
    for run in &listed {
        assert!(html.contains(&format!("data-run=\"{run}\"")), "{run} is not listed");
    }
    assert!(!html.contains(&format!("data-run=\"{unscheduled}\"")));
}

#[tokio::test]
async fn a_runs_page_shows_each_attempt_with_its_own_error() {
    let kiln = kiln_with_dashboard(&[("KILN_RETRY_MIN_DELAY", "10ms"), ("KILN_RETRY_MAX_DELAY", "50ms")]).await;
    let run = kiln
        .trigger("kiln.fail", json!({ "payload": {}, "options": { "maxAttempts": 3 } }))
        .await;
    kiln.wait_for_status(&run, "FAILED", Duration::from_secs(60)).await;
    let http = plain_http();
    let cookie = session(&http, &kiln).await;
    let (status, html) = page(&http, &kiln, &cookie, &format!("/dashboard/dev/runs/{run}")).await;
    assert_eq!(status, 200);
    assert_eq!(html.matches("data-attempt=\"").count(), 3);
    for attempt in 1..=3 {
        assert!(
            html.contains(&format!("kiln.fail failed attempt {attempt}")),
            "attempt {attempt}'s error is not shown"
        );
    }
}

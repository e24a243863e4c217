//! HTTP tasks: `kiln.http` sends the request its payload describes; a
//! configured HTTP task (Supermark's notification and e-mail jobs) sends its
//! run's payload to the URL the operator bound it to.
//!
//! Every request carries the run id and attempt. A request to a URL the
//! operator bound, when a signing secret is configured, also carries a
//! signature of what it is and where it goes:
//!
//! ```text
//! X-Kiln-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//!     "<t>\n<METHOD>\n<url>\n<run id>\n<body>")>
//! ```
//!
//! `kiln.http` requests, whose URL and body any key chooses, are never
//! signed: a signature an app trusts must not be one a caller can obtain.
//!
//! A 2xx answer completes the run with `{status, body}`; any other answer or
//! a network error fails the attempt, to be retried.
//!
//! URLs that come from a payload are untrusted: they may only reach the
//! allowed hosts, and never a private, loopback or link-local address unless
//! the operator allowed private targets. The check runs in the DNS resolver
//! itself, so a name cannot resolve to a forbidden address after the check.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kiln_core::auth::hmac_sha256;
use kiln_core::task::{TaskContext, TaskError, TaskFuture, TaskHandler};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::{Value, json};

pub const SIGNATURE_HEADER: &str = "x-kiln-signature";
pub const RUN_ID_HEADER: &str = "x-kiln-run-id";
pub const ATTEMPT_HEADER: &str = "x-kiln-attempt";
/// Answers are kept up to this size in the run's output.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Where untrusted URLs may go.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// When not empty, the only hosts a payload URL may name.
    pub allowed_hosts: Vec<String>,
    /// Allow private, loopback and link-local addresses.
    pub allow_private: bool,
}

impl EgressPolicy {
    fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts.is_empty() || self.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    fn address_allowed(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip)
    }
}

/// Not loopback, private, link-local, unspecified, multicast, reserved or
/// otherwise internal. An IPv6 address that carries an IPv4 address
/// (mapped, compatible, NAT64, 6to4) is judged by the IPv4 address, which
/// is where the packets would end up.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || a >= 240 // reserved (240.0.0.0/4)
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_ipv4(v6) {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first & 0xffc0) == 0xfec0) // site local (deprecated)
        }
    }
}

/// The IPv4 address an IPv6 address stands for, if it embeds one:
/// `::ffff:a.b.c.d` (mapped), `::a.b.c.d` (compatible), `::ffff:0:a.b.c.d`,
/// `64:ff9b::/96` and `64:ff9b:1::/48` (NAT64), `2002:AABB:CCDD::/16` (6to4).
fn embedded_ipv4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    let s = v6.segments();
    let tail = |hi: u16, lo: u16| std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    match s {
        // ::a.b.c.d (but not :: or ::1, judged as IPv6)
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => Some(tail(hi, lo)),
        [0, 0, 0, 0, 0xffff, 0, hi, lo] => Some(tail(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(tail(hi, lo)),
        [0x64, 0xff9b, 1, ..] => Some(tail(s[6], s[7])),
        [0x2002, hi, lo, ..] => Some(tail(hi, lo)),
        _ => None,
    }
}

/// Resolves names and drops addresses the policy forbids.
struct GuardedResolver {
    policy: EgressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = resolved.filter(|addr| policy.address_allowed(addr.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves only to addresses kiln may not reach").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Shared by every HTTP task of a process.
#[derive(Clone)]
pub struct HttpSender {
    untrusted: reqwest::Client,
    trusted: reqwest::Client,
    policy: EgressPolicy,
    signing_secret: Option<Arc<str>>,
}

impl HttpSender {
    pub fn new(
        policy: EgressPolicy,
        signing_secret: Option<String>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let untrusted = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names after kiln's check.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { policy: policy.clone() }))
            .build()?;
        let trusted = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self {
            untrusted,
            trusted,
            policy,
            signing_secret: signing_secret.map(Arc::from),
        })
    }

    /// Checks the scheme, the host name against the allow-list, and the
    /// addresses it stands for, so a forbidden target fails the run at
    /// once instead of being retried. The resolver checks again when the
    /// request connects, in case the name resolves differently then.
    async fn check_untrusted(&self, url: &Url) -> Result<(), TaskError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TaskError::fatal(
                "InvalidUrl",
                format!("scheme {:?} is not http or https", url.scheme()),
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| TaskError::fatal("InvalidUrl", "the url has no host"))?;
        if !self.policy.host_allowed(host) {
            return Err(TaskError::fatal(
                "ForbiddenHost",
                format!("host {host:?} is not in KILN_HTTP_ALLOWED_HOSTS"),
            ));
        }
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>();
        let addresses: Vec<IpAddr> = match literal {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host, url.port_or_known_default().unwrap_or(443)))
                .await
                .map_err(|e| TaskError::retryable("DnsError", format!("cannot resolve {host}: {e}")))?
                .map(|addr| addr.ip())
                .collect(),
        };
        if !addresses.iter().any(|ip| self.policy.address_allowed(*ip)) {
            return Err(TaskError::fatal(
                "ForbiddenHost",
                format!("{host} is a private or internal address (set KILN_HTTP_ALLOW_PRIVATE to allow)"),
            ));
        }
        Ok(())
    }

    async fn send(&self, ctx: &TaskContext, request: Request, trusted: bool) -> Result<Value, TaskError> {
        let url =
            Url::parse(&request.url).map_err(|e| TaskError::fatal("InvalidUrl", format!("{}: {e}", request.url)))?;
        if !trusted {
            self.check_untrusted(&url).await?;
        }
        let method = Method::from_bytes(
            request
                .method
                .as_deref()
                .unwrap_or("POST")
                .to_ascii_uppercase()
                .as_bytes(),
        )
        .map_err(|_| TaskError::fatal("InvalidPayload", "method is not an HTTP method"))?;
        let (body, content_type) = match &request.body {
            None | Some(Value::Null) => (Vec::new(), None),
            Some(Value::String(text)) => (text.clone().into_bytes(), Some("text/plain; charset=utf-8")),
            Some(other) => (other.to_string().into_bytes(), Some("application/json")),
        };
        let client = if trusted { &self.trusted } else { &self.untrusted };
        let signed = match (&self.signing_secret, trusted) {
            (Some(secret), true) => Some(signature(
                secret,
                unix_now(),
                &SignedRequest {
                    method: method.as_str(),
                    url: url.as_str(),
                    run_id: ctx.run_id.as_str(),
                    body: &body,
                },
            )),
            _ => None,
        };
        let mut builder = client
            .request(method, url)
            .header(RUN_ID_HEADER, ctx.run_id.as_str())
            .header(ATTEMPT_HEADER, ctx.attempt.to_string())
            .header("idempotency-key", ctx.run_id.as_str());
        if let Some(content_type) = content_type {
            builder = builder.header("content-type", content_type);
        }
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let Some(signed) = signed {
            builder = builder.header(SIGNATURE_HEADER, signed);
        }
        let send = builder.body(body).send();
        let response = tokio::select! {
            response = send => response,
            () = ctx.cancel.cancelled() => return Err(TaskError::retryable("Canceled", "stopped before an answer came")),
        };
        let response = response.map_err(|e| TaskError::retryable("HttpError", describe(&e)))?;
        let status = response.status();
        let bytes = read_capped(response).await?;
        let body = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if status.is_success() {
            Ok(json!({ "status": status.as_u16(), "body": body }))
        } else {
            Err(TaskError::retryable(
                "HttpStatus",
                format!("the server answered {status}"),
            ))
        }
    }
}

/// Downloads for tasks whose source is a URL (`{ "source": { "url": … } }`),
/// under the same egress rules as `kiln.http`.
impl kiln_core::task::UrlFetcher for HttpSender {
    fn fetch(
        &self,
        url: &str,
        limit: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, TaskError>> + Send + '_>> {
        let url = url.to_owned();
        Box::pin(async move {
            let parsed = Url::parse(&url).map_err(|e| TaskError::fatal("InvalidUrl", format!("{url}: {e}")))?;
            self.check_untrusted(&parsed).await?;
            let mut response = self
                .untrusted
                .get(parsed)
                .send()
                .await
                .map_err(|e| TaskError::retryable("HttpError", describe(&e)))?;
            let status = response.status();
            if status.is_client_error() {
                return Err(TaskError::fatal(
                    "SourceUnavailable",
                    format!("GET {url} answered {status}"),
                ));
            }
            if !status.is_success() {
                return Err(TaskError::retryable(
                    "SourceUnavailable",
                    format!("GET {url} answered {status}"),
                ));
            }
            let too_large = || TaskError::fatal("SourceTooLarge", format!("{url} is larger than {limit} bytes"));
            if response.content_length().is_some_and(|length| length > limit) {
                return Err(too_large());
            }
            let mut bytes = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| TaskError::retryable("HttpError", describe(&e)))?
            {
                if (bytes.len() + chunk.len()) as u64 > limit {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(bytes)
        })
    }
}

fn describe(error: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, TaskError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| TaskError::retryable("HttpError", describe(&e)))?
    {
        let room = MAX_RESPONSE_BYTES.saturating_sub(bytes.len());
        bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room < chunk.len() {
            break;
        }
    }
    Ok(bytes)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a signature covers besides its time.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub run_id: &'a str,
    pub body: &'a [u8],
}

/// The `X-Kiln-Signature` value for `request` sent at `timestamp`: bound
/// to its method, URL and run, so it cannot be replayed elsewhere.
pub fn signature(secret: &str, timestamp: u64, request: &SignedRequest<'_>) -> String {
    let mut signed = format!("{timestamp}\n{}\n{}\n{}\n", request.method, request.url, request.run_id).into_bytes();
    signed.extend_from_slice(request.body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &signed))
    )
}

/// `kiln.http`'s payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    url: String,
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    body: Option<Value>,
}

/// `kiln.http`: the payload says where to send what.
pub struct HttpTask {
    pub sender: HttpSender,
}

impl TaskHandler for HttpTask {
    fn run(&self, ctx: TaskContext, payload: Value) -> TaskFuture {
        let sender = self.sender.clone();
        Box::pin(async move {
            let request: Request = serde_json::from_value(payload).map_err(|e| {
                TaskError::fatal(
                    "InvalidPayload",
                    format!("kiln.http needs {{url, method?, headers?, body?}}: {e}"),
                )
            })?;
            sender.send(&ctx, request, false).await
        })
    }
}

/// A task id bound by configuration to one URL: the run's payload is the
/// JSON body. The operator wrote the URL, so it is trusted.
pub struct BoundHttpTask {
    pub sender: HttpSender,
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
}

impl TaskHandler for BoundHttpTask {
    fn run(&self, ctx: TaskContext, payload: Value) -> TaskFuture {
        let sender = self.sender.clone();
        let request = Request {
            url: self.url.clone(),
            method: Some(self.method.clone()),
            headers: self.headers.clone(),
            body: Some(payload),
        };
        Box::pin(async move { sender.send(&ctx, request, true).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "0.0.0.0",
            "::ffff:127.0.0.1",
            "100.64.0.1",
            "::127.0.0.1",
            "::ffff:0:7f00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "fec0::1",
            "240.0.0.1",
            "255.255.255.254",
            "192.0.0.8",
        ] {
            assert!(!is_public(ip.parse().expect("an IP literal")), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(is_public(ip.parse().expect("an IP literal")), "{ip}");
        }
    }

    #[test]
    fn signature_is_hmac_of_time_method_url_run_and_body() {
        let request = SignedRequest {
            method: "POST",
            url: "http://app:3000/api/jobs/x",
            run_id: "run_1",
            body: b"{}",
        };
        let value = signature("secret", 1_700_000_000, &request);
        let expected = hex::encode(hmac_sha256(
            b"secret",
            b"1700000000\nPOST\nhttp://app:3000/api/jobs/x\nrun_1\n{}",
        ));
        assert_eq!(value, format!("t=1700000000,v1={expected}"));
    }
}

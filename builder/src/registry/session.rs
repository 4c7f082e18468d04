//! Authenticated, retrying HTTP requests to one registry's `/v2/` API: the
//! part of the client that pushes (oci-client keeps pulling).
//!
//! oci-client hides response headers, so it can neither honour
//! `Retry-After`, nor read an upload's `Range` to resume it, nor ask for a
//! token whose scope covers a mount's source repository. This module talks
//! to the registry with reqwest directly: on a 401 it follows the
//! `WWW-Authenticate` challenge (Basic, or Bearer with a token fetched from
//! the realm, as docker does), caches the `Authorization` value per
//! registry and scope, and retries 429, 5xx and broken connections with
//! exponential backoff plus jitter. Credentials and tokens only ever travel
//! in headers: they are never part of a URL, an error or a log line.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use oci_client::secrets::RegistryAuth;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;

/// Attempts per request (first try included) on 429/5xx/broken connections.
pub const MAX_ATTEMPTS: u32 = 5;
/// Backoff before the second attempt; doubled for each further one.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait we accept from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Registry error bodies are short JSON; keep at most this much of one.
const MAX_ERROR_BODY: usize = 512;

/// Failures of one request.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The request could not be sent or its response not read.
    #[error("{method} {url} failed")]
    Transport {
        /// HTTP method.
        method: Method,
        /// URL without its query (upload state lives there).
        url: String,
        /// reqwest's error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with a status the caller did not expect.
    #[error("{method} {url} answered {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        /// HTTP method.
        method: Method,
        /// URL without its query.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the response body (the registry's error JSON).
        body: String,
        /// The registry's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Every attempt failed with a retryable error.
    #[error("gave up after {attempts} attempts")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<SessionError>,
    },
    /// The registry refused the credentials (or asked for some and we have none).
    #[error("authentication to `{registry}` failed ({status}){}: check `rbuild login {registry}`", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Status of the refusing response.
        status: StatusCode,
        /// The registry's explanation.
        detail: String,
    },
    /// The token endpoint answered something that is not a token.
    #[error("token endpoint of `{registry}` returned no usable token")]
    BadToken {
        /// Registry host.
        registry: String,
        /// The JSON error.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// A URL the registry gave (Location, realm) is malformed.
    #[error("registry sent a malformed URL `{url}`")]
    BadUrl {
        /// The text (query removed).
        url: String,
        /// The parse error.
        #[source]
        source: url_error::ParseError,
    },
    /// A file to upload could not be read.
    #[error("cannot read `{}`", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The registry no longer accepts an upload session we must resume
    /// (distribution refuses to resume a session after a cut PATCH): the
    /// blob starts over in a new session.
    #[error("the registry dropped upload session {url}")]
    UploadLost {
        /// Upload URL without its query.
        url: String,
    },
    /// The HTTP client could not be built (bad CA certificate).
    #[error("cannot set up the HTTPS client")]
    Client(#[source] reqwest::Error),
}

/// reqwest re-exports `url::Url` but not its error type; this names it.
pub mod url_error {
    /// `url::ParseError`, as reqwest's `Url::parse` returns it.
    pub type ParseError = <reqwest::Url as std::str::FromStr>::Err;
}

impl SessionError {
    /// Whether another attempt may succeed: 429, 5xx (but 501) and
    /// connection-level failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            SessionError::Transport { source, .. } => {
                source.is_connect() || source.is_timeout() || source.is_body() || source.is_request()
            }
            SessionError::Status { status, .. } => retryable_status(*status),
            SessionError::UploadLost { .. } => true,
            _ => false,
        }
    }

    /// How long the registry asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SessionError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || (s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED)
}

/// A request body that can be sent again on a retry.
#[derive(Clone)]
pub enum Body {
    /// No body.
    Empty,
    /// Bytes in memory.
    Bytes(Bytes),
    /// `len` bytes of a file from `offset`, streamed.
    File {
        /// The file.
        path: PathBuf,
        /// First byte.
        offset: u64,
        /// Bytes to send.
        len: u64,
    },
}

/// One request, rebuilt on each attempt.
pub struct Request<'a> {
    /// Method.
    pub method: Method,
    /// Absolute URL.
    pub url: Url,
    /// Extra headers (Content-Type, Content-Range...).
    pub headers: HeaderMap,
    /// Body.
    pub body: Body,
    /// Token scope (`repository:app:pull,push`, several separated by space).
    pub scope: &'a str,
    /// Whether 429/5xx/connection failures are retried here. Off for
    /// requests whose partial effect the caller must inspect first (a
    /// PATCH may have appended part of its body).
    pub retry: bool,
}

/// Talks to registries over one connection pool.
pub struct Session {
    client: reqwest::Client,
    /// (registry, scope) -> `Authorization` value that worked.
    authorizations: Mutex<BTreeMap<(String, String), HeaderValue>>,
}

impl Session {
    /// A session trusting the system roots plus `extra_roots` (PEM).
    pub fn new(extra_roots: &[reqwest::Certificate]) -> Result<Session, SessionError> {
        let client = reqwest::Client::builder()
            .tls_certs_merge(extra_roots.iter().cloned())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SessionError::Client)?;
        Ok(Session { client, authorizations: Mutex::default() })
    }

    /// The underlying HTTP client (for requests outside a repository, like
    /// the login probe).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `req` to `registry` with `creds`: authenticates on a 401
    /// challenge, retries (when `req.retry`) with backoff. Returns the
    /// response whatever its status (but 401), for the caller to judge.
    pub async fn send(
        &self,
        registry: &str,
        creds: &RegistryAuth,
        req: &Request<'_>,
    ) -> Result<reqwest::Response, SessionError> {
        let mut attempt = 1;
        let mut authenticated = false;
        // Credentials go only to the registry itself: an upload Location
        // naming another host (storage redirect, or a hostile registry)
        // gets the request without them.
        let same_host = same_authority(&req.url, registry);
        loop {
            let key = (registry.to_string(), req.scope.to_string());
            let auth = if same_host {
                self.authorizations.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned()
            } else {
                None
            };
            let result = self.send_once(req, auth).await;
            let err = match result {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !authenticated && same_host => {
                    authenticated = true;
                    let header = self.authorize(registry, creds, req.scope, resp).await?;
                    self.authorizations.lock().unwrap_or_else(|p| p.into_inner()).insert(key, header);
                    continue;
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    return Err(SessionError::Unauthorized {
                        registry: registry.to_string(),
                        status: resp.status(),
                        detail: error_body(resp).await,
                    });
                }
                Ok(resp) if req.retry && retryable_status(resp.status()) => {
                    status_error(&req.method, &req.url, resp).await
                }
                Ok(resp) => return Ok(resp),
                Err(e) if req.retry && e.is_retryable() => e,
                Err(e) => return Err(e),
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(SessionError::RetriesExhausted { attempts: attempt, last: Box::new(err) });
            }
            tokio::time::sleep(err.retry_after().unwrap_or_else(|| backoff(attempt))).await;
            attempt += 1;
        }
    }

    async fn send_once(&self, req: &Request<'_>, auth: Option<HeaderValue>) -> Result<reqwest::Response, SessionError> {
        let mut builder = self.client.request(req.method.clone(), req.url.clone()).headers(req.headers.clone());
        if let Some(a) = auth {
            builder = builder.header(AUTHORIZATION, a);
        }
        builder = match &req.body {
            Body::Empty => builder.header(reqwest::header::CONTENT_LENGTH, 0),
            Body::Bytes(b) => builder.body(b.clone()),
            Body::File { path, offset, len } => {
                let stream = file_range_stream(path.clone(), *offset, *len).await?;
                builder.header(reqwest::header::CONTENT_LENGTH, *len).body(reqwest::Body::wrap_stream(stream))
            }
        };
        builder.send().await.map_err(|source| SessionError::Transport {
            method: req.method.clone(),
            url: without_query(&req.url),
            source,
        })
    }

    /// Answers a 401's challenge: the `Authorization` value to send.
    async fn authorize(
        &self,
        registry: &str,
        creds: &RegistryAuth,
        scope: &str,
        resp: reqwest::Response,
    ) -> Result<HeaderValue, SessionError> {
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|h| h.to_str().ok())
            .map(Challenge::parse)
            .unwrap_or(Challenge::Basic);
        let status = resp.status();
        let refused = |detail: String| SessionError::Unauthorized { registry: registry.to_string(), status, detail };
        match challenge {
            Challenge::Basic => match creds {
                RegistryAuth::Basic(user, password) => Ok(basic_header(user, password)),
                RegistryAuth::Bearer(token) => bearer_header(token).ok_or_else(|| refused(String::new())),
                RegistryAuth::Anonymous => Err(refused("no credentials for this registry".to_string())),
            },
            Challenge::Bearer { realm, service } => {
                let token = self.fetch_token(registry, creds, &realm, service.as_deref(), scope).await?;
                bearer_header(&token).ok_or(SessionError::BadToken { registry: registry.to_string(), source: None })
            }
        }
    }

    /// Gets a bearer token from `realm` (docker's token flow: GET with
    /// `service` and `scope`, Basic credentials if we have them).
    pub async fn fetch_token(
        &self,
        registry: &str,
        creds: &RegistryAuth,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String, SessionError> {
        let mut url = Url::parse(realm).map_err(|source| SessionError::BadUrl { url: realm.to_string(), source })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                q.append_pair("scope", s);
            }
            if let RegistryAuth::Basic(user, _) = creds {
                q.append_pair("account", user);
            }
        }
        let mut req = self.client.get(url.clone());
        if let RegistryAuth::Basic(user, password) = creds {
            req = req.header(AUTHORIZATION, basic_header(user, password));
        }
        let resp = req.send().await.map_err(|source| SessionError::Transport {
            method: Method::GET,
            url: without_query(&url),
            source,
        })?;
        if !resp.status().is_success() {
            return Err(SessionError::Unauthorized {
                registry: registry.to_string(),
                status: resp.status(),
                detail: error_body(resp).await,
            });
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let bytes = resp.bytes().await.map_err(|source| SessionError::Transport {
            method: Method::GET,
            url: without_query(&url),
            source,
        })?;
        let t: Token = serde_json::from_slice(&bytes)
            .map_err(|e| SessionError::BadToken { registry: registry.to_string(), source: Some(e) })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or(SessionError::BadToken { registry: registry.to_string(), source: None })
    }
}

/// Whether `url` points at `registry` (`host[:port]`; Docker Hub's API
/// host for `docker.io`).
fn same_authority(url: &Url, registry: &str) -> bool {
    let Some(host) = url.host_str() else { return false };
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    if registry == "docker.io" {
        // Docker Hub's API answers on both names; requests are built with
        // `index.docker.io` (oci-spec's resolution), docker uses `registry-1`.
        return ["registry-1.docker.io", "index.docker.io"].iter().any(|h| authority.eq_ignore_ascii_case(h));
    }
    authority.eq_ignore_ascii_case(registry) || authority.eq_ignore_ascii_case(registry.trim_end_matches(":443"))
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm=...` (or anything we do not understand).
    Basic,
    /// `Bearer realm="...",service="..."`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter.
        service: Option<String>,
    },
}

impl Challenge {
    /// Parses the header value (`Bearer realm="x",service="y",scope="z"`).
    pub fn parse(value: &str) -> Challenge {
        let Some(params) = value.trim().strip_prefix("Bearer ").or_else(|| value.trim().strip_prefix("bearer ")) else {
            return Challenge::Basic;
        };
        let mut realm = None;
        let mut service = None;
        for (k, v) in parse_params(params) {
            match k.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "service" => service = Some(v),
                _ => {}
            }
        }
        match realm {
            Some(realm) => Challenge::Bearer { realm, service },
            None => Challenge::Basic,
        }
    }
}

/// `k="v",k2=v2` pairs; quoted values may hold commas.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remainder) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_string(), &after[end..]),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key, value));
        rest = remainder.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// `Basic base64(user:password)`, marked sensitive so reqwest never prints it.
pub fn basic_header(user: &str, password: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Basic {}", base64_encode(format!("{user}:{password}").as_bytes())))
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

fn bearer_header(token: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// Standard base64 (with padding), as docker writes `auths` entries.
pub fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Delay after failed attempt `n` (1-based): 0.2 s doubling, plus up to 50 %
/// random jitter so parallel uploads that failed together do not retry in
/// lockstep.
pub fn backoff(n: u32) -> Duration {
    let base = INITIAL_BACKOFF * 2u32.saturating_pow(n.saturating_sub(1));
    // RandomState is seeded randomly per instance: a dependency-free source
    // of jitter, which needs no cryptographic quality.
    let r = RandomState::new().hash_one(n) % 1000;
    base + base.mul_f64(r as f64 / 2000.0)
}

/// `Retry-After` in seconds (the HTTP-date form falls back to backoff),
/// capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// A `Status` error from a response (reads the start of its body).
pub async fn status_error(method: &Method, url: &Url, resp: reqwest::Response) -> SessionError {
    let status = resp.status();
    let retry_after = retry_after(resp.headers());
    SessionError::Status {
        method: method.clone(),
        url: without_query(url),
        status,
        body: error_body(resp).await,
        retry_after,
    }
}

async fn error_body(resp: reqwest::Response) -> String {
    let bytes = resp.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)]);
    text.trim().to_string()
}

/// `url` without query and fragment: upload URLs carry opaque state there.
pub fn without_query(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Streams `len` bytes of `path` from `offset`, 1 MiB at a time.
async fn file_range_stream(
    path: PathBuf,
    offset: u64,
    len: u64,
) -> Result<impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static, SessionError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let read_err = |source| SessionError::ReadFile { path: path.clone(), source };
    let mut file = tokio::fs::File::open(&path).await.map_err(read_err)?;
    file.seek(std::io::SeekFrom::Start(offset)).await.map_err(read_err)?;
    Ok(futures_util::stream::try_unfold((file, len), |(mut file, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; (1usize << 20).min(left as usize)];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank during upload"));
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), (file, left - n as u64))))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a:pull""#
            ),
            Challenge::Bearer { realm: "https://auth.example/token".into(), service: Some("reg.example".into()) }
        );
        assert_eq!(Challenge::parse(r#"Basic realm="rbuild-test""#), Challenge::Basic);
        assert_eq!(
            Challenge::parse(r#"Bearer realm=https://a/t, service="x,y""#),
            Challenge::Bearer { realm: "https://a/t".into(), service: Some("x,y".into()) }
        );
    }

    #[test]
    fn credentials_only_for_the_registry_host() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(same_authority(&u("https://reg.example:5000/v2/x"), "reg.example:5000"));
        assert!(same_authority(&u("http://127.0.0.1:8080/v2/"), "127.0.0.1:8080"));
        assert!(same_authority(&u("https://registry-1.docker.io/v2/"), "docker.io"));
        assert!(same_authority(&u("https://index.docker.io/v2/library/busybox/manifests/latest"), "docker.io"));
        assert!(!same_authority(&u("https://production.cloudflare.docker.com/blobs"), "docker.io"));
        assert!(!same_authority(&u("https://evil.example/v2/x"), "reg.example:5000"));
        assert!(!same_authority(&u("https://reg.example:5001/v2/x"), "reg.example:5000"));
        assert!(!same_authority(&u("https://reg.example.evil/v2/x"), "reg.example"));
    }

    #[test]
    fn backoff_grows_with_bounded_jitter() {
        for n in 1..=4 {
            let base = INITIAL_BACKOFF * 2u32.pow(n - 1);
            let d = backoff(n);
            assert!(d >= base && d <= base + base / 2, "{d:?} for attempt {n}");
        }
    }

    #[test]
    fn retry_after_seconds_are_capped() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn basic_header_is_sensitive_and_encoded() {
        let h = basic_header("alice", "s3cr:et");
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Basic YWxpY2U6czNjcjpldA==");
        assert!(!format!("{h:?}").contains("YWxp"));
    }
}

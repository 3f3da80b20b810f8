//! The Bitbucket Data Center REST client: which files a push or a pull request changed (DESIGN
//! §5.1), for path filters; build statuses (`builds.rs`) and webhooks (`webhooks.rs`) use the
//! same call machinery. Branches and pull requests (reconciliation, §5.2) come next.
//!
//! What enters: a [`Server`] (the instance's base URL, context path included, and the
//! integration's access token), a [`RepositoryRef`], and the commits or the pull request to ask
//! about. What leaves: [`Changes`], the changed paths, marked `truncated` when Bitbucket's list was
//! cut or paging had to stop; or a [`CallError`], whose `Display` is one line carrying
//! Bitbucket's own messages and whose [`CallError::code`] is a stable reason for delivery logs.
//!
//! The guarantee: a call ends within `bitbucket.call_timeout_ms`, every page, retry and wait
//! included; at most `bitbucket.max_concurrency_per_host` requests are in flight to one
//! `host:port`; a 429 waits out its `Retry-After` when the deadline allows it; 429s, 5xx and
//! connection errors are retried with jittered exponential backoff at most `bitbucket.max_retries`
//! times; other 4xx are never retried; paging stops after `bitbucket.max_pages` pages or when
//! `nextPageStart` is missing or does not advance, and says so (`truncated`) instead of looping.
//! `http://` URLs need `bitbucket.allow_http`; `private://` hosts are refused. The token travels
//! only in the `Authorization` header, marked sensitive, and never reaches a log line or an error.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{self, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rand::Rng;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use inlet_core::config::BitbucketConfig;
use inlet_core::metrics::{BitbucketEndpoint, BitbucketMetrics, BitbucketOutcome};
use inlet_core::secret::Secret;

/// `limit` of the pull-request changes request: that endpoint is not paged, so this is the most
/// changes one answer can list (DESIGN §5.1).
pub const PULL_REQUEST_CHANGES_LIMIT: u32 = 1000;

/// Largest response body read; a larger one is an invalid answer, not an allocation.
const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// First retry backoff; doubled per attempt, capped at [`BACKOFF_MAX`], then jittered.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Longest `Retry-After` taken at its word (longer ones are past any deadline anyway).
const MAX_RETRY_AFTER_SECS: u64 = 3_600;
/// Bitbucket's messages kept per error, and characters kept per message.
const MAX_MESSAGES: usize = 5;
const MAX_MESSAGE_CHARS: usize = 300;

/// Everything but RFC 3986's unreserved characters is percent-encoded, in path segments and
/// query values alike.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A Bitbucket instance and the credentials to call it with.
#[derive(Debug, Clone)]
pub struct Server {
    /// `https://host[:port][/context-path]`, e.g. `https://git.example.com/bitbucket`.
    pub base_url: String,
    /// The integration's HTTP access token, sent as `Authorization: Bearer`.
    pub token: Secret,
}

/// A repository: its project key and slug.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepositoryRef {
    /// Project key, e.g. `INFRA` (or `~USER` for a personal repository).
    pub project_key: String,
    /// Repository slug, e.g. `network`.
    pub slug: String,
}

impl RepositoryRef {
    /// A repository from its project key and slug.
    pub fn new(project_key: impl Into<String>, slug: impl Into<String>) -> RepositoryRef {
        RepositoryRef {
            project_key: project_key.into(),
            slug: slug.into(),
        }
    }

    /// `PROJECT/slug` (the form stacks name repositories in); `None` unless it is exactly two
    /// non-empty parts.
    pub fn from_full_name(full_name: &str) -> Option<RepositoryRef> {
        let (project_key, slug) = full_name.split_once('/')?;
        if project_key.is_empty() || slug.is_empty() || slug.contains('/') {
            return None;
        }
        Some(RepositoryRef::new(project_key, slug))
    }
}

impl fmt::Display for RepositoryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project_key, self.slug)
    }
}

/// The files a push or a pull request changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// Every change read, in Bitbucket's order.
    pub changes: Vec<ChangedPath>,
    /// The list is incomplete: Bitbucket cut it, or paging stopped at a bound or on a page that
    /// did not advance. Path filters must then treat every stack as affected.
    pub truncated: bool,
    /// HTTP requests the call took (pages and retries).
    pub calls: u32,
}

/// One changed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedPath {
    /// Its path from the repository root, components joined with `/`.
    pub path: String,
    /// Where it came from, for a `MOVE` or `COPY`.
    pub src_path: Option<String>,
    /// Bitbucket's change type: `ADD`, `MODIFY`, `DELETE`, `MOVE`, `COPY` or `UNKNOWN`.
    pub kind: String,
}

impl ChangedPath {
    /// The path, then the source path of a move or copy: every path the change touches.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.path.as_str()).chain(self.src_path.as_deref())
    }
}

/// Why a [`Client`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `bitbucket.ca_bundle_file` could not be read or holds no usable certificate.
    #[error("cannot use the CA bundle {}: {reason}", path.display())]
    CaBundle {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the TLS configuration.
    #[error("cannot set up TLS for Bitbucket: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a call gave no answer. `Display` is one line, with Bitbucket's messages when it sent any.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Refused before any request: `http://` without `allow_http`, a `private://` host, a
    /// malformed base URL, no usable token.
    #[error("not calling Bitbucket: {reason}")]
    NotAllowed {
        /// Why.
        reason: String,
    },
    /// A 4xx other than 429 (never retried), or a 5xx after every retry.
    #[error(
        "Bitbucket answered {}{}{}",
        status_text(*status),
        attempts_note(*attempts),
        messages_note(messages)
    )]
    Status {
        /// The HTTP status.
        status: u16,
        /// Bitbucket's error messages (`errors[].message`).
        messages: Vec<String>,
        /// Attempts made.
        attempts: u32,
    },
    /// 429 after every retry, or with a `Retry-After` beyond the call's deadline.
    #[error(
        "Bitbucket rate-limited the call (429{}){}{}",
        retry_after_note(*retry_after_secs),
        attempts_note(*attempts),
        messages_note(messages)
    )]
    RateLimited {
        /// The last `Retry-After`, in seconds, if one was given.
        retry_after_secs: Option<u64>,
        /// Bitbucket's error messages.
        messages: Vec<String>,
        /// Attempts made.
        attempts: u32,
    },
    /// The call's deadline (`bitbucket.call_timeout_ms`) passed while waiting for an answer.
    #[error("Bitbucket did not answer within the call's {after_ms} ms deadline")]
    Timeout {
        /// The deadline, in milliseconds.
        after_ms: u64,
    },
    /// Connection, TLS or protocol errors after every retry.
    #[error("cannot reach Bitbucket at {host}: {reason}{}", attempts_note(*attempts))]
    Transport {
        /// `host:port`.
        host: String,
        /// The error and its causes.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A 2xx whose body is not what the endpoint documents, a body over the size cap, or an
    /// unexpected status such as a redirect.
    #[error("Bitbucket's answer is not what inlet expects: {reason}")]
    InvalidResponse {
        /// What is wrong with it.
        reason: String,
    },
}

impl CallError {
    /// A stable snake_case reason: `not_allowed`, `status_4xx`, `status_5xx`, `rate_limited`,
    /// `timeout`, `transport` or `invalid_response`.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::NotAllowed { .. } => "not_allowed",
            CallError::Status { status, .. } if *status >= 500 => "status_5xx",
            CallError::Status { .. } => "status_4xx",
            CallError::RateLimited { .. } => "rate_limited",
            CallError::Timeout { .. } => "timeout",
            CallError::Transport { .. } => "transport",
            CallError::InvalidResponse { .. } => "invalid_response",
        }
    }

    /// The HTTP status Bitbucket answered with, when the failure was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Status { status, .. } => Some(*status),
            CallError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// The `outcome` label of `inlet_bitbucket_calls_total`.
    pub fn outcome(&self) -> BitbucketOutcome {
        match self {
            CallError::NotAllowed { .. } => BitbucketOutcome::NotAllowed,
            CallError::Status { status, .. } if *status >= 500 => BitbucketOutcome::ServerError,
            CallError::Status { .. } => BitbucketOutcome::ClientError,
            CallError::RateLimited { .. } => BitbucketOutcome::RateLimited,
            CallError::Timeout { .. } => BitbucketOutcome::Timeout,
            CallError::Transport { .. } => BitbucketOutcome::Transport,
            CallError::InvalidResponse { .. } => BitbucketOutcome::ServerError,
        }
    }
}

fn status_text(status: u16) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    match reason {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(" after {attempts} attempts")
    } else {
        String::new()
    }
}

fn messages_note(messages: &[String]) -> String {
    if messages.is_empty() {
        String::new()
    } else {
        format!(": {}", messages.join("; "))
    }
}

fn retry_after_note(retry_after_secs: Option<u64>) -> String {
    retry_after_secs
        .map(|secs| format!(", Retry-After {secs} s"))
        .unwrap_or_default()
}

/// The Bitbucket REST client. Cheap to clone: clones share connections and per-host limits.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    limits: Limits,
    /// One semaphore per `host:port`, bounding requests in flight to it.
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
    metrics: BitbucketMetrics,
}

/// The bounds of [`BitbucketConfig`] a call needs.
#[derive(Debug, Clone, Copy)]
struct Limits {
    allow_http: bool,
    call_timeout: Duration,
    max_concurrency_per_host: usize,
    max_retries: u32,
    max_pages: u32,
    page_limit: u32,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `bitbucket.max_pages`: the most pages one listing reads.
    pub fn max_pages(&self) -> u32 {
        self.inner.limits.max_pages
    }

    /// A client with `config`'s bounds, trusting the platform's CA roots plus
    /// `config.ca_bundle_file`. Call it once per process: it reads the platform's roots.
    pub fn new(config: &BitbucketConfig, metrics: BitbucketMetrics) -> Result<Client, ClientError> {
        let tls = tls_config(config.ca_bundle_file.as_deref())?;
        let mut connector = HttpConnector::new();
        // The TLS connector wraps this one and handles https:// itself.
        connector.enforce_http(false);
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(config.max_concurrency_per_host)
            .build(https);
        let limits = Limits {
            allow_http: config.allow_http,
            call_timeout: Duration::from_millis(config.call_timeout_ms),
            max_concurrency_per_host: config.max_concurrency_per_host,
            max_retries: config.max_retries,
            max_pages: config.max_pages,
            page_limit: config.page_limit,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                limits,
                hosts: Mutex::new(HashMap::new()),
                metrics,
            }),
        })
    }

    /// `GET /rest/api/latest/projects/{key}/repos/{slug}/compare/changes?from=..&to=..` (`to`
    /// omitted: against the default branch, as for a new branch), following pages.
    pub async fn compare_changes(
        &self,
        server: &Server,
        repository: &RepositoryRef,
        from: &str,
        to: Option<&str>,
    ) -> Result<Changes, CallError> {
        let endpoint = BitbucketEndpoint::CompareChanges;
        let span = call_span(endpoint, repository);
        self.observe(endpoint, async {
            let mut call = self.begin(endpoint, server)?;
            let path = repository_path(repository, &["compare", "changes"]);
            let mut query = vec![("from", from.to_owned())];
            if let Some(to) = to {
                query.push(("to", to.to_owned()));
            }
            call.all_pages(&path, query).await
        })
        .instrument(span)
        .await
    }

    /// `GET …/pull-requests/{id}/changes?limit=1000`: not paged, so `isLastPage: false` means
    /// the list is truncated.
    pub async fn pull_request_changes(
        &self,
        server: &Server,
        repository: &RepositoryRef,
        pull_request_id: u64,
    ) -> Result<Changes, CallError> {
        let endpoint = BitbucketEndpoint::PullRequestChanges;
        let span = call_span(endpoint, repository);
        self.observe(endpoint, async {
            let mut call = self.begin(endpoint, server)?;
            let id = pull_request_id.to_string();
            let path = repository_path(repository, &["pull-requests", &id, "changes"]);
            call.single_page(&path).await
        })
        .instrument(span)
        .await
    }

    /// Checks the server and opens a call: its deadline starts now.
    pub(crate) fn begin(
        &self,
        endpoint: BitbucketEndpoint,
        server: &Server,
    ) -> Result<Call<'_>, CallError> {
        let limits = self.inner.limits;
        let instance = Instance::parse(&server.base_url, limits.allow_http)?;
        let authorization = bearer(&server.token)?;
        Ok(Call {
            inner: &self.inner,
            endpoint,
            instance,
            authorization,
            deadline: Instant::now() + limits.call_timeout,
            requests: 0,
            retry_failures: true,
        })
    }

    /// Runs one call, then records its outcome and duration, and logs a failure.
    pub(crate) async fn observe<T>(
        &self,
        endpoint: BitbucketEndpoint,
        call: impl Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => BitbucketOutcome::Ok,
            Err(err) => err.outcome(),
        };
        let seconds = started.elapsed().as_secs_f64();
        self.inner.metrics.call(endpoint, outcome, seconds);
        match &result {
            Ok(_) => tracing::debug!(seconds, "Bitbucket call answered"),
            Err(err) => tracing::warn!(code = err.code(), error = %err, "Bitbucket call failed"),
        }
        result
    }
}

pub(crate) fn call_span(endpoint: BitbucketEndpoint, repository: &RepositoryRef) -> tracing::Span {
    tracing::info_span!(
        "bitbucket",
        endpoint = endpoint.as_str(),
        repository = %repository
    )
}

/// The rustls configuration: the ring provider, the platform's roots and the extra bundle.
fn tls_config(ca_bundle_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let roots = root_store(ca_bundle_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn root_store(ca_bundle_file: Option<&Path>) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::warn!(error = %err, "cannot load some of the platform's CA certificates");
    }
    let (_, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!(
            ignored,
            "platform CA certificates rustls cannot use were skipped"
        );
    }
    if let Some(path) = ca_bundle_file {
        add_ca_bundle(&mut roots, path)?;
    }
    if roots.is_empty() {
        tracing::warn!(
            "no CA certificates to trust: calls to https:// Bitbucket servers will fail; \
             install the platform's CA certificates or set bitbucket.ca_bundle_file"
        );
    }
    Ok(roots)
}

fn add_ca_bundle(roots: &mut RootCertStore, path: &Path) -> Result<(), ClientError> {
    let bundle_error = |reason: String| ClientError::CaBundle {
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|err| bundle_error(err.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bundle_error(err.to_string()))?;
    if certificates.is_empty() {
        return Err(bundle_error("it holds no PEM certificate".to_owned()));
    }
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|err| bundle_error(err.to_string()))?;
    }
    Ok(())
}

/// A base URL, checked: an allowed scheme, an authority, no credentials or query; its context
/// path kept.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instance {
    scheme: &'static str,
    authority: String,
    /// `""` or `/context`, without a trailing slash.
    context_path: String,
    /// `host:port`, lower-case: the key of the concurrency limit.
    host_key: String,
}

impl Instance {
    fn parse(base_url: &str, allow_http: bool) -> Result<Instance, CallError> {
        let refuse = |reason: String| Err(CallError::NotAllowed { reason });
        let text = base_url.trim();
        if has_scheme(text, "private") {
            return refuse(format!(
                "`{text}` is reached through a VCS agent pool, and inlet has no VCS agent"
            ));
        }
        if text.contains('@') {
            return refuse("the base URL must not carry credentials".to_owned());
        }
        let uri: Uri = match text.parse() {
            Ok(uri) => uri,
            Err(err) => return refuse(format!("`{text}` is not a URL: {err}")),
        };
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => "https",
            Some(s) if s.eq_ignore_ascii_case("http") && allow_http => "http",
            Some(s) if s.eq_ignore_ascii_case("http") => {
                return refuse(format!(
                    "`{text}` is plain http://, which sends the access token in clear; \
                     set INLET_BITBUCKET_ALLOW_HTTP=true (bitbucket.allow_http) in labs and tests"
                ));
            }
            _ => return refuse(format!("`{text}` must start with https://")),
        };
        let Some(authority) = uri.authority() else {
            return refuse(format!("`{text}` names no host"));
        };
        if uri.query().is_some() {
            return refuse(format!("`{text}` must not carry a query"));
        }
        let default_port = if scheme == "https" { 443 } else { 80 };
        Ok(Instance {
            scheme,
            authority: authority.as_str().to_owned(),
            context_path: uri.path().trim_end_matches('/').to_owned(),
            host_key: format!(
                "{}:{}",
                authority.host().to_ascii_lowercase(),
                authority.port_u16().unwrap_or(default_port)
            ),
        })
    }

    /// `{base}/rest/api/latest{path}?{query}`, query values percent-encoded.
    /// `path` under `/rest/api/latest`, or as given when it names another REST root
    /// (`/rest/build-status/1.0/…`).
    fn uri(&self, path: &str, query: &[(&str, String)]) -> Result<Uri, CallError> {
        let root = if path.starts_with("/rest/") {
            ""
        } else {
            "/rest/api/latest"
        };
        let mut text = format!(
            "{}://{}{}{root}{path}",
            self.scheme, self.authority, self.context_path
        );
        for (index, (name, value)) in query.iter().enumerate() {
            text.push(if index == 0 { '?' } else { '&' });
            text.push_str(name);
            text.push('=');
            text.extend(utf8_percent_encode(value, COMPONENT));
        }
        text.parse().map_err(|err| CallError::NotAllowed {
            reason: format!("cannot build a request URL: {err}"),
        })
    }
}

fn has_scheme(text: &str, scheme: &str) -> bool {
    text.len() > scheme.len() + 3
        && text.is_char_boundary(scheme.len())
        && text[..scheme.len()].eq_ignore_ascii_case(scheme)
        && text[scheme.len()..].starts_with("://")
}

/// `/projects/{key}/repos/{slug}/{tail…}`, every segment percent-encoded.
pub(crate) fn repository_path(repository: &RepositoryRef, tail: &[&str]) -> String {
    let mut path = format!(
        "/projects/{}/repos/{}",
        segment(&repository.project_key),
        segment(&repository.slug)
    );
    for part in tail {
        path.push('/');
        path.push_str(&segment(part));
    }
    path
}

pub(crate) fn segment(text: &str) -> String {
    // `.` and `..` are unreserved but would walk the path: spell them out.
    match text {
        "." => "%2E".to_owned(),
        ".." => "%2E%2E".to_owned(),
        _ => utf8_percent_encode(text, COMPONENT).to_string(),
    }
}

fn bearer(token: &Secret) -> Result<HeaderValue, CallError> {
    if token.is_empty() {
        return Err(CallError::NotAllowed {
            reason: "the integration has no access token".to_owned(),
        });
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        CallError::NotAllowed {
            reason: "the access token holds characters an HTTP header cannot carry".to_owned(),
        }
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// One client call: its deadline, credentials and the requests it made so far.
pub(crate) struct Call<'a> {
    inner: &'a Inner,
    endpoint: BitbucketEndpoint,
    instance: Instance,
    authorization: HeaderValue,
    deadline: Instant,
    requests: u32,
    /// Whether 5xx and connection errors are retried (429s always are: Bitbucket did nothing).
    retry_failures: bool,
}

/// A page of changes as Bitbucket sends it (`start`, `size` and `limit` are not needed).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChangesPage {
    #[serde(default)]
    values: Vec<RestChange>,
    /// Absent counts as `false`: the list may go on, so it is never taken as complete.
    #[serde(default)]
    is_last_page: bool,
    next_page_start: Option<u64>,
}

/// `RestChange`: only what path filters need.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestChange {
    path: Option<RestPath>,
    src_path: Option<RestPath>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `RestPath`, with the `toString` real responses carry although the schema omits it.
#[derive(Debug, Deserialize)]
struct RestPath {
    #[serde(default)]
    components: Vec<String>,
    #[serde(rename = "toString")]
    to_string: Option<String>,
}

impl RestPath {
    fn joined(&self) -> Option<String> {
        if self.components.is_empty() {
            self.to_string.clone().filter(|path| !path.is_empty())
        } else {
            Some(self.components.join("/"))
        }
    }
}

impl TryFrom<RestChange> for ChangedPath {
    type Error = CallError;

    fn try_from(change: RestChange) -> Result<ChangedPath, CallError> {
        let Some(path) = change.path.as_ref().and_then(RestPath::joined) else {
            return Err(CallError::InvalidResponse {
                reason: "a change has no path".to_owned(),
            });
        };
        Ok(ChangedPath {
            path,
            src_path: change.src_path.as_ref().and_then(RestPath::joined),
            kind: change.kind.unwrap_or_else(|| "UNKNOWN".to_owned()),
        })
    }
}

fn changed_paths(values: Vec<RestChange>) -> Result<Vec<ChangedPath>, CallError> {
    values.into_iter().map(ChangedPath::try_from).collect()
}

/// What one request came to.
enum Attempt {
    /// 2xx: the body.
    Answered(Bytes),
    /// Worth another try (429, 5xx, connection error), after `retry_after` when Bitbucket said.
    Retryable {
        error: CallError,
        retry_after: Option<Duration>,
    },
    /// Not worth another try.
    Failed(CallError),
}

impl Call<'_> {
    /// Follows `start`/`nextPageStart` until `isLastPage`, within `max_pages` pages and
    /// `max_pages × page_limit` changes; stopping early is reported as truncation.
    async fn all_pages(
        &mut self,
        path: &str,
        query: Vec<(&str, String)>,
    ) -> Result<Changes, CallError> {
        let Limits {
            max_pages,
            page_limit,
            ..
        } = self.inner.limits;
        let max_changes = max_pages as usize * page_limit as usize;
        let mut changes = Vec::new();
        let mut start = 0;
        for _ in 0..max_pages {
            let mut page_query = query.clone();
            page_query.push(("start", start.to_string()));
            page_query.push(("limit", page_limit.to_string()));
            let page: ChangesPage = self.get_json(path, &page_query).await?;
            changes.extend(changed_paths(page.values)?);
            if page.is_last_page {
                return Ok(self.changes(changes, false));
            }
            if changes.len() >= max_changes {
                tracing::warn!(max_changes, "stopped paging: too many changes");
                changes.truncate(max_changes);
                return Ok(self.changes(changes, true));
            }
            match page.next_page_start {
                Some(next) if next > start => start = next,
                next => {
                    tracing::warn!(
                        start,
                        next_page_start = ?next,
                        "stopped paging: Bitbucket's nextPageStart is missing or does not advance"
                    );
                    return Ok(self.changes(changes, true));
                }
            }
        }
        tracing::warn!(max_pages, "stopped paging at bitbucket.max_pages");
        Ok(self.changes(changes, true))
    }

    /// One page at most (the pull-request changes endpoint): `isLastPage: false` is truncation.
    async fn single_page(&mut self, path: &str) -> Result<Changes, CallError> {
        let query = [
            ("limit", PULL_REQUEST_CHANGES_LIMIT.to_string()),
            // Comment counts cost Bitbucket work and path filters do not need them.
            ("withComments", "false".to_owned()),
        ];
        let page: ChangesPage = self.get_json(path, &query).await?;
        let truncated = !page.is_last_page;
        if truncated {
            tracing::warn!(
                limit = PULL_REQUEST_CHANGES_LIMIT,
                "Bitbucket truncated the pull request's changes"
            );
        }
        let changes = changed_paths(page.values)?;
        Ok(self.changes(changes, truncated))
    }

    fn changes(&self, changes: Vec<ChangedPath>, truncated: bool) -> Changes {
        Changes {
            changes,
            truncated,
            calls: self.requests,
        }
    }

    /// Like [`Call::request`], with a 404 read as "not there" (`None`): a branch, a status or a
    /// webhook that does not exist, or a resource the server does not have.
    pub(crate) async fn request_if_present(
        &mut self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Option<Bytes>, CallError> {
        match self.request(method, path, query, body).await {
            Ok(answer) => Ok(Some(answer)),
            Err(CallError::Status { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Retries only 429s from now on: for a write that must not happen twice (creating a webhook:
    /// a 5xx or a lost connection may come after Bitbucket created it).
    pub(crate) fn without_failure_retries(&mut self) {
        self.retry_failures = false;
    }

    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CallError> {
        let body = self.request(Method::GET, path, query, None).await?;
        decode(&body)
    }

    /// `method` on `path` with an optional JSON `body`, retried on 429, 5xx and connection
    /// errors while attempts and the deadline last: for writes whose repetition is harmless
    /// (a build status replaces the one with its key; an update sets the same fields). The
    /// answer's body (empty for a 204).
    pub(crate) async fn request(
        &mut self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Bytes, CallError> {
        let uri = self.instance.uri(path, query)?;
        let body = body.map(|value| Bytes::from(value.to_string()));
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.requests += 1;
            match self.attempt(&method, &uri, body.as_ref(), attempts).await {
                Attempt::Answered(body) => return Ok(body),
                Attempt::Failed(error) => return Err(error),
                Attempt::Retryable { error, .. }
                    if !self.retry_failures && !matches!(error, CallError::RateLimited { .. }) =>
                {
                    return Err(error);
                }
                Attempt::Retryable { error, .. } if attempts > self.inner.limits.max_retries => {
                    return Err(error);
                }
                Attempt::Retryable { error, retry_after } => {
                    self.wait_to_retry(error, retry_after, attempts).await?;
                }
            }
        }
    }

    /// Sleeps before the next attempt: `Retry-After` when given, else jittered backoff. When
    /// the wait would pass the deadline, gives up now with `error`.
    async fn wait_to_retry(
        &self,
        error: CallError,
        retry_after: Option<Duration>,
        attempts: u32,
    ) -> Result<(), CallError> {
        let wait = retry_after.unwrap_or_else(|| backoff(attempts));
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if wait >= remaining {
            tracing::warn!(
                attempts,
                wait_ms = wait.as_millis() as u64,
                error = %error,
                "not retrying Bitbucket: the wait would pass the call's deadline"
            );
            return Err(error);
        }
        tracing::warn!(
            attempts,
            wait_ms = wait.as_millis() as u64,
            error = %error,
            "retrying Bitbucket"
        );
        self.inner.metrics.retry(self.endpoint);
        tokio::time::sleep(wait).await;
        if retry_after.is_some() {
            self.inner
                .metrics
                .rate_limited(self.endpoint, wait.as_secs_f64());
        }
        Ok(())
    }

    /// One request within the deadline, classified.
    async fn attempt(
        &self,
        method: &Method,
        uri: &Uri,
        body: Option<&Bytes>,
        attempts: u32,
    ) -> Attempt {
        let sent = self.send(method, uri, body, attempts);
        match tokio::time::timeout_at(self.deadline, sent).await {
            Err(_) => Attempt::Failed(CallError::Timeout {
                after_ms: self.inner.limits.call_timeout.as_millis() as u64,
            }),
            Ok(Err(failed)) => failed,
            Ok(Ok((status, headers, body))) => classify(status, &headers, body, attempts),
        }
    }

    /// Sends the request under the host's concurrency limit and reads the capped body. A
    /// transport failure is retryable unless TLS refused the server (a certificate does not
    /// heal by itself).
    async fn send(
        &self,
        method: &Method,
        uri: &Uri,
        body: Option<&Bytes>,
        attempts: u32,
    ) -> Result<(StatusCode, HeaderMap, Bytes), Attempt> {
        let transport = |err: &(dyn std::error::Error + 'static)| {
            let error = CallError::Transport {
                host: self.instance.host_key.clone(),
                reason: error_chain(err),
                attempts,
            };
            if is_tls_refusal(err) {
                Attempt::Failed(error)
            } else {
                Attempt::Retryable {
                    error,
                    retry_after: None,
                }
            }
        };
        let semaphore = self.inner.host_limit(&self.instance.host_key);
        let _permit = semaphore.acquire().await.map_err(|err| transport(&err))?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri.clone())
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("inlet/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body.cloned().unwrap_or_default()))
            .map_err(|err| {
                Attempt::Failed(CallError::NotAllowed {
                    reason: format!("cannot build the request: {err}"),
                })
            })?;
        let response = self
            .inner
            .http
            .request(request)
            .await
            .map_err(|err| transport(&err))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|err| {
                if err.is::<http_body_util::LengthLimitError>() {
                    Attempt::Failed(CallError::InvalidResponse {
                        reason: format!("the body is over {MAX_RESPONSE_BYTES} bytes"),
                    })
                } else {
                    transport(err.as_ref())
                }
            })?
            .to_bytes();
        Ok((parts.status, parts.headers, body))
    }
}

impl Inner {
    fn host_limit(&self, host_key: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        hosts
            .entry(host_key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limits.max_concurrency_per_host)))
            .clone()
    }
}

/// A 2xx body as the documented JSON.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CallError> {
    serde_json::from_slice(body).map_err(|err| CallError::InvalidResponse {
        reason: format!("the body is not the documented JSON: {err}"),
    })
}

/// 2xx → the body; 429 and 5xx → retryable; other statuses → failed.
fn classify(status: StatusCode, headers: &HeaderMap, body: Bytes, attempts: u32) -> Attempt {
    if status.is_success() {
        return Attempt::Answered(body);
    }
    let messages = error_messages(&body);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = retry_after(headers);
        return Attempt::Retryable {
            error: CallError::RateLimited {
                retry_after_secs: retry_after.map(|d| d.as_secs()),
                messages,
                attempts,
            },
            retry_after,
        };
    }
    let error = CallError::Status {
        status: status.as_u16(),
        messages,
        attempts,
    };
    if status.is_server_error() {
        Attempt::Retryable {
            error,
            retry_after: None,
        }
    } else if status.is_client_error() {
        Attempt::Failed(error)
    } else {
        Attempt::Failed(CallError::InvalidResponse {
            reason: format!("unexpected status {}", status_text(status.as_u16())),
        })
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Bitbucket; it falls back to
/// backoff).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(MAX_RETRY_AFTER_SECS)))
}

/// Exponential backoff from [`BACKOFF_BASE`], capped, with jitter over its upper half.
fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX)
        .as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(ceiling / 2..=ceiling))
}

/// Bitbucket's `{"errors":[{"message": …, "exceptionName": …}]}`, as one-line messages.
fn error_messages(body: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        errors: Vec<ErrorMessage>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorMessage {
        message: Option<String>,
        exception_name: Option<String>,
    }
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return Vec::new();
    };
    parsed
        .errors
        .into_iter()
        .filter_map(|error| error.message.or(error.exception_name))
        .map(|message| one_line(&message))
        .filter(|message| !message.is_empty())
        .take(MAX_MESSAGES)
        .collect()
}

/// Whitespace runs and control characters as one space, at most [`MAX_MESSAGE_CHARS`].
fn one_line(text: &str) -> String {
    let mut line = String::new();
    for word in text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
    {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if line.chars().count() > MAX_MESSAGE_CHARS {
        line = line.chars().take(MAX_MESSAGE_CHARS).collect();
        line.push('…');
    }
    line
}

/// Whether rustls refused the server (its certificate, or the handshake) somewhere in the chain.
/// rustls errors arrive wrapped in `io::Error`s, whose `source` skips what they wrap: descend
/// into those with `get_ref`.
fn is_tls_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(current) = cause {
        if current.is::<rustls::Error>() {
            return true;
        }
        cause = match current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    false
}

/// An error and its causes, `: `-separated (hyper's own message alone says little).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    one_line(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Base URLs: the context path is kept, a trailing slash dropped, ports defaulted; http
    /// needs allow_http; private://, credentials, queries and other schemes are refused.
    #[test]
    fn base_urls() {
        let instance = Instance::parse("https://Git.Example.com/bitbucket/", false).expect("ok");
        assert_eq!(instance.context_path, "/bitbucket");
        assert_eq!(instance.host_key, "git.example.com:443");
        let uri = instance
            .uri(
                &repository_path(&RepositoryRef::new("INFRA", "net work"), &["compare"]),
                &[("from", "refs/heads/a&b=c+d".to_owned())],
            )
            .expect("uri");
        assert_eq!(
            uri.to_string(),
            "https://Git.Example.com/bitbucket/rest/api/latest/projects/INFRA/repos/net%20work/compare?from=refs%2Fheads%2Fa%26b%3Dc%2Bd"
        );
        let root = Instance::parse("https://git.example.com:8443", false).expect("ok");
        assert_eq!(
            (root.context_path.as_str(), root.host_key.as_str()),
            ("", "git.example.com:8443")
        );
        let lab = Instance::parse("http://127.0.0.1:7990", true).expect("http allowed");
        assert_eq!(lab.host_key, "127.0.0.1:7990");

        for (url, allow_http, needle) in [
            (
                "http://git.example.com",
                false,
                "INLET_BITBUCKET_ALLOW_HTTP",
            ),
            ("private://pool-1", true, "VCS agent"),
            ("PRIVATE://pool-1", true, "VCS agent"),
            ("https://user:pw@git.example.com", false, "credentials"),
            ("https://git.example.com/?x=1", false, "query"),
            ("ftp://git.example.com", true, "https://"),
            ("git.example.com", true, "https://"),
            ("", true, "not a URL"),
        ] {
            let err = Instance::parse(url, allow_http).expect_err(url);
            assert_eq!(err.code(), "not_allowed", "{url}");
            assert!(err.to_string().contains(needle), "{url}: {err}");
            assert!(!err.to_string().contains("pw"), "{err}");
        }
    }

    /// Path segments that would walk the path are spelled out; others are encoded.
    #[test]
    fn segments() {
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("~BOB"), "~BOB");
        assert_eq!(segment("a/b"), "a%2Fb");
        assert_eq!(segment("repo.git"), "repo.git");
    }

    /// The token is sent as a sensitive Bearer header; empty or unprintable tokens are refused
    /// without showing them.
    #[test]
    fn bearer_header() {
        let value = bearer(&Secret::new("abc123")).expect("header");
        assert_eq!(value.to_str().ok(), Some("Bearer abc123"));
        assert!(value.is_sensitive());
        assert_eq!(
            bearer(&Secret::new("")).map_err(|e| e.code()),
            Err("not_allowed")
        );
        let err = bearer(&Secret::new("bad\ntoken-xyz")).expect_err("newline");
        assert!(!err.to_string().contains("token-xyz"), "{err}");
    }

    /// Bitbucket's error body becomes one-line messages; other bodies give none.
    #[test]
    fn error_bodies() {
        let body = br#"{"errors":[{"context":null,"message":"Repository INFRA/x\ndoes not exist.","exceptionName":"com.atlassian.bitbucket.repository.NoSuchRepositoryException"},{"context":null,"message":null,"exceptionName":"Other"}]}"#;
        assert_eq!(
            error_messages(body),
            vec!["Repository INFRA/x does not exist.", "Other"]
        );
        assert!(error_messages(b"<html>Bad gateway</html>").is_empty());
        assert!(error_messages(b"").is_empty());
        let long = format!(r#"{{"errors":[{{"message":"{}"}}]}}"#, "x".repeat(1000));
        assert_eq!(
            error_messages(long.as_bytes())[0].chars().count(),
            MAX_MESSAGE_CHARS + 1
        );
        let err = CallError::Status {
            status: 404,
            messages: error_messages(body),
            attempts: 1,
        };
        assert_eq!(
            err.to_string(),
            "Bitbucket answered 404 Not Found: Repository INFRA/x does not exist.; Other"
        );
        assert_eq!((err.code(), err.status()), ("status_4xx", Some(404)));
    }

    /// Statuses are classified: 2xx answered, 429 and 5xx retryable, other 4xx and 3xx failed.
    #[test]
    fn classification() {
        let mut headers = HeaderMap::new();
        assert!(matches!(
            classify(StatusCode::OK, &headers, Bytes::new(), 1),
            Attempt::Answered(_)
        ));
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static(" 7 "));
        match classify(StatusCode::TOO_MANY_REQUESTS, &headers, Bytes::new(), 2) {
            Attempt::Retryable { error, retry_after } => {
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
                assert_eq!(error.code(), "rate_limited");
                assert_eq!(
                    error.to_string(),
                    "Bitbucket rate-limited the call (429, Retry-After 7 s) after 2 attempts"
                );
            }
            _ => panic!("429 is retryable"),
        }
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), Bytes::new(), 1),
            Attempt::Retryable {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            classify(StatusCode::FORBIDDEN, &HeaderMap::new(), Bytes::new(), 1),
            Attempt::Failed(CallError::Status { status: 403, .. })
        ));
        assert!(matches!(
            classify(StatusCode::FOUND, &HeaderMap::new(), Bytes::new(), 1),
            Attempt::Failed(CallError::InvalidResponse { .. })
        ));
        let mut date = HeaderMap::new();
        date.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date), None);
    }

    /// Backoff doubles from 100 ms, stays within its jitter band and is capped at 2 s.
    #[test]
    fn backoff_bounds() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let third = backoff(3);
            assert!((200..=400).contains(&third.as_millis()), "{third:?}");
            let late = backoff(30);
            assert!((1000..=2000).contains(&late.as_millis()), "{late:?}");
        }
    }

    /// Paths come from components, else from toString; a change without either is invalid.
    #[test]
    fn change_paths() {
        let change: RestChange = serde_json::from_str(
            r#"{"type":"MOVE","path":{"components":["infra","app","main.tf"],"toString":"ignored"},
                "srcPath":{"toString":"old/main.tf"}}"#,
        )
        .expect("json");
        let changed = ChangedPath::try_from(change).expect("path");
        assert_eq!(changed.path, "infra/app/main.tf");
        assert_eq!(changed.src_path.as_deref(), Some("old/main.tf"));
        assert_eq!(changed.kind, "MOVE");
        assert_eq!(
            changed.paths().collect::<Vec<_>>(),
            ["infra/app/main.tf", "old/main.tf"]
        );
        let no_path: RestChange = serde_json::from_str(r#"{"type":"ADD"}"#).expect("json");
        assert_eq!(
            ChangedPath::try_from(no_path).map_err(|e| e.code()),
            Err("invalid_response")
        );
    }

    /// A certificate refusal is found however deep io errors wrap it; other errors are not one.
    #[test]
    fn tls_refusals() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let nested = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            refused,
        ));
        assert!(is_tls_refusal(&nested));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!is_tls_refusal(&std::io::Error::other(reset)));
        assert!(error_chain(&nested).contains("invalid peer certificate"));
    }

    /// Full names split into project and slug only when well-formed.
    #[test]
    fn full_names() {
        assert_eq!(
            RepositoryRef::from_full_name("INFRA/network"),
            Some(RepositoryRef::new("INFRA", "network"))
        );
        assert_eq!(
            RepositoryRef::from_full_name("~BOB/network").map(|r| r.to_string()),
            Some("~BOB/network".to_owned())
        );
        for bad in ["", "INFRA", "/x", "INFRA/", "A/b/c"] {
            assert_eq!(RepositoryRef::from_full_name(bad), None, "{bad}");
        }
    }

    /// A CA bundle without certificates, or missing, is an error naming the file.
    #[test]
    fn ca_bundles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = tls_config(Some(&empty)).expect_err("no certificate");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let missing = dir.path().join("missing.pem");
        assert!(tls_config(Some(&missing)).is_err());
        tls_config(None).expect("platform roots only");
    }
}

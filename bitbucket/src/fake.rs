//! A fake Bitbucket Data Center server, for tests only. It is compiled always (it is small, and
//! other crates' tests start it) but nothing in production uses it.
//!
//! What enters: HTTP requests to `127.0.0.1:PORT` under the context path [`CONTEXT_PATH`], as
//! [`crate::client::Client`] sends them. What leaves: answers in the JSON shapes of Atlassian's
//! OpenAPI document for Bitbucket Data Center 9.2 — paged `{size, limit, isLastPage, start,
//! nextPageStart, values}` lists of `RestChange` (with the `path.toString` real servers send
//! although the schema omits it), and errors as `{"errors":[{"context":null, "message":…,
//! "exceptionName":…}]}`. Every request is recorded ([`FakeBitbucket::requests`]); failures,
//! delays, small pages and a server that never reports its last page can be injected.
//!
//! The guarantee: it listens on loopback only, answers only what a test configured (an unknown
//! compare or pull request is a 404 like Bitbucket's), and stops when dropped.
//!
//! Served now: `GET …/compare/changes` and `GET …/pull-requests/{id}/changes` here, build statuses
//! in `fake_builds.rs` and webhooks in `fake_webhooks.rs` (child modules sharing `State`, each
//! hooked into `State::answer`). To serve another endpoint (branches, pull requests): add its
//! module the same way, or a [`Route`] variant here.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use inlet_core::CancellationToken;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};

use crate::client::Server;
use inlet_core::secret::Secret;

/// The context path the fake serves under, as an on-premises Bitbucket at `https://host/bitbucket`.
pub const CONTEXT_PATH: &str = "/bitbucket";

/// Bitbucket's page size when a request gives no `limit`.
const DEFAULT_LIMIT: usize = 25;

/// A running fake Bitbucket. Cheap to query from tests; stops when dropped.
pub struct FakeBitbucket {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path as sent, context path included, still percent-encoded.
    pub full_path: String,
    /// The path below [`CONTEXT_PATH`] (`/rest/api/latest/…`), still percent-encoded; the whole
    /// path when the request was outside the context path.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The request body (at most 1 MiB is read).
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The decoded value of query parameter `name` (its first occurrence).
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_params(self.query.as_deref())
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

/// A changed file the fake reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeChange {
    /// Path from the repository root, `/`-separated.
    pub path: String,
    /// Source path of a `MOVE` or `COPY`.
    pub src_path: Option<String>,
    /// `ADD`, `MODIFY`, `DELETE`, `MOVE` or `COPY`.
    pub kind: &'static str,
}

impl FakeChange {
    fn new(kind: &'static str, path: impl Into<String>, src_path: Option<String>) -> FakeChange {
        FakeChange {
            path: path.into(),
            src_path,
            kind,
        }
    }

    /// A modified file.
    pub fn modify(path: impl Into<String>) -> FakeChange {
        FakeChange::new("MODIFY", path, None)
    }

    /// An added file.
    pub fn add(path: impl Into<String>) -> FakeChange {
        FakeChange::new("ADD", path, None)
    }

    /// A deleted file.
    pub fn delete(path: impl Into<String>) -> FakeChange {
        FakeChange::new("DELETE", path, None)
    }

    /// A file moved from `from` to `to`.
    pub fn moved(from: impl Into<String>, to: impl Into<String>) -> FakeChange {
        FakeChange::new("MOVE", to, Some(from.into()))
    }

    /// A file copied from `from` to `to`.
    pub fn copied(from: impl Into<String>, to: impl Into<String>) -> FakeChange {
        FakeChange::new("COPY", to, Some(from.into()))
    }
}

#[path = "fake_builds.rs"]
mod builds;
pub use builds::PostedBuildStatus;
#[path = "fake_refs.rs"]
mod refs;
#[path = "fake_webhooks.rs"]
mod webhooks;
pub use refs::FakePullRequest;
pub use webhooks::{FakeWebhook, WebhookWrite};

/// What tests configured, and what the fake saw.
#[derive(Default)]
struct State {
    /// Build statuses (`fake_builds.rs`).
    builds: builds::Builds,
    /// Branches and pull requests (`fake_refs.rs`).
    refs: refs::Refs,
    /// Webhooks (`fake_webhooks.rs`).
    webhooks: webhooks::Webhooks,
    /// (`PROJ/slug`, from, to) → changes.
    compares: HashMap<(String, String, Option<String>), Vec<FakeChange>>,
    /// What any other compare answers (`None`: 404, as for an unknown commit).
    default_compare: Option<Vec<FakeChange>>,
    /// (`PROJ/slug`, id) → changes, and whether Bitbucket cut the list.
    pull_request_changes: HashMap<(String, u64), (Vec<FakeChange>, bool)>,
    page_size: Option<usize>,
    failures: Option<InjectedFailure>,
    delay: Duration,
    never_last_page: bool,
    token: Option<String>,
    requests: Vec<RecordedRequest>,
    in_flight: usize,
    max_in_flight: usize,
}

#[derive(Debug, Clone, Copy)]
struct InjectedFailure {
    remaining: usize,
    status: u16,
    retry_after_secs: Option<u32>,
}

/// An endpoint the fake serves, with the repository it names (`PROJ/slug`, decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    CompareChanges { repository: String },
    PullRequestChanges { repository: String, id: u64 },
}

impl Route {
    /// `/rest/api/latest/projects/{key}/repos/{slug}/…` → the endpoint, if the fake serves it.
    fn parse(path: &str) -> Option<Route> {
        let segments = decoded_segments(path)?;
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let [
            "rest",
            "api",
            "latest",
            "projects",
            key,
            "repos",
            slug,
            tail @ ..,
        ] = &segments[..]
        else {
            return None;
        };
        let repository = format!("{key}/{slug}");
        match tail {
            ["compare", "changes"] => Some(Route::CompareChanges { repository }),
            ["pull-requests", id, "changes"] => Some(Route::PullRequestChanges {
                repository,
                id: id.parse().ok()?,
            }),
            _ => None,
        }
    }
}

impl FakeBitbucket {
    /// Starts the fake on `127.0.0.1:0`.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound (a test cannot go on without it).
    pub async fn start() -> FakeBitbucket {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("the fake Bitbucket binds 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("the fake Bitbucket's listener has an address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, state.clone(), stop.clone()));
        FakeBitbucket { addr, state, stop }
    }

    /// `http://127.0.0.1:PORT/bitbucket`.
    pub fn base_url(&self) -> String {
        format!("http://{}{CONTEXT_PATH}", self.addr)
    }

    /// A [`Server`] pointing at the fake with `token`.
    pub fn server(&self, token: &str) -> Server {
        Server {
            base_url: self.base_url(),
            token: Secret::new(token),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// What `compare/changes?from={from}&to={to}` of `repository` (`PROJ/slug`) answers; `to`
    /// `None` is a request without `to` (against the default branch).
    pub fn set_compare(
        &self,
        repository: &str,
        from: &str,
        to: Option<&str>,
        changes: Vec<FakeChange>,
    ) {
        let key = (
            repository.to_owned(),
            from.to_owned(),
            to.map(str::to_owned),
        );
        self.state().compares.insert(key, changes);
    }

    /// What every compare without its own answer ([`Self::set_compare`]) answers, for load tests
    /// whose commits are all new.
    pub fn set_default_compare(&self, changes: Vec<FakeChange>) {
        self.state().default_compare = Some(changes);
    }

    /// What `pull-requests/{id}/changes` answers; `truncated` makes it say `isLastPage: false`
    /// as Bitbucket does when it cut the list.
    pub fn set_pull_request_changes(
        &self,
        repository: &str,
        pull_request_id: u64,
        changes: Vec<FakeChange>,
        truncated: bool,
    ) {
        let key = (repository.to_owned(), pull_request_id);
        self.state()
            .pull_request_changes
            .insert(key, (changes, truncated));
    }

    /// Caps every page at `n` items (at least 1), below whatever `limit` was asked for.
    pub fn set_page_size(&self, n: usize) {
        self.state().page_size = Some(n.max(1));
    }

    /// The next `n` requests answer `status` with an errors body (with `Retry-After` when
    /// given), before any other check.
    pub fn fail_next(&self, n: usize, status: u16, retry_after_secs: Option<u32>) {
        self.state().failures = Some(InjectedFailure {
            remaining: n,
            status,
            retry_after_secs,
        });
    }

    /// Every answer waits `delay` first.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// A misbehaving server: `isLastPage` is always false and `nextPageStart` always advances.
    pub fn never_last_page(&self, on: bool) {
        self.state().never_last_page = on;
    }

    /// Requests whose `Authorization` is not `Bearer {token}` get 401 with an errors body.
    pub fn require_token(&self, token: &str) {
        self.state().token = Some(token.to_owned());
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// The changed-files requests (compare and pull-request changes) among [`Self::requests`]:
    /// what path filters asked, without the build statuses, webhooks and refs other stages
    /// call the same fake for.
    pub fn change_lookups(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| Route::parse(&r.path).is_some())
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// The most requests the fake was answering at once so far.
    pub fn max_concurrent_requests(&self) -> usize {
        self.state().max_in_flight
    }
}

/// Counts a request in flight until it is answered or its connection dropped.
struct InFlight<'a>(&'a Mutex<State>);

impl<'a> InFlight<'a> {
    fn enter(state: &'a Mutex<State>) -> InFlight<'a> {
        let mut guard = lock(state);
        guard.in_flight += 1;
        guard.max_in_flight = guard.max_in_flight.max(guard.in_flight);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = lock(self.0);
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

impl Drop for FakeBitbucket {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A test that panicked while holding the lock left consistent data: keep serving.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept(listener: TcpListener, state: Arc<Mutex<State>>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        tokio::spawn(connection(stream, state.clone(), stop.clone()));
    }
}

async fn connection(stream: TcpStream, state: Arc<Mutex<State>>, stop: CancellationToken) {
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(answer(&state, request).await) }
    });
    let served = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = served => {}
        _ = stop.cancelled() => {}
    }
}

/// Records the request, waits the delay, then: an injected failure, a 401 for a wrong token,
/// or the endpoint's answer.
async fn answer(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let _in_flight = InFlight::enter(state);
    let mut recorded = record(&request);
    let method = request.method().clone();
    recorded.body = http_body_util::Limited::new(request.into_body(), 1024 * 1024)
        .collect()
        .await
        .map(|body| body.to_bytes().to_vec())
        .unwrap_or_default();
    let (delay, failure) = {
        let mut state = lock(state);
        state.requests.push(recorded.clone());
        (state.delay, state.take_failure())
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(failure) = failure {
        return failure.answer();
    }
    lock(state).answer(&method, &recorded)
}

fn record(request: &Request<Incoming>) -> RecordedRequest {
    let full_path = request.uri().path().to_owned();
    let path = full_path
        .strip_prefix(CONTEXT_PATH)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
        .unwrap_or(&full_path)
        .to_owned();
    RecordedRequest {
        method: request.method().to_string(),
        path,
        full_path,
        query: request.uri().query().map(str::to_owned),
        authorization: request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: Vec::new(),
    }
}

impl State {
    fn take_failure(&mut self) -> Option<InjectedFailure> {
        let failure = self.failures.as_mut()?;
        if failure.remaining == 0 {
            self.failures = None;
            return None;
        }
        failure.remaining -= 1;
        Some(*failure)
    }

    /// The answer of an authorised request to the endpoint it names.
    fn answer(&mut self, method: &Method, request: &RecordedRequest) -> Response<Full<Bytes>> {
        if let Some(token) = &self.token
            && request.authorization.as_deref() != Some(&format!("Bearer {token}"))
        {
            return errors(
                StatusCode::UNAUTHORIZED,
                "Authentication failed. Please check your credentials and try again.",
                Some("com.atlassian.bitbucket.auth.IncorrectPasswordAuthenticationException"),
            );
        }
        if !request.full_path.starts_with(CONTEXT_PATH) {
            return errors(
                StatusCode::NOT_FOUND,
                &format!("No REST resource at {}.", request.full_path),
                None,
            );
        }
        if let Some(answer) = refs::answer(self, method, request) {
            return answer;
        }
        if let Some(answer) = builds::answer(self, method, request) {
            return answer;
        }
        if let Some(answer) = webhooks::answer(self, method, request) {
            return answer;
        }
        let route = Route::parse(&request.path);
        let Some(route) = route else {
            return errors(
                StatusCode::NOT_FOUND,
                &format!("No REST resource at {}.", request.full_path),
                None,
            );
        };
        if method != Method::GET {
            return errors(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{method} is not supported here."),
                None,
            );
        }
        match route {
            Route::CompareChanges { repository } => self.compare_changes(&repository, request),
            Route::PullRequestChanges { repository, id } => {
                self.pull_request_changes(&repository, id, request)
            }
        }
    }

    fn compare_changes(
        &self,
        repository: &str,
        request: &RecordedRequest,
    ) -> Response<Full<Bytes>> {
        let from = request.query_param("from").unwrap_or_default();
        let key = (
            repository.to_owned(),
            from.clone(),
            request.query_param("to"),
        );
        let Some(changes) = self.compares.get(&key).or(self.default_compare.as_ref()) else {
            let slug = repository
                .split_once('/')
                .map_or(repository, |(_, slug)| slug);
            return errors(
                StatusCode::NOT_FOUND,
                &format!("Commit '{from}' does not exist in repository '{slug}'."),
                Some("com.atlassian.bitbucket.commit.NoSuchCommitException"),
            );
        };
        let start = number_param(request, "start").unwrap_or(0);
        let limit = self.limit(request);
        ok(self.page(changes, start, limit, false))
    }

    /// Not paged: `start` is ignored and `isLastPage: false` means the list was cut.
    fn pull_request_changes(
        &self,
        repository: &str,
        id: u64,
        request: &RecordedRequest,
    ) -> Response<Full<Bytes>> {
        let Some((changes, truncated)) =
            self.pull_request_changes.get(&(repository.to_owned(), id))
        else {
            return errors(
                StatusCode::NOT_FOUND,
                &format!("Pull request {id} does not exist in {repository}."),
                Some("com.atlassian.bitbucket.pull.NoSuchPullRequestException"),
            );
        };
        ok(self.page(changes, 0, self.limit(request), *truncated))
    }

    /// The request's `limit` (Bitbucket's default 25), capped by [`FakeBitbucket::set_page_size`].
    fn limit(&self, request: &RecordedRequest) -> usize {
        let asked = number_param(request, "limit")
            .unwrap_or(DEFAULT_LIMIT)
            .max(1);
        self.page_size.map_or(asked, |cap| asked.min(cap))
    }

    /// `{size, limit, isLastPage, start, nextPageStart?, values}` of `changes[start..start+limit]`.
    fn page(&self, changes: &[FakeChange], start: usize, limit: usize, cut: bool) -> Value {
        let values: Vec<Value> = changes
            .iter()
            .skip(start)
            .take(limit)
            .map(change_json)
            .collect();
        let is_last_page =
            !self.never_last_page && !cut && start.saturating_add(values.len()) >= changes.len();
        paged(values, start, limit, is_last_page)
    }
}

impl InjectedFailure {
    fn answer(self) -> Response<Full<Bytes>> {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = errors(
            status,
            &format!("Injected failure: the fake Bitbucket answers {status}."),
            Some("com.atlassian.bitbucket.ServiceException"),
        );
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A `RestChange` as Bitbucket 9 serialises it.
fn change_json(change: &FakeChange) -> Value {
    let mut value = json!({
        "contentId": content_id(&change.path),
        "path": path_json(&change.path),
        "executable": false,
        "percentUnchanged": -1,
        "type": change.kind,
        "nodeType": "FILE",
        "srcExecutable": false,
        "links": {"self": [null]},
    });
    if let Some(src_path) = &change.src_path {
        value["srcPath"] = path_json(src_path);
        value["percentUnchanged"] = json!(100);
    }
    value
}

/// A `RestPath`, plus the `toString` real responses carry.
fn path_json(path: &str) -> Value {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let (name, parent) = match components.split_last() {
        Some((name, parent)) => (*name, parent.join("/")),
        None => ("", String::new()),
    };
    let mut value = json!({
        "components": components,
        "parent": parent,
        "name": name,
        "toString": components.join("/"),
    });
    if let Some((stem, extension)) = name.rsplit_once('.')
        && !stem.is_empty()
    {
        value["extension"] = json!(extension);
    }
    value
}

/// A stable 40-hex-digit id standing in for the blob's hash.
fn content_id(path: &str) -> String {
    let digest = Sha256::digest(path.as_bytes());
    hex::encode(digest)[..40].to_owned()
}

/// The segments of a request path, percent-decoded; `None` unless it starts with `/`.
fn decoded_segments(path: &str) -> Option<Vec<String>> {
    Some(
        path.strip_prefix('/')?
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect(),
    )
}

/// Bitbucket's paged envelope: `values` from `start`, with `nextPageStart` unless it is the last.
fn paged(values: Vec<Value>, start: usize, limit: usize, is_last_page: bool) -> Value {
    let mut page = json!({
        "size": values.len(),
        "limit": limit,
        "isLastPage": is_last_page,
        "start": start,
        "values": values,
    });
    if !is_last_page {
        page["nextPageStart"] = json!(start + limit);
    }
    page
}

fn ok(value: Value) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &value)
}

/// Bitbucket's error body: `{"errors":[{"context":null,"message":…,"exceptionName":…}]}`.
fn errors(status: StatusCode, message: &str, exception: Option<&str>) -> Response<Full<Bytes>> {
    let body = json!({
        "errors": [{"context": null, "message": message, "exceptionName": exception}],
    });
    json_response(status, &body)
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}

fn number_param(request: &RecordedRequest, name: &str) -> Option<usize> {
    request.query_param(name)?.parse().ok()
}

/// `a=1&b=x%20y` → decoded pairs (`+` is a space, as Bitbucket's servlet container reads it).
fn query_params(query: Option<&str>) -> Vec<(String, String)> {
    let decode = |text: &str| {
        percent_decode_str(&text.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths below the context path name the endpoints; anything else names none.
    #[test]
    fn routes() {
        assert_eq!(
            Route::parse("/rest/api/latest/projects/INFRA/repos/net%2Dwork/compare/changes"),
            Some(Route::CompareChanges {
                repository: "INFRA/net-work".to_owned()
            })
        );
        assert_eq!(
            Route::parse("/rest/api/latest/projects/INFRA/repos/network/pull-requests/42/changes"),
            Some(Route::PullRequestChanges {
                repository: "INFRA/network".to_owned(),
                id: 42
            })
        );
        for path in [
            "",
            "/",
            "/rest/api/latest/projects/INFRA/repos/network",
            "/rest/api/latest/projects/INFRA/repos/network/pull-requests/x/changes",
            "/rest/api/1.0/projects/INFRA/repos/network/compare/changes",
        ] {
            assert_eq!(Route::parse(path), None, "{path}");
        }
    }

    /// Paths render as Bitbucket does: components, parent, name, extension when there is one.
    #[test]
    fn paths() {
        assert_eq!(
            path_json("infra/app/main.tf"),
            json!({"components": ["infra", "app", "main.tf"], "parent": "infra/app",
                   "name": "main.tf", "extension": "tf", "toString": "infra/app/main.tf"})
        );
        assert_eq!(
            path_json("Makefile"),
            json!({"components": ["Makefile"], "parent": "", "name": "Makefile",
                   "toString": "Makefile"})
        );
        assert!(path_json(".gitignore").get("extension").is_none());
    }

    /// Query strings decode, `+` as a space.
    #[test]
    fn queries() {
        assert_eq!(
            query_params(Some("from=a%2Fb&to=c+d&flag")),
            vec![
                ("from".to_owned(), "a/b".to_owned()),
                ("to".to_owned(), "c d".to_owned()),
                ("flag".to_owned(), String::new()),
            ]
        );
        assert!(query_params(None).is_empty());
    }
}

//! The REST client against the fake Bitbucket, in process on loopback: paging, the request it
//! sends, retries, rate limits, truncation, deadlines and refusals, asserted on what the fake
//! recorded, on the returned changes or errors, and on the exported metrics. Last, the fake's
//! answers are checked against Atlassian's OpenAPI document, so the client is tested on the shapes
//! a real Bitbucket sends.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inlet_bitbucket::client::{CallError, ChangedPath, Changes, Client, RepositoryRef, Server};
use inlet_bitbucket::fake::{FakeBitbucket, FakeChange};
use inlet_core::config::BitbucketConfig;
use inlet_core::metrics::Metrics;
use inlet_core::secret::Secret;
use serde_json::Value;

const REPOSITORY: &str = "INFRA/network";
const TOKEN: &str = "test-access-token";
const COMPARE_PATH: &str = "/rest/api/latest/projects/INFRA/repos/network/compare/changes";

/// A fake, a client of it and the metrics the client writes.
struct Setup {
    fake: FakeBitbucket,
    client: Client,
    metrics: Arc<Metrics>,
    server: Server,
    repository: RepositoryRef,
}

/// The defaults, with http allowed (the fake is plain http) and quick to give up.
fn config() -> BitbucketConfig {
    BitbucketConfig {
        allow_http: true,
        ..BitbucketConfig::default()
    }
}

async fn setup(config: BitbucketConfig) -> Setup {
    let fake = FakeBitbucket::start().await;
    let metrics = Metrics::new();
    let client = Client::new(&config, metrics.bitbucket.clone()).expect("client");
    let server = fake.server(TOKEN);
    Setup {
        fake,
        client,
        metrics,
        server,
        repository: RepositoryRef::from_full_name(REPOSITORY).expect("repository"),
    }
}

impl Setup {
    async fn compare(&self, from: &str, to: Option<&str>) -> Result<Changes, CallError> {
        self.client
            .compare_changes(&self.server, &self.repository, from, to)
            .await
    }

    /// The value of one exported series, e.g. `inlet_bitbucket_retries_total{endpoint="…"}`.
    fn metric(&self, series: &str) -> f64 {
        let text = self.metrics.render();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }

    fn calls(&self, endpoint: &str, outcome: &str) -> f64 {
        self.metric(&format!(
            "inlet_bitbucket_calls_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}}"
        ))
    }

    fn per_endpoint(&self, name: &str, endpoint: &str) -> f64 {
        self.metric(&format!("{name}{{endpoint=\"{endpoint}\"}}"))
    }
}

fn five_changes() -> Vec<FakeChange> {
    vec![
        FakeChange::modify("infra/app/main.tf"),
        FakeChange::add("infra/app/variables.tf"),
        FakeChange::delete("README.md"),
        FakeChange::moved("old/outputs.tf", "infra/app/outputs.tf"),
        FakeChange::copied("modules/vpc/main.tf", "modules/vpc2/main.tf"),
    ]
}

fn changed(path: &str, src_path: Option<&str>, kind: &str) -> ChangedPath {
    ChangedPath {
        path: path.to_owned(),
        src_path: src_path.map(str::to_owned),
        kind: kind.to_owned(),
    }
}

/// Five changes in pages of two: three requests with start 0, 2, 4, and every change, moves and
/// copies with their source paths.
#[tokio::test]
async fn follows_pages() {
    let s = setup(config()).await;
    s.fake
        .set_compare(REPOSITORY, "new-sha", Some("old-sha"), five_changes());
    s.fake.set_page_size(2);
    let changes = s
        .compare("new-sha", Some("old-sha"))
        .await
        .expect("changes");
    assert_eq!(
        changes.changes,
        vec![
            changed("infra/app/main.tf", None, "MODIFY"),
            changed("infra/app/variables.tf", None, "ADD"),
            changed("README.md", None, "DELETE"),
            changed("infra/app/outputs.tf", Some("old/outputs.tf"), "MOVE"),
            changed("modules/vpc2/main.tf", Some("modules/vpc/main.tf"), "COPY"),
        ]
    );
    assert!(!changes.truncated);
    assert_eq!(changes.calls, 3);
    let requests = s.fake.requests();
    let starts: Vec<_> = requests.iter().map(|r| r.query_param("start")).collect();
    assert_eq!(
        starts,
        [Some("0"), Some("2"), Some("4")].map(|s| s.map(str::to_owned))
    );
    for request in &requests {
        assert_eq!(request.path, COMPARE_PATH);
        assert_eq!(request.query_param("from").as_deref(), Some("new-sha"));
        assert_eq!(request.query_param("to").as_deref(), Some("old-sha"));
        assert_eq!(request.query_param("limit").as_deref(), Some("500"));
    }
    assert_eq!(s.calls("compare_changes", "ok"), 1.0);
    assert_eq!(
        s.per_endpoint(
            "inlet_bitbucket_call_duration_seconds_count",
            "compare_changes"
        ),
        1.0
    );
}

/// A new branch is compared against the default branch: no `to` at all.
#[tokio::test]
async fn new_branch_omits_to() {
    let s = setup(config()).await;
    s.fake.set_compare(
        REPOSITORY,
        "feature-sha",
        None,
        vec![FakeChange::add("x.tf")],
    );
    let changes = s.compare("feature-sha", None).await.expect("changes");
    assert_eq!(changes.changes, vec![changed("x.tf", None, "ADD")]);
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].query_param("to"), None);
    let query = requests[0].query.as_deref().unwrap_or_default();
    assert!(!query.contains("to="), "{query}");
}

/// The base URL's context path is kept, the token is sent as Bearer, and query values are
/// percent-encoded (a ref name with `/`, `&`, `+` and a space arrives whole).
#[tokio::test]
async fn keeps_context_path_and_sends_bearer_token() {
    let s = setup(config()).await;
    s.fake.require_token(TOKEN);
    let from = "refs/heads/feature/a&b+c d";
    s.fake.set_compare(
        REPOSITORY,
        from,
        Some("main"),
        vec![FakeChange::modify("a.tf")],
    );
    s.compare(from, Some("main")).await.expect("changes");
    let request = &s.fake.requests()[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.full_path, format!("/bitbucket{COMPARE_PATH}"));
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer test-access-token")
    );
    assert_eq!(request.query_param("from").as_deref(), Some(from));
    let query = request.query.as_deref().unwrap_or_default();
    assert!(
        query.contains("from=refs%2Fheads%2Ffeature%2Fa%26b%2Bc%20d"),
        "{query}"
    );

    // Another token: Bitbucket's 401 and its message, not retried.
    s.fake.clear_requests();
    let wrong = Server {
        base_url: s.fake.base_url(),
        token: Secret::new("someone-elses-token"),
    };
    let err = s
        .client
        .compare_changes(&wrong, &s.repository, from, Some("main"))
        .await
        .expect_err("401");
    assert_eq!((err.code(), err.status()), ("status_4xx", Some(401)));
    assert!(err.to_string().contains("Authentication failed"), "{err}");
    assert!(!err.to_string().contains("someone-elses-token"), "{err}");
    assert_eq!(s.fake.requests().len(), 1);
    assert_eq!(s.calls("compare_changes", "client_error"), 1.0);
}

/// A 429 with `Retry-After: 1` is waited out, then the call succeeds; the wait is counted.
#[tokio::test]
async fn waits_out_retry_after() {
    let s = setup(config()).await;
    s.fake
        .set_compare(REPOSITORY, "a", Some("b"), vec![FakeChange::modify("x")]);
    s.fake.fail_next(1, 429, Some(1));
    let started = Instant::now();
    let changes = s
        .compare("a", Some("b"))
        .await
        .expect("changes after the wait");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(changes.changes.len(), 1);
    assert_eq!(changes.calls, 2);
    assert_eq!(s.fake.requests().len(), 2);
    let waited = s.per_endpoint(
        "inlet_bitbucket_rate_limited_seconds_total",
        "compare_changes",
    );
    assert!(waited >= 1.0, "{waited}");
    assert_eq!(
        s.per_endpoint("inlet_bitbucket_retries_total", "compare_changes"),
        1.0
    );
    assert_eq!(s.calls("compare_changes", "ok"), 1.0);
}

/// A `Retry-After` beyond the call's deadline is not waited for: the call fails rate-limited
/// at once.
#[tokio::test]
async fn retry_after_beyond_the_deadline_gives_up() {
    let s = setup(BitbucketConfig {
        call_timeout_ms: 2_000,
        ..config()
    })
    .await;
    s.fake.fail_next(1, 429, Some(60));
    let err = s.compare("a", Some("b")).await.expect_err("rate limited");
    assert_eq!((err.code(), err.status()), ("rate_limited", Some(429)));
    assert!(err.to_string().contains("Retry-After 60 s"), "{err}");
    assert_eq!(s.fake.requests().len(), 1);
    assert_eq!(s.calls("compare_changes", "rate_limited"), 1.0);
    assert_eq!(
        s.per_endpoint(
            "inlet_bitbucket_rate_limited_seconds_total",
            "compare_changes"
        ),
        0.0
    );
}

/// Two 500s, then an answer: two retries, three requests.
#[tokio::test]
async fn retries_server_errors() {
    let s = setup(config()).await;
    s.fake
        .set_compare(REPOSITORY, "a", Some("b"), vec![FakeChange::modify("x")]);
    s.fake.fail_next(2, 500, None);
    let changes = s.compare("a", Some("b")).await.expect("changes");
    assert_eq!(changes.calls, 3);
    assert_eq!(s.fake.requests().len(), 3);
    assert_eq!(
        s.per_endpoint("inlet_bitbucket_retries_total", "compare_changes"),
        2.0
    );
    assert_eq!(s.calls("compare_changes", "ok"), 1.0);
}

/// 500 forever: `max_retries + 1` requests, then `status_5xx` with Bitbucket's message.
#[tokio::test]
async fn gives_up_on_persistent_server_errors() {
    let s = setup(config()).await;
    s.fake
        .set_compare(REPOSITORY, "a", Some("b"), vec![FakeChange::modify("x")]);
    s.fake.fail_next(usize::MAX, 500, None);
    let err = s.compare("a", Some("b")).await.expect_err("500");
    assert_eq!((err.code(), err.status()), ("status_5xx", Some(500)));
    let text = err.to_string();
    assert!(text.contains("Injected failure"), "{text}");
    assert!(text.contains("500 Internal Server Error"), "{text}");
    assert!(text.contains("after 4 attempts"), "{text}");
    assert_eq!(s.fake.requests().len(), 4);
    assert_eq!(
        s.per_endpoint("inlet_bitbucket_retries_total", "compare_changes"),
        3.0
    );
    assert_eq!(s.calls("compare_changes", "server_error"), 1.0);
}

/// An unknown commit is Bitbucket's 404, answered once and never retried.
#[tokio::test]
async fn not_found_is_not_retried() {
    let s = setup(config()).await;
    let err = s.compare("no-such-sha", Some("b")).await.expect_err("404");
    assert_eq!((err.code(), err.status()), ("status_4xx", Some(404)));
    assert!(
        err.to_string()
            .contains("Commit 'no-such-sha' does not exist in repository 'network'."),
        "{err}"
    );
    assert_eq!(s.fake.requests().len(), 1);
    assert_eq!(
        s.per_endpoint("inlet_bitbucket_retries_total", "compare_changes"),
        0.0
    );
}

/// Pull-request changes: one request with limit 1000; `isLastPage: false` is truncation.
#[tokio::test]
async fn pull_request_changes_and_truncation() {
    let s = setup(config()).await;
    s.fake
        .set_pull_request_changes(REPOSITORY, 42, five_changes(), true);
    s.fake
        .set_pull_request_changes(REPOSITORY, 43, vec![FakeChange::modify("x")], false);
    let cut = s
        .client
        .pull_request_changes(&s.server, &s.repository, 42)
        .await
        .expect("changes");
    assert!(cut.truncated);
    assert_eq!(cut.changes.len(), 5);
    assert_eq!(cut.calls, 1);
    let whole = s
        .client
        .pull_request_changes(&s.server, &s.repository, 43)
        .await
        .expect("changes");
    assert!(!whole.truncated);
    assert_eq!(whole.changes, vec![changed("x", None, "MODIFY")]);
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].path,
        "/rest/api/latest/projects/INFRA/repos/network/pull-requests/42/changes"
    );
    assert_eq!(requests[0].query_param("limit").as_deref(), Some("1000"));
    assert_eq!(s.calls("pull_request_changes", "ok"), 2.0);

    let err = s
        .client
        .pull_request_changes(&s.server, &s.repository, 7)
        .await
        .expect_err("no such pull request");
    assert_eq!(err.status(), Some(404));
}

/// A server that never says `isLastPage`: paging stops at `max_pages` and says truncated.
#[tokio::test]
async fn stops_at_max_pages() {
    let s = setup(BitbucketConfig {
        max_pages: 4,
        ..config()
    })
    .await;
    s.fake.set_compare(
        REPOSITORY,
        "a",
        Some("b"),
        vec![
            FakeChange::modify("1"),
            FakeChange::modify("2"),
            FakeChange::modify("3"),
        ],
    );
    s.fake.set_page_size(2);
    s.fake.never_last_page(true);
    let changes = s.compare("a", Some("b")).await.expect("changes");
    assert!(changes.truncated);
    assert_eq!(changes.changes.len(), 3);
    assert_eq!(changes.calls, 4);
    assert_eq!(s.fake.requests().len(), 4);
}

/// An answer slower than the call's deadline is a timeout, not a hang.
#[tokio::test]
async fn deadline_is_a_timeout() {
    let s = setup(BitbucketConfig {
        connect_timeout_ms: 200,
        call_timeout_ms: 300,
        ..config()
    })
    .await;
    s.fake
        .set_compare(REPOSITORY, "a", Some("b"), vec![FakeChange::modify("x")]);
    s.fake.set_delay(Duration::from_secs(3));
    let err = s.compare("a", Some("b")).await.expect_err("timeout");
    assert_eq!((err.code(), err.status()), ("timeout", None));
    assert!(err.to_string().contains("300 ms"), "{err}");
    assert_eq!(s.calls("compare_changes", "timeout"), 1.0);
}

/// Nobody listening: connection errors are retried, then reported as transport errors.
#[tokio::test]
async fn unreachable_host_is_a_transport_error() {
    let s = setup(BitbucketConfig {
        max_retries: 2,
        ..config()
    })
    .await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let closed = Server {
        base_url: format!("http://127.0.0.1:{port}/bitbucket"),
        token: Secret::new(TOKEN),
    };
    let err = s
        .client
        .compare_changes(&closed, &s.repository, "a", None)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), "transport");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    assert_eq!(
        s.per_endpoint("inlet_bitbucket_retries_total", "compare_changes"),
        2.0
    );
    assert_eq!(s.calls("compare_changes", "transport"), 1.0);
}

/// At most `max_concurrency_per_host` requests are in flight to one host.
#[tokio::test]
async fn bounds_concurrency_per_host() {
    let s = setup(BitbucketConfig {
        max_concurrency_per_host: 2,
        ..config()
    })
    .await;
    s.fake
        .set_compare(REPOSITORY, "a", Some("b"), vec![FakeChange::modify("x")]);
    s.fake.set_delay(Duration::from_millis(200));
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = s.client.clone();
            let server = s.server.clone();
            let repository = s.repository.clone();
            tokio::spawn(async move {
                client
                    .compare_changes(&server, &repository, "a", Some("b"))
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("changes");
    }
    assert_eq!(s.fake.requests().len(), 6);
    assert_eq!(s.fake.max_concurrent_requests(), 2);
}

/// `http://` is refused unless allowed, before any request.
#[tokio::test]
async fn refuses_http_unless_allowed() {
    let s = setup(BitbucketConfig {
        allow_http: false,
        ..config()
    })
    .await;
    s.fake
        .set_compare(REPOSITORY, "a", Some("b"), vec![FakeChange::modify("x")]);
    let err = s.compare("a", Some("b")).await.expect_err("http refused");
    assert_eq!((err.code(), err.status()), ("not_allowed", None));
    assert!(
        err.to_string().contains("INLET_BITBUCKET_ALLOW_HTTP"),
        "{err}"
    );
    assert!(s.fake.requests().is_empty());
    assert_eq!(s.calls("compare_changes", "not_allowed"), 1.0);
}

/// `private://` hosts sit behind a VCS agent pool inlet does not have: refused, clearly.
#[tokio::test]
async fn refuses_private_hosts() {
    let s = setup(config()).await;
    let private = Server {
        base_url: "private://bitbucket-agents".to_owned(),
        token: Secret::new(TOKEN),
    };
    let err = s
        .client
        .pull_request_changes(&private, &s.repository, 1)
        .await
        .expect_err("private refused");
    assert_eq!(err.code(), "not_allowed");
    assert!(
        err.to_string().contains("private://bitbucket-agents"),
        "{err}"
    );
    assert!(err.to_string().contains("VCS agent"), "{err}");
    assert_eq!(s.calls("pull_request_changes", "not_allowed"), 1.0);
}

/// The keys of a property map in the OpenAPI document.
fn properties(schema: &Value) -> BTreeSet<String> {
    schema["properties"]
        .as_object()
        .map(|map| map.keys().cloned().collect())
        .unwrap_or_default()
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|map| map.keys().cloned().collect())
        .unwrap_or_default()
}

fn enumeration(schema: &Value) -> BTreeSet<String> {
    schema["enum"]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A GET to the fake, answered as raw JSON.
async fn get_json(url: &str) -> (u16, Value) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response = client.get(url.parse().expect("url")).await.expect("answer");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&body).expect("JSON body"))
}

/// Every key the fake's compare/changes pages, changes, paths and errors carry is a property of
/// Atlassian's OpenAPI document (`toString` of paths excepted: a documented gap), and the enums
/// hold documented values.
#[tokio::test]
async fn fake_answers_match_the_openapi_document() {
    let document: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/bitbucket-openapi/bitbucket-datacenter-9.2.openapi.json"
        ))
        .expect("the OpenAPI document beside the repository"),
    )
    .expect("OpenAPI JSON");
    let operation = &document["paths"]["/api/latest/projects/{projectKey}/repos/{repositorySlug}/compare/changes"]
        ["get"];
    let page_schema = &operation["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(
        page_schema["properties"]["values"]["items"]["$ref"],
        "#/components/schemas/RestChange"
    );
    let change_schema = &document["components"]["schemas"]["RestChange"];
    let page_keys = properties(page_schema);
    let change_keys = properties(change_schema);
    let mut path_keys = properties(&change_schema["properties"]["path"]);
    path_keys.insert("toString".to_owned());
    let mut src_path_keys = properties(&change_schema["properties"]["srcPath"]);
    src_path_keys.insert("toString".to_owned());
    let types = enumeration(&change_schema["properties"]["type"]);
    let node_types = enumeration(&change_schema["properties"]["nodeType"]);
    assert!(page_keys.contains("nextPageStart") && change_keys.contains("srcPath"));

    let fake = FakeBitbucket::start().await;
    fake.set_compare(REPOSITORY, "a", Some("b"), five_changes());
    fake.set_page_size(3);
    let url = format!("{}{COMPARE_PATH}?from=a&to=b", fake.base_url());
    let (status, first) = get_json(&url).await;
    assert_eq!(status, 200);
    let (_, last) = get_json(&format!("{url}&start=3")).await;
    assert_eq!(
        (first["isLastPage"].clone(), last["isLastPage"].clone()),
        (false.into(), true.into())
    );
    let mut seen_src_path = false;
    for page in [&first, &last] {
        assert!(keys(page).is_subset(&page_keys), "{page:#}");
        for change in page["values"].as_array().expect("values") {
            assert!(keys(change).is_subset(&change_keys), "{change:#}");
            assert!(keys(&change["path"]).is_subset(&path_keys), "{change:#}");
            assert!(types.contains(change["type"].as_str().expect("type")));
            assert!(node_types.contains(change["nodeType"].as_str().expect("nodeType")));
            if change.get("srcPath").is_some() {
                seen_src_path = true;
                assert!(
                    keys(&change["srcPath"]).is_subset(&src_path_keys),
                    "{change:#}"
                );
            }
        }
    }
    assert!(seen_src_path, "a move or copy was checked");

    // Errors: the documented 404 body, each message a RestErrorMessage.
    let (status, missing) = get_json(&format!("{}{COMPARE_PATH}?from=nope", fake.base_url())).await;
    assert_eq!(status, 404);
    let error_schema = &operation["responses"]["404"]["content"]["application/json"]["schema"];
    assert!(
        keys(&missing).is_subset(&properties(error_schema)),
        "{missing:#}"
    );
    let message_keys = properties(&document["components"]["schemas"]["RestErrorMessage"]);
    for error in missing["errors"].as_array().expect("errors") {
        assert!(keys(error).is_subset(&message_keys), "{error:#}");
    }
}

//! The webhook endpoint in-process: a request in, the answer out, against a fake publisher backed
//! by a channel — no sockets, no Kafka. One test per row of the status table of DESIGN §4.1, each
//! asserting the status, the body and what was (not) published; then every real payload of the
//! shared corpus.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use inlet_bitbucket::signature::sign;
use inlet_control::commands::ControlCommand;
use inlet_control::control_log::ControlLog;
use inlet_control::testing;
use inlet_core::http::Answer;
use inlet_core::metrics::Metrics;
use inlet_core::records::headers;
use inlet_core::secret::Secret;
use inlet_ingest::publish::{Publish, PublishError, WebhookRecord};
use inlet_ingest::webhook::{Limits, Webhooks};
use serde_json::{Value, json};

const SECRET: &str = "s3cret-for-tests";
const URL: &str = "/webhooks/bitbucket-datacenter/bb";

/// What the fake broker does with a publish.
#[derive(Clone, Copy)]
enum Broker {
    Up,
    Down,
    Full,
}

/// Publishes into a vector, or fails as told.
#[derive(Clone)]
struct FakePublisher {
    published: Arc<Mutex<Vec<WebhookRecord>>>,
    broker: Arc<Mutex<Broker>>,
}

impl Publish for FakePublisher {
    async fn publish(&self, record: WebhookRecord) -> Result<(), PublishError> {
        let broker = *self.broker.lock().expect("lock");
        match broker {
            Broker::Up => {
                self.published.lock().expect("lock").push(record);
                Ok(())
            }
            Broker::Down => Err(PublishError::Timeout),
            Broker::Full => Err(PublishError::QueueFull),
        }
    }
}

/// A published record as the topic would hold it: key, value, headers.
type Published = (String, Vec<u8>, Vec<(String, String)>);

struct Edge {
    service: Webhooks<FakePublisher>,
    publisher: FakePublisher,
    metrics: Arc<Metrics>,
}

impl Edge {
    fn new() -> Edge {
        Edge::with_limits(limits())
    }

    fn with_limits(limits: Limits) -> Edge {
        let registry = testing::registry([ControlCommand::CreateIntegration {
            integration: testing::integration("bb", "i1", "root", true, SECRET),
        }]);
        let metrics = Metrics::new();
        let control = ControlLog::in_memory(registry, metrics.control.clone());
        let publisher = FakePublisher {
            published: Arc::default(),
            broker: Arc::new(Mutex::new(Broker::Up)),
        };
        let service = Webhooks::new(
            control,
            testing::secrets_key(),
            publisher.clone(),
            limits,
            metrics.ingest.clone(),
        );
        Edge {
            service,
            publisher,
            metrics,
        }
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        Reply::of(self.service.handle(request).await).await
    }

    /// A signed webhook of `event_key` with `body`.
    async fn signed(&self, event_key: &str, delivery: &str, body: &[u8]) -> Reply {
        self.send(webhook(
            URL,
            event_key,
            delivery,
            Some(&sign_with(SECRET, body)),
            body,
        ))
        .await
    }

    fn published(&self) -> Vec<Published> {
        let topic = "inlet.webhooks";
        self.publisher
            .published
            .lock()
            .expect("lock")
            .iter()
            .map(|record| {
                let output = record.output(topic);
                let headers = output
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect();
                (
                    String::from_utf8_lossy(&output.key).into_owned(),
                    output.payload.to_vec(),
                    headers,
                )
            })
            .collect()
    }

    fn broker(&self, broker: Broker) {
        *self.publisher.broker.lock().expect("lock") = broker;
    }

    fn metric(&self, line: &str) -> bool {
        self.metrics.render().lines().any(|l| l == line)
    }
}

/// The limits the tests run with unless they say otherwise.
fn limits() -> Limits {
    Limits {
        max_body_bytes: 64 * 1024,
        max_in_flight: 16,
        body_timeout: Duration::from_secs(2),
        body_idle_timeout: Duration::from_secs(1),
        max_buffered_bytes: 16 * 1024 * 1024,
        max_event_age: None,
    }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

impl Reply {
    async fn of(response: Answer) -> Reply {
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

fn sign_with(secret: &str, body: &[u8]) -> String {
    sign(&Secret::new(secret), body)
}

fn webhook(
    url: &str,
    event_key: &str,
    delivery: &str,
    signature: Option<&str>,
    body: &[u8],
) -> Request<Full<Bytes>> {
    let mut request = Request::post(url)
        .header("content-type", "application/json")
        .header("x-event-key", event_key)
        .header("x-request-id", delivery);
    if let Some(signature) = signature {
        request = request.header("x-hub-signature", signature);
    }
    request
        .body(Full::new(Bytes::copy_from_slice(body)))
        .expect("request")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn push() -> Vec<u8> {
    fixture("repo_refs_changed.json")
}

/// Row 1: a valid signature on a known event is published, byte for byte, keyed by repository,
/// with its metadata headers, and answered 202.
#[tokio::test]
async fn valid_signature_known_event_is_published_202() {
    let edge = Edge::new();
    let body = push();
    let reply = edge.signed("repo:refs_changed", "d-1", &body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(
        reply.body,
        json!({"status": "accepted", "delivery_id": "d-1"})
    );
    let published = edge.published();
    assert_eq!(published.len(), 1);
    let (key, payload, headers) = &published[0];
    assert_eq!(key, "bb/infra/network");
    assert_eq!(payload, &body);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(headers::DELIVERY_ID), Some("d-1"));
    assert_eq!(header(headers::EVENT_KEY), Some("repo:refs_changed"));
    assert_eq!(header(headers::INTEGRATION_ID), Some("i1"));
    assert_eq!(header(headers::INTEGRATION_NAME), Some("bb"));
    assert!(header(headers::RECEIVED_AT).is_some());
    assert!(header(headers::TRACEPARENT).is_some_and(|t| t.starts_with("00-")));
    assert!(edge.metric(
        "inlet_ingest_requests_total{event=\"repo:refs_changed\",integration=\"bb\",outcome=\"accepted\"} 1"
    ));
}

/// Row 2: `diagnostics:ping` unsigned is 200 and nothing is published; signed with the right
/// secret 200, with a wrong one 401 (so "Test connection" checks the secret).
#[tokio::test]
async fn ping_is_200_and_not_published() {
    let edge = Edge::new();
    let body = b"{\"test\": true}";
    let unsigned = edge
        .send(webhook(URL, "diagnostics:ping", "p-1", None, body))
        .await;
    assert_eq!(unsigned.status, StatusCode::OK);
    assert_eq!(unsigned.body, json!({"status": "ok"}));
    let signed = edge.signed("diagnostics:ping", "p-2", body).await;
    assert_eq!(signed.status, StatusCode::OK);
    let wrong = edge
        .send(webhook(
            URL,
            "diagnostics:ping",
            "p-3",
            Some(&sign_with("wrong", body)),
            body,
        ))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(edge.published().is_empty());
    assert!(edge.metric(
        "inlet_ingest_requests_total{event=\"diagnostics:ping\",integration=\"bb\",outcome=\"ping\"} 2"
    ));
}

/// Row 3: a signed event inlet does not handle is published like any other (202), keyed by the
/// repository it names.
#[tokio::test]
async fn unhandled_event_key_is_published_202() {
    let edge = Edge::new();
    let declined = fixture("pr_opened.json");
    let reply = edge.signed("pr:declined", "d-declined", &declined).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.body["status"], "accepted");
    let modified = br#"{"old": {"slug": "old", "project": {"key": "INFRA"}},
                        "new": {"slug": "network", "project": {"key": "INFRA"}}}"#;
    let reply = edge.signed("repo:modified", "d-modified", modified).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let published = edge.published();
    assert_eq!(published.len(), 2);
    assert_eq!(published[0].1, declined);
    assert_eq!(published[1].0, "bb/infra/network");
    assert!(edge.metric(
        "inlet_ingest_requests_total{event=\"other\",integration=\"bb\",outcome=\"accepted\"} 2"
    ));
}

/// Row 4: no integration of that name is 404, signed or not, and nothing is published.
#[tokio::test]
async fn unknown_integration_is_404() {
    let edge = Edge::new();
    let body = push();
    let reply = edge
        .send(webhook(
            "/webhooks/bitbucket-datacenter/nope",
            "repo:refs_changed",
            "u-1",
            Some(&sign_with(SECRET, &body)),
            &body,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.code(), "integration_not_found");
    let ping = edge
        .send(webhook(
            "/webhooks/bitbucket-datacenter/nope",
            "diagnostics:ping",
            "u-2",
            None,
            b"{}",
        ))
        .await;
    assert_eq!(ping.status, StatusCode::NOT_FOUND);
    assert!(edge.published().is_empty());
    // Unknown names are not metric labels.
    assert!(edge.metric(
        "inlet_ingest_requests_total{event=\"repo:refs_changed\",integration=\"_unknown\",outcome=\"not_found\"} 1"
    ));
}

/// Row 5: missing, malformed, unsupported-algorithm and wrong signatures are 401, each counted
/// by reason, and nothing is published.
#[tokio::test]
async fn bad_signatures_are_401() {
    let edge = Edge::new();
    let body = push();
    let digest = sign_with(SECRET, &body);
    let hex = digest.trim_start_matches("sha256=");
    for (signature, reason) in [
        (None, "missing"),
        (Some("sha256=zz".to_owned()), "malformed"),
        (Some("nonsense".to_owned()), "malformed"),
        (Some(format!("sha1={hex}")), "unsupported_algorithm"),
        (Some(sign_with("wrong", &body)), "mismatch"),
    ] {
        let reply = edge
            .send(webhook(
                URL,
                "repo:refs_changed",
                "s-1",
                signature.as_deref(),
                &body,
            ))
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reason}");
        assert_eq!(reply.code(), "invalid_signature", "{reason}");
    }
    assert!(edge.published().is_empty());
    for line in [
        "inlet_ingest_signature_failures_total{reason=\"missing\"} 1",
        "inlet_ingest_signature_failures_total{reason=\"malformed\"} 2",
        "inlet_ingest_signature_failures_total{reason=\"unsupported_algorithm\"} 1",
        "inlet_ingest_signature_failures_total{reason=\"mismatch\"} 1",
    ] {
        assert!(edge.metric(line), "{line}");
    }
}

/// Row 6: a signed body that is not JSON, or names no repository, is 400; a signed request
/// without `X-Event-Key` too. Nothing is published.
#[tokio::test]
async fn bad_bodies_are_400() {
    let edge = Edge::new();
    for (event_key, body, code) in [
        ("repo:refs_changed", &b"not json"[..], "invalid_payload"),
        ("repo:refs_changed", b"{\"changes\": []}", "invalid_payload"),
        ("pr:opened", b"{\"pullRequest\": {}}", "invalid_payload"),
        ("repo:forked", b"{\"unrelated\": 1}", "invalid_payload"),
        ("repo:forked", b"[1, 2]", "invalid_payload"),
    ] {
        let reply = edge.signed(event_key, "b-1", body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(reply.code(), code);
    }
    let body = push();
    let no_key = Request::post(URL)
        .header("x-hub-signature", sign_with(SECRET, &body))
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let reply = edge.send(no_key).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.code(), "missing_event_key");
    assert!(edge.published().is_empty());
}

/// Row 7: a body over the limit is 413, whether `Content-Length` says so up front or a chunked
/// body grows past it; nothing is published.
#[tokio::test]
async fn body_over_the_limit_is_413() {
    let edge = Edge::with_limits(Limits {
        max_body_bytes: 1024,
        ..limits()
    });
    let big = vec![b' '; 4096];
    let declared = edge.signed("repo:refs_changed", "big-1", &big).await;
    assert_eq!(declared.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(declared.code(), "body_too_large");

    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = (0..8)
        .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b' '; 512]))))
        .collect();
    let streamed = Request::post(URL)
        .header("x-event-key", "repo:refs_changed")
        .header("x-hub-signature", sign_with(SECRET, b"irrelevant"))
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .expect("request");
    let reply = Reply::of(edge.service.handle(streamed).await).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(edge.published().is_empty());
    assert!(edge.metric(
        "inlet_ingest_requests_total{event=\"repo:refs_changed\",integration=\"bb\",outcome=\"too_large\"} 2"
    ));
}

/// Row 8: the broker down or the producer queue full is 503 with `Retry-After`, and the answer
/// carries no Kafka error text; ingest at its in-flight limit is 503 too.
#[tokio::test]
async fn broker_unavailable_or_saturated_is_503() {
    let edge = Edge::new();
    for (broker, code) in [
        (Broker::Down, "broker_unavailable"),
        (Broker::Full, "saturated"),
    ] {
        edge.broker(broker);
        let reply = edge.signed("repo:refs_changed", "down-1", &push()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.code(), code);
        assert_eq!(reply.headers["retry-after"], "5");
        assert_eq!(
            reply.body["error"]["message"],
            "the webhook could not be stored; retry shortly"
        );
    }
    let saturated = Edge::with_limits(Limits {
        max_in_flight: 0,
        ..limits()
    });
    let reply = saturated
        .signed("repo:refs_changed", "sat-1", &push())
        .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.code(), "saturated");
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(saturated.published().is_empty());
}

/// Outside the table: other paths are 404, other methods 405 with `Allow: POST`.
#[tokio::test]
async fn wrong_path_or_method() {
    let edge = Edge::new();
    for path in [
        "/webhooks/bitbucket-datacenter/",
        "/webhooks/bitbucket-datacenter/bb/extra",
        "/other",
    ] {
        let reply = edge
            .send(webhook(path, "repo:refs_changed", "x", None, b"{}"))
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    }
    let get = Request::get(URL)
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = edge.send(get).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers["allow"], "POST");
}

/// The event key a corpus file name stands for: `<source>__<key, ':' as '_'>__<n>.json`.
fn corpus_event_key(file: &str) -> Option<&'static str> {
    const KEYS: &[&str] = &[
        "diagnostics:ping",
        "repo:refs_changed",
        "repo:modified",
        "repo:forked",
        "mirror:repo_synchronized",
        "pr:opened",
        "pr:from_ref_updated",
        "pr:modified",
        "pr:merged",
        "pr:declined",
        "pr:deleted",
        "pr:reviewer:approved",
        "pr:reviewer:unapproved",
        "pr:reviewer:needs_work",
        "pr:reviewer:changes_requested",
        "pr:comment:added",
        "pr:comment:edited",
        "pr:comment:deleted",
    ];
    let stem = file.split("__").nth(1)?;
    KEYS.iter().copied().find(|k| k.replace(':', "_") == stem)
}

/// Corpus bodies that name no repository Bitbucket could have sent (SOURCES.md: hand-made,
/// `repository` without `slug` or `project`): 400, as DESIGN §4.1 says.
const NO_REPOSITORY: &[&str] = &["tektoncd-triggers__repo_refs_changed__1.json"];

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bitbucket-payloads")
}

/// Every real payload of the shared corpus, signed, is answered as Bitbucket needs: pings 200,
/// every body that names a repository 202 and on the topic byte for byte (trimmed ones too: the
/// router records what it cannot route), the one hand-made body without a repository 400.
#[tokio::test]
async fn every_corpus_payload_is_answered() {
    let dir = corpus_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| {
            panic!(
                "{}: {err} (the corpus lives in shared/ beside the project)",
                dir.display()
            )
        })
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() >= 100, "only {} payloads found", files.len());
    let edge = Edge::new();
    let mut expected = Vec::new();
    let mut failures = Vec::new();
    for (index, file) in files.iter().enumerate() {
        let event_key =
            corpus_event_key(file).unwrap_or_else(|| panic!("{file}: no known event key"));
        let body = std::fs::read(dir.join(file)).expect("payload");
        let reply = edge.signed(event_key, &format!("c-{index}"), &body).await;
        let want = if event_key == "diagnostics:ping" {
            StatusCode::OK
        } else if NO_REPOSITORY.contains(&file.as_str()) {
            StatusCode::BAD_REQUEST
        } else {
            expected.push(body);
            StatusCode::ACCEPTED
        };
        if reply.status != want {
            failures.push(format!("{file}: {} {}", reply.status, reply.body));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let published: Vec<Vec<u8>> = edge.published().into_iter().map(|(_, p, _)| p).collect();
    assert_eq!(published, expected);
}

/// A body that sends `first` and then never ends.
fn stalled(first: &'static [u8]) -> StreamBody<impl futures::Stream<Item = Frame> + Send> {
    let head = futures::stream::iter(vec![Ok(http_body::Frame::data(Bytes::from_static(first)))]);
    StreamBody::new(head.chain(futures::stream::pending()))
}

type Frame = Result<http_body::Frame<Bytes>, std::convert::Infallible>;

/// A hostile `X-Request-Id` (too long, control characters) is 400 and nothing is published; a
/// missing one is generated.
#[tokio::test]
async fn request_ids_are_validated() {
    let edge = Edge::new();
    let body = push();
    for id in [
        "x".repeat(129),
        "a\tb".to_owned(),
        "has space".to_owned(),
        "café".to_owned(),
    ] {
        let request = Request::post(URL)
            .header("x-event-key", "repo:refs_changed")
            .header(
                "x-request-id",
                http::HeaderValue::from_bytes(id.as_bytes()).expect("header bytes"),
            )
            .header("x-hub-signature", sign_with(SECRET, &body))
            .body(Full::new(Bytes::from(body.clone())))
            .expect("request");
        let reply = edge.send(request).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{id:?}");
        assert_eq!(reply.code(), "invalid_request_id");
    }
    assert!(edge.published().is_empty());
    let request = Request::post(URL)
        .header("x-event-key", "repo:refs_changed")
        .header("x-hub-signature", sign_with(SECRET, &body))
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let reply = edge.send(request).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let generated = reply.body["delivery_id"].as_str().unwrap_or_default();
    assert!(generated.starts_with("inlet-"), "{generated}");
}

/// An unsigned request is refused from its head alone: a body that never ends is not read.
#[tokio::test]
async fn unsigned_requests_are_refused_before_the_body() {
    let edge = Edge::new();
    let request = Request::post(URL)
        .header("x-event-key", "repo:refs_changed")
        .body(stalled(b"{"))
        .expect("request");
    let reply = Reply::of(edge.service.handle(request).await).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(edge.metric("inlet_ingest_signature_failures_total{reason=\"missing\"} 1"));
}

/// A body that stops sending is cut after the idle timeout (408), not held until the request
/// timeout.
#[tokio::test]
async fn stalled_bodies_are_cut() {
    let edge = Edge::with_limits(Limits {
        body_idle_timeout: Duration::from_millis(100),
        body_timeout: Duration::from_secs(60),
        ..limits()
    });
    let request = Request::post(URL)
        .header("x-event-key", "repo:refs_changed")
        .header("x-hub-signature", sign_with(SECRET, b"x"))
        .body(stalled(b"{\"partial\": "))
        .expect("request");
    let reply = Reply::of(edge.service.handle(request).await).await;
    assert_eq!(reply.status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(reply.code(), "body_timeout");
}

/// Bodies held in memory share one budget: while stalled requests hold it, a new body is 503
/// with `Retry-After` instead of growing memory; once they are cut, room returns.
#[tokio::test]
async fn buffered_bodies_share_a_budget() {
    let edge = Arc::new(Edge::with_limits(Limits {
        max_body_bytes: 4 * 1024,
        max_buffered_bytes: 8 * 1024,
        body_idle_timeout: Duration::from_secs(30),
        body_timeout: Duration::from_secs(60),
        ..limits()
    }));
    // Two stalled requests that announced 4 KiB each take the whole budget.
    let mut stalls = Vec::new();
    for _ in 0..2 {
        let edge = edge.clone();
        let request = Request::post(URL)
            .header("x-event-key", "repo:refs_changed")
            .header("x-hub-signature", sign_with(SECRET, b"x"))
            .header("content-length", "4096")
            .body(stalled(b"{"))
            .expect("request");
        stalls.push(tokio::spawn(async move {
            edge.service.handle(request).await.status()
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reply = edge.signed("repo:refs_changed", "budget-1", &push()).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(reply.code(), "saturated");
    assert_eq!(reply.headers["retry-after"], "1");
    for stall in &stalls {
        stall.abort();
    }
    for stall in stalls {
        let _ = stall.await;
    }
    // The aborted requests gave their budget back.
    let reply = edge.signed("repo:refs_changed", "budget-2", &push()).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
}

/// A 60 KB integration name is answered 404 with a clipped name: answers and log lines stay small.
#[tokio::test]
async fn huge_names_are_clipped() {
    let edge = Edge::new();
    let url = format!("/webhooks/bitbucket-datacenter/{}", "n".repeat(60_000));
    let reply = edge
        .send(webhook(&url, "repo:refs_changed", "big-name", None, b"{}"))
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let message = reply.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.len() < 400, "{} bytes", message.len());
}

/// With `max_event_age` set, a signed body dated long ago (a captured delivery replayed) is 400
/// `event_too_old`; a fresh one and one without a date are accepted.
#[tokio::test]
async fn old_events_are_refused_when_configured() {
    let edge = Edge::with_limits(Limits {
        max_event_age: Some(Duration::from_secs(600)),
        ..limits()
    });
    let dated = |date: &str| {
        let mut body: Value = serde_json::from_slice(&push()).expect("json");
        body["date"] = Value::from(date);
        serde_json::to_vec(&body).expect("json")
    };
    let old = edge
        .signed(
            "repo:refs_changed",
            "old-1",
            &dated("2020-01-01T00:00:00+0000"),
        )
        .await;
    assert_eq!(old.status, StatusCode::BAD_REQUEST, "{}", old.body);
    assert_eq!(old.code(), "event_too_old");
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    let fresh = edge
        .signed("repo:refs_changed", "fresh-1", &dated(&now))
        .await;
    assert_eq!(fresh.status, StatusCode::ACCEPTED, "{}", fresh.body);
    let mut undated: Value = serde_json::from_slice(&push()).expect("json");
    undated.as_object_mut().expect("object").remove("date");
    let undated = serde_json::to_vec(&undated).expect("json");
    let reply = edge
        .signed("repo:refs_changed", "undated-1", &undated)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(edge.published().len(), 2);
}

//! End to end: the webhook endpoint's answers (DESIGN §4.1) and what reaches `inlet.webhooks`.

mod common;

use std::time::Duration;

use common::{Inlet, TopicReader, admin, header, send, webhook};
use inlet_bitbucket::signature::sign;
use inlet_core::secret::Secret;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn integration(dev: &Inlet, key: &str, name: &str) -> String {
    common::integration_secret(dev, key, name, false).await
}

fn error_code(answer: &common::Answer) -> String {
    answer.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The status table over real sockets (the in-process tests in `ingest/tests` hold one test per
/// row): only the authenticated events are published, byte for byte, with
/// the documented key and headers; everything else gets its status and publishes nothing. No
/// secret appears in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_table_and_what_is_published() {
    let dev = Inlet::dev();
    let key = dev.ready.admin_key.clone().expect("key");
    let secret = integration(&dev, &key, "Edge").await;
    let url = dev.webhook_url("Edge");
    let push = common::push_body("main", "178864a7d521b6f5e720b386b2c2b0ef8563e0dc");

    // Accepted.
    let ok = webhook(&url, "repo:refs_changed", "ok-1", &secret, &push).await;
    assert_eq!(ok.status, 202, "{ok:?}");
    assert_eq!(
        ok.json(),
        json!({"status": "accepted", "delivery_id": "ok-1"})
    );

    // Pings: unsigned 200; signed with the wrong secret 401; unknown integration 404.
    let ping = send(
        "POST",
        &url,
        &[("x-event-key", "diagnostics:ping")],
        "{\"test\": true}",
    )
    .await;
    assert_eq!(ping.status, 200, "{ping:?}");
    let bad_ping = webhook(&url, "diagnostics:ping", "p2", "wrong-secret", b"{}").await;
    assert_eq!(bad_ping.status, 401);
    let lost_ping = send(
        "POST",
        &dev.webhook_url("nope"),
        &[("x-event-key", "diagnostics:ping")],
        "{}",
    )
    .await;
    assert_eq!(lost_ping.status, 404);

    // A signed event inlet does not handle: 202, published like any other.
    let other = webhook(&url, "repo:forked", "other-1", &secret, &push).await;
    assert_eq!(other.status, 202);
    assert_eq!(other.json()["status"], "accepted");

    // Unknown integration.
    let unknown = webhook(
        &dev.webhook_url("nope"),
        "repo:refs_changed",
        "u1",
        &secret,
        &push,
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(error_code(&unknown), "integration_not_found");

    // Signatures: missing, malformed, unsupported algorithm, wrong.
    let signed = sign(&Secret::new(secret.clone()), &push);
    let sha1 = signed.replacen("sha256", "sha1", 1);
    let cases: Vec<(&str, Option<&str>)> = vec![
        ("sig-missing", None),
        ("sig-malformed", Some("sha256=not-hex")),
        ("sig-short", Some("sha256=abcd")),
        ("sig-noalgo", Some("deadbeef")),
        ("sig-sha1", Some(&sha1)),
        (
            "sig-wrong",
            Some("sha256=0000000000000000000000000000000000000000000000000000000000000000"),
        ),
    ];
    for (delivery, signature) in cases {
        let mut headers = vec![
            ("x-event-key", "repo:refs_changed"),
            ("x-request-id", delivery),
        ];
        if let Some(signature) = signature {
            headers.push(("x-hub-signature", signature));
        }
        let answer = send("POST", &url, &headers, push.clone()).await;
        assert_eq!(answer.status, 401, "{delivery}: {answer:?}");
        assert_eq!(error_code(&answer), "invalid_signature");
    }

    // Correctly signed but unusable bodies.
    for (delivery, body) in [
        ("bad-json", &b"{\"repository\": "[..]),
        (
            "no-repo",
            &b"{\"eventKey\": \"repo:refs_changed\", \"changes\": []}"[..],
        ),
        (
            "wrong-types",
            &b"{\"repository\": {\"slug\": 5, \"project\": \"x\"}}"[..],
        ),
        ("empty", &b""[..]),
    ] {
        let answer = webhook(&url, "repo:refs_changed", delivery, &secret, body).await;
        assert_eq!(answer.status, 400, "{delivery}: {answer:?}");
        assert_eq!(error_code(&answer), "invalid_payload");
    }
    let no_event = send(
        "POST",
        &url,
        &[("x-hub-signature", &signed), ("x-request-id", "no-event")],
        push.clone(),
    )
    .await;
    assert_eq!(no_event.status, 400);
    assert_eq!(error_code(&no_event), "missing_event_key");

    // Too large: declared by Content-Length, and streamed in chunks without one.
    for chunked in [false, true] {
        let (status, text) = raw_status(&url, 2 * 1024 * 1024, chunked).await;
        assert_eq!(status, 413, "chunked={chunked}: {text}");
        assert!(text.contains("body_too_large"), "{text}");
    }

    // Wrong method.
    let get = send("GET", &url, &[], "").await;
    assert_eq!(get.status, 405);

    // Only the two authenticated webhooks reached the topic, byte for byte, keyed and with their
    // headers.
    let mut webhooks = TopicReader::new(&dev.ready.kafka_bootstrap_servers, "inlet.webhooks").await;
    webhooks
        .until(Duration::from_secs(10), |r| r.len() >= 2)
        .await;
    webhooks.settle(Duration::from_millis(500)).await;
    assert_eq!(webhooks.records.len(), 2, "{:#?}", webhooks.values());
    let record = webhooks
        .records
        .iter()
        .find(|r| header(r, "inlet-delivery-id").as_deref() == Some("ok-1"))
        .expect("ok-1 published");
    use rdkafka::Message;
    assert_eq!(record.payload(), Some(&push[..]));
    assert_eq!(record.key(), Some(&b"edge/infra/network"[..]));
    assert_eq!(header(record, "inlet-delivery-id").as_deref(), Some("ok-1"));
    assert_eq!(
        header(record, "inlet-event-key").as_deref(),
        Some("repo:refs_changed")
    );
    assert_eq!(
        header(record, "inlet-integration-name").as_deref(),
        Some("Edge")
    );
    assert!(header(record, "inlet-integration-id").is_some());
    assert!(header(record, "inlet-received-at").is_some_and(|t| t.ends_with('Z')));

    let text = common::metrics(&dev).await;
    for line in [
        "inlet_ingest_signature_failures_total{reason=\"missing\"} 1",
        "inlet_ingest_signature_failures_total{reason=\"mismatch\"} 2",
        "inlet_ingest_signature_failures_total{reason=\"unsupported_algorithm\"} 1",
        "inlet_ingest_requests_total{event=\"repo:refs_changed\",integration=\"_unknown\",outcome=\"not_found\"} 1",
        "inlet_ingest_requests_total{event=\"repo:refs_changed\",integration=\"Edge\",outcome=\"too_large\"} 2",
        "inlet_ingest_requests_total{event=\"repo:refs_changed\",integration=\"Edge\",outcome=\"bad_request\"} 4",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    let ready = send(
        "GET",
        &format!(
            "{}/readyz",
            dev.ready.admin_base_url.as_deref().expect("admin")
        ),
        &[],
        "",
    )
    .await;
    assert_eq!(ready.status, 200, "{ready:?}");

    let log = dev.log();
    assert!(!log.contains(&secret), "webhook secret in the logs");
    assert!(!log.contains(&key), "admin key in the logs");
}

/// Sends a request head over a raw connection, then (concurrently) `size` bytes of chunked body
/// when `chunked`, and returns the status code and the response text. With `chunked` false the head declares a
/// `Content-Length` of `size` and no body is sent: the answer must come from the head alone.
async fn raw_status(url: &str, size: usize, chunked: bool) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {size}")
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\nx-event-key: repo:refs_changed\r\n\
         x-hub-signature: sha256=00\r\n{framing}\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.expect("head");
    let body = tokio::spawn(async move {
        if !chunked {
            return writer;
        }
        let chunk = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            let frame = format!("{:x}\r\n", chunk.len());
            // The server answers and closes before the whole body is sent.
            if writer.write_all(frame.as_bytes()).await.is_err()
                || writer.write_all(&chunk).await.is_err()
                || writer.write_all(b"\r\n").await.is_err()
            {
                break;
            }
            sent += chunk.len();
        }
        let _ = writer.write_all(b"0\r\n\r\n").await;
        writer
    });
    let mut response = vec![0u8; 4096];
    let n = reader.read(&mut response).await.expect("read");
    let _ = body.await;
    let text = String::from_utf8_lossy(&response[..n]).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    (status, text)
}

/// Every event fixture, signed, is accepted and lands on `inlet.webhooks` byte for byte under the
/// key of its (target) repository, an event key inlet does not handle too; pings publish nothing; the metrics count each
/// outcome per integration and event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_fixture_lands_byte_for_byte() {
    let dev = Inlet::dev();
    let key = dev.ready.admin_key.clone().expect("key");
    let secret = integration(&dev, &key, "bb").await;
    let url = dev.webhook_url("bb");
    let fixtures = [
        ("repo:refs_changed", "repo_refs_changed.json"),
        ("repo:refs_changed", "repo_refs_changed_multi.json"),
        ("pr:opened", "pr_opened.json"),
        ("pr:opened", "pr_opened_fork_iso_dates.json"),
        ("pr:from_ref_updated", "pr_from_ref_updated.json"),
        ("pr:modified", "pr_modified.json"),
        ("pr:reviewer:approved", "pr_reviewer_approved.json"),
        ("pr:reviewer:unapproved", "pr_reviewer_unapproved.json"),
        (
            "pr:reviewer:changes_requested",
            "pr_reviewer_changes_requested.json",
        ),
        (
            "pr:reviewer:needs_work",
            "pr_reviewer_changes_requested.json",
        ),
        ("pr:merged", "pr_merged.json"),
        ("pr:comment:added", "pr_comment_added.json"),
    ];
    let mut sent = Vec::new();
    for (index, (event_key, file)) in fixtures.iter().enumerate() {
        let body = std::fs::read(format!("tests/fixtures/{file}")).expect("fixture");
        let delivery = format!("fixture-{index}");
        let answer = webhook(&url, event_key, &delivery, &secret, &body).await;
        assert_eq!(answer.status, 202, "{file}: {answer:?}");
        assert_eq!(answer.json()["status"], "accepted", "{file}");
        sent.push((delivery, event_key.to_string(), body));
    }
    let ping = std::fs::read("tests/fixtures/diagnostics_ping.json").expect("fixture");
    assert_eq!(
        webhook(&url, "diagnostics:ping", "ping-1", &secret, &ping)
            .await
            .status,
        200
    );
    // An event key inlet does not handle is published too (the router records it as ignored).
    let other_body =
        br#"{"repository": {"slug": "network", "project": {"key": "INFRA"}}}"#.to_vec();
    let other = webhook(&url, "repo:comment:added", "other-1", &secret, &other_body).await;
    assert_eq!(other.status, 202);
    sent.push((
        "other-1".to_owned(),
        "repo:comment:added".to_owned(),
        other_body,
    ));

    let mut topic = TopicReader::new(&dev.ready.kafka_bootstrap_servers, "inlet.webhooks").await;
    topic
        .until(Duration::from_secs(10), |r| r.len() >= sent.len())
        .await;
    topic.settle(Duration::from_millis(300)).await;
    assert_eq!(
        topic.records.len(),
        sent.len(),
        "every authenticated event is published, pings excepted"
    );
    use rdkafka::Message;
    for (delivery, event_key, body) in &sent {
        let record = topic
            .records
            .iter()
            .find(|m| header(m, "inlet-delivery-id").as_deref() == Some(delivery.as_str()))
            .unwrap_or_else(|| panic!("{delivery} not published"));
        assert_eq!(record.payload(), Some(&body[..]), "{delivery}");
        assert_eq!(record.key(), Some(&b"bb/infra/network"[..]), "{delivery}");
        assert_eq!(
            header(record, "inlet-event-key").as_deref(),
            Some(event_key.as_str())
        );
    }

    let text = common::metrics(&dev).await;
    for line in [
        "inlet_ingest_requests_total{event=\"repo:refs_changed\",integration=\"bb\",outcome=\"accepted\"} 2",
        "inlet_ingest_requests_total{event=\"pr:opened\",integration=\"bb\",outcome=\"accepted\"} 2",
        "inlet_ingest_requests_total{event=\"diagnostics:ping\",integration=\"bb\",outcome=\"ping\"} 1",
        "inlet_ingest_requests_total{event=\"other\",integration=\"bb\",outcome=\"accepted\"} 1",
        "inlet_ingest_publish_duration_seconds_count 13",
        "inlet_ingest_in_flight_requests 0",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
}

/// The admin API refuses requests without a valid key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_key() {
    let dev = Inlet::dev();
    let none = send("GET", &dev.api("/integrations"), &[], "").await;
    assert_eq!(none.status, 401);
    assert_eq!(error_code(&none), "unauthorized");
    let wrong = admin(
        &dev,
        "not-the-key-at-all",
        "GET",
        "/integrations",
        Value::Null,
    )
    .await;
    assert_eq!(wrong.status, 401);
    let key = dev.ready.admin_key.clone().expect("key");
    let list = admin(&dev, &key, "GET", "/integrations", Value::Null).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json(), json!({"integrations": []}));
    let bad = admin(
        &dev,
        &key,
        "POST",
        "/stacks",
        json!({"name": "x", "repository": "P/r", "branch": "main", "integration": "missing"}),
    )
    .await;
    assert_eq!(bad.status, 404, "{bad:?}");
    assert!(
        bad.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("integration:")
    );
    let unknown_field = admin(
        &dev,
        &key,
        "POST",
        "/spaces",
        json!({"name": "x", "colour": "red"}),
    )
    .await;
    assert_eq!(unknown_field.status, 400);
    assert_eq!(error_code(&unknown_field), "invalid_body");
}

/// When the broker is gone, a verified webhook gets 503 with Retry-After once the publish deadline
/// passes, never 202.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_is_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("inlet.toml");
    std::fs::write(&config, "[ingest]\npublish_timeout_ms = 1500\n").expect("config");
    let mut broker = Inlet::start(&["dev", "--only-broker"], &[]);
    let bootstrap = broker.ready.kafka_bootstrap_servers.clone();
    let key = "broker-down-admin-key-123";
    let ingest = Inlet::ingest(
        &bootstrap,
        key,
        &[("INLET_CONFIG", config.to_str().expect("path"))],
    );
    let secret = integration(&ingest, key, "bb").await;
    let push = common::push_body("main", "178864a7d521b6f5e720b386b2c2b0ef8563e0dc");
    broker.stop();
    let answer = webhook(
        &ingest.webhook_url("bb"),
        "repo:refs_changed",
        "d1",
        &secret,
        &push,
    )
    .await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(error_code(&answer), "broker_unavailable");
    assert!(answer.headers.contains_key("retry-after"));
}

//! End to end: JSON logs, W3C trace context carried through Kafka, and no secret in any log line.

mod common;

use std::time::Duration;

use common::{Inlet, TopicReader, admin, header, send};
use inlet_bitbucket::signature::sign;
use inlet_core::secret::Secret;
use serde_json::{Value, json};

/// With `--log-format json` every log line is a JSON object; the caller's `traceparent` reaches the
/// decision on `inlet.runs` and the router's and workers' log lines; the webhook secret, access
/// token and admin key used in the run appear in no log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_trace_context_and_no_secrets() {
    let mut dev = Inlet::start(
        &[
            "--log-format",
            "json",
            "dev",
            "--webhook-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ],
        &[(
            "INLET_LOG",
            "info,inlet_ingest=debug,inlet_router=debug,inlet_workers=debug",
        )],
    );
    let key = dev.ready.admin_key.clone().expect("key");
    let created = admin(
        &dev,
        &key,
        "POST",
        "/integrations",
        json!({
        "name": "bb", "is_default": true, "api_host_url": "https://x.example.com",
        "access_token": "token-that-must-not-be-logged"}),
    )
    .await;
    assert_eq!(created.status, 201);
    let stack = admin(
        &dev,
        &key,
        "POST",
        "/stacks",
        json!({"id": "prod", "name": "prod", "repository": "INFRA/network", "branch": "main"}),
    )
    .await;
    assert_eq!(stack.status, 201);
    let details = admin(&dev, &key, "GET", "/integrations/bb/details", Value::Null).await;
    let secret = details.json()["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let body = common::push_body("main", "178864a7d521b6f5e720b386b2c2b0ef8563e0dc");
    let signature = sign(&Secret::new(secret.clone()), &body);
    let answer = send(
        "POST",
        &dev.webhook_url("bb"),
        &[
            ("x-event-key", "repo:refs_changed"),
            ("x-request-id", "traced-1"),
            ("x-hub-signature", &signature),
            ("traceparent", &traceparent),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, 202);
    // A refused request logs too.
    let wrong = send(
        "POST",
        &dev.webhook_url("bb"),
        &[
            ("x-event-key", "repo:refs_changed"),
            ("x-hub-signature", "sha256=00"),
        ],
        "{}",
    )
    .await;
    assert_eq!(wrong.status, 401);

    let mut runs = TopicReader::new(&dev.ready.kafka_bootstrap_servers, "inlet.runs").await;
    runs.until(Duration::from_secs(30), |r| {
        !common::decisions_for(r, "traced-1").is_empty()
    })
    .await;
    let decision = runs
        .records
        .iter()
        .find(|m| header(m, "inlet-delivery-id").as_deref() == Some("traced-1"))
        .expect("decision");
    assert_eq!(
        header(decision, "traceparent").as_deref(),
        Some(traceparent.as_str())
    );

    // Untraced requests get a fresh trace context on their webhook record.
    let mut webhooks = TopicReader::new(&dev.ready.kafka_bootstrap_servers, "inlet.webhooks").await;
    webhooks
        .until(Duration::from_secs(10), |r| !r.is_empty())
        .await;
    assert!(
        webhooks
            .records
            .iter()
            .all(|m| header(m, "traceparent").is_some())
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = dev.stop();
    let log = dev.log();
    assert!(
        status.success(),
        "inlet dev did not stop cleanly ({status}):\n{log}"
    );
    let mut traced_lines = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
        assert!(
            value["timestamp"].is_string() && value["level"].is_string(),
            "{line}"
        );
        if line.contains(trace) {
            traced_lines += 1;
        }
    }
    assert!(
        traced_lines >= 2,
        "router and workers lines carry the trace id:\n{log}"
    );
    for secret in [
        secret.as_str(),
        key.as_str(),
        "token-that-must-not-be-logged",
    ] {
        assert!(!log.contains(secret), "a secret is in the logs");
    }
}

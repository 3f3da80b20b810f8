//! End to end, one test per stage: every counter a stage exports moves under the event it names,
//! read from `/metrics` of a running `inlet dev`. A counter that is declared (and on the dashboard
//! or in an alert) but never incremented fails here.

mod common;

use std::time::{Duration, Instant};

use common::{Inlet, admin, webhook};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const MAIN: &str = "178864a7d521b6f5e720b386b2c2b0ef8563e0dc";

async fn pipeline() -> (Inlet, String, String) {
    common::dev_with_stack("prod").await
}

/// The value of the sample `series` (name with labels, as the text format writes it).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// Scrapes until every series has reached its minimum, or fails naming the ones that did not.
async fn wait_for(dev: &Inlet, wanted: &[(&str, f64)]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = common::metrics(dev).await;
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(series, min)| sample(&text, series).is_none_or(|v| v < *min))
            .map(|(series, min)| format!("{series} >= {min} (is {:?})", sample(&text, series)))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "counters did not move:\n{}\n\nscrape:\n{text}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ingest: requests by outcome, signature failures by reason, publish latency, body sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_counters_move() {
    let (dev, _key, secret) = pipeline().await;
    let url = dev.webhook_url("bb");
    let push = common::push_body("main", MAIN);
    assert_eq!(
        webhook(&url, "repo:refs_changed", "c-1", &secret, &push)
            .await
            .status,
        202
    );
    assert_eq!(
        webhook(&url, "repo:refs_changed", "c-2", "wrong", &push)
            .await
            .status,
        401
    );
    wait_for(
        &dev,
        &[
            (
                "inlet_ingest_requests_total{event=\"repo:refs_changed\",integration=\"bb\",outcome=\"accepted\"}",
                1.0,
            ),
            (
                "inlet_ingest_requests_total{event=\"repo:refs_changed\",integration=\"bb\",outcome=\"unauthorized\"}",
                1.0,
            ),
            (
                "inlet_ingest_signature_failures_total{reason=\"mismatch\"}",
                1.0,
            ),
            ("inlet_ingest_publish_duration_seconds_count", 1.0),
            ("inlet_ingest_request_body_bytes_count", 2.0),
        ],
    )
    .await;
}

/// Router: events by outcome (routed, ignored, duplicate, dead-lettered), triggers, dead
/// letters, processing time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_counters_move() {
    let (dev, _key, secret) = pipeline().await;
    let url = dev.webhook_url("bb");
    let push = common::push_body("main", MAIN);
    for delivery in ["r-1", "r-1"] {
        webhook(&url, "repo:refs_changed", delivery, &secret, &push).await;
    }
    let declined = br#"{"pullRequest": {"toRef": {"repository": {"slug": "network", "project": {"key": "INFRA"}}}}}"#;
    webhook(&url, "pr:declined", "r-2", &secret, declined).await;
    common::produce(
        &dev,
        "inlet.webhooks",
        "bb/infra/network",
        b"{",
        &[("inlet-delivery-id", "r-poison")],
    )
    .await;
    wait_for(
        &dev,
        &[
            (
                "inlet_router_events_total{event=\"repo:refs_changed\",outcome=\"routed\"}",
                1.0,
            ),
            (
                "inlet_router_events_total{event=\"repo:refs_changed\",outcome=\"duplicate\"}",
                1.0,
            ),
            (
                "inlet_router_events_total{event=\"other\",outcome=\"ignored\"}",
                1.0,
            ),
            (
                "inlet_router_events_total{event=\"none\",outcome=\"dead_lettered\"}",
                1.0,
            ),
            ("inlet_router_triggers_total", 1.0),
            ("inlet_router_dead_letters_total", 1.0),
            ("inlet_router_processing_duration_seconds_count", 4.0),
        ],
    )
    .await;
}

/// Workers: decisions by status and reason, duplicate runs, dead letters, end-to-end latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_counters_move() {
    let (dev, key, secret) = pipeline().await;
    let url = dev.webhook_url("bb");
    // The push and a pull request updated to the same commit are one run: a duplicate.
    webhook(
        &url,
        "repo:refs_changed",
        "w-1",
        &secret,
        &common::push_body("feature", MAIN),
    )
    .await;
    let mut pr: Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/pr_from_ref_updated.json").expect("fixture"),
    )
    .expect("json");
    pr["pullRequest"]["fromRef"]["latestCommit"] = Value::from(MAIN);
    pr["pullRequest"]["toRef"]["displayId"] = Value::from("main");
    pr["pullRequest"]["toRef"]["id"] = Value::from("refs/heads/main");
    let pr = serde_json::to_vec(&pr).expect("json");
    webhook(&url, "pr:from_ref_updated", "w-2", &secret, &pr).await;
    wait_for(
        &dev,
        &[
            (
                "inlet_workers_decisions_total{reason=\"none\",status=\"requested\"}",
                1.0,
            ),
            ("inlet_workers_duplicate_runs_total", 1.0),
        ],
    )
    .await;
    // A disabled stack is blocked (workers read the stack's current state).
    let patched = admin(
        &dev,
        &key,
        "PATCH",
        "/stacks/prod",
        json!({"disabled": true}),
    )
    .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    webhook(
        &url,
        "repo:refs_changed",
        "w-3",
        &secret,
        &common::push_body("main", "2222222222222222222222222222222222222222"),
    )
    .await;
    common::produce(&dev, "inlet.triggers", "prod", b"not a trigger", &[]).await;
    wait_for(
        &dev,
        &[
            (
                "inlet_workers_decisions_total{reason=\"none\",status=\"requested\"}",
                1.0,
            ),
            (
                "inlet_workers_decisions_total{reason=\"stack_disabled\",status=\"blocked\"}",
                1.0,
            ),
            ("inlet_workers_duplicate_runs_total", 1.0),
            ("inlet_workers_dead_letters_total", 1.0),
            ("inlet_workers_end_to_end_seconds_count", 2.0),
        ],
    )
    .await;
}

/// Control plane: commands by kind and outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_counters_move() {
    let (dev, key, _secret) = pipeline().await;
    let again = admin(
        &dev,
        &key,
        "POST",
        "/stacks",
        json!({"id": "prod", "name": "prod", "repository": "INFRA/network", "branch": "main"}),
    )
    .await;
    assert_eq!(again.status, 409, "{again:?}");
    wait_for(
        &dev,
        &[
            (
                "inlet_control_commands_total{kind=\"create_stack\",outcome=\"accepted\"}",
                1.0,
            ),
            (
                "inlet_control_commands_total{kind=\"create_stack\",outcome=\"rejected\"}",
                1.0,
            ),
        ],
    )
    .await;
}

//! End to end: a signed Bitbucket push becomes run decisions on `inlet.runs`, through the real
//! binary, in one `inlet dev` process and as three separate stage processes.

mod common;

use std::time::Duration;

use common::{Inlet, TopicReader, admin, decisions_for, webhook};
use serde_json::{Value, json};

const MAIN_SHA: &str = "178864a7d521b6f5e720b386b2c2b0ef8563e0dc";
const NEXT_SHA: &str = "9a1f0c7e5b3d2a4c6e8f0a1b2c3d4e5f60718293";
const WAIT: Duration = Duration::from_secs(30);

/// Where the scenario talks to: one ingest (any deployment shape) and the cluster.
struct Target<'a> {
    ingest: &'a Inlet,
    key: &'a str,
    bootstrap: &'a str,
}

fn by_stack(decisions: &[Value], stack: &str) -> Value {
    decisions
        .iter()
        .find(|d| d["stack_id"] == stack)
        .cloned()
        .unwrap_or_else(|| panic!("no decision for {stack} in {decisions:#?}"))
}

async fn details(target: &Target<'_>) -> (String, String) {
    let answer = admin(
        target.ingest,
        target.key,
        "GET",
        "/integrations/bb/details",
        Value::Null,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let body = answer.json();
    (
        body["webhook_url"].as_str().expect("url").to_owned(),
        body["webhook_secret"].as_str().expect("secret").to_owned(),
    )
}

async fn scenario(target: Target<'_>) {
    let Target { ingest, key, .. } = target;
    let mut runs = TopicReader::new(target.bootstrap, "inlet.runs").await;

    let created = admin(
        ingest,
        key,
        "POST",
        "/integrations",
        json!({"name": "bb", "is_default": true, "api_host_url": "https://bitbucket.example.com"}),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    for (id, branch) in [("network-prod", "main"), ("network-staging", "staging")] {
        let stack = admin(
            ingest,
            key,
            "POST",
            "/stacks",
            json!({"id": id, "name": id, "integration": "bb", "repository": "INFRA/network", "branch": branch}),
        )
        .await;
        assert_eq!(stack.status, 201, "{stack:?}");
        assert_eq!(stack.json()["integration_status"], "attached");
    }
    let (url, first_secret) = details(&target).await;
    assert_eq!(url, ingest.webhook_url("bb"));

    // A push to main: a tracked run for the stack on main, a proposed one for the other.
    let push = common::push_body("main", MAIN_SHA);
    let accepted = webhook(
        &url,
        "repo:refs_changed",
        "delivery-1",
        &first_secret,
        &push,
    )
    .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    assert_eq!(accepted.json()["delivery_id"], "delivery-1");
    runs.until(WAIT, |r| decisions_for(r, "delivery-1").len() >= 2)
        .await;
    let decisions = decisions_for(&runs.records, "delivery-1");
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    let prod = by_stack(&decisions, "network-prod");
    assert_eq!(prod["schema"], "inlet.run/v1");
    assert_eq!(prod["status"], "requested");
    assert_eq!(prod["run_type"], "tracked");
    assert_eq!(prod["space_id"], "root");
    assert_eq!(
        prod["commit"],
        json!({"sha": MAIN_SHA, "branch": "main", "repository": "INFRA/network"})
    );
    assert_eq!(prod["trigger"]["kind"], "push");
    assert_eq!(prod["trigger"]["event_key"], "repo:refs_changed");
    assert_eq!(prod["trigger"]["actor"], "alice");
    assert!(prod.get("blocked_reason").is_none());
    let staging = by_stack(&decisions, "network-staging");
    assert_eq!(staging["status"], "requested");
    assert_eq!(staging["run_type"], "proposed");
    assert_ne!(prod["run_id"], staging["run_id"]);

    // Delete the integration: stacks become detached. Re-create the name: same URL, new secret.
    let deleted = admin(ingest, key, "DELETE", "/integrations/bb", Value::Null).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let stack = admin(ingest, key, "GET", "/stacks/network-prod", Value::Null).await;
    assert_eq!(stack.json()["integration_status"], "detached");
    let gone = webhook(
        &url,
        "repo:refs_changed",
        "delivery-gone",
        &first_secret,
        &push,
    )
    .await;
    assert_eq!(gone.status, 404, "{gone:?}");
    let recreated = admin(
        ingest,
        key,
        "POST",
        "/integrations",
        json!({"name": "bb", "is_default": true, "api_host_url": "https://bitbucket.example.com"}),
    )
    .await;
    assert_eq!(recreated.status, 201, "{recreated:?}");
    let (same_url, second_secret) = details(&target).await;
    assert_eq!(same_url, url);
    assert_ne!(second_secret, first_secret);
    let stack = admin(ingest, key, "GET", "/stacks/network-prod", Value::Null).await;
    assert_eq!(stack.json()["integration_status"], "detached");

    // The old secret no longer verifies; the new one does, and both stacks are blocked.
    let push = common::push_body("main", NEXT_SHA);
    let stale = webhook(
        &url,
        "repo:refs_changed",
        "delivery-stale",
        &first_secret,
        &push,
    )
    .await;
    assert_eq!(stale.status, 401, "{stale:?}");
    let accepted = webhook(
        &url,
        "repo:refs_changed",
        "delivery-2",
        &second_secret,
        &push,
    )
    .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    runs.until(WAIT, |r| decisions_for(r, "delivery-2").len() >= 2)
        .await;
    let decisions = decisions_for(&runs.records, "delivery-2");
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    for stack in ["network-prod", "network-staging"] {
        let decision = by_stack(&decisions, stack);
        assert_eq!(decision["status"], "blocked", "{decision:#}");
        assert_eq!(decision["blocked_reason"]["code"], "integration_detached");
        assert_eq!(decision["commit"]["sha"], NEXT_SHA);
    }

    // Nothing was decided for the rejected deliveries.
    runs.settle(Duration::from_millis(500)).await;
    assert!(decisions_for(&runs.records, "delivery-stale").is_empty());
    assert!(decisions_for(&runs.records, "delivery-gone").is_empty());
}

/// In one `inlet dev` process, a signed push yields a tracked and a proposed requested run; after
/// the integration is deleted and re-created under the same name, pushes signed with the new secret
/// yield `blocked` / `integration_detached` decisions; the process then stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_decisions_in_dev() {
    let mut dev = Inlet::dev();
    let key = dev.ready.admin_key.clone().expect("admin key");
    let bootstrap = dev.ready.kafka_bootstrap_servers.clone();
    scenario(Target {
        ingest: &dev,
        key: &key,
        bootstrap: &bootstrap,
    })
    .await;
    // The metrics of every stage tell the same story.
    let text = common::metrics(&dev).await;
    for line in [
        "inlet_router_events_total{event=\"repo:refs_changed\",outcome=\"routed\"} 2",
        "inlet_router_triggers_total 4",
        "inlet_workers_decisions_total{reason=\"none\",status=\"requested\"} 2",
        "inlet_workers_decisions_total{reason=\"integration_detached\",status=\"blocked\"} 2",
        "inlet_workers_end_to_end_seconds_count 4",
        "inlet_control_registry_entities{kind=\"stacks\"} 2",
        "inlet_control_registry_entities{kind=\"integrations\"} 1",
        "inlet_control_commands_total{kind=\"delete_integration\",outcome=\"accepted\"} 1",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    let status = dev.stop();
    let log = dev.log();
    assert!(status.success(), "exit status {status}\n{log}");
    // Every client closed before the embedded broker stopped: none reports it gone.
    assert!(
        !log.contains("AllBrokersDown") && !log.contains(" ERROR "),
        "errors at shutdown:\n{log}"
    );
}

/// The same story with ingest, router and workers as three processes against one broker that a
/// fourth process (`inlet dev --only-broker`) runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_decisions_across_processes() {
    let broker = Inlet::start(&["dev", "--only-broker"], &[]);
    let bootstrap = broker.ready.kafka_bootstrap_servers.clone();
    let key = "separate-processes-admin-key";
    let cluster = ["--kafka-bootstrap-servers", bootstrap.as_str()];
    let ingest = Inlet::ingest(&bootstrap, key, &[]);
    let router = Inlet::start(&[&["router"][..], &cluster[..]].concat(), &[]);
    let workers = Inlet::start(&[&["workers"][..], &cluster[..]].concat(), &[]);
    scenario(Target {
        ingest: &ingest,
        key,
        bootstrap: &bootstrap,
    })
    .await;
    drop((ingest, router, workers));
}

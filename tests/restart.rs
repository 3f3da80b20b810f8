//! End to end: a router or workers process killed mid-stream (SIGKILL: no drain, no commit) and
//! restarted loses nothing. Every accepted webhook still becomes its decisions, with the same
//! deterministic `run_id`s (at-least-once: a replayed input may repeat a decision, never change it).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Cluster, Inlet, TopicReader, admin, webhook};
use inlet_core::records::{RunType, vcs_run_id};
use serde_json::{Value, json};

/// Sends `count` pushes to main with unique commits, 20 per second, returning (delivery, sha).
async fn pushes(
    url: String,
    secret: String,
    prefix: &'static str,
    count: usize,
) -> Vec<(String, String)> {
    let mut sent = Vec::new();
    for n in 0..count {
        let delivery = format!("{prefix}-{n}");
        let sha = format!("{:02x}{n:038x}", prefix.as_bytes()[0]);
        let answer = webhook(
            &url,
            "repo:refs_changed",
            &delivery,
            &secret,
            &common::push_body("main", &sha),
        )
        .await;
        assert_eq!(answer.status, 202, "{delivery}: {answer:?}");
        sent.push((delivery, sha));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sent
}

/// Waits until every sent delivery has a decision for both stacks, then checks the run ids.
async fn assert_all_decided(runs: &mut TopicReader, sent: &[(String, String)]) {
    let wanted: BTreeSet<String> = sent.iter().map(|(d, _)| d.clone()).collect();
    let covered = |records: &[rdkafka::message::OwnedMessage]| {
        let mut stacks: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for value in records
            .iter()
            .filter_map(|m| serde_json::from_slice::<Value>(rdkafka::Message::payload(m)?).ok())
        {
            let delivery = value["trigger"]["delivery_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if wanted.contains(&delivery) {
                stacks
                    .entry(delivery)
                    .or_default()
                    .insert(value["stack_id"].as_str().unwrap_or_default().to_owned());
            }
        }
        stacks.len() == wanted.len() && stacks.values().all(|s| s.len() == 2)
    };
    runs.until(Duration::from_secs(90), covered).await;
    for (delivery, sha) in sent {
        for decision in common::decisions_for(&runs.records, delivery) {
            let stack = decision["stack_id"].as_str().unwrap_or_default();
            let run_type = if stack == "prod" {
                RunType::Tracked
            } else {
                RunType::Proposed
            };
            assert_eq!(
                decision["run_id"],
                vcs_run_id(stack, sha, run_type).as_str(),
                "{delivery} on {stack}"
            );
        }
    }
}

/// A cluster, an ingest process on it, the default integration `bb` and two stacks on
/// `INFRA/network` (`prod` on main, `staging` on staging); returns them with the webhook secret.
async fn cluster_with_stacks() -> (Cluster, Inlet, String) {
    let cluster = Cluster::start(&[]);
    let ingest = cluster.stage("ingest");
    let created = admin(
        &ingest,
        cluster.admin_key,
        "POST",
        "/integrations",
        json!({"name": "bb", "is_default": true, "api_host_url": "https://x.example.com"}),
    )
    .await;
    assert_eq!(created.status, 201);
    for (id, branch) in [("prod", "main"), ("staging", "staging")] {
        let stack = admin(
            &ingest,
            cluster.admin_key,
            "POST",
            "/stacks",
            json!({"id": id, "name": id, "repository": "INFRA/network", "branch": branch}),
        )
        .await;
        assert_eq!(stack.status, 201);
    }
    let secret = common::webhook_secret(&ingest, cluster.admin_key, "bb").await;
    (cluster, ingest, secret)
}

/// Kill the router mid-stream, restart it; then the same for the workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_stages_lose_nothing() {
    let (cluster, ingest, secret) = cluster_with_stacks().await;
    let mut router = cluster.stage("router");
    let mut workers = cluster.stage("workers");
    let url = ingest.webhook_url("bb");
    let mut runs = TopicReader::new(&cluster.bootstrap, "inlet.runs").await;

    // Router killed after about a second of a three-second stream.
    let stream = tokio::spawn(pushes(url.clone(), secret.clone(), "r", 60));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    router.kill();
    let _router = cluster.stage("router");
    let sent = stream.await.expect("sender");
    assert_all_decided(&mut runs, &sent).await;

    // Workers killed the same way.
    let stream = tokio::spawn(pushes(url, secret, "w", 60));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    workers.kill();
    let _workers = cluster.stage("workers");
    let sent = stream.await.expect("sender");
    assert_all_decided(&mut runs, &sent).await;
}

/// The router's duplicate window used to live only in memory: right after a restart, a captured
/// signed body replayed under a fresh `X-Request-Id` was routed (and run) again. The restarted
/// router now reads back what its group had routed and still records the replay as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_a_router_restart_is_still_a_duplicate() {
    let (cluster, ingest, secret) = cluster_with_stacks().await;
    let mut router = cluster.stage("router");
    let _workers = cluster.stage("workers");
    let url = ingest.webhook_url("bb");
    let body = common::push_body("main", &"ab".repeat(20));
    let mut deliveries = TopicReader::new(&cluster.bootstrap, "inlet.deliveries").await;
    let router_said = |records: &[rdkafka::message::OwnedMessage], id: &str| {
        records
            .iter()
            .filter_map(|m| serde_json::from_slice::<Value>(rdkafka::Message::payload(m)?).ok())
            .find(|v| v["delivery_id"] == id && v["stage"] == "router")
    };
    let answer = webhook(&url, "repo:refs_changed", "original", &secret, &body).await;
    assert_eq!(answer.status, 202);
    deliveries
        .until(Duration::from_secs(30), |r| {
            router_said(r, "original").is_some()
        })
        .await;
    // Past the auto-commit interval (1 s), then a clean stop, which commits too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(router.stop().success());

    let restarted = cluster.stage("router");
    let answer = webhook(&url, "repo:refs_changed", "replayed", &secret, &body).await;
    assert_eq!(answer.status, 202);
    deliveries
        .until(Duration::from_secs(60), |r| {
            router_said(r, "replayed").is_some()
        })
        .await;
    let replayed = router_said(&deliveries.records, "replayed").expect("router event");
    assert_eq!(replayed["outcome"], "duplicate", "{replayed}");
    assert_eq!(replayed["reasons"][0], "replayed_body", "{replayed}");
    assert!(
        restarted.log().contains("duplicate window rebuilt"),
        "{}",
        restarted.log()
    );
    let mut runs = TopicReader::new(&cluster.bootstrap, "inlet.runs").await;
    runs.settle(Duration::from_secs(2)).await;
    assert!(
        common::decisions_for(&runs.records, "replayed").is_empty(),
        "the replay was decided"
    );
    assert_eq!(common::decisions_for(&runs.records, "original").len(), 2);
}

//! End to end: static group membership (`INLET_GROUP_INSTANCE_ID`, issue 15). Router and workers
//! processes given an instance id consume as usual, and on SIGTERM they commit but stay in their
//! consumer groups (KIP-345: a static member that comes back under its id within the session
//! timeout gets its partitions back without a rebalance), where a dynamic member leaves.
//!
//! The embedded broker accepts `group.instance.id` but does not implement static membership
//! (it finds members by member id only), so the rejoin without a rebalance cannot be shown here;
//! what inlet itself does differently, not leaving, can.

mod common;

use std::time::Duration;

use common::{Cluster, TopicReader, admin, decisions_for, webhook};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_consumes_and_stays_in_its_group_on_sigterm() {
    let cluster = Cluster::start(&[
        ("INLET_RECONCILE_INTERVAL_S", "0"),
        ("INLET_GROUP_INSTANCE_ID", "inlet-static-0"),
    ]);
    let ingest = cluster.stage("ingest");
    let key = cluster.admin_key;
    let secret = common::integration_secret(&ingest, key, "bb", true).await;
    let stack = admin(
        &ingest,
        key,
        "POST",
        "/stacks",
        json!({"id": "prod", "name": "prod", "repository": "INFRA/network", "branch": "main"}),
    )
    .await;
    assert_eq!(stack.status, 201, "{stack:?}");
    let mut router = cluster.stage("router");
    let mut workers = cluster.stage("workers");
    let mut runs = TopicReader::new(&cluster.bootstrap, "inlet.runs").await;

    let body = common::push_body("main", &"5a".repeat(20));
    let answer = webhook(
        &ingest.webhook_url("bb"),
        "repo:refs_changed",
        "static-1",
        &secret,
        &body,
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    runs.until(Duration::from_secs(60), |records| {
        !decisions_for(records, "static-1").is_empty()
    })
    .await;

    for (stage, process) in [("router", &mut router), ("workers", &mut workers)] {
        let status = process.stop();
        let log = process.log();
        assert!(status.success(), "{stage} exited with {status}:\n{log}");
        assert!(
            log.contains("static group member: not leaving the group"),
            "{stage} did not stay in its group:\n{log}"
        );
        assert!(
            !log.contains("left the consumer group"),
            "{stage} left its group:\n{log}"
        );
    }
}

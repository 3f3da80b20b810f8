//! End to end: every row of the trigger rules (DESIGN §5) with the event fixtures, deduplication,
//! `/inlet preview`, disabled and detached stacks, poison records, and the delivery log that tells
//! the story of each delivery.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Inlet, TopicReader, admin, decisions_for, header, webhook};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

const MAIN: &str = "178864a7d521b6f5e720b386b2c2b0ef8563e0dc";
const FROM: &str = "ef8755f06ee4b28c96a847a95cb8ec8ed6ddd1ca";
const WAIT: Duration = Duration::from_secs(30);

struct Env {
    dev: Inlet,
    key: String,
    secret: String,
    runs: TopicReader,
}

impl Env {
    async fn call(&self, method: &str, path: &str, body: Value) -> common::Answer {
        admin(&self.dev, &self.key, method, path, body).await
    }

    async fn send(&self, event_key: &str, delivery: &str, body: &[u8]) {
        let answer = webhook(
            &self.dev.webhook_url("bb"),
            event_key,
            delivery,
            &self.secret,
            body,
        )
        .await;
        assert_eq!(answer.status, 202, "{delivery}: {answer:?}");
    }

    /// The delivery's story once `done` holds for it, from the admin API.
    async fn story(&self, delivery: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let answer = self
                .call("GET", &format!("/deliveries/{delivery}"), Value::Null)
                .await;
            if answer.status == 200 {
                let events = answer.json()["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if done(&events) {
                    return events;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "story of {delivery}: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for `count` workers events of `delivery` and returns (stack → (outcome, status, run
    /// type, reasons, run_id)).
    async fn decided(
        &self,
        delivery: &str,
        count: usize,
    ) -> BTreeMap<String, (String, String, String, String, String)> {
        let events = self
            .story(delivery, |events| {
                events.iter().filter(|e| e["stage"] == "workers").count() >= count
            })
            .await;
        events
            .iter()
            .filter(|e| e["stage"] == "workers")
            .map(|e| {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                (
                    text(&e["stacks"][0]),
                    (
                        text(&e["outcome"]),
                        text(&e["status"]),
                        text(&e["run_type"]),
                        e["reasons"]
                            .as_array()
                            .map(|r| r.iter().map(text).collect::<Vec<_>>().join(","))
                            .unwrap_or_default(),
                        text(&e["run_id"]),
                    ),
                )
            })
            .collect()
    }

    /// The router's verdict on `delivery`.
    async fn routing(&self, delivery: &str) -> Value {
        let events = self
            .story(delivery, |events| {
                events.iter().any(|e| e["stage"] == "router")
            })
            .await;
        events
            .into_iter()
            .find(|e| e["stage"] == "router")
            .expect("router event")
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("tests/fixtures/{name}")).expect("fixture")
}

fn comment(text: &str, id: u64) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&fixture("pr_comment_added.json")).expect("json");
    body["comment"]["text"] = Value::from(text);
    body["comment"]["id"] = Value::from(id);
    serde_json::to_vec(&body).expect("json")
}

async fn setup() -> Env {
    let dev = Inlet::dev();
    let key = dev.ready.admin_key.clone().expect("key");
    let runs = TopicReader::new(&dev.ready.kafka_bootstrap_servers, "inlet.runs").await;
    let env = Env {
        dev,
        key,
        secret: String::new(),
        runs,
    };
    let created = env
        .call(
            "POST",
            "/integrations",
            json!({"name": "bb", "is_default": true, "api_host_url": "https://bitbucket.example.com"}),
        )
        .await;
    assert_eq!(created.status, 201);
    for (id, branch, disabled) in [
        ("prod", "main", false),
        ("release", "release", false),
        ("staging", "staging", false),
        ("frozen", "main", true),
    ] {
        let stack = env
            .call(
                "POST",
                "/stacks",
                json!({"id": id, "name": id, "repository": "INFRA/network", "branch": branch, "disabled": disabled}),
            )
            .await;
        assert_eq!(stack.status, 201, "{stack:?}");
    }
    let details = env
        .call("GET", "/integrations/bb/details", Value::Null)
        .await;
    let secret = details.json()["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    Env { secret, ..env }
}

/// repo:refs_changed to main: tracked for main's stacks, proposed for the others, blocked for a
/// disabled one; the router records where the webhook is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_requests_tracked_and_proposed_runs() {
    let env = setup().await;
    env.send(
        "repo:refs_changed",
        "push-main",
        &common::push_body("main", MAIN),
    )
    .await;
    let decided = env.decided("push-main", 4).await;
    assert_eq!(decided["prod"].0, "decided");
    assert_eq!(
        (decided["prod"].1.as_str(), decided["prod"].2.as_str()),
        ("requested", "tracked")
    );
    assert_eq!(
        (decided["release"].1.as_str(), decided["release"].2.as_str()),
        ("requested", "proposed")
    );
    assert_eq!(
        (decided["staging"].1.as_str(), decided["staging"].2.as_str()),
        ("requested", "proposed")
    );
    assert_eq!(
        (decided["frozen"].1.as_str(), decided["frozen"].3.as_str()),
        ("blocked", "stack_disabled")
    );
    let routing = env.routing("push-main").await;
    assert_eq!(routing["outcome"], "routed");
    assert_eq!(routing["webhook"]["offset"], 0);
}

/// pr:opened proposes runs at the source commit; a push of that commit is the same run (not
/// emitted twice); deletions and tags are recorded; blocked runs are told again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_request_of_one_commit_are_one_run() {
    let env = setup().await;
    env.send(
        "repo:refs_changed",
        "push-main",
        &common::push_body("main", MAIN),
    )
    .await;
    env.decided("push-main", 4).await;
    // pr:opened into main: proposed for main's stacks at the source commit.
    env.send("pr:opened", "pr-opened", &fixture("pr_opened.json"))
        .await;
    let decided = env.decided("pr-opened", 2).await;
    assert_eq!(decided.keys().collect::<Vec<_>>(), vec!["frozen", "prod"]);
    assert_eq!(decided["prod"].0, "decided");
    assert_eq!(
        (decided["prod"].1.as_str(), decided["prod"].2.as_str()),
        ("requested", "proposed")
    );
    let pr_run = decided["prod"].4.clone();

    // A push with an update of main (already decided), a new staging branch at the PR's source
    // commit, a deleted branch and a tag. prod's proposed run at that commit is the PR's run, not
    // emitted twice (the push + PR duplicate); staging gets a tracked run; the rest is recorded.
    env.send(
        "repo:refs_changed",
        "push-multi",
        &fixture("repo_refs_changed_multi.json"),
    )
    .await;
    let routing = env.routing("push-multi").await;
    let reasons: Vec<&str> = routing["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        reasons.contains(&"branch_deleted: refs/heads/old-experiment"),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"tag_push: refs/tags/v1.4.0"),
        "{reasons:?}"
    );
    let events = env
        .story("push-multi", |e| {
            e.iter().filter(|e| e["stage"] == "workers").count() >= 8
        })
        .await;
    let worker = |stack: &str, run_type: &str| {
        events
            .iter()
            .filter(|e| {
                e["stage"] == "workers" && e["stacks"][0] == stack && e["run_type"] == run_type
            })
            .map(|e| {
                (
                    e["outcome"].as_str().unwrap_or_default().to_owned(),
                    e["run_id"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert!(
        worker("prod", "proposed").contains(&("duplicate_run".to_owned(), pr_run.clone())),
        "{events:#?}"
    );
    assert!(
        worker("prod", "tracked")
            .iter()
            .all(|(outcome, _)| outcome == "duplicate_run")
    );
    assert!(
        worker("staging", "tracked")
            .iter()
            .any(|(outcome, _)| outcome == "decided")
    );

    // A push to the PR's source branch at that commit: every proposed run exists already but
    // staging's (it had a tracked run of that commit, a different run).
    env.send(
        "repo:refs_changed",
        "push-feature",
        &common::push_body("feature/vpc-peering", FROM),
    )
    .await;
    let decided = env.decided("push-feature", 4).await;
    for stack in ["prod", "release"] {
        assert_eq!(decided[stack].0, "duplicate_run", "{stack}: {decided:?}");
    }
    assert_eq!(decided["staging"].0, "decided");
    // Blocked runs are not remembered as decided: the disabled stack is told again why.
    assert_eq!(
        (decided["frozen"].0.as_str(), decided["frozen"].3.as_str()),
        ("decided", "stack_disabled")
    );
    assert_eq!(decided["prod"].4, pr_run);

    // Every decision on inlet.runs carries the delivery's id; duplicates were not emitted.
    let mut runs = TopicReader::new(&env.dev.ready.kafka_bootstrap_servers, "inlet.runs").await;
    runs.until(WAIT, |r| decisions_for(r, "push-feature").len() >= 2)
        .await;
    runs.settle(Duration::from_millis(300)).await;
    assert_eq!(decisions_for(&runs.records, "push-feature").len(), 2);
}

/// pr:from_ref_updated: a new proposed run at the new source commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_update_is_a_new_run() {
    let env = setup().await;
    env.send("pr:opened", "pr-opened", &fixture("pr_opened.json"))
        .await;
    let pr_run = env.decided("pr-opened", 2).await["prod"].4.clone();
    env.send(
        "pr:from_ref_updated",
        "pr-updated",
        &fixture("pr_from_ref_updated.json"),
    )
    .await;
    let decided = env.decided("pr-updated", 2).await;
    assert_eq!(decided["prod"].0, "decided");
    assert_ne!(decided["prod"].4, pr_run);
}

/// pr:modified proposes runs only when it retargets the pull request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_retarget_proposes_for_the_new_target() {
    let env = setup().await;
    // pr:modified retargeted to release: proposed for the stack tracking release only.
    env.send("pr:modified", "pr-modified", &fixture("pr_modified.json"))
        .await;
    let decided = env.decided("pr-modified", 1).await;
    assert_eq!(decided.keys().collect::<Vec<_>>(), vec!["release"]);
    // pr:modified without a target change: ignored.
    let mut same_target: Value =
        serde_json::from_slice(&fixture("pr_modified.json")).expect("json");
    same_target["previousTarget"]["displayId"] = Value::from("release");
    same_target["previousTarget"]["id"] = Value::from("refs/heads/release");
    env.send(
        "pr:modified",
        "pr-modified-title",
        &serde_json::to_vec(&same_target).expect("json"),
    )
    .await;
    assert_eq!(
        env.routing("pr-modified-title").await["reasons"][0],
        "target_branch_unchanged: pull-request/42"
    );
}

/// Approvals, unapprovals, change requests and merges: recorded, not triggered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_and_merges_are_recorded_not_triggered() {
    let env = setup().await;
    for (key, file, delivery) in [
        (
            "pr:reviewer:approved",
            "pr_reviewer_approved.json",
            "pr-approved",
        ),
        (
            "pr:reviewer:unapproved",
            "pr_reviewer_unapproved.json",
            "pr-unapproved",
        ),
        (
            "pr:reviewer:changes_requested",
            "pr_reviewer_changes_requested.json",
            "pr-changes",
        ),
        ("pr:merged", "pr_merged.json", "pr-merged"),
    ] {
        env.send(key, delivery, &fixture(file)).await;
        let routing = env.routing(delivery).await;
        assert_eq!(routing["outcome"], "ignored", "{delivery}");
        assert_eq!(
            routing["reasons"][0], "event_not_triggering: pull-request/42",
            "{delivery}"
        );
    }
}

/// /inlet preview: proposed runs that are never deduplicated; stacks can be named; other
/// comments are recorded as not a command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_comments() {
    let env = setup().await;
    env.send(
        "pr:comment:added",
        "preview-1",
        &comment("/inlet preview", 62),
    )
    .await;
    env.send(
        "pr:comment:added",
        "preview-2",
        &comment("/inlet preview", 63),
    )
    .await;
    let first = env.decided("preview-1", 2).await;
    let second = env.decided("preview-2", 2).await;
    // The same command on the same commit again: a new run, not a duplicate.
    assert_eq!(first["prod"].0, "decided");
    assert_eq!(second["prod"].0, "decided");
    assert_ne!(second["prod"].4, first["prod"].4);
    env.send(
        "pr:comment:added",
        "preview-named",
        &comment("/inlet preview staging", 64),
    )
    .await;
    let named = env.decided("preview-named", 1).await;
    assert_eq!(named.keys().collect::<Vec<_>>(), vec!["staging"]);
    env.send("pr:comment:added", "lgtm", &comment("LGTM, ship it", 65))
        .await;
    assert_eq!(
        env.routing("lgtm").await["reasons"][0],
        "comment_not_a_command: pull-request/42"
    );
}

/// The same X-Request-Id again is dropped by the router; an admin redelivery bypasses that
/// filter while run deduplication still holds; the listings show each delivery once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_redelivery_and_listings() {
    let mut env = setup().await;
    env.send(
        "repo:refs_changed",
        "push-main",
        &common::push_body("main", MAIN),
    )
    .await;
    env.decided("push-main", 4).await;
    env.send("pr:opened", "pr-opened", &fixture("pr_opened.json"))
        .await;
    env.decided("pr-opened", 2).await;
    // The same X-Request-Id again: dropped by the router as a duplicate.
    env.send(
        "repo:refs_changed",
        "push-main",
        &common::push_body("main", MAIN),
    )
    .await;
    env.story("push-main", |events| {
        events.iter().any(|e| e["outcome"] == "duplicate")
    })
    .await;

    // An admin redelivery bypasses that filter; run deduplication still holds.
    let redelivered = env
        .call("POST", "/deliveries/push-main/redeliver", Value::Null)
        .await;
    assert_eq!(redelivered.status, 202, "{redelivered:?}");
    let events = env
        .story("push-main", |events| {
            events
                .iter()
                .filter(|e| e["outcome"] == "duplicate_run")
                .count()
                >= 3
        })
        .await;
    assert!(events.iter().any(|e| e["outcome"] == "redelivered"));

    // The listings: the integration's recent deliveries, a stack's recent runs.
    let listed = env
        .call("GET", "/integrations/bb/deliveries?limit=1", Value::Null)
        .await;
    assert_eq!(listed.status, 200);
    let listed = listed.json();
    assert_eq!(listed["deliveries"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed["total"], 2, "one entry per distinct delivery id");
    assert_eq!(listed["next_offset"], 1);
    let runs = env
        .call("GET", "/stacks/prod/runs", Value::Null)
        .await
        .json();
    assert!(
        runs["runs"].as_array().map(Vec::len).unwrap_or_default() >= 2,
        "{runs}"
    );
    // The disabled stack is told again on redelivery; the requested runs are not repeated.
    env.runs
        .until(WAIT, |r| decisions_for(r, "push-main").len() >= 5)
        .await;
    env.runs.settle(Duration::from_millis(300)).await;
    assert_eq!(decisions_for(&env.runs.records, "push-main").len(), 5);
}

/// Signed events of any key reach `inlet.webhooks` byte for byte, and the delivery log says why
/// the router ignored the ones inlet does not handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhandled_events_are_stored_and_recorded_as_ignored() {
    let env = setup().await;
    let declined = fixture("pr_opened.json");
    let modified = br#"{"old": {"slug": "network", "project": {"key": "INFRA"}},
                        "new": {"slug": "network", "project": {"key": "INFRA"}}}"#
        .to_vec();
    let sent = [
        ("pr:declined", "other-declined", declined),
        ("repo:modified", "other-modified", modified),
    ];
    for (key, delivery, body) in &sent {
        env.send(key, delivery, body).await;
        let routing = env.routing(delivery).await;
        assert_eq!(routing["outcome"], "ignored", "{delivery}");
        assert_eq!(routing["event_key"], *key);
        assert_eq!(routing["reasons"][0], "event_not_handled", "{delivery}");
    }
    let mut webhooks =
        TopicReader::new(&env.dev.ready.kafka_bootstrap_servers, "inlet.webhooks").await;
    webhooks.until(WAIT, |r| r.len() >= sent.len()).await;
    use rdkafka::Message;
    for (key, delivery, body) in &sent {
        let record = webhooks
            .records
            .iter()
            .find(|m| header(m, "inlet-delivery-id").as_deref() == Some(*delivery))
            .unwrap_or_else(|| panic!("{delivery} not on inlet.webhooks"));
        assert_eq!(record.payload(), Some(&body[..]));
        assert_eq!(header(record, "inlet-event-key").as_deref(), Some(*key));
        assert_eq!(record.key(), Some(&b"bb/infra/network"[..]));
    }
}

/// A record the router cannot read goes to `inlet.dlq` with error headers, and the partition moves
/// on: the next webhook still becomes decisions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dlq() {
    let env = setup().await;
    let bootstrap = env.dev.ready.kafka_bootstrap_servers.clone();
    let producer: FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .expect("producer");
    use rdkafka::message::{Header, OwnedHeaders};
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "inlet-delivery-id",
            value: Some("poison-1"),
        })
        .insert(Header {
            key: "inlet-event-key",
            value: Some("repo:refs_changed"),
        })
        .insert(Header {
            key: "inlet-integration-name",
            value: Some("bb"),
        })
        .insert(Header {
            key: "inlet-received-at",
            value: Some("2026-11-26T00:00:00Z"),
        });
    // Same key as the valid push below, so both go to one partition, poison first.
    producer
        .send(
            FutureRecord::to("inlet.webhooks")
                .key("bb/infra/network")
                .payload("{this is not json")
                .headers(headers),
            Duration::from_secs(5),
        )
        .await
        .expect("produce");
    env.send(
        "repo:refs_changed",
        "after-poison",
        &common::push_body("main", MAIN),
    )
    .await;
    let decided = env.decided("after-poison", 4).await;
    assert_eq!(decided["prod"].1, "requested");

    let mut dlq = TopicReader::new(&bootstrap, "inlet.dlq").await;
    dlq.until(WAIT, |r| !r.is_empty()).await;
    let letter = &dlq.records[0];
    use rdkafka::Message;
    assert_eq!(letter.payload(), Some(&b"{this is not json"[..]));
    assert_eq!(
        header(letter, "inlet-error-stage").as_deref(),
        Some("router")
    );
    assert!(header(letter, "inlet-error").is_some_and(|e| e.contains("unreadable")));
    assert!(header(letter, "inlet-error-source").is_some_and(|s| s.starts_with("inlet.webhooks/")));
    assert_eq!(
        header(letter, "inlet-delivery-id").as_deref(),
        Some("poison-1")
    );
    let story = env.story("poison-1", |e| !e.is_empty()).await;
    assert_eq!(story[0]["outcome"], "dead_lettered");
}

/// A detached stack still matches webhooks under its former integration's name and is decided
/// blocked; `inlet replay` re-publishes an integration's webhooks since a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_stacks_and_replay() {
    let mut env = setup().await;
    let before = inlet_core::clock::now_rfc3339();
    assert_eq!(
        env.call("DELETE", "/integrations/bb", Value::Null)
            .await
            .status,
        204
    );
    let created = env
        .call(
            "POST",
            "/integrations",
            json!({"name": "bb", "is_default": true, "api_host_url": "https://x.example.com"}),
        )
        .await;
    assert_eq!(created.status, 201);
    let details = env
        .call("GET", "/integrations/bb/details", Value::Null)
        .await;
    env.secret = details.json()["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    env.send(
        "repo:refs_changed",
        "detached-push",
        &common::push_body("main", MAIN),
    )
    .await;
    let decided = env.decided("detached-push", 4).await;
    assert_eq!(
        (decided["prod"].1.as_str(), decided["prod"].3.as_str()),
        ("blocked", "integration_detached")
    );

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args([
            "replay",
            "--kafka-bootstrap-servers",
            &env.dev.ready.kafka_bootstrap_servers,
            "--integration",
            "bb",
            "--since",
            &before,
        ])
        .output()
        .expect("replay");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.starts_with("replayed 1 webhook(s)"), "{stdout}");
    // The replayed copy passes the duplicate filter. Blocked runs are not remembered as decided,
    // so the stacks, still detached, are decided blocked again.
    env.runs
        .until(WAIT, |r| decisions_for(r, "detached-push").len() >= 8)
        .await;

    // Re-attach one stack and redeliver: its run is requested now; the others stay blocked.
    let reattached = env
        .call("PATCH", "/stacks/prod", json!({"integration": "bb"}))
        .await;
    assert_eq!(reattached.json()["integration_status"], "attached");
    let redelivered = env
        .call("POST", "/deliveries/detached-push/redeliver", Value::Null)
        .await;
    assert_eq!(redelivered.status, 202);
    env.runs
        .until(WAIT, |r| {
            decisions_for(r, "detached-push")
                .iter()
                .any(|d| d["stack_id"] == "prod" && d["status"] == "requested")
        })
        .await;
    let prod_runs: Vec<Value> = decisions_for(&env.runs.records, "detached-push")
        .into_iter()
        .filter(|d| d["stack_id"] == "prod")
        .collect();
    // Same run id throughout: blocked twice, then requested.
    assert!(
        prod_runs
            .iter()
            .all(|d| d["run_id"] == prod_runs[0]["run_id"])
    );
}

//! End to end against the fake Bitbucket: the reporter shows each stack's run on its commit
//! (DESIGN §4.3). A push that requests two runs yields two INPROGRESS statuses, run updates turn
//! them SUCCESSFUL and FAILED, a blocked run shows FAILED with its reason, and a replayed update
//! is not posted twice.

mod common;

use std::time::{Duration, Instant};

use common::{Inlet, TopicReader, admin, webhook};
use inlet_bitbucket::fake::{FakeBitbucket, PostedBuildStatus};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "bitbucket-token-1";
const SHA: &str = "2222222222222222222222222222222222222222";

struct Env {
    fake: FakeBitbucket,
    dev: Inlet,
    secret: String,
}

/// `inlet dev` on the fake with stacks `prod` (main), `staging` (staging, so a push to main is a
/// proposed run) and `frozen` (main, disabled: blocked).
async fn setup() -> Env {
    let (fake, dev, key) = common::dev_on_fake(TOKEN).await;
    for (id, branch, disabled) in [
        ("prod", "main", false),
        ("staging", "staging", false),
        ("frozen", "main", true),
    ] {
        let stack = admin(
            &dev,
            &key,
            "POST",
            "/stacks",
            json!({"id": id, "name": format!("{id} stack"), "repository": "INFRA/network",
                   "branch": branch, "disabled": disabled}),
        )
        .await;
        assert_eq!(stack.status, 201, "{stack:?}");
    }
    let details = admin(&dev, &key, "GET", "/integrations/bb/details", Value::Null).await;
    let secret = details.json()["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    Env { fake, dev, secret }
}

/// Waits until the fake holds statuses for which `done` holds.
async fn statuses(
    fake: &FakeBitbucket,
    done: impl Fn(&[PostedBuildStatus]) -> bool,
) -> Vec<PostedBuildStatus> {
    let deadline = Instant::now() + WAIT;
    loop {
        let statuses = fake.build_statuses();
        if done(&statuses) {
            return statuses;
        }
        assert!(Instant::now() < deadline, "statuses: {statuses:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn has(statuses: &[PostedBuildStatus], key: &str, state: &str) -> bool {
    statuses
        .iter()
        .any(|s| s.key() == key && s.state() == state)
}

fn run_update(run_id: &str, stack_id: &str, state: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"schema": "inlet.run-update/v1", "run_id": run_id,
        "stack_id": stack_id, "state": state, "summary": format!("{state} in 1m"),
        "url": format!("https://runs.example.com/{run_id}"), "at": "2026-12-02T00:00:00Z"}))
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_and_updates_become_build_statuses() {
    let env = setup().await;
    let sent = webhook(
        &env.dev.webhook_url("bb"),
        "repo:refs_changed",
        "push-1",
        &env.secret,
        &common::push_body("main", SHA),
    )
    .await;
    assert_eq!(sent.status, 202);

    // Two requested runs → two INPROGRESS statuses; the disabled stack's run → FAILED with why.
    let shown = statuses(&env.fake, |s| {
        has(s, "inlet-prod-tracked", "INPROGRESS")
            && has(s, "inlet-staging-proposed", "INPROGRESS")
            && has(s, "inlet-frozen-tracked", "FAILED")
    })
    .await;
    for status in &shown {
        assert_eq!(
            status.repository.as_deref(),
            Some("INFRA/network"),
            "{status:?}"
        );
        assert_eq!(status.sha, SHA);
    }
    let prod = shown
        .iter()
        .find(|s| s.key() == "inlet-prod-tracked")
        .expect("prod");
    assert_eq!(prod.body["name"], "prod stack (tracked)");
    assert_eq!(prod.body["ref"], "refs/heads/main");
    let expected_url = format!(
        "{}/projects/INFRA/repos/network/commits/{SHA}",
        env.fake.base_url()
    );
    assert_eq!(
        prod.body["url"],
        expected_url.as_str(),
        "without status_url: the commit page"
    );
    let frozen = shown
        .iter()
        .find(|s| s.key() == "inlet-frozen-tracked")
        .expect("frozen");
    assert!(
        frozen.body["description"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{frozen:?}"
    );

    // The run ids come from the decisions on inlet.runs.
    let mut runs = TopicReader::new(&env.dev.ready.kafka_bootstrap_servers, "inlet.runs").await;
    runs.until(WAIT, |r| common::decisions_for(r, "push-1").len() == 3)
        .await;
    let run_of = |stack: &str| {
        common::decisions_for(&runs.records, "push-1")
            .into_iter()
            .find(|d| d["stack_id"] == stack)
            .and_then(|d| d["run_id"].as_str().map(str::to_owned))
            .expect("run id")
    };
    let (prod_run, staging_run) = (run_of("prod"), run_of("staging"));
    assert_eq!(prod.body["buildNumber"], prod_run.as_str());

    for (run, stack, state) in [
        (&prod_run, "prod", "queued"),
        (&prod_run, "prod", "running"),
        (&prod_run, "prod", "succeeded"),
        // A replayed update, and one for a run nobody decided.
        (&prod_run, "prod", "succeeded"),
        (&"not-a-run".to_owned(), "prod", "running"),
    ] {
        common::produce(
            &env.dev,
            "inlet.run-updates",
            stack,
            &run_update(run, stack, state),
            &[],
        )
        .await;
    }
    // What an operator (or a script of a run scheduler) writes by hand.
    let written = std::process::Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args([
            "run-update",
            "--kafka-bootstrap-servers",
            &env.dev.ready.kafka_bootstrap_servers,
            "--run-id",
            &staging_run,
            "--stack-id",
            "staging",
            "--state",
            "failed",
            "--summary",
            "failed in 1m",
        ])
        .output()
        .expect("inlet run-update");
    assert!(written.status.success(), "{written:?}");
    let line: Value = serde_json::from_slice(&written.stdout).expect("the update, as JSON");
    assert_eq!(line["schema"], "inlet.run-update/v1");
    let shown = statuses(&env.fake, |s| {
        has(s, "inlet-prod-tracked", "SUCCESSFUL") && has(s, "inlet-staging-proposed", "FAILED")
    })
    .await;
    let succeeded = shown
        .iter()
        .find(|s| s.key() == "inlet-prod-tracked" && s.state() == "SUCCESSFUL")
        .expect("succeeded");
    assert_eq!(
        succeeded.body["url"],
        format!("https://runs.example.com/{prod_run}").as_str()
    );
    assert_eq!(succeeded.body["description"], "succeeded in 1m");

    // Let the replay and the unknown run be handled, then count: each (run, step) posted once.
    let mut deliveries =
        TopicReader::new(&env.dev.ready.kafka_bootstrap_servers, "inlet.deliveries").await;
    deliveries
        .until(WAIT, |records| {
            records.iter().any(|m| {
                serde_json::from_slice::<Value>(rdkafka::Message::payload(m).unwrap_or_default())
                    .is_ok_and(|v| {
                        v["stage"] == "reporter"
                            && v["reasons"][0]
                                .as_str()
                                .unwrap_or_default()
                                .starts_with("unknown_run")
                    })
            })
        })
        .await;
    deliveries.settle(Duration::from_secs(1)).await;
    let posts = env.fake.build_statuses();
    let prod_posts: Vec<&str> = posts
        .iter()
        .filter(|s| s.key() == "inlet-prod-tracked")
        .map(|s| s.body["description"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        prod_posts,
        vec![
            "run requested",
            "queued in 1m",
            "running in 1m",
            "succeeded in 1m"
        ],
        "{posts:#?}"
    );
    let reporter_events: Vec<Value> = deliveries
        .values()
        .into_iter()
        .filter(|v| v["stage"] == "reporter")
        .collect();
    assert!(
        reporter_events
            .iter()
            .any(|v| v["outcome"] == "not_reported" && v["reasons"][0] == "already_posted"),
        "{reporter_events:#?}"
    );
    let metrics = common::metrics(&env.dev).await;
    assert!(
        metrics.contains("inlet_reporter_statuses_total{outcome=\"posted\"} 7"),
        "{metrics}"
    );

    // The integration is deleted: an update for a run of its (now detached) stack is recorded
    // and skipped, nothing is posted.
    let key = env.dev.ready.admin_key.clone().expect("admin key");
    let deleted = admin(&env.dev, &key, "DELETE", "/integrations/bb", Value::Null).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    let before = env.fake.build_statuses().len();
    common::produce(
        &env.dev,
        "inlet.run-updates",
        "staging",
        &run_update(&staging_run, "staging", "canceled"),
        &[],
    )
    .await;
    deliveries
        .until(WAIT, |records| {
            records.iter().any(|m| {
                serde_json::from_slice::<Value>(rdkafka::Message::payload(m).unwrap_or_default())
                    .is_ok_and(|v| {
                        v["stage"] == "reporter" && v["reasons"][0] == "integration_detached"
                    })
            })
        })
        .await;
    assert_eq!(env.fake.build_statuses().len(), before);
}

/// A reporter killed mid-stream (SIGKILL: no drain, no commit) and restarted loses no status and
/// posts none twice: the records its predecessor may have posted are read back first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_reporter_loses_no_status_and_repeats_none() {
    let fake = FakeBitbucket::start().await;
    fake.require_token(TOKEN);
    let cluster = common::Cluster::start(&[("INLET_BITBUCKET_ALLOW_HTTP", "true")]);
    let stage = |name: &str| cluster.stage(name);
    let key = cluster.admin_key;
    let ingest = stage("ingest");
    let _router = stage("router");
    let _workers = stage("workers");
    let mut reporter = stage("reporter");
    common::integration_on_fake(&ingest, key, &fake.base_url(), TOKEN).await;
    let stack = admin(
        &ingest,
        key,
        "POST",
        "/stacks",
        json!({"id": "prod", "name": "prod", "repository": "INFRA/network", "branch": "main"}),
    )
    .await;
    assert_eq!(stack.status, 201, "{stack:?}");
    let secret = common::webhook_secret(&ingest, key, "bb").await;
    let url = ingest.webhook_url("bb");

    // 40 pushes, 20 per second.
    let shas: Vec<String> = (0..40).map(|n| format!("{n:040x}")).collect();
    let sender = {
        let (url, secret, shas) = (url.clone(), secret.clone(), shas.clone());
        tokio::spawn(async move {
            for (n, sha) in shas.iter().enumerate() {
                let sent = webhook(
                    &url,
                    "repo:refs_changed",
                    &format!("push-{n}"),
                    &secret,
                    &common::push_body("main", sha),
                )
                .await;
                assert_eq!(sent.status, 202);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Killed once it has posted a few: mid-stream, with posts its group has not committed.
    statuses(&fake, |s| s.len() >= 5).await;
    reporter.kill();
    let _restarted = stage("reporter");
    sender.await.expect("sender");

    statuses(&fake, |s| {
        shas.iter()
            .all(|sha| s.iter().any(|p| &p.sha == sha && p.state() == "INPROGRESS"))
    })
    .await;
    // Whatever the restarted reporter re-reads has been handled by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for sha in &shas {
        let posts = fake
            .build_statuses()
            .into_iter()
            .filter(|p| &p.sha == sha)
            .count();
        assert_eq!(posts, 1, "{sha} posted {posts} times");
    }
}

/// Bitbucket down (500s, then a 429) holds up no decision: the run is decided at once, its
/// status waits in Kafka and is posted when Bitbucket answers again; a server before 7.14 gets
/// it on the legacy resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_bitbucket_delays_statuses_not_decisions() {
    let env = setup().await;
    env.fake.legacy_build_status_only(true);
    // Every request fails for a while: several rounds of the reporter's own retries (1 s, 2 s,
    // 4 s apart), each of a few client attempts per status.
    env.fake.fail_next(40, 500, None);
    let sent = webhook(
        &env.dev.webhook_url("bb"),
        "repo:refs_changed",
        "push-outage",
        &env.secret,
        &common::push_body("main", SHA),
    )
    .await;
    assert_eq!(sent.status, 202);
    let mut runs = TopicReader::new(&env.dev.ready.kafka_bootstrap_servers, "inlet.runs").await;
    runs.until(WAIT, |r| common::decisions_for(r, "push-outage").len() == 3)
        .await;
    // The decisions are out while Bitbucket still fails: nothing is posted yet.
    assert!(
        env.fake.build_statuses().is_empty(),
        "{:#?}",
        env.fake.build_statuses()
    );
    let shown = statuses(&env.fake, |s| {
        has(s, "inlet-prod-tracked", "INPROGRESS")
            && has(s, "inlet-staging-proposed", "INPROGRESS")
            && has(s, "inlet-frozen-tracked", "FAILED")
    })
    .await;
    assert!(
        shown.iter().all(|s| s.repository.is_none()),
        "legacy resource: {shown:#?}"
    );
    let metrics = common::metrics(&env.dev).await;
    let retries: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("inlet_reporter_retries_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    assert!(retries >= 1.0, "{metrics}");
    assert!(
        metrics.contains("inlet_reporter_statuses_total{outcome=\"posted_legacy\"} 3"),
        "{metrics}"
    );
}

/// Benchmark, not a test (no timed assertion; run it with
/// `REPORTER_BENCH_LATENCY_MS=50 cargo nextest run --test reporter --run-ignored only --no-capture`):
/// how many build statuses per second the reporter posts when decisions arrive faster than it
/// can, against the fake answering after `REPORTER_BENCH_LATENCY_MS` (default 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn reporter_throughput() {
    let latency: u64 = std::env::var("REPORTER_BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let count: usize = std::env::var("REPORTER_BENCH_DECISIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let env = setup().await;
    env.fake.set_delay(Duration::from_millis(latency));
    let decisions: Vec<(String, Vec<u8>)> = (0..count)
        .map(|n| {
            let stack = ["prod", "staging"][n % 2];
            let decision = json!({"schema": "inlet.run/v1", "run_id": format!("run_bench_{n}"),
                "stack_id": stack, "space_id": "root", "status": "requested", "run_type": "tracked",
                "commit": {"sha": format!("{n:040x}"), "branch": "main", "repository": "INFRA/network"},
                "trigger": {"kind": "push", "delivery_id": format!("bench-{n}"), "event_key": "repo:refs_changed"},
                "decided_at": "2026-12-02T00:00:00Z"});
            (stack.to_owned(), serde_json::to_vec(&decision).expect("json"))
        })
        .collect();
    let producer: rdkafka::producer::FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &env.dev.ready.kafka_bootstrap_servers)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut pending = Vec::with_capacity(count);
    for (key, payload) in &decisions {
        // Enqueued now (an `async fn send` would enqueue only when awaited, one at a time).
        let delivery = producer
            .send_result(
                rdkafka::producer::FutureRecord::to("inlet.runs")
                    .key(key)
                    .payload(payload),
            )
            .map_err(|(err, _)| err)
            .expect("enqueued");
        pending.push(delivery);
    }
    for delivery in pending {
        delivery.await.expect("acknowledged").expect("produced");
    }
    let produced = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(600);
    while env.fake.build_statuses().len() < count {
        assert!(
            Instant::now() < deadline,
            "{} of {count}",
            env.fake.build_statuses().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    println!(
        "reporter: {count} statuses at {latency} ms Bitbucket latency in {:.2} s ({:.0} statuses/s; decisions produced in {:.2} s)",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        produced.as_secs_f64()
    );
}

//! End to end against the fake Bitbucket: reconciliation (DESIGN §5.2). Bitbucket's state moves
//! while no webhook arrives (what an ingress outage or an open circuit breaker looks like from
//! inlet); a reconcile pass finds the difference and runs exactly what the webhooks would have,
//! marked recovered; the late webhooks then run nothing twice. A pass with nothing missing only
//! reads, a pass against a failing Bitbucket records why and emits nothing, and two routers
//! share 1,000 repositories by partition ownership.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Inlet, TopicReader, admin, header, webhook};
use inlet_bitbucket::fake::{FakeBitbucket, FakeChange, FakePullRequest};
use inlet_core::records::{RunType, vcs_run_id};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "bitbucket-token-reconcile";

fn sha(c: char) -> String {
    c.to_string().repeat(40)
}

struct Env {
    fake: FakeBitbucket,
    dev: Inlet,
    key: String,
}

/// Stacks: two on INFRA/network (main, staging, the whole repository), two on INFRA/dns's main
/// with project roots `zones` and `app` (path filters apply to recovered pushes too).
async fn setup() -> Env {
    let (fake, dev, key) = common::dev_on_fake(TOKEN).await;
    for (id, repository, branch, root) in [
        ("net-prod", "INFRA/network", "main", ""),
        ("net-stg", "INFRA/network", "staging", ""),
        ("dns-zones", "INFRA/dns", "main", "zones"),
        ("dns-app", "INFRA/dns", "main", "app"),
    ] {
        let stack = admin(
            &dev,
            &key,
            "POST",
            "/stacks",
            json!({"id": id, "name": id, "repository": repository, "branch": branch,
                   "project_root": root}),
        )
        .await;
        assert_eq!(stack.status, 201, "{stack:?}");
    }
    fake.set_branch("INFRA/network", "main", Some(&sha('a')));
    fake.set_branch("INFRA/network", "staging", Some(&sha('b')));
    fake.set_branch("INFRA/dns", "main", Some(&sha('d')));
    fake.set_pull_request(pull_request(&sha('f')));
    Env { fake, dev, key }
}

fn pull_request(commit: &str) -> FakePullRequest {
    FakePullRequest {
        repository: "INFRA/network".to_owned(),
        id: 7,
        from_branch: "feature/peering".to_owned(),
        to_branch: "main".to_owned(),
        latest_commit: commit.to_owned(),
        open: true,
    }
}

/// The value of a counter or gauge (summed over its series matching `labels`).
async fn metric(inlet: &Inlet, name: &str, labels: &str) -> f64 {
    common::metrics(inlet)
        .await
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn wait_metric(inlet: &Inlet, name: &str, labels: &str, at_least: f64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = metric(inlet, name, labels).await;
        if value >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{{{labels}}} is {value}, not {at_least}:\n{}",
            inlet.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks for a pass and waits until this process finished it (`passes` counts every pass).
async fn reconcile(env: &Env, passes_before: f64) -> String {
    // Requests less than 2 s apart are coalesced into one pass.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let answer = admin(
        &env.dev,
        &env.key,
        "POST",
        "/integrations/bb/reconcile",
        Value::Null,
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let id = answer.json()["reconcile_id"]
        .as_str()
        .expect("reconcile_id")
        .to_owned();
    wait_metric(
        &env.dev,
        "inlet_reconcile_passes_total",
        "",
        passes_before + 1.0,
    )
    .await;
    id
}

/// (stack, run type, commit, recovered) of each decision.
fn decisions(runs: &TopicReader) -> Vec<(String, String, String, bool)> {
    let mut got: Vec<_> = runs
        .values()
        .iter()
        .map(|r| {
            (
                r["stack_id"].as_str().unwrap_or_default().to_owned(),
                r["run_type"].as_str().unwrap_or_default().to_owned(),
                r["commit"]["sha"].as_str().unwrap_or_default().to_owned(),
                r["trigger"]["recovered"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    got.sort();
    got
}

/// Three pushes and a pull-request update happen in Bitbucket with no webhook; the pass runs
/// exactly what the webhooks would have, marked recovered, and says so in the delivery log;
/// then the late webhooks arrive and nothing runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_what_bitbucket_never_delivered_and_runs_it_once() {
    let env = setup().await;
    let bootstrap = env.dev.ready.kafka_bootstrap_servers.clone();
    let mut runs = TopicReader::new(&bootstrap, "inlet.runs").await;

    // The first pass only records what inlet never saw.
    reconcile(&env, 0.0).await;
    runs.settle(Duration::from_secs(1)).await;
    assert!(
        runs.records.is_empty(),
        "the first pass ran something: {:?}",
        decisions(&runs)
    );
    assert_eq!(
        metric(&env.dev, "inlet_reconcile_recovered_total", "").await,
        0.0
    );

    // Bitbucket moves on; none of it is delivered.
    env.fake
        .set_branch("INFRA/network", "main", Some(&sha('1')));
    env.fake
        .set_branch("INFRA/network", "staging", Some(&sha('2')));
    env.fake.set_branch("INFRA/dns", "main", Some(&sha('3')));
    env.fake.set_pull_request(pull_request(&sha('4')));
    env.fake.set_compare(
        "INFRA/dns",
        &sha('3'),
        Some(&sha('d')),
        vec![FakeChange::modify("zones/example.org.zone")],
    );
    let reconcile_id = reconcile(&env, 1.0).await;
    let expected: Vec<(String, String, String, bool)> = [
        ("dns-zones", "tracked", sha('3')),
        ("net-prod", "proposed", sha('2')),
        ("net-prod", "proposed", sha('4')),
        ("net-prod", "tracked", sha('1')),
        ("net-stg", "proposed", sha('1')),
        ("net-stg", "tracked", sha('2')),
    ]
    .into_iter()
    .map(|(s, t, c)| (s.to_owned(), t.to_owned(), c, true))
    .collect();
    runs.until(WAIT, |r| r.len() >= expected.len()).await;
    runs.settle(Duration::from_secs(2)).await;
    assert_eq!(decisions(&runs), expected);
    assert_eq!(
        metric(&env.dev, "inlet_reconcile_recovered_total", "kind=\"push\"").await,
        3.0
    );
    assert_eq!(
        metric(
            &env.dev,
            "inlet_reconcile_recovered_total",
            "kind=\"pull_request\""
        )
        .await,
        1.0
    );
    // Run ids are those of the webhook-driven runs (what downstream deduplicates on).
    let ids: BTreeSet<String> = runs
        .values()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(ids.contains(&vcs_run_id("net-prod", &sha('1'), RunType::Tracked)));

    // The delivery log says what was missing, and which pass found it.
    let push = runs
        .values()
        .into_iter()
        .find(|r| r["stack_id"] == "dns-zones")
        .expect("dns-zones run");
    let delivery = push["trigger"]["delivery_id"]
        .as_str()
        .expect("delivery id");
    assert!(delivery.starts_with("recovered-"), "{delivery}");
    let story = admin(
        &env.dev,
        &env.key,
        "GET",
        &format!("/deliveries/{delivery}"),
        Value::Null,
    )
    .await
    .json();
    let events = story["events"].as_array().expect("events");
    let recovered = events
        .iter()
        .find(|e| e["stage"] == "reconciler")
        .unwrap_or_else(|| panic!("no reconciler event: {story}"));
    assert_eq!(recovered["outcome"], "recovered");
    let reasons = recovered["reasons"].to_string();
    assert!(
        reasons.contains(&format!(
            "missing_push: refs/heads/main {}..{}",
            &sha('d')[..12],
            &sha('3')[..12]
        )) && reasons.contains(&format!("reconcile: {reconcile_id}")),
        "{reasons}"
    );
    let router = events
        .iter()
        .find(|e| e["stage"] == "router")
        .unwrap_or_else(|| panic!("no router event: {story}"));
    assert!(
        router["reasons"]
            .to_string()
            .contains("no_affected_files: dns-app"),
        "path filters apply to recovered pushes: {router}"
    );

    // The webhooks arrive late: the same runs, so nothing new is decided.
    let secret = common::webhook_secret(&env.dev, &env.key, "bb").await;
    let url = env.dev.webhook_url("bb");
    for (n, (repository, branch, from, to)) in [
        ("network", "main", sha('a'), sha('1')),
        ("network", "staging", sha('b'), sha('2')),
        ("dns", "main", sha('d'), sha('3')),
    ]
    .into_iter()
    .enumerate()
    {
        let body = json!({"eventKey": "repo:refs_changed", "date": "2026-12-02T10:00:00+0000",
            "actor": {"name": "alice"},
            "repository": {"slug": repository, "project": {"key": "INFRA"}},
            "changes": [{"ref": {"id": format!("refs/heads/{branch}"), "displayId": branch, "type": "BRANCH"},
                         "refId": format!("refs/heads/{branch}"), "fromHash": from, "toHash": to, "type": "UPDATE"}]});
        let sent = webhook(
            &url,
            "repo:refs_changed",
            &format!("late-push-{n}"),
            &secret,
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(sent.status, 202);
    }
    let mut pr: Value =
        serde_json::from_str(include_str!("fixtures/pr_from_ref_updated.json")).expect("fixture");
    pr["pullRequest"]["id"] = json!(7);
    pr["pullRequest"]["fromRef"]["latestCommit"] = json!(sha('4'));
    pr["previousFromHash"] = json!(sha('f'));
    let sent = webhook(
        &url,
        "pr:from_ref_updated",
        "late-pr",
        &secret,
        pr.to_string().as_bytes(),
    )
    .await;
    assert_eq!(sent.status, 202);
    wait_metric(&env.dev, "inlet_workers_duplicate_runs_total", "", 6.0).await;
    runs.settle(Duration::from_secs(2)).await;
    assert_eq!(decisions(&runs), expected, "a late webhook ran again");

    // And the heads follow the webhooks: another pass finds nothing.
    reconcile(&env, 2.0).await;
    runs.settle(Duration::from_secs(1)).await;
    assert_eq!(runs.records.len(), expected.len());
    assert_eq!(
        metric(&env.dev, "inlet_reconcile_recovered_total", "").await,
        4.0
    );
}

/// With nothing missing a pass only reads and emits nothing; against a Bitbucket answering 500
/// it records why and emits nothing; once Bitbucket answers again, the next pass recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_missing_reads_only_and_an_outage_emits_nothing() {
    let env = setup().await;
    let bootstrap = env.dev.ready.kafka_bootstrap_servers.clone();
    let mut webhooks = TopicReader::new(&bootstrap, "inlet.webhooks").await;
    reconcile(&env, 0.0).await;
    env.fake.clear_requests();
    reconcile(&env, 1.0).await;
    let requests = env.fake.requests();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| r.method == "GET"),
        "a pass with nothing missing wrote to Bitbucket: {requests:?}"
    );
    // Two branch heads of INFRA/network and one of INFRA/dns, and their pull requests.
    let heads = requests
        .iter()
        .filter(|r| r.path.ends_with("/commits"))
        .count();
    assert_eq!(heads, 3, "{requests:?}");
    webhooks.settle(Duration::from_secs(1)).await;
    assert!(
        webhooks.records.is_empty(),
        "a pass with nothing missing emitted a delivery"
    );

    // Bitbucket fails: the pass records why and synthesizes nothing from a partial answer.
    env.fake
        .set_branch("INFRA/network", "main", Some(&sha('1')));
    env.fake.fail_next(10_000, 500, None);
    let failed_pass = reconcile(&env, 2.0).await;
    assert!(
        metric(
            &env.dev,
            "inlet_reconcile_passes_total",
            "outcome=\"incomplete\""
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            &env.dev,
            "inlet_reconcile_errors_total",
            "reason=\"status_5xx\""
        )
        .await
            >= 2.0
    );
    webhooks.settle(Duration::from_secs(1)).await;
    assert!(
        webhooks.records.is_empty(),
        "a failed pass emitted a delivery"
    );
    assert!(
        env.dev
            .log()
            .contains("reconciliation could not read the repository")
    );
    // The delivery log keeps the pass's outcome under its id.
    let deadline = Instant::now() + WAIT;
    let summary = loop {
        let path = format!("/deliveries/{failed_pass}");
        let story = admin(&env.dev, &env.key, "GET", &path, Value::Null).await;
        if story.status == 200 {
            break story.json();
        }
        assert!(
            Instant::now() < deadline,
            "no story for {failed_pass}: {story:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let event = &summary["events"][0];
    assert_eq!(event["stage"], "reconciler", "{summary}");
    assert_eq!(event["outcome"], "reconciled", "{summary}");
    assert_eq!(
        event["reasons"],
        json!(["repositories: 2", "recovered: 0", "failed: status_5xx: 2"]),
        "{summary}"
    );

    // Bitbucket is back: the next pass recovers the push.
    env.fake.fail_next(0, 500, None);
    reconcile(&env, 3.0).await;
    webhooks.until(WAIT, |r| !r.is_empty()).await;
    let record = &webhooks.records[0];
    assert!(header(record, "inlet-recovered").is_some());
    assert_eq!(
        header(record, "inlet-event-key").as_deref(),
        Some("repo:refs_changed")
    );
}

/// The sum of the series of `name` whose labels contain `labels`, in a `/metrics` text.
fn metric_in(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The router partitions a process consumes (its lag series).
fn partitions_in(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("inlet_consumer_lag_records{") && l.contains("stage=\"router\""))
        .count()
}

async fn wait_for(addr: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = common::metrics_at(addr).await;
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} not reached:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// 1,000 repositories, two routers: each reconciles the repositories of its partitions (about
/// half), together all of them once; killing one moves its repositories to the other. The
/// fake answers in 20 ms; the pass over all 1,000 is timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_share_a_thousand_repositories() {
    use inlet_control::commands::{CONTROL_SCHEMA, ControlCommand, ControlRecord, StackSpec};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    const REPOSITORIES: usize = 1_000;
    let cluster = common::Cluster::start(&[
        ("INLET_RECONCILE_INTERVAL_S", "0"),
        ("INLET_BITBUCKET_ALLOW_HTTP", "true"),
    ]);
    let fake = FakeBitbucket::start().await;
    fake.require_token(TOKEN);
    let ingest = cluster.stage("ingest");
    let key = cluster.admin_key;
    common::integration_on_fake(&ingest, key, &fake.base_url(), TOKEN).await;
    // The stacks go straight onto the control log (the admin API's write limit would make
    // 1,000 creations take most of a minute); every process folds them the same way.
    let producer: FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .create()
        .expect("producer");
    let mut sends = Vec::new();
    for i in 0..REPOSITORIES {
        let repository = format!("P{}/repo-{i}", i % 10);
        fake.set_branch(&repository, "main", Some(&sha('a')));
        let record = ControlRecord {
            schema: CONTROL_SCHEMA.to_owned(),
            command_id: format!("seed-{i}"),
            origin: "test".to_owned(),
            issued_at: "2026-12-02T00:00:00.000Z".to_owned(),
            actor: "bootstrap".to_owned(),
            command: ControlCommand::CreateStack {
                stack: StackSpec {
                    id: format!("stack-{i}"),
                    name: format!("stack-{i}"),
                    space_id: "root".to_owned(),
                    integration: "bb".to_owned(),
                    repository,
                    branch: "main".to_owned(),
                    project_root: String::new(),
                    additional_project_globs: Vec::new(),
                    labels: Vec::new(),
                    disabled: false,
                },
            },
        };
        let payload = serde_json::to_vec(&record).expect("json");
        let entity = record.command.entity_key();
        let delivery = producer
            .send_result(
                FutureRecord::to("inlet.control")
                    .key(&entity)
                    .payload(&payload),
            )
            .map_err(|(err, _)| err)
            .expect("enqueued");
        sends.push(delivery);
        if sends.len() == 100 {
            for sent in sends.drain(..) {
                sent.await.expect("not cancelled").expect("control record");
            }
        }
    }
    for sent in sends {
        sent.await.expect("not cancelled").expect("control record");
    }
    fake.set_delay(Duration::from_millis(20));
    let addrs = [common::free_addr(), common::free_addr()];
    let first = cluster.stage_with("router", &["--metrics-addr", &addrs[0]]);
    let mut second = cluster.stage_with("router", &["--metrics-addr", &addrs[1]]);
    // Both in the group, every partition assigned, every stack folded.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let texts = [
            common::metrics_at(&addrs[0]).await,
            common::metrics_at(&addrs[1]).await,
        ];
        let counts: Vec<usize> = texts.iter().map(|t| partitions_in(t)).collect();
        let stacks: Vec<f64> = texts
            .iter()
            .map(|t| metric_in(t, "inlet_control_registry_entities", "kind=\"stacks\""))
            .collect();
        if counts.iter().all(|c| *c > 0)
            && counts.iter().sum::<usize>() == 12
            && stacks.iter().all(|s| *s >= REPOSITORIES as f64)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions {counts:?}, stacks {stacks:?}:\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // One pass each: together every repository once, each about half.
    let answer = admin(
        &ingest,
        key,
        "POST",
        "/integrations/bb/reconcile",
        Value::Null,
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let mut read = Vec::new();
    for addr in &addrs {
        let text = wait_for(addr, "a pass", |t| {
            metric_in(t, "inlet_reconcile_passes_total", "outcome=\"complete\"") >= 1.0
        })
        .await;
        read.push(metric_in(
            &text,
            "inlet_bitbucket_calls_total",
            "endpoint=\"branch_head\"",
        ));
    }
    assert_eq!(read.iter().sum::<f64>(), REPOSITORIES as f64, "{read:?}");
    assert!(
        read.iter().all(|r| (250.0..=750.0).contains(r)),
        "not shared: {read:?}"
    );

    // One router dies: the survivor takes its partitions, and with them its repositories.
    second.kill();
    wait_for(&addrs[0], "all 12 partitions on the survivor", |t| {
        partitions_in(t) == 12
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let before = common::metrics_at(&addrs[0]).await;
    let answer = admin(
        &ingest,
        key,
        "POST",
        "/integrations/bb/reconcile",
        Value::Null,
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
    let after = wait_for(&addrs[0], "a second pass", |t| {
        metric_in(t, "inlet_reconcile_passes_total", "outcome=\"complete\"") >= 2.0
    })
    .await;
    let calls = |t: &str, endpoint: &str| {
        metric_in(
            t,
            "inlet_bitbucket_calls_total",
            &format!("endpoint=\"{endpoint}\""),
        )
    };
    assert_eq!(
        calls(&after, "branch_head") - calls(&before, "branch_head"),
        REPOSITORIES as f64,
        "the survivor did not take over every repository"
    );
    let seconds = metric_in(&after, "inlet_reconcile_pass_duration_seconds_sum", "")
        - metric_in(&before, "inlet_reconcile_pass_duration_seconds_sum", "");
    println!(
        "one pass over {REPOSITORIES} repositories at 20 ms per call: {seconds:.2} s, \
         {} branch-head and {} pull-request calls",
        calls(&after, "branch_head") - calls(&before, "branch_head"),
        calls(&after, "open_pull_requests") - calls(&before, "open_pull_requests"),
    );
    // Nothing was missing: the heads of the first pass (the other router's half included,
    // read from the heads topic) made the second one find nothing.
    assert_eq!(
        metric_in(&after, "inlet_reconcile_recovered_total", ""),
        0.0
    );
}

/// Literally with the ingress down, and across a router restart: the periodic pass of a router
/// started after the push knows the heads its predecessor recorded (read back from
/// `inlet.heads`), recovers the push, and the webhook resent once ingest is back runs nothing
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_router_recovers_a_push_made_while_ingest_was_down() {
    let cluster = common::Cluster::start(&[
        ("INLET_RECONCILE_INTERVAL_S", "2"),
        ("INLET_BITBUCKET_ALLOW_HTTP", "true"),
    ]);
    let fake = FakeBitbucket::start().await;
    fake.require_token(TOKEN);
    fake.set_branch("INFRA/network", "main", Some(&sha('a')));
    let mut ingest = cluster.stage("ingest");
    let key = cluster.admin_key;
    common::integration_on_fake(&ingest, key, &fake.base_url(), TOKEN).await;
    let stack = admin(
        &ingest,
        key,
        "POST",
        "/stacks",
        json!({"id": "net", "name": "net", "repository": "INFRA/network", "branch": "main"}),
    )
    .await;
    assert_eq!(stack.status, 201, "{stack:?}");
    let secret = common::webhook_secret(&ingest, key, "bb").await;
    let _workers = cluster.stage("workers");
    let addr = common::free_addr();
    let mut router = cluster.stage_with("router", &["--metrics-addr", &addr]);
    // The first periodic pass records the head.
    wait_for(&addr, "the head recorded", |t| {
        metric_in(t, "inlet_reconcile_heads", "") >= 1.0
    })
    .await;

    // Ingest and the router go down; Bitbucket's push finds nobody.
    ingest.kill();
    router.kill();
    fake.set_branch("INFRA/network", "main", Some(&sha('1')));
    let addr = common::free_addr();
    let _router = cluster.stage_with("router", &["--metrics-addr", &addr]);
    let mut runs = TopicReader::new(&cluster.bootstrap, "inlet.runs").await;
    runs.until(WAIT, |r| !r.is_empty()).await;
    let run = &runs.values()[0];
    assert_eq!(run["commit"]["sha"], sha('1'));
    assert_eq!(run["run_type"], "tracked");
    assert_eq!(run["trigger"]["recovered"], true);

    // Ingest is back and the webhook is resent: the same run, not decided again.
    let ingest = cluster.stage("ingest");
    let body = json!({"eventKey": "repo:refs_changed", "date": "2026-12-02T10:00:00+0000",
        "repository": {"slug": "network", "project": {"key": "INFRA"}},
        "changes": [{"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"},
                     "refId": "refs/heads/main", "fromHash": sha('a'), "toHash": sha('1'), "type": "UPDATE"}]});
    let sent = webhook(
        &ingest.webhook_url("bb"),
        "repo:refs_changed",
        "late-after-restart",
        &secret,
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(sent.status, 202, "{sent:?}");
    let mut deliveries = TopicReader::new(&cluster.bootstrap, "inlet.deliveries").await;
    deliveries
        .until(WAIT, |r| {
            r.iter().any(|m| {
                header(m, "inlet-delivery-id").is_none()
                    && String::from_utf8_lossy(rdkafka::Message::key(m).unwrap_or_default())
                        == "late-after-restart"
                    && String::from_utf8_lossy(rdkafka::Message::payload(m).unwrap_or_default())
                        .contains("\"stage\":\"workers\"")
            })
        })
        .await;
    let late: Vec<Value> = deliveries
        .values()
        .into_iter()
        .filter(|v| v["delivery_id"] == "late-after-restart" && v["stage"] == "workers")
        .collect();
    assert_eq!(late[0]["outcome"], "duplicate_run", "{late:?}");
    runs.settle(Duration::from_secs(1)).await;
    assert_eq!(runs.records.len(), 1);
}

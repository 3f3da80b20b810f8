//! End to end: scale out and failover on one broker. Two `inlet ingest`, two `inlet router` and
//! two `inlet workers` processes share the load of pushes to 24 repositories (their keys spread
//! over the 12 partitions of `inlet.webhooks`, their 36 stacks over those of `inlet.triggers`);
//! one router and one workers process are stopped midway and the survivors take over their
//! partitions. Every accepted webhook still becomes exactly the decisions of its repository's
//! stacks, with the deterministic `run_id`s: at-least-once, a replay may repeat a decision, never
//! change or lose one.
//!
//! Two ways to stop (issue 15, failover in seconds), each with the deadline the issue sets:
//! - SIGKILL (no drain, no commit, no leave): the group coordinator notices after the session
//!   timeout; every accepted webhook is decided within 15 s of the last send.
//! - SIGTERM: the process drains, commits and leaves the group, so its partitions move at once:
//!   the survivors handle a taken-over partition within 3 s of the signal (on the embedded
//!   broker a rebalance waits the session timeout less a second for members to rejoin, 2 s
//!   here, where a real broker goes on once every member rejoined).
//!
//! Stage processes run with the default consumer-group settings: on the embedded broker, which
//! they recognise by its cluster id, a 3 s session timeout, 1 s heartbeats, cooperative-sticky.
//! Each test prints its takeover times and how long after the last send the last decision came.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Cluster, TopicReader, admin, header, metric_sum, partitions_read, webhook};
use inlet_core::records::{RunType, vcs_run_id};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;
use serde_json::{Value, json};

/// Repositories pushed to; `SCALE/r0` … `SCALE/r23`.
const REPOSITORIES: usize = 24;
/// Pushes sent, alternately to each ingest process.
const PUSHES: usize = 480;
/// Pushes per second.
const RATE: u64 = 60;
/// The router and the workers process are killed once this many pushes were sent.
const KILL_AFTER: usize = PUSHES / 2;

/// The stacks of repository `i`: `r{i}-main` tracks main (a push there is a tracked run); even
/// repositories also have `r{i}-dev` on develop (a push to main is a proposed run for it).
fn stacks_of(i: usize) -> Vec<(String, &'static str, RunType)> {
    let mut stacks = vec![(format!("r{i}-main"), "main", RunType::Tracked)];
    if i.is_multiple_of(2) {
        stacks.push((format!("r{i}-dev"), "develop", RunType::Proposed));
    }
    stacks
}

/// One push the test sent.
struct Push {
    delivery: String,
    repository: usize,
    sha: String,
    /// The answer's status.
    status: u16,
}

/// A decision the pushes call for.
struct Wanted {
    delivery: String,
    stack: String,
    sha: String,
    run_type: RunType,
    /// Whether its push was answered 202, so the decision must exist (a 503's record may or may
    /// not have been written).
    required: bool,
}

/// The push fixture, to main of `SCALE/r{repository}` at `sha`.
fn push_to(repository: usize, sha: &str) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(&common::push_body("main", sha)).expect("json");
    body["repository"]["slug"] = Value::from(format!("r{repository}"));
    body["repository"]["name"] = Value::from(format!("r{repository}"));
    body["repository"]["project"]["key"] = Value::from("SCALE");
    serde_json::to_vec(&body).expect("json")
}

/// Sends [`PUSHES`] pushes to main at [`RATE`] per second, alternately to `urls[0]` and
/// `urls[1]`, counting them in `sent`; push `n` goes to repository `n % 24`.
async fn pushes(urls: [String; 2], secret: String, sent: Arc<AtomicUsize>) -> Vec<Push> {
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut requests = Vec::new();
    for n in 0..PUSHES {
        tick.tick().await;
        let (url, secret) = (urls[n % 2].clone(), secret.clone());
        // Each on its own task, so one slow answer does not slow the rate.
        requests.push(tokio::spawn(async move {
            let delivery = format!("scale-{n}");
            let sha = format!("5ca1e{n:035x}");
            let body = push_to(n % REPOSITORIES, &sha);
            let answer = webhook(&url, "repo:refs_changed", &delivery, &secret, &body).await;
            Push {
                delivery,
                repository: n % REPOSITORIES,
                sha,
                status: answer.status,
            }
        }));
        sent.fetch_add(1, Ordering::Relaxed);
    }
    let mut done = Vec::new();
    for request in requests {
        done.push(request.await.expect("push"));
    }
    done
}

/// Polls the `/metrics` of `addr` until `done` holds (at most 60 s).
async fn wait_metrics(addr: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = common::metrics_at(addr).await;
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} not reached:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the two processes of `stage` at `addrs` read all 12 partitions between them,
/// each some; returns the partitions of each.
async fn wait_shared(addrs: &[String; 2], stage: &str) -> [BTreeSet<i32>; 2] {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let first = partitions_read(&common::metrics_at(&addrs[0]).await, stage);
        let second = partitions_read(&common::metrics_at(&addrs[1]).await, stage);
        if !first.is_empty()
            && !second.is_empty()
            && first.is_disjoint(&second)
            && first.len() + second.len() == 12
        {
            return [first, second];
        }
        assert!(
            Instant::now() < deadline,
            "the {stage} processes do not share the 12 partitions: {first:?} {second:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("milliseconds")
}

fn json_of(message: &OwnedMessage) -> Value {
    serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON record")
}

/// The first record of `records` written after `killed_at` (ms since the epoch) that `took_over`
/// accepts, as milliseconds after the stop: the survivor's first output for a partition it took
/// over. `took_over` only accepts outputs of inputs written after the stop, which the stopped
/// process (it reads nothing after the signal) cannot have handled while it drained.
fn first_after(
    records: &[OwnedMessage],
    killed_at: i64,
    took_over: impl Fn(&OwnedMessage) -> bool,
) -> Option<i64> {
    records
        .iter()
        .filter_map(|m| Some((m.timestamp().to_millis()?, m)))
        .filter(|(at, m)| *at > killed_at && took_over(m))
        .map(|(at, _)| at - killed_at)
        .min()
}

/// How the router and the workers process are stopped midway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGKILL: gone without a word; the group notices after the session timeout.
    Kill,
    /// SIGTERM: drain, commit, leave the group, exit.
    Term,
}

/// What a run measured, in milliseconds.
struct Measured {
    /// From the stop to the surviving router's first trigger from a taken-over partition.
    router_takeover: Option<i64>,
    /// From the stop to the surviving workers' first decision from a taken-over partition.
    workers_takeover: Option<i64>,
    /// From the answer to the last push to the first copy of the last required decision.
    after_last_send: i64,
}

fn seconds(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => format!("{:.2} s", ms as f64 / 1000.0),
        None => "none seen".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_each_stage_share_the_load_and_survive_a_kill() {
    let measured = scale_out(Stop::Kill).await;
    // The deadline: the dead members' partitions are taken over within seconds.
    assert!(
        measured.after_last_send <= 15_000,
        "the last decision came {} after the last send (SIGKILL): more than 15 s",
        seconds(Some(measured.after_last_send))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_stopped_with_sigterm_hands_its_partitions_over_at_once() {
    let measured = scale_out(Stop::Term).await;
    for (stage, takeover) in [
        ("router", measured.router_takeover),
        ("workers", measured.workers_takeover),
    ] {
        let takeover = takeover.unwrap_or_else(|| panic!("no {stage} takeover seen"));
        assert!(
            takeover <= 3_000,
            "the surviving {stage} took {} after the SIGTERM to handle a taken-over partition",
            seconds(Some(takeover))
        );
    }
    assert!(
        measured.after_last_send <= 15_000,
        "the last decision came {} after the last send (SIGTERM)",
        seconds(Some(measured.after_last_send))
    );
}

/// Runs the pushes with all six processes, stops a router and a workers process midway as `stop`
/// says, checks that every accepted push has exactly its decisions, and measures the takeover.
async fn scale_out(stop: Stop) -> Measured {
    // No reconciliation: the integration's Bitbucket does not exist.
    let cluster = Cluster::start(&[("INLET_RECONCILE_INTERVAL_S", "0")]);
    let ingest = [cluster.stage("ingest"), cluster.stage("ingest")];
    let key = cluster.admin_key;
    let created = admin(
        &ingest[0],
        key,
        "POST",
        "/integrations",
        json!({"name": "bb", "is_default": true, "api_host_url": "https://x.example.com"}),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let mut stack_count = 0;
    for i in 0..REPOSITORIES {
        for (id, branch, _) in stacks_of(i) {
            let stack = admin(
                &ingest[0],
                key,
                "POST",
                "/stacks",
                json!({"id": id, "name": id, "repository": format!("SCALE/r{i}"), "branch": branch}),
            )
            .await;
            assert_eq!(stack.status, 201, "{stack:?}");
            stack_count += 1;
        }
    }
    // The other ingest serves the integration once its fold has it (an admin read catches up).
    let listed = admin(&ingest[1], key, "GET", "/stacks", Value::Null).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(
        listed.json()["stacks"].as_array().map(Vec::len),
        Some(stack_count),
        "{listed:?}"
    );
    let secret = common::webhook_secret(&ingest[1], key, "bb").await;

    let mut routers = [cluster.stage("router"), cluster.stage("router")];
    let mut workers = [cluster.stage("workers"), cluster.stage("workers")];
    let router_addrs = [routers[0].operations_addr(), routers[1].operations_addr()];
    let worker_addrs = [workers[0].operations_addr(), workers[1].operations_addr()];
    let router_partitions = wait_shared(&router_addrs, "router").await;
    let worker_partitions = wait_shared(&worker_addrs, "workers").await;
    eprintln!("router partitions of inlet.webhooks: {router_partitions:?}");
    eprintln!("workers partitions of inlet.triggers: {worker_partitions:?}");

    let mut webhooks = TopicReader::new(&cluster.bootstrap, "inlet.webhooks").await;
    let mut triggers = TopicReader::new(&cluster.bootstrap, "inlet.triggers").await;
    let mut runs = TopicReader::new(&cluster.bootstrap, "inlet.runs").await;

    let sent = Arc::new(AtomicUsize::new(0));
    let urls = [ingest[0].webhook_url("bb"), ingest[1].webhook_url("bb")];
    let stream = tokio::spawn(pushes(urls, secret, sent.clone()));
    while sent.load(Ordering::Relaxed) < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What each process had handled while all four ran: the load is shared.
    let routed =
        |text: &str| metric_sum(text, "inlet_router_events_total", &[("outcome", "routed")]);
    let decided = |text: &str| metric_sum(text, "inlet_workers_decisions_total", &[]);
    let mut routed_by = Vec::new();
    for addr in &router_addrs {
        routed_by.push(routed(&common::metrics_at(addr).await));
    }
    let mut decided_by = Vec::new();
    for addr in &worker_addrs {
        decided_by.push(decided(&common::metrics_at(addr).await));
    }
    // Stop the second router and the second workers process. SIGKILL: the time once each is
    // gone; SIGTERM: the time of the signal (each drains and leaves on its own, at once).
    let (router_killed_at, workers_killed_at) = match stop {
        Stop::Kill => {
            routers[1].kill();
            let router_killed_at = now_ms();
            workers[1].kill();
            (router_killed_at, now_ms())
        }
        Stop::Term => {
            let router_killed_at = now_ms();
            routers[1].terminate();
            let workers_killed_at = now_ms();
            workers[1].terminate();
            (router_killed_at, workers_killed_at)
        }
    };
    eprintln!(
        "before the kill ({} pushes sent): webhooks routed per router {routed_by:?}, \
         decisions per workers process {decided_by:?}",
        sent.load(Ordering::Relaxed)
    );
    for (what, counts) in [("router", &routed_by), ("workers", &decided_by)] {
        let total: f64 = counts.iter().sum();
        assert!(total > 0.0, "no {what} handled anything before the kill");
        for count in counts {
            assert!(
                *count >= 0.2 * total,
                "{what} load not shared: {counts:?} of {total}"
            );
        }
    }

    let sent = stream.await.expect("sender");
    let last_sent_at = now_ms();
    let accepted: Vec<&Push> = sent.iter().filter(|p| p.status == 202).collect();
    for push in &sent {
        // Only an unacknowledged publish (503) may be refused; nothing here is refused.
        assert!(
            matches!(push.status, 202 | 503),
            "{}: {}",
            push.delivery,
            push.status
        );
    }
    assert!(
        accepted.len() >= PUSHES * 9 / 10,
        "only {} of {PUSHES} accepted",
        accepted.len()
    );

    // Both ingest processes accepted some, and their counters add up to the 202 answers.
    let mut accepted_by = Vec::new();
    for process in &ingest {
        let text = common::metrics(process).await;
        accepted_by.push(metric_sum(
            &text,
            "inlet_ingest_requests_total",
            &[("outcome", "accepted")],
        ));
    }
    eprintln!("webhooks accepted per ingest process: {accepted_by:?}");
    assert!(accepted_by.iter().all(|a| *a > 0.0), "{accepted_by:?}");
    assert_eq!(
        accepted_by.iter().sum::<f64>(),
        accepted.len() as f64,
        "{accepted_by:?}"
    );

    // Every decision the pushes call for: one per stack of the pushed repository.
    let mut wanted: BTreeMap<String, Wanted> = BTreeMap::new();
    for push in &sent {
        for (stack, _, run_type) in stacks_of(push.repository) {
            wanted.insert(
                vcs_run_id(&stack, &push.sha, run_type),
                Wanted {
                    delivery: push.delivery.clone(),
                    stack,
                    sha: push.sha.clone(),
                    run_type,
                    required: push.status == 202,
                },
            );
        }
    }
    let required: BTreeSet<String> = wanted
        .iter()
        .filter(|(_, w)| w.required)
        .map(|(run, _)| run.clone())
        .collect();
    let decided_runs = |records: &[OwnedMessage]| -> BTreeSet<String> {
        records
            .iter()
            .filter_map(|m| serde_json::from_slice::<Value>(m.payload()?).ok())
            .filter_map(|v| v["run_id"].as_str().map(str::to_owned))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        runs.settle(Duration::from_millis(500)).await;
        let decided = decided_runs(&runs.records);
        let missing: Vec<&String> = required.difference(&decided).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} decisions missing after 90 s, e.g. {:?}",
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>()
        );
    }
    // Late repeats, if any, are counted too.
    runs.settle(Duration::from_secs(2)).await;

    // Each decision is one the pushes call for, with its content; repeats are identical.
    let mut by_run: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for record in &runs.records {
        let mut decision = json_of(record);
        let run_id = decision["run_id"].as_str().expect("run_id").to_owned();
        let want = wanted
            .get(&run_id)
            .unwrap_or_else(|| panic!("a decision no push calls for: {decision}"));
        assert_eq!(decision["stack_id"], want.stack.as_str(), "{decision}");
        assert_eq!(decision["commit"]["sha"], want.sha.as_str(), "{decision}");
        assert_eq!(decision["run_type"], want.run_type.as_str(), "{decision}");
        assert_eq!(
            decision["trigger"]["delivery_id"],
            want.delivery.as_str(),
            "{decision}"
        );
        assert_eq!(decision["status"], "requested", "{decision}");
        // When the worker decided is the one field a replay may change.
        decision
            .as_object_mut()
            .expect("object")
            .remove("decided_at");
        by_run.entry(run_id).or_default().push(decision);
    }
    for (run_id, copies) in &by_run {
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "{run_id} repeated with other content: {copies:#?}"
        );
    }
    // When each required decision first appeared: the last of them, after the last send.
    let mut first_decided: BTreeMap<&str, i64> = BTreeMap::new();
    for record in &runs.records {
        let (Some(at), Some(run_id)) = (
            record.timestamp().to_millis(),
            serde_json::from_slice::<Value>(record.payload().unwrap_or_default())
                .ok()
                .and_then(|v| v["run_id"].as_str().map(str::to_owned)),
        ) else {
            continue;
        };
        if let Some(run_id) = required.get(&run_id) {
            let first = first_decided.entry(run_id.as_str()).or_insert(at);
            *first = (*first).min(at);
        }
    }
    let last_decided_at = first_decided
        .values()
        .copied()
        .max()
        .unwrap_or(last_sent_at);
    let after_last_send = last_decided_at - last_sent_at;
    let repeats = runs.records.len() - by_run.len();
    eprintln!(
        "{} accepted pushes: {} decisions on inlet.runs for {} runs ({} required), \
         {repeats} at-least-once repeats of a run_id with identical content",
        accepted.len(),
        runs.records.len(),
        by_run.len(),
        required.len()
    );

    // The survivors took every partition over.
    wait_metrics(
        &router_addrs[0],
        "all 12 partitions on the router left",
        |t| partitions_read(t, "router").len() == 12,
    )
    .await;
    wait_metrics(
        &worker_addrs[0],
        "all 12 partitions on the workers left",
        |t| partitions_read(t, "workers").len() == 12,
    )
    .await;

    // Rebalance time: from each kill to the survivor's first output for a partition it took
    // over. A webhook's partition is where ingest wrote it; a trigger's is its stack's.
    let wanted_deliveries: BTreeSet<&str> = sent.iter().map(|p| p.delivery.as_str()).collect();
    webhooks
        .until(Duration::from_secs(30), |records| {
            let seen: BTreeSet<String> = records
                .iter()
                .filter_map(|m| header(m, "inlet-delivery-id"))
                .collect();
            accepted.iter().all(|p| seen.contains(&p.delivery))
        })
        .await;
    // Each delivery's partition and when ingest wrote it.
    let webhook_partition: BTreeMap<String, (i32, i64)> = webhooks
        .records
        .iter()
        .filter_map(|m| {
            Some((
                header(m, "inlet-delivery-id")?,
                (m.partition(), m.timestamp().to_millis()?),
            ))
        })
        .filter(|(d, _)| wanted_deliveries.contains(d.as_str()))
        .collect();
    // Every required decision came from a trigger.
    triggers
        .until(Duration::from_secs(30), |records| {
            records.len() >= required.len()
        })
        .await;
    let trigger_partition: BTreeMap<String, i32> = triggers
        .records
        .iter()
        .map(|m| {
            (
                json_of(m)["stack_id"].as_str().unwrap_or("").to_owned(),
                m.partition(),
            )
        })
        .collect();
    // When the router first wrote each (delivery, stack) trigger.
    let mut trigger_written: BTreeMap<(String, String), i64> = BTreeMap::new();
    for m in &triggers.records {
        let (Some(delivery), Some(at)) =
            (header(m, "inlet-delivery-id"), m.timestamp().to_millis())
        else {
            continue;
        };
        let stack = json_of(m)["stack_id"].as_str().unwrap_or("").to_owned();
        let first = trigger_written.entry((delivery, stack)).or_insert(at);
        *first = (*first).min(at);
    }
    let router_takeover = first_after(&triggers.records, router_killed_at, |m| {
        header(m, "inlet-delivery-id")
            .and_then(|d| webhook_partition.get(&d))
            .is_some_and(|(p, at)| router_partitions[1].contains(p) && *at > router_killed_at)
    });
    let workers_takeover = first_after(&runs.records, workers_killed_at, |m| {
        let decision = json_of(m);
        let stack = decision["stack_id"].as_str().unwrap_or("").to_owned();
        let delivery = decision["trigger"]["delivery_id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let partition = trigger_partition.get(&stack);
        let written = trigger_written.get(&(delivery, stack));
        partition.is_some_and(|p| worker_partitions[1].contains(p))
            && written.is_some_and(|at| *at > workers_killed_at)
    });
    eprintln!(
        "takeover after {stop:?}: the surviving router's first trigger from a taken-over \
         inlet.webhooks partition {} after the stop; the surviving workers' first decision from \
         a taken-over inlet.triggers partition {} after the stop; the last required decision \
         {} after the last send",
        seconds(router_takeover),
        seconds(workers_takeover),
        seconds(Some(after_last_send))
    );
    if stop == Stop::Term {
        // Each stopped process drained, committed and left its group, then exited cleanly.
        for process in [&mut routers[1], &mut workers[1]] {
            let status = process.wait_exit();
            let log = process.log();
            assert!(status.success(), "exit {status}:\n{log}");
            assert!(log.contains("left the consumer group"), "no leave:\n{log}");
        }
    }
    let routed_after = routed(&common::metrics_at(&router_addrs[0]).await);
    let decided_after = decided(&common::metrics_at(&worker_addrs[0]).await);
    eprintln!(
        "at the end: the surviving router routed {routed_after}, the surviving workers decided \
         {decided_after} (replays included)"
    );
    Measured {
        router_takeover,
        workers_takeover,
        after_last_send,
    }
}

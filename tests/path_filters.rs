//! End to end against the fake Bitbucket: path filters (DESIGN §5.1). The router asks the fake
//! which files a push or pull request changed, with the integration's token, and only the stacks
//! whose project root or globs cover a change get a run; when the answer cannot be had, every
//! stack runs and the delivery log says why.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Inlet, admin, webhook};
use inlet_bitbucket::fake::{FakeBitbucket, FakeChange};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "bitbucket-token-1";
const FROM: &str = "1111111111111111111111111111111111111111";
const TO: &str = "2222222222222222222222222222222222222222";
const ZERO: &str = "0000000000000000000000000000000000000000";
const REPO: &str = "INFRA/network";

struct Env {
    fake: FakeBitbucket,
    dev: Inlet,
    key: String,
    secret: String,
}

/// The stacks every test has on INFRA/network, tracking main.
const STACKS: &[(&str, &str, &[&str])] = &[
    ("app", "infra/app", &[]),
    ("app2", "infra/app2", &[]),
    ("whole", "", &[]),
    ("globbed", "infra/db", &["modules/**", "!modules/**/*.md"]),
];

async fn setup() -> Env {
    let (fake, dev, key) = common::dev_on_fake(TOKEN).await;
    for (id, root, globs) in STACKS {
        let stack = admin(
            &dev,
            &key,
            "POST",
            "/stacks",
            json!({"id": id, "name": id, "repository": REPO, "branch": "main",
                   "project_root": root, "additional_project_globs": globs}),
        )
        .await;
        assert_eq!(stack.status, 201, "{stack:?}");
    }
    let details = admin(&dev, &key, "GET", "/integrations/bb/details", Value::Null).await;
    let secret = details.json()["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    Env {
        fake,
        dev,
        key,
        secret,
    }
}

fn push(from: &str, to: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "eventKey": "repo:refs_changed",
        "actor": {"name": "alice"},
        "repository": {"slug": "network", "project": {"key": "INFRA"}},
        "changes": [{"ref": {"id": "refs/heads/main", "displayId": "main", "type": "BRANCH"},
                     "refId": "refs/heads/main", "fromHash": from, "toHash": to, "type": "UPDATE"}]
    }))
    .expect("json")
}

impl Env {
    async fn send(&self, event_key: &str, delivery: &str, body: &[u8]) {
        let answer = webhook(
            &self.dev.webhook_url("bb"),
            event_key,
            delivery,
            &self.secret,
            body,
        )
        .await;
        assert_eq!(answer.status, 202, "{answer:?}");
    }

    /// The router's verdict on `delivery`, once it has one.
    async fn routing(&self, delivery: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let story = admin(
                &self.dev,
                &self.key,
                "GET",
                &format!("/deliveries/{delivery}"),
                Value::Null,
            )
            .await;
            if story.status == 200
                && let Some(event) = story.json()["events"]
                    .as_array()
                    .and_then(|events| events.iter().find(|e| e["stage"] == "router").cloned())
            {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "no routing for {delivery}: {story:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The stacks the router triggered for `delivery`, and its reasons.
    async fn triggered(&self, delivery: &str) -> (BTreeSet<String>, Vec<String>) {
        let routing = self.routing(delivery).await;
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        (
            strings(&routing["stacks"]).into_iter().collect(),
            strings(&routing["reasons"]),
        )
    }
}

fn set(stacks: &[&str]) -> BTreeSet<String> {
    stacks.iter().map(|s| (*s).to_owned()).collect()
}

/// A change under one root runs that stack (and the whole-repository one) only; `infra/app`
/// does not cover `infra/app2/…`; the skipped stacks are recorded; the request carried the
/// integration's token, kept the context path and asked from the pushed commit to the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_under_one_root_runs_that_stack_only() {
    let env = setup().await;
    env.fake.set_compare(
        REPO,
        TO,
        Some(FROM),
        vec![FakeChange::modify("infra/app/main.tf")],
    );
    env.send("repo:refs_changed", "p-1", &push(FROM, TO)).await;
    let (stacks, reasons) = env.triggered("p-1").await;
    assert_eq!(stacks, set(&["app", "whole"]));
    assert!(
        reasons.contains(&"no_affected_files: app2".to_owned()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"no_affected_files: globbed".to_owned()),
        "{reasons:?}"
    );
    let requests = env.fake.change_lookups();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let request = &requests[0];
    assert_eq!(
        request.full_path,
        "/bitbucket/rest/api/latest/projects/INFRA/repos/network/compare/changes"
    );
    assert_eq!(request.query_param("from").as_deref(), Some(TO));
    assert_eq!(request.query_param("to").as_deref(), Some(FROM));
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );
}

/// A glob outside the root triggers its stack; a `!` glob excludes what earlier ones matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globs_and_exclusion() {
    let env = setup().await;
    env.fake.set_compare(
        REPO,
        TO,
        Some(FROM),
        vec![FakeChange::modify("modules/vpc/main.tf")],
    );
    env.send("repo:refs_changed", "g-1", &push(FROM, TO)).await;
    assert_eq!(env.triggered("g-1").await.0, set(&["globbed", "whole"]));

    let third = "3333333333333333333333333333333333333333";
    env.fake.set_compare(
        REPO,
        third,
        Some(TO),
        vec![FakeChange::modify("modules/vpc/README.md")],
    );
    env.send("repo:refs_changed", "g-2", &push(TO, third)).await;
    assert_eq!(env.triggered("g-2").await.0, set(&["whole"]));
}

/// A move out of one root into another runs both stacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_between_roots_runs_both() {
    let env = setup().await;
    env.fake.set_compare(
        REPO,
        TO,
        Some(FROM),
        vec![FakeChange::moved("infra/app/vpc.tf", "infra/app2/vpc.tf")],
    );
    env.send("repo:refs_changed", "m-1", &push(FROM, TO)).await;
    assert_eq!(env.triggered("m-1").await.0, set(&["app", "app2", "whole"]));
}

/// Paging is followed to the last page: the one change that matters is on the third page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_followed() {
    let env = setup().await;
    env.fake.set_page_size(2);
    let mut changes: Vec<FakeChange> = (0..4)
        .map(|i| FakeChange::modify(format!("docs/{i}.md")))
        .collect();
    changes.push(FakeChange::add("infra/app2/new.tf"));
    env.fake.set_compare(REPO, TO, Some(FROM), changes);
    env.send("repo:refs_changed", "pg-1", &push(FROM, TO)).await;
    assert_eq!(env.triggered("pg-1").await.0, set(&["app2", "whole"]));
    let starts: Vec<Option<String>> = env
        .fake
        .change_lookups()
        .iter()
        .map(|r| r.query_param("start"))
        .collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert_eq!(starts[1].as_deref(), Some("2"));
    assert_eq!(starts[2].as_deref(), Some("4"));
}

/// A 429 is waited out for its `Retry-After`, then the answer filters as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_waits_retry_after() {
    let env = setup().await;
    env.fake.fail_next(1, 429, Some(1));
    env.fake.set_compare(
        REPO,
        TO,
        Some(FROM),
        vec![FakeChange::modify("infra/app/main.tf")],
    );
    env.send("repo:refs_changed", "r-1", &push(FROM, TO)).await;
    assert_eq!(env.triggered("r-1").await.0, set(&["app", "whole"]));
    assert_eq!(env.fake.change_lookups().len(), 2);
    let text = common::metrics(&env.dev).await;
    let waited = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "inlet_bitbucket_rate_limited_seconds_total{endpoint=\"compare_changes\"} ",
            )
        })
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(waited >= 1.0, "{text}");
}

/// Bitbucket failing after the retries fails open: every stack runs, the reason names the ref and
/// carries Bitbucket's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_fail_open() {
    let env = setup().await;
    env.fake.fail_next(100, 500, None);
    env.send("repo:refs_changed", "e-1", &push(FROM, TO)).await;
    let (stacks, reasons) = env.triggered("e-1").await;
    assert_eq!(stacks, set(&["app", "app2", "globbed", "whole"]));
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("changes_unavailable: refs/heads/main: ")),
        "{reasons:?}"
    );
}

/// A pull request's changes filter its proposed runs; a truncated list fails open and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_changes_and_truncation() {
    let env = setup().await;
    let pr = std::fs::read("tests/fixtures/pr_opened.json").expect("fixture");
    env.fake.set_pull_request_changes(
        REPO,
        42,
        vec![FakeChange::modify("infra/app/main.tf")],
        false,
    );
    env.send("pr:opened", "pr-1", &pr).await;
    assert_eq!(env.triggered("pr-1").await.0, set(&["app", "whole"]));
    let request = env.fake.change_lookups().pop().expect("request");
    assert!(
        request
            .full_path
            .ends_with("/rest/api/latest/projects/INFRA/repos/network/pull-requests/42/changes"),
        "{request:?}"
    );
    assert_eq!(request.query_param("limit").as_deref(), Some("1000"));

    env.fake.set_pull_request_changes(
        REPO,
        42,
        vec![FakeChange::modify("infra/app/main.tf")],
        true,
    );
    let mut updated: Value = serde_json::from_slice(&pr).expect("json");
    updated["pullRequest"]["fromRef"]["latestCommit"] = Value::from(TO);
    env.send(
        "pr:from_ref_updated",
        "pr-2",
        &serde_json::to_vec(&updated).expect("json"),
    )
    .await;
    let (stacks, reasons) = env.triggered("pr-2").await;
    assert_eq!(stacks, set(&["app", "app2", "globbed", "whole"]));
    assert_eq!(reasons, vec!["changes_truncated: pull-request/42"]);
}

/// A new branch (all-zero `fromHash`) compares against the default branch: no `to`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_branch_compares_against_the_default_branch() {
    let env = setup().await;
    env.fake
        .set_compare(REPO, TO, None, vec![FakeChange::add("infra/app/main.tf")]);
    env.send("repo:refs_changed", "n-1", &push(ZERO, TO)).await;
    assert_eq!(env.triggered("n-1").await.0, set(&["app", "whole"]));
    let request = env.fake.change_lookups().pop().expect("request");
    assert_eq!(request.query_param("from").as_deref(), Some(TO));
    assert_eq!(request.query_param("to"), None);
}

/// A slow Bitbucket does not slow the edge: webhooks are answered 202 while lookups wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bitbucket_does_not_hold_up_the_edge() {
    let env = setup().await;
    env.fake.set_delay(Duration::from_secs(3));
    env.fake
        .set_default_compare(vec![FakeChange::modify("infra/app/main.tf")]);
    for i in 0..20 {
        // Distinct commits: identical bodies would be dropped as replays.
        let to = format!("{i:040x}");
        env.send("repo:refs_changed", &format!("s-{i}"), &push(FROM, &to))
            .await;
    }
    // Every delivery is routed in the end, through the same answer.
    for i in 0..20 {
        assert_eq!(
            env.triggered(&format!("s-{i}")).await.0,
            set(&["app", "whole"])
        );
    }
}

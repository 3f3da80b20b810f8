//! End to end: hostile input (issue 11). Each test sends what an attacker would and asserts the
//! safe answer: the status, what was or was not published or decided, and that the pipeline goes
//! on.

mod common;

use std::time::{Duration, Instant};

use common::{Inlet, admin, webhook};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const MAIN: &str = "178864a7d521b6f5e720b386b2c2b0ef8563e0dc";

async fn pipeline() -> (Inlet, String, String) {
    common::dev_with_stack("prod").await
}

/// The delivery's story once a stage recorded `stage` for it.
async fn story(dev: &Inlet, key: &str, delivery: &str, stage: &str) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = admin(
            dev,
            key,
            "GET",
            &format!("/deliveries/{delivery}"),
            Value::Null,
        )
        .await;
        let events = answer.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if events.iter().any(|e| e["stage"] == stage) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "no {stage} event for {delivery}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A signed push whose `date` is `"€€"` used to panic the parser (dropping the connection) and,
/// written to `inlet.webhooks` by any producer, crash-looped every router. Now both copies are
/// routed (the unreadable date is read as absent) and the next push is decided as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multibyte_date_neither_drops_the_request_nor_kills_the_router() {
    let (dev, key, secret) = pipeline().await;
    let mut body: Value =
        serde_json::from_slice(&common::push_body("main", MAIN)).expect("push json");
    body["date"] = Value::from("€€");
    let body = serde_json::to_vec(&body).expect("json");
    let signed = webhook(
        &dev.webhook_url("bb"),
        "repo:refs_changed",
        "euro-1",
        &secret,
        &body,
    )
    .await;
    assert_eq!(signed.status, 202, "{signed:?}");

    // Another commit: the same body again would be (rightly) dropped as a replay.
    let mut other: Value = serde_json::from_slice(&body).expect("json");
    other["changes"][0]["toHash"] = Value::from("3333333333333333333333333333333333333333");
    let other = serde_json::to_vec(&other).expect("json");
    common::produce(
        &dev,
        "inlet.webhooks",
        "bb/infra/network",
        &other,
        &[
            ("inlet-delivery-id", "euro-2"),
            ("inlet-event-key", "repo:refs_changed"),
            ("inlet-integration-name", "bb"),
            ("inlet-received-at", "2026-12-01T00:00:00Z"),
        ],
    )
    .await;

    for delivery in ["euro-1", "euro-2"] {
        let events = story(&dev, &key, delivery, "router").await;
        let routing = events
            .iter()
            .find(|e| e["stage"] == "router")
            .expect("router");
        assert_eq!(routing["outcome"], "routed", "{delivery}: {events:?}");
    }
    let after = webhook(
        &dev.webhook_url("bb"),
        "repo:refs_changed",
        "after-euro",
        &secret,
        &common::push_body("main", "2222222222222222222222222222222222222222"),
    )
    .await;
    assert_eq!(after.status, 202);
    let events = story(&dev, &key, "after-euro", "workers").await;
    assert!(
        events.iter().any(|e| e["status"] == "requested"),
        "{events:?}"
    );
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn dev_with(config: &str) -> (Inlet, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inlet.toml");
    std::fs::write(&path, config).expect("config");
    let dev = Inlet::start(
        &[
            "--config",
            path.to_str().expect("path"),
            "dev",
            "--webhook-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ],
        &[],
    );
    (dev, dir)
}

/// 200 clients that announce 1 MiB, send half of it and stall used to hold all of it (and more);
/// now bodies share a 16 MiB budget: the ones beyond it are answered 503 at once, and the
/// process's memory grows by far less than what the clients sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_cannot_exhaust_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (dev, _dir) =
        dev_with("[ingest]\nmax_buffered_bytes = 16777216\nbody_idle_timeout_ms = 20000\n");
    let key = dev.ready.admin_key.clone().expect("admin key");
    common::integration_secret(&dev, &key, "bb", true).await;
    let url = dev.webhook_url("bb");
    let rest = url.strip_prefix("http://").expect("http");
    let (host, path) = rest.split_at(rest.find('/').expect("path"));
    let before = rss_kib(dev.pid());
    let half = vec![b' '; 512 * 1024];
    let mut streams = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: {host}\r\nx-event-key: repo:refs_changed\r\n\
             x-request-id: stall-{i}\r\nx-hub-signature: sha256=00\r\ncontent-length: 1048576\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        // The server may answer 503 and close before taking the body.
        let _ = tokio::time::timeout(Duration::from_millis(500), stream.write_all(&half)).await;
        let mut answer = [0u8; 64];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(20), stream.read(&mut answer)).await
            && String::from_utf8_lossy(&answer[..n]).contains(" 503 ")
        {
            refused += 1;
        }
        streams.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(dev.pid());
    let grown_mib = after.saturating_sub(before) / 1024;
    assert!(
        refused > 100,
        "only {refused} of 200 stalled bodies were refused"
    );
    // 100 MiB were sent; the budget is 16 MiB (plus socket buffers and allocator slack).
    assert!(grown_mib < 64, "memory grew by {grown_mib} MiB");
    drop(streams);
}

/// 50 unauthenticated requests with a 60 KB integration name and a 300 KB `X-Request-Id` used to
/// write 21 MB of log lines; now the oversized head is refused by the listener (431) and the log
/// grows by a few KB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_do_not_flood_the_log() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (dev, _key, _secret) = pipeline().await;
    let url = dev.webhook_url("bb");
    let rest = url.strip_prefix("http://").expect("http");
    let host = &rest[..rest.find('/').expect("path")];
    let before = dev.log().len();
    let name = "n".repeat(60_000);
    let id = "i".repeat(300_000);
    let mut statuses = Vec::new();
    for _ in 0..50 {
        let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
        let request = format!(
            "POST /webhooks/bitbucket-datacenter/{name} HTTP/1.1\r\nhost: {host}\r\n\
             x-event-key: repo:refs_changed\r\nx-request-id: {id}\r\ncontent-length: 2\r\n\r\n{{}}"
        );
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = vec![0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        statuses.push(
            String::from_utf8_lossy(&answer[..n])
                .split_whitespace()
                .nth(1)
                .map(str::to_owned),
        );
    }
    // Some connections close before their answer is read; every answer read is 431, and at
    // least one was read (a listener that only dropped connections would not pass).
    assert!(
        statuses
            .iter()
            .all(|s| s.as_deref().is_none_or(|s| s == "431"))
            && statuses.iter().any(|s| s.as_deref() == Some("431")),
        "{statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = dev.log().len().saturating_sub(before);
    assert!(grown < 100_000, "the log grew by {grown} bytes");
}

/// Through the URL alone (no oversized header), a 60 KB integration name is answered 404 with a
/// clipped name, and each log line stays small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_are_clipped_in_logs() {
    let (dev, _key, secret) = pipeline().await;
    let before = dev.log().len();
    let name = "n".repeat(60_000);
    for i in 0..20 {
        let answer = webhook(
            &dev.webhook_url(&name),
            "repo:refs_changed",
            &format!("long-{i}"),
            &secret,
            b"{}",
        )
        .await;
        assert_eq!(answer.status, 404);
        assert!(answer.body.len() < 1024, "{} bytes", answer.body.len());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = dev.log().len().saturating_sub(before);
    assert!(
        grown < 40_000,
        "the log grew by {grown} bytes for 20 requests"
    );
}

/// An API key with one binding; its secret.
async fn key_for(dev: &Inlet, root_key: &str, space: &str, role: &str) -> String {
    let created = admin(
        dev,
        root_key,
        "POST",
        "/api-keys",
        json!({"name": format!("{role}@{space}"), "bindings": [{"space_id": space, "role": role}]}),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    created.json()["secret"]
        .as_str()
        .expect("secret")
        .to_owned()
}

async fn space(dev: &Inlet, key: &str, id: &str, inherit: bool) {
    let created = admin(
        dev,
        key,
        "POST",
        "/spaces",
        json!({"id": id, "name": id, "parent_id": "root", "inherit_entities": inherit}),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
}

/// A space admin used to turn on `inherit_entities` for its own space (200), then see the
/// parent's stacks and attach to the parent's integrations: privilege escalation. Turning it on
/// now needs admin on the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_space_admin_cannot_grant_itself_inheritance() {
    let (dev, key, _secret) = pipeline().await;
    space(&dev, &key, "team", false).await;
    let team_admin = key_for(&dev, &key, "team", "admin").await;
    let escalate = admin(
        &dev,
        &team_admin,
        "PATCH",
        "/spaces/team",
        json!({"inherit_entities": true}),
    )
    .await;
    assert_eq!(escalate.status, 403, "{escalate:?}");
    let stacks = admin(&dev, &team_admin, "GET", "/stacks", Value::Null).await;
    assert_eq!(stacks.json()["stacks"], json!([]), "{stacks:?}");
    // Renaming stays the space admin's; the root admin may turn inheritance on.
    let rename = admin(
        &dev,
        &team_admin,
        "PATCH",
        "/spaces/team",
        json!({"name": "Team"}),
    )
    .await;
    assert_eq!(rename.status, 200, "{rename:?}");
    let granted = admin(
        &dev,
        &key,
        "PATCH",
        "/spaces/team",
        json!({"inherit_entities": true}),
    )
    .await;
    assert_eq!(granted.status, 200, "{granted:?}");
}

/// A reader of team-b used to read, through the default integration's delivery log, team-a's
/// stack ids and decisions. Now the story and the listing show only stacks the caller may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_log_shows_only_readable_stacks() {
    let (dev, key, secret) = pipeline().await;
    for team in ["team-a", "team-b"] {
        space(&dev, &key, team, false).await;
        let stack = admin(
            &dev,
            &key,
            "POST",
            "/stacks",
            json!({"id": format!("{team}-net"), "name": team, "space_id": team,
                   "repository": "INFRA/network", "branch": "main"}),
        )
        .await;
        assert_eq!(stack.status, 201, "{stack:?}");
    }
    let reader_b = key_for(&dev, &key, "team-b", "reader").await;
    let sent = webhook(
        &dev.webhook_url("bb"),
        "repo:refs_changed",
        "shared-1",
        &secret,
        &common::push_body("main", MAIN),
    )
    .await;
    assert_eq!(sent.status, 202);
    // Wait until all three stacks (prod in root, team-a-net, team-b-net) were decided.
    let deadline = Instant::now() + WAIT;
    loop {
        let events = story(&dev, &key, "shared-1", "router").await;
        if events.iter().filter(|e| e["stage"] == "workers").count() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = admin(&dev, &reader_b, "GET", "/deliveries/shared-1", Value::Null).await;
    assert_eq!(seen.status, 200, "{seen:?}");
    let text = String::from_utf8_lossy(&seen.body).into_owned();
    assert!(text.contains("team-b-net"), "{text}");
    assert!(
        !text.contains("team-a-net"),
        "team-a's stack leaked: {text}"
    );
    assert!(!text.contains("\"prod\""), "root's stack leaked: {text}");
    let listed = admin(
        &dev,
        &reader_b,
        "GET",
        "/integrations/bb/deliveries",
        Value::Null,
    )
    .await;
    let text = String::from_utf8_lossy(&listed.body).into_owned();
    assert!(
        !text.contains("team-a-net"),
        "team-a's stack leaked: {text}"
    );
}

/// A key bound to a deleted space could no longer be listed or revoked by the root admin, and
/// regained admin if the space id was reused. Now the space cannot be deleted while keys are
/// bound to it (409 naming those the caller may list, counting the others).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spaces_with_bound_keys_cannot_be_deleted() {
    let (dev, key, _secret) = pipeline().await;
    space(&dev, &key, "temp", false).await;
    let created = admin(
        &dev,
        &key,
        "POST",
        "/api-keys",
        json!({"name": "temp-admin", "bindings": [{"space_id": "temp", "role": "admin"}]}),
    )
    .await;
    let key_id = created.json()["id"].as_str().expect("id").to_owned();
    let deleted = admin(&dev, &key, "DELETE", "/spaces/temp", Value::Null).await;
    assert_eq!(deleted.status, 409, "{deleted:?}");
    assert_eq!(deleted.json()["error"]["code"], "space_has_api_keys");
    assert!(String::from_utf8_lossy(&deleted.body).contains(&key_id));

    // A 409 names only keys the caller could list: the space's own admin sees that a key bound
    // to `temp` and to a space it does not administer exists, not that key's id.
    space(&dev, &key, "elsewhere", false).await;
    let hidden = admin(
        &dev,
        &key,
        "POST",
        "/api-keys",
        json!({"name": "shared", "bindings": [{"space_id": "temp", "role": "reader"},
                                               {"space_id": "elsewhere", "role": "admin"}]}),
    )
    .await;
    let hidden_id = hidden.json()["id"].as_str().expect("id").to_owned();
    let temp_admin = created.json()["secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let refused = admin(&dev, &temp_admin, "DELETE", "/spaces/temp", Value::Null).await;
    assert_eq!(refused.status, 409, "{refused:?}");
    let text = String::from_utf8_lossy(&refused.body).into_owned();
    assert!(text.contains(&key_id), "{text}");
    assert!(!text.contains(&hidden_id), "hidden key id leaked: {text}");
    assert!(text.contains("1 more"), "{text}");
    let revoked = admin(
        &dev,
        &key,
        "DELETE",
        &format!("/api-keys/{hidden_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(revoked.status, 204, "{revoked:?}");

    let revoked = admin(
        &dev,
        &key,
        "DELETE",
        &format!("/api-keys/{key_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(revoked.status, 204, "{revoked:?}");
    let deleted = admin(&dev, &key, "DELETE", "/spaces/temp", Value::Null).await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
}

/// A captured signed body replayed with a fresh `X-Request-Id` used to be processed again: a
/// replayed `/inlet preview` comment yielded a second run. Now the router recognises the body
/// and records the replay as a duplicate (`replayed_body`); only one run is decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_bodies_are_duplicates() {
    let (dev, key, secret) = pipeline().await;
    let mut comment: Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/pr_comment_added.json").expect("fixture"),
    )
    .expect("json");
    comment["comment"]["text"] = Value::from("/inlet preview");
    comment["comment"]["id"] = Value::from(901);
    let body = serde_json::to_vec(&comment).expect("json");
    for delivery in ["preview-original", "preview-replayed"] {
        let answer = webhook(
            &dev.webhook_url("bb"),
            "pr:comment:added",
            delivery,
            &secret,
            &body,
        )
        .await;
        assert_eq!(answer.status, 202);
    }
    let original = story(&dev, &key, "preview-original", "workers").await;
    assert!(
        original.iter().any(|e| e["status"] == "requested"),
        "{original:?}"
    );
    let replayed = story(&dev, &key, "preview-replayed", "router").await;
    let routing = replayed
        .iter()
        .find(|e| e["stage"] == "router")
        .expect("router");
    assert_eq!(routing["outcome"], "duplicate", "{replayed:?}");
    assert_eq!(routing["reasons"][0], "replayed_body");
    assert!(
        !replayed.iter().any(|e| e["stage"] == "workers"),
        "{replayed:?}"
    );
}

/// Rotating the webhook secret twice used to cut off, at once, the secret Bitbucket still had
/// (401). Now every secret within its grace period keeps verifying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rotation_keeps_the_first_secret_valid() {
    let (dev, key, original) = pipeline().await;
    for _ in 0..2 {
        let rotated = admin(
            &dev,
            &key,
            "POST",
            "/integrations/bb/rotate-secret",
            json!({"grace_period_secs": 3600}),
        )
        .await;
        assert_eq!(rotated.status, 200, "{rotated:?}");
    }
    let answer = webhook(
        &dev.webhook_url("bb"),
        "repo:refs_changed",
        "old-secret",
        &original,
        &common::push_body("main", MAIN),
    )
    .await;
    assert_eq!(answer.status, 202, "{answer:?}");
}

/// One issued key writing in a loop is held to a per-key rate (429 with `Retry-After`), so it
/// cannot flood the control log every process folds; other keys are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_are_rate_limited_per_key() {
    let (dev, key, _secret) = pipeline().await;
    space(&dev, &key, "flood", false).await;
    let flooder = key_for(&dev, &key, "flood", "admin").await;
    let other = key_for(&dev, &key, "flood", "admin").await;
    let mut limited = None;
    for i in 0..200 {
        let answer = admin(
            &dev,
            &flooder,
            "PATCH",
            "/spaces/flood",
            json!({"name": format!("flood {i}")}),
        )
        .await;
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let limited = limited.expect("the flood was never limited");
    assert_eq!(limited.json()["error"]["code"], "rate_limited");
    assert!(limited.headers.contains_key("retry-after"), "{limited:?}");
    let unaffected = admin(
        &dev,
        &other,
        "PATCH",
        "/spaces/flood",
        json!({"name": "ok"}),
    )
    .await;
    assert_eq!(unaffected.status, 200, "{unaffected:?}");
}

/// `PATCH /spaces/{id}` with `[null, null]` was accepted (serde reads a struct from an array of
/// its fields) and 405s carried no `Allow`. Now every body must be a JSON object, and a 405 lists
/// the methods the resource takes, in upper case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_objects_and_405_says_allow() {
    let (dev, key, _secret) = pipeline().await;
    space(&dev, &key, "shape", false).await;
    for body in [
        json!([null, null]),
        json!(["renamed", true]),
        json!("x"),
        json!(7),
    ] {
        let answer = admin(&dev, &key, "PATCH", "/spaces/shape", body.clone()).await;
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        assert_eq!(answer.json()["error"]["code"], "invalid_body", "{body}");
    }
    let unchanged = admin(&dev, &key, "GET", "/spaces/shape", Value::Null).await;
    assert_eq!(unchanged.json()["name"], "shape", "{unchanged:?}");
    let wrong = admin(&dev, &key, "PUT", "/spaces/shape", json!({})).await;
    assert_eq!(wrong.status, 405, "{wrong:?}");
    assert_eq!(
        wrong.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("DELETE, GET, PATCH"),
        "{wrong:?}"
    );
}

/// History used to be keyed by name and id alone: a stack re-created with a deleted stack's id,
/// or an integration re-created with a deleted one's name — by another team — showed the
/// predecessor's runs and deliveries. Now each is keyed by its incarnation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreated_names_do_not_inherit_history() {
    let (dev, key, secret) = pipeline().await;
    // Each push its own commit: the same signed body twice would be a replay.
    let push = |delivery: &'static str, secret: String, integration: &'static str| {
        let url = dev.webhook_url(integration);
        let sha = format!("{:0>40}", delivery.len());
        async move {
            let sent = webhook(
                &url,
                "repo:refs_changed",
                delivery,
                &secret,
                &common::push_body("main", &sha),
            )
            .await;
            assert_eq!(sent.status, 202, "{sent:?}");
        }
    };
    push("root-push", secret.clone(), "bb").await;
    story(&dev, &key, "root-push", "workers").await;
    let old_int_secret = common::integration_secret(&dev, &key, "team-int", false).await;
    push("old-int-push", old_int_secret, "team-int").await;
    story(&dev, &key, "old-int-push", "router").await;

    // Root's stack `prod` and integration `team-int` are deleted; team-b re-creates both names.
    for path in ["/stacks/prod", "/integrations/team-int"] {
        let deleted = admin(&dev, &key, "DELETE", path, Value::Null).await;
        assert_eq!(deleted.status, 204, "{path}: {deleted:?}");
    }
    space(&dev, &key, "team-b", false).await;
    let stack = admin(
        &dev,
        &key,
        "POST",
        "/stacks",
        json!({"id": "prod", "name": "b's prod", "space_id": "team-b",
               "repository": "INFRA/network", "branch": "main"}),
    )
    .await;
    assert_eq!(stack.status, 201, "{stack:?}");
    let integration = admin(
        &dev,
        &key,
        "POST",
        "/integrations",
        json!({"name": "team-int", "space_id": "team-b", "api_host_url": "https://b.example.com"}),
    )
    .await;
    assert_eq!(integration.status, 201, "{integration:?}");
    let reader_b = key_for(&dev, &key, "team-b", "reader").await;

    let runs = admin(&dev, &reader_b, "GET", "/stacks/prod/runs", Value::Null).await;
    assert_eq!(runs.status, 200, "{runs:?}");
    assert_eq!(runs.json()["runs"], json!([]), "inherited runs: {runs:?}");
    let listed = admin(
        &dev,
        &reader_b,
        "GET",
        "/integrations/team-int/deliveries",
        Value::Null,
    )
    .await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(
        listed.json()["total"],
        0,
        "inherited deliveries: {listed:?}"
    );
    let story_b = admin(
        &dev,
        &reader_b,
        "GET",
        "/deliveries/old-int-push",
        Value::Null,
    )
    .await;
    assert_eq!(story_b.status, 404, "{story_b:?}");
    // The root admin still sees the past.
    let story_root = admin(&dev, &key, "GET", "/deliveries/old-int-push", Value::Null).await;
    assert_eq!(story_root.status, 200, "{story_root:?}");

    // New history is the new incarnation's.
    push("b-push", secret, "bb").await;
    story(&dev, &key, "b-push", "workers").await;
    let runs = admin(&dev, &reader_b, "GET", "/stacks/prod/runs", Value::Null).await;
    let delivered: Vec<String> = runs.json()["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["delivery_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(delivered, vec!["b-push"], "{runs:?}");
}

//! End to end against the fake Bitbucket: inlet provisions an integration's webhooks (DESIGN
//! §4.2, "Webhooks in Bitbucket"). A sync creates the webhook with the integration's URL, secret
//! and the eight events; a second sync writes the identical configuration to the same webhook; a
//! rotation pushes the new secret and says so; a delete removes it in Bitbucket and from the list.
//! Bitbucket refusing or unreachable is a 502 with its message and nothing recorded; an older
//! server gets the webhook without the event it refuses; `inlet webhooks sync` does the same.

mod common;

use std::process::Command;

use common::{Inlet, admin, webhook};
use inlet_bitbucket::fake::FakeBitbucket;
use serde_json::{Value, json};

const TOKEN: &str = "bitbucket-admin-token";
const EIGHT: [&str; 8] = [
    "repo:refs_changed",
    "pr:opened",
    "pr:from_ref_updated",
    "pr:modified",
    "pr:reviewer:approved",
    "pr:reviewer:unapproved",
    "pr:merged",
    "pr:comment:added",
];

struct Env {
    fake: FakeBitbucket,
    dev: Inlet,
    key: String,
}

/// `inlet dev` allowed to call the plain-http fake, and the default integration `bb` on it.
async fn setup() -> Env {
    let (fake, dev, key) = common::dev_on_fake(TOKEN).await;
    Env { fake, dev, key }
}

impl Env {
    async fn call(&self, method: &str, path: &str, body: Value) -> common::Answer {
        admin(&self.dev, &self.key, method, path, body).await
    }

    async fn sync(&self, body: Value) -> common::Answer {
        self.call("PUT", "/integrations/bb/bitbucket-webhooks", body)
            .await
    }

    async fn managed(&self) -> Vec<Value> {
        let list = self
            .call("GET", "/integrations/bb/bitbucket-webhooks", Value::Null)
            .await;
        assert_eq!(list.status, 200, "{list:?}");
        list.json()["bitbucket_webhooks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn details(&self) -> Value {
        let details = self
            .call("GET", "/integrations/bb/details", Value::Null)
            .await;
        assert_eq!(details.status, 200, "{details:?}");
        details.json()
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = common::metrics(&self.dev).await;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series}"))
    }
}

fn events(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect()
}

/// Create → second sync (the fake receives a read and an identical update: same id, nothing
/// changed) → rotation pushes the new secret to the fake's webhook and lists it → delete removes
/// it in the fake and from the list. Each Bitbucket endpoint is counted under its own label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_rotate_delete() {
    let env = setup().await;
    let details = env.details().await;
    let body = json!({"project_key": "INFRA", "repository_slug": "network"});

    let first = env.sync(body.clone()).await;
    assert_eq!(first.status, 200, "{first:?}");
    let first = first.json();
    assert_eq!(first["created"], true);
    assert_eq!(first["project_key"], "INFRA");
    assert_eq!(first["repository_slug"], "network");
    assert_eq!(first["url"], details["webhook_url"]);
    assert_eq!(first["active"], true);
    assert_eq!(events(&first["events"]), EIGHT);
    assert_eq!(first["refused_events"], json!([]));
    let id = first["id"].as_u64().expect("id");
    let hooks = env.fake.webhooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].id, id);
    assert_eq!(hooks[0].url, details["webhook_url"].as_str().expect("url"));
    assert_eq!(
        hooks[0].secret.as_deref(),
        details["webhook_secret"].as_str()
    );
    assert_eq!(hooks[0].events, EIGHT);
    assert_eq!(env.managed().await, vec![first_view(&first)]);

    env.fake.clear_requests();
    let second = env.sync(body.clone()).await;
    assert_eq!(second.status, 200, "{second:?}");
    let second = second.json();
    assert_eq!(second["created"], false);
    assert_eq!(second["id"], id);
    let requests: Vec<(String, String)> = env
        .fake
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        requests,
        [
            (
                "GET".to_owned(),
                "/rest/api/latest/projects/INFRA/repos/network/webhooks".to_owned()
            ),
            (
                "PUT".to_owned(),
                format!("/rest/api/latest/projects/INFRA/repos/network/webhooks/{id}")
            ),
        ]
    );
    let last = env.fake.webhook_writes().pop().expect("a write");
    assert!(!last.changed, "the second sync changed the webhook");
    assert_eq!(env.fake.webhooks().len(), 1);
    assert_eq!(env.managed().await.len(), 1);

    let rotated = env
        .call("POST", "/integrations/bb/rotate-secret", Value::Null)
        .await;
    assert_eq!(rotated.status, 200, "{rotated:?}");
    let rotated = rotated.json();
    let new_secret = rotated["webhook_secret"].as_str().expect("secret");
    assert_ne!(Some(new_secret), details["webhook_secret"].as_str());
    assert_eq!(rotated["bitbucket_webhooks_updated"][0]["id"], id);
    assert_eq!(rotated["bitbucket_webhooks_failed"], json!([]));
    assert_eq!(env.fake.webhooks()[0].secret.as_deref(), Some(new_secret));

    let deleted = env
        .call(
            "DELETE",
            &format!("/integrations/bb/bitbucket-webhooks/{id}"),
            Value::Null,
        )
        .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert!(env.fake.webhooks().is_empty());
    assert!(env.managed().await.is_empty());
    let again = env
        .call(
            "DELETE",
            &format!("/integrations/bb/bitbucket-webhooks/{id}"),
            Value::Null,
        )
        .await;
    assert_eq!(again.status, 404, "{again:?}");
    assert_eq!(again.json()["error"]["code"], "bitbucket_webhook_not_found");

    let series = |endpoint: &str| {
        format!("inlet_bitbucket_calls_total{{endpoint=\"{endpoint}\",outcome=\"ok\"}}")
    };
    assert_eq!(env.metric(&series("webhooks_list")).await, 2.0);
    assert_eq!(env.metric(&series("webhook_create")).await, 1.0);
    assert_eq!(env.metric(&series("webhook_update")).await, 2.0);
    assert_eq!(env.metric(&series("webhook_delete")).await, 1.0);
}

/// The listing's view of a sync answer (without `created` and `refused_events`).
fn first_view(answer: &Value) -> Value {
    let mut view = answer.clone();
    let object = view.as_object_mut().expect("object");
    object.remove("created");
    object.remove("refused_events");
    view
}

/// Bitbucket refusing (403) or unreachable is 502 with its message, and nothing is recorded; an
/// older server that refuses `pr:from_ref_updated` gets the webhook without it and `events` says
/// so; a rotation Bitbucket does not take lists the webhook as failed while the old secret still
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_older_servers_and_failed_pushes() {
    let env = setup().await;
    let body = json!({"project_key": "INFRA"});

    env.fake.fail_webhooks(Some(403));
    let refused = env.sync(body.clone()).await;
    assert_eq!(refused.status, 502, "{refused:?}");
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "bitbucket_refused");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("403")
            && message.contains("You are not permitted to access this resource"),
        "{message}"
    );
    assert!(env.managed().await.is_empty());
    assert!(env.fake.webhooks().is_empty());
    env.fake.fail_webhooks(None);

    let unreachable = admin(
        &env.dev,
        &env.key,
        "POST",
        "/integrations",
        json!({"name": "gone", "api_host_url": "http://127.0.0.1:1", "access_token": TOKEN}),
    )
    .await;
    assert_eq!(unreachable.status, 201, "{unreachable:?}");
    let down = env
        .call("PUT", "/integrations/gone/bitbucket-webhooks", body.clone())
        .await;
    assert_eq!(down.status, 502, "{down:?}");
    assert_eq!(down.json()["error"]["code"], "bitbucket_unavailable");
    let listed = env
        .call("GET", "/integrations/gone/bitbucket-webhooks", Value::Null)
        .await;
    assert_eq!(listed.json()["bitbucket_webhooks"], json!([]));

    env.fake.refuse_webhook_event("pr:from_ref_updated");
    let older = env.sync(body.clone()).await;
    assert_eq!(older.status, 200, "{older:?}");
    let older = older.json();
    let seven: Vec<&str> = EIGHT
        .into_iter()
        .filter(|e| *e != "pr:from_ref_updated")
        .collect();
    assert_eq!(events(&older["events"]), seven);
    assert_eq!(older["refused_events"], json!(["pr:from_ref_updated"]));
    assert_eq!(older["repository_slug"], Value::Null);
    assert_eq!(env.fake.webhooks()[0].events, seven);
    assert_eq!(events(&env.managed().await[0]["events"]), seven);

    let old_secret = env.details().await["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    env.fake.fail_webhooks(Some(500));
    let rotated = env
        .call("POST", "/integrations/bb/rotate-secret", Value::Null)
        .await;
    assert_eq!(rotated.status, 200, "{rotated:?}");
    let rotated = rotated.json();
    assert_eq!(rotated["bitbucket_webhooks_updated"], json!([]));
    let failed = &rotated["bitbucket_webhooks_failed"][0];
    assert_eq!(failed["id"], older["id"]);
    assert_eq!(failed["code"], "bitbucket_unavailable");
    assert_eq!(
        env.fake.webhooks()[0].secret.as_deref(),
        Some(old_secret.as_str())
    );
    let signed_with_old = webhook(
        &env.dev.webhook_url("bb"),
        "repo:refs_changed",
        "provisioning-old-secret",
        &old_secret,
        &common::push_body("main", "0123456789abcdef0123456789abcdef01234567"),
    )
    .await;
    assert_eq!(signed_with_old.status, 202, "{signed_with_old:?}");
}

/// `inlet webhooks sync` creates the webhook, then updates the same one; a missing integration
/// fails with the admin API's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_syncs() {
    let env = setup().await;
    let admin_url = env.dev.ready.admin_base_url.clone().expect("admin url");
    let inlet = |integration: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_inlet"))
            .args([
                "webhooks",
                "sync",
                "--integration",
                integration,
                "--project",
                "INFRA",
                "--repository",
                "network",
            ])
            .env("INLET_ADMIN_URL", &admin_url)
            .env("INLET_API_KEY", &env.key)
            .output()
            .expect("run inlet");
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    };
    let (ok, out) = inlet("bb");
    assert!(ok, "{out}");
    assert!(out.contains("in INFRA/network: created, active"), "{out}");
    let id = env.fake.webhooks()[0].id;
    assert!(out.contains(&format!("webhook {id} ")), "{out}");
    let (ok, out) = inlet("bb");
    assert!(ok, "{out}");
    assert!(out.contains("updated"), "{out}");
    assert_eq!(env.fake.webhooks().len(), 1);
    let (ok, out) = inlet("missing");
    assert!(!ok);
    assert!(out.contains("404 integration_not_found"), "{out}");
}

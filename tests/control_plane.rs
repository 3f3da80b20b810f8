//! End to end: the control plane's rules through HTTP, as the reference product documents them.

mod common;

use std::time::Duration;

use common::{Inlet, TopicReader, admin, webhook};
use rdkafka::Message;
use serde_json::{Value, json};

/// A dev process and its bootstrap key.
struct Dev {
    inlet: Inlet,
    key: String,
}

impl Dev {
    fn start() -> Dev {
        let inlet = Inlet::dev();
        let key = inlet.ready.admin_key.clone().expect("admin key");
        Dev { inlet, key }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> common::Answer {
        admin(&self.inlet, &self.key, method, path, body).await
    }

    async fn call_as(&self, key: &str, method: &str, path: &str, body: Value) -> common::Answer {
        admin(&self.inlet, key, method, path, body).await
    }

    /// POSTs and asserts 201.
    async fn create(&self, path: &str, body: Value) -> Value {
        let answer = self.call("POST", path, body).await;
        assert_eq!(answer.status, 201, "POST {path}: {answer:?}");
        answer.json()
    }

    async fn space(&self, id: &str, parent: &str, inherit: bool) {
        self.create(
            "/spaces",
            json!({"id": id, "name": id, "parent_id": parent, "inherit_entities": inherit}),
        )
        .await;
    }

    async fn integration(&self, name: &str, space: Option<&str>, is_default: bool) {
        let mut body = json!({"name": name, "is_default": is_default,
                              "api_host_url": "https://bitbucket.example.com"});
        if let Some(space) = space {
            body["space_id"] = Value::from(space);
        }
        self.create("/integrations", body).await;
    }

    /// A new API key with one binding; returns its secret.
    async fn key(&self, space: &str, role: &str) -> String {
        let created = self
            .create(
                "/api-keys",
                json!({"name": format!("{role}@{space}"), "bindings": [{"space_id": space, "role": role}]}),
            )
            .await;
        created["secret"].as_str().expect("secret").to_owned()
    }

    async fn secret(&self, name: &str) -> String {
        let details = self
            .call("GET", &format!("/integrations/{name}/details"), Value::Null)
            .await;
        assert_eq!(details.status, 200, "{details:?}");
        details.json()["webhook_secret"]
            .as_str()
            .expect("secret")
            .to_owned()
    }
}

fn code(answer: &common::Answer) -> String {
    answer.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn message(answer: &common::Answer) -> String {
    answer.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Spaces form a tree under `root`: created under a parent, renamed, inheritance toggled, and
/// deleted only when empty (409 while they hold spaces, integrations or stacks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_tree_lifecycle() {
    let dev = Dev::start();
    dev.space("team", "root", false).await;
    dev.space("team-child", "team", true).await;
    let orphan = dev
        .call(
            "POST",
            "/spaces",
            json!({"name": "x", "parent_id": "missing"}),
        )
        .await;
    // A well-formed reference to a space that is not there (or hidden) is 404, naming the field.
    assert_eq!(orphan.status, 404);
    assert_eq!(orphan.json()["error"]["code"], "space_not_found");
    assert!(message(&orphan).starts_with("parent_id"), "{orphan:?}");
    let duplicate = dev
        .call("POST", "/spaces", json!({"id": "team", "name": "again"}))
        .await;
    assert_eq!(duplicate.status, 409);

    let renamed = dev
        .call(
            "PATCH",
            "/spaces/team",
            json!({"name": "Platform team", "inherit_entities": true}),
        )
        .await;
    assert_eq!(renamed.status, 200, "{renamed:?}");
    assert_eq!(
        renamed.json(),
        json!({"id": "team", "name": "Platform team", "parent_id": "root", "inherit_entities": true})
    );

    // Holding a space, then an integration, then a stack: 409 each time.
    let holding_space = dev.call("DELETE", "/spaces/team", Value::Null).await;
    assert_eq!(holding_space.status, 409);
    assert_eq!(code(&holding_space), "space_not_empty");
    assert_eq!(
        dev.call("DELETE", "/spaces/team-child", Value::Null)
            .await
            .status,
        204
    );
    dev.integration("team-bb", Some("team"), false).await;
    assert_eq!(
        dev.call("DELETE", "/spaces/team", Value::Null).await.status,
        409
    );
    dev.create(
        "/stacks",
        json!({"id": "s1", "name": "s1", "space_id": "team", "integration": "team-bb",
               "repository": "P/r", "branch": "main"}),
    )
    .await;
    assert_eq!(
        dev.call("DELETE", "/integrations/team-bb", Value::Null)
            .await
            .status,
        204
    );
    assert_eq!(
        dev.call("DELETE", "/spaces/team", Value::Null).await.status,
        409
    );
    assert_eq!(
        dev.call("DELETE", "/stacks/s1", Value::Null).await.status,
        204
    );
    assert_eq!(
        dev.call("DELETE", "/spaces/team", Value::Null).await.status,
        204
    );
    assert_eq!(
        dev.call("GET", "/spaces/team", Value::Null).await.status,
        404
    );
    assert_eq!(
        dev.call("DELETE", "/spaces/root", Value::Null).await.status,
        409
    );
    let spaces = dev.call("GET", "/spaces", Value::Null).await.json();
    assert_eq!(spaces["spaces"].as_array().map(Vec::len), Some(1));
}

/// API keys: the secret is shown once, works as a bearer key, is never listed, and stops working
/// when revoked; unknown keys are 401 and a key without the right is 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_lifecycle() {
    let dev = Dev::start();
    dev.space("team", "root", false).await;
    let created = dev
        .create(
            "/api-keys",
            json!({"name": "ci", "bindings": [{"space_id": "team", "role": "admin"}]}),
        )
        .await;
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(secret.starts_with(&format!("ik_{id}.")));
    assert_eq!(
        created["bindings"],
        json!([{"space_id": "team", "role": "admin"}])
    );

    let listed = dev.call("GET", "/api-keys", Value::Null).await;
    assert_eq!(listed.status, 200);
    let text = String::from_utf8_lossy(&listed.body).into_owned();
    assert!(text.contains(&id));
    assert!(
        !text.contains(&secret[secret.len() - 20..]),
        "secret listed"
    );
    assert!(!text.contains("sha256"), "hash listed");

    // The key works within its space, and cannot grant beyond it.
    let own = dev
        .call_as(&secret, "GET", "/spaces/team", Value::Null)
        .await;
    assert_eq!(own.status, 200);
    let escalate = dev
        .call_as(
            &secret,
            "POST",
            "/api-keys",
            json!({"name": "x", "bindings": [{"space_id": "root", "role": "admin"}]}),
        )
        .await;
    assert_eq!(escalate.status, 403, "{escalate:?}");
    let nested = dev
        .call_as(
            &secret,
            "POST",
            "/api-keys",
            json!({"name": "team-reader", "bindings": [{"space_id": "team", "role": "reader"}]}),
        )
        .await;
    assert_eq!(nested.status, 201, "{nested:?}");

    // Unknown and malformed keys, then revocation.
    let tampered = format!("{}x", &secret[..secret.len() - 1]);
    assert_eq!(
        dev.call_as(&tampered, "GET", "/spaces", Value::Null)
            .await
            .status,
        401
    );
    assert_eq!(
        dev.call_as("ik_nope.nope", "GET", "/spaces", Value::Null)
            .await
            .status,
        401
    );
    assert_eq!(
        dev.call("DELETE", &format!("/api-keys/{id}"), Value::Null)
            .await
            .status,
        204
    );
    let revoked = dev.call_as(&secret, "GET", "/spaces", Value::Null).await;
    assert_eq!(revoked.status, 401);
    assert_eq!(code(&revoked), "unauthorized");
    assert_eq!(
        dev.call("DELETE", &format!("/api-keys/{id}"), Value::Null)
            .await
            .status,
        404
    );
}

/// The visibility matrix: reader/writer/admin bound on the integration's own space, a child that
/// inherits, the parent (root), or an unrelated space, against the default integration and a
/// space-level one. Listed/GET = visible; details and changes = admin of the integration's space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visibility_matrix() {
    let dev = Dev::start();
    dev.space("team", "root", false).await;
    dev.space("team-child", "team", true).await;
    dev.space("other", "root", false).await;
    dev.integration("default-bb", None, true).await;
    dev.integration("team-bb", Some("team"), false).await;

    // (place, role) → (sees team-bb, administers team-bb, administers default-bb)
    let cases = [
        ("team", "reader", true, false, false),
        ("team", "writer", true, false, false),
        ("team", "admin", true, true, false),
        ("team-child", "reader", true, false, false),
        ("team-child", "writer", true, false, false),
        ("team-child", "admin", true, false, false),
        ("root", "reader", true, false, false),
        ("root", "writer", true, false, false),
        ("root", "admin", true, true, true),
        ("other", "reader", false, false, false),
        ("other", "writer", false, false, false),
        ("other", "admin", false, false, false),
    ];
    for (place, role, sees, admins_team, admins_default) in cases {
        let key = dev.key(place, role).await;
        let who = format!("{role} on {place}");
        let listed = dev
            .call_as(&key, "GET", "/integrations", Value::Null)
            .await
            .json();
        let names: Vec<&str> = listed["integrations"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|i| i["name"].as_str())
            .collect();
        assert!(
            names.contains(&"default-bb"),
            "{who}: default listed to every key"
        );
        assert_eq!(names.contains(&"team-bb"), sees, "{who}: listing {names:?}");

        let get = dev
            .call_as(&key, "GET", "/integrations/team-bb", Value::Null)
            .await;
        assert_eq!(get.status, if sees { 200 } else { 404 }, "{who}: GET");

        let details = dev
            .call_as(&key, "GET", "/integrations/team-bb/details", Value::Null)
            .await;
        let expected = match (sees, admins_team) {
            (_, true) => 200,
            (true, false) => 403,
            (false, _) => 404,
        };
        assert_eq!(details.status, expected, "{who}: team details");
        let patch = dev
            .call_as(
                &key,
                "PATCH",
                "/integrations/team-bb",
                json!({"description": "same"}),
            )
            .await;
        assert_eq!(patch.status, expected, "{who}: team patch");

        let default_details = dev
            .call_as(&key, "GET", "/integrations/default-bb/details", Value::Null)
            .await;
        assert_eq!(
            default_details.status,
            if admins_default { 200 } else { 403 },
            "{who}: default details"
        );
        let delete_default = dev
            .call_as(&key, "DELETE", "/integrations/default-bb", Value::Null)
            .await;
        if !admins_default {
            assert_eq!(delete_default.status, 403, "{who}: default delete");
        } else {
            assert_eq!(delete_default.status, 204);
            dev.integration("default-bb", None, true).await;
        }

        // Creating a space-level integration needs admin there; the default one root admin.
        let create_team = dev
            .call_as(
                &key,
                "POST",
                "/integrations",
                json!({"name": format!("new-{role}-{place}"), "space_id": "team",
                       "api_host_url": "https://x.example.com"}),
            )
            .await;
        // A space the caller cannot read is reported like a missing one: 404 naming the field.
        let create_expected = match (admins_team, sees) {
            (true, _) => 201,
            (false, true) => 403,
            (false, false) => 404,
        };
        assert_eq!(create_team.status, create_expected, "{who}: create in team");
        if create_team.status == 201 {
            let name = format!("new-{role}-{place}");
            assert_eq!(
                dev.call_as(
                    &key,
                    "DELETE",
                    &format!("/integrations/{name}"),
                    Value::Null
                )
                .await
                .status,
                204
            );
        }
    }
}

/// Integration fields and rules: immutable name, one default, URL validation with the field named,
/// user-facing URL defaulting to the API host, labels and markdown kept, the access token never
/// returned, re-creation keeps the URL and changes the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integration_rules() {
    let dev = Dev::start();
    let created = dev
        .create(
            "/integrations",
            json!({"name": "bb", "is_default": true, "api_host_url": "private://agents-prod",
                   "username": "inlet-bot", "access_token": "tok-SUPER-secret-123",
                   "labels": ["prod", "dc"], "description": "# Prod\n\n*Bitbucket* DC"}),
        )
        .await;
    assert_eq!(created["user_facing_host_url"], "private://agents-prod");
    assert_eq!(created["labels"], json!(["prod", "dc"]));
    assert_eq!(created["description"], "# Prod\n\n*Bitbucket* DC");
    assert_eq!(created["provider"], "bitbucket_datacenter");
    assert_eq!(created["has_access_token"], true);

    let second_default = dev
        .call(
            "POST",
            "/integrations",
            json!({"name": "bb2", "is_default": true, "api_host_url": "https://x.example.com"}),
        )
        .await;
    assert_eq!(second_default.status, 409);
    assert_eq!(code(&second_default), "default_integration_exists");
    let same_name = dev
        .call(
            "POST",
            "/integrations",
            json!({"name": "BB", "api_host_url": "https://x.example.com"}),
        )
        .await;
    assert_eq!(same_name.status, 409);

    for (field, body) in [
        (
            "api_host_url",
            json!({"name": "v1", "api_host_url": "ftp://x"}),
        ),
        (
            "api_host_url",
            json!({"name": "v2", "api_host_url": "https://"}),
        ),
        (
            "user_facing_host_url",
            json!({"name": "v3", "api_host_url": "https://x.example.com", "user_facing_host_url": "nope"}),
        ),
        (
            "name",
            json!({"name": "has space", "api_host_url": "https://x.example.com"}),
        ),
    ] {
        let answer = dev.call("POST", "/integrations", body).await;
        assert_eq!(answer.status, 400, "{field}: {answer:?}");
        assert!(message(&answer).starts_with(field), "{field}: {answer:?}");
    }

    let rename = dev
        .call("PATCH", "/integrations/bb", json!({"name": "other"}))
        .await;
    // Changing a field fixed at creation conflicts with the integration's state.
    assert_eq!(rename.status, 409);
    assert_eq!(rename.json()["error"]["code"], "immutable_field");
    assert!(message(&rename).starts_with("name"), "{rename:?}");
    let patched = dev
        .call(
            "PATCH",
            "/integrations/bb",
            json!({"name": "bb", "user_facing_host_url": "https://bitbucket.example.com",
                   "access_token": "tok-ROTATED-456"}),
        )
        .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(
        patched.json()["user_facing_host_url"],
        "https://bitbucket.example.com"
    );

    // The access token is write-only: no answer ever carries it.
    let (url, first_secret) = {
        let details = dev
            .call("GET", "/integrations/bb/details", Value::Null)
            .await
            .json();
        (
            details["webhook_url"].as_str().expect("url").to_owned(),
            details["webhook_secret"]
                .as_str()
                .expect("secret")
                .to_owned(),
        )
    };
    for path in [
        "/integrations",
        "/integrations/bb",
        "/integrations/bb/details",
    ] {
        let body =
            String::from_utf8_lossy(&dev.call("GET", path, Value::Null).await.body).into_owned();
        assert!(!body.contains("tok-"), "{path} shows the token: {body}");
    }

    // Delete and re-create: same URL, new secret.
    assert_eq!(
        dev.call("DELETE", "/integrations/bb", Value::Null)
            .await
            .status,
        204
    );
    assert_eq!(
        dev.call("GET", "/integrations/bb", Value::Null)
            .await
            .status,
        404
    );
    dev.integration("bb", None, true).await;
    let details = dev
        .call("GET", "/integrations/bb/details", Value::Null)
        .await
        .json();
    assert_eq!(details["webhook_url"], url.as_str());
    assert_ne!(details["webhook_secret"], first_secret.as_str());
    assert!(url.ends_with("/webhooks/bitbucket-datacenter/bb"));
}

/// Rotation returns a new secret; the old one keeps verifying during the grace period, and not
/// after a rotation without grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotation_grace_period() {
    let dev = Dev::start();
    dev.integration("bb", None, true).await;
    let url = dev.inlet.webhook_url("bb");
    let push = common::push_body("main", "178864a7d521b6f5e720b386b2c2b0ef8563e0dc");
    let first = dev.secret("bb").await;
    // Verified once before the rotation, so ingest holds the opened first secret.
    assert_eq!(
        webhook(&url, "repo:refs_changed", "r0", &first, &push)
            .await
            .status,
        202
    );

    let rotated = dev
        .call(
            "POST",
            "/integrations/bb/rotate-secret",
            json!({"grace_period_secs": 3600}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{rotated:?}");
    let rotated = rotated.json();
    let second = rotated["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_ne!(second, first);
    assert!(rotated["previous_secret_valid_until"].is_string());
    assert_eq!(dev.secret("bb").await, second);
    assert_eq!(
        webhook(&url, "repo:refs_changed", "r1", &first, &push)
            .await
            .status,
        202
    );
    assert_eq!(
        webhook(&url, "repo:refs_changed", "r2", &second, &push)
            .await
            .status,
        202
    );

    let too_long = dev
        .call(
            "POST",
            "/integrations/bb/rotate-secret",
            json!({"grace_period_secs": 9999999}),
        )
        .await;
    assert_eq!(too_long.status, 400);

    let immediate = dev
        .call(
            "POST",
            "/integrations/bb/rotate-secret",
            json!({"grace_period_secs": 0}),
        )
        .await
        .json();
    let third = immediate["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_eq!(
        webhook(&url, "repo:refs_changed", "r3", &second, &push)
            .await
            .status,
        401
    );
    assert_eq!(
        webhook(&url, "repo:refs_changed", "r4", &first, &push)
            .await
            .status,
        401
    );
    assert_eq!(
        webhook(&url, "repo:refs_changed", "r5", &third, &push)
            .await
            .status,
        202
    );

    // Without a body the grace period is the default 24 h.
    let default = dev
        .call("POST", "/integrations/bb/rotate-secret", Value::Null)
        .await;
    assert_eq!(default.status, 200);
    let fourth = default.json()["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_eq!(
        webhook(&url, "repo:refs_changed", "r6", &third, &push)
            .await
            .status,
        202
    );
    assert_eq!(
        webhook(&url, "repo:refs_changed", "r7", &fourth, &push)
            .await
            .status,
        202
    );

    // A grace period that ends while the opened secrets are held: the clock alone retires the
    // old secret, with no change in the control log.
    let short = dev
        .call(
            "POST",
            "/integrations/bb/rotate-secret",
            json!({"grace_period_secs": 3}),
        )
        .await;
    assert_eq!(short.status, 200, "{short:?}");
    let fifth = short.json()["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_eq!(
        webhook(&url, "repo:refs_changed", "r8", &fourth, &push)
            .await
            .status,
        202
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        webhook(&url, "repo:refs_changed", "r9", &fourth, &push)
            .await
            .status,
        401
    );
    assert_eq!(
        webhook(&url, "repo:refs_changed", "r10", &fifth, &push)
            .await
            .status,
        202
    );
}

/// Stacks: availability through inheriting spaces, 400 naming the reason, detach on delete,
/// re-attach by PATCH, manual runs (writer and up; 409 when detached) reaching `inlet.runs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_and_manual_runs() {
    let dev = Dev::start();
    dev.space("team", "root", false).await;
    dev.space("team-child", "team", true).await;
    dev.space("isolated", "team", false).await;
    dev.integration("team-bb", Some("team"), false).await;

    let stack = |id: &str, space: &str| {
        json!({"id": id, "name": id, "space_id": space, "integration": "team-bb",
               "repository": "INFRA/network", "branch": "refs/heads/main"})
    };
    let inherited = dev.create("/stacks", stack("inherits", "team-child")).await;
    assert_eq!(inherited["branch"], "main");
    assert_eq!(inherited["integration_status"], "attached");
    let unavailable = dev
        .call("POST", "/stacks", stack("isolated-stack", "isolated"))
        .await;
    assert_eq!(unavailable.status, 409);
    assert_eq!(
        unavailable.json()["error"]["code"],
        "integration_unavailable"
    );
    assert!(
        message(&unavailable).starts_with("integration"),
        "{unavailable:?}"
    );
    assert!(message(&unavailable).contains("inherit"), "{unavailable:?}");
    let no_default = dev
        .call(
            "POST",
            "/stacks",
            json!({"name": "x", "repository": "P/r", "branch": "main"}),
        )
        .await;
    assert_eq!(no_default.status, 409);
    assert_eq!(no_default.json()["error"]["code"], "no_default_integration");

    // Manual runs: reader 403, writer 202 with a requested manual decision.
    let reader = dev.key("team", "reader").await;
    let writer = dev.key("team", "writer").await;
    let refused = dev
        .call_as(&reader, "POST", "/stacks/inherits/runs", Value::Null)
        .await;
    assert_eq!(refused.status, 403);
    let reader_patch = dev
        .call_as(
            &reader,
            "PATCH",
            "/stacks/inherits",
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(reader_patch.status, 403);
    let run = dev
        .call_as(
            &writer,
            "POST",
            "/stacks/inherits/runs",
            json!({"sha": "abc123"}),
        )
        .await;
    assert_eq!(run.status, 202, "{run:?}");
    let trigger_id = run.json()["trigger_id"]
        .as_str()
        .expect("trigger id")
        .to_owned();
    let mut runs = TopicReader::new(&dev.inlet.ready.kafka_bootstrap_servers, "inlet.runs").await;
    runs.until(Duration::from_secs(30), |r| {
        !common::decisions_for(r, &trigger_id).is_empty()
    })
    .await;
    let decision = &common::decisions_for(&runs.records, &trigger_id)[0];
    assert_eq!(decision["status"], "requested");
    assert_eq!(decision["run_type"], "tracked");
    assert_eq!(decision["trigger"]["kind"], "manual");
    assert_eq!(decision["commit"]["sha"], "abc123");
    assert_eq!(decision["space_id"], "team-child");

    // Detached: 409 for manual runs, until re-attached.
    assert_eq!(
        dev.call("DELETE", "/integrations/team-bb", Value::Null)
            .await
            .status,
        204
    );
    let detached = dev.call("POST", "/stacks/inherits/runs", Value::Null).await;
    assert_eq!(detached.status, 409);
    assert_eq!(code(&detached), "stack_detached");
    dev.integration("team-bb", Some("team"), false).await;
    let still = dev
        .call("GET", "/stacks/inherits", Value::Null)
        .await
        .json();
    assert_eq!(still["integration_status"], "detached");
    let reattached = dev
        .call(
            "PATCH",
            "/stacks/inherits",
            json!({"integration": "team-bb"}),
        )
        .await;
    assert_eq!(reattached.status, 200, "{reattached:?}");
    assert_eq!(reattached.json()["integration_status"], "attached");
    assert_eq!(
        dev.call("POST", "/stacks/inherits/runs", Value::Null)
            .await
            .status,
        202
    );

    // Unknown stacks, and stacks in spaces the caller cannot read, are 404.
    let outsider = dev.key("isolated", "admin").await;
    assert_eq!(
        dev.call_as(&outsider, "GET", "/stacks/inherits", Value::Null)
            .await
            .status,
        404
    );
    assert_eq!(
        dev.call("GET", "/stacks/nope", Value::Null).await.status,
        404
    );
    let listed = dev
        .call_as(&outsider, "GET", "/stacks", Value::Null)
        .await
        .json();
    assert_eq!(listed, json!({"stacks": []}));
}

/// `POST /integrations/{name}/reconcile` answers 202 `{reconcile_id}`; asked again right after,
/// it answers the same id, and the control log holds one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_on_demand() {
    let dev = Dev::start();
    dev.integration("bb", None, true).await;
    let path = "/integrations/bb/reconcile";
    let first = dev.call("POST", path, Value::Null).await;
    assert_eq!(first.status, 202, "{first:?}");
    let body = first.json();
    let id = body["reconcile_id"]
        .as_str()
        .expect("reconcile_id")
        .to_owned();
    assert_eq!(body, json!({"reconcile_id": id}));
    assert!(id.starts_with("rec_"), "{id}");
    let second = dev.call("POST", path, json!({})).await;
    assert_eq!(second.status, 202, "{second:?}");
    assert_eq!(second.json(), json!({"reconcile_id": id}));

    // A write after both: once it is read, everything before it was.
    dev.space("after", "root", false).await;
    let mut control =
        TopicReader::new(&dev.inlet.ready.kafka_bootstrap_servers, "inlet.control").await;
    let commands = |records: &[rdkafka::message::OwnedMessage]| -> Vec<Value> {
        records
            .iter()
            .filter_map(|m| serde_json::from_slice::<Value>(m.payload().unwrap_or_default()).ok())
            .map(|r| r["command"].clone())
            .collect()
    };
    control
        .until(Duration::from_secs(10), |r| {
            commands(r).iter().any(|c| c["type"] == "create_space")
        })
        .await;
    let requests: Vec<Value> = commands(&control.records)
        .into_iter()
        .filter(|c| c["type"] == "request_reconcile")
        .collect();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["reconcile_id"], id.as_str());
    assert_eq!(requests[0]["name"], "bb");

    let missing = dev
        .call("POST", "/integrations/nope/reconcile", Value::Null)
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(code(&missing), "integration_not_found");
}

/// Reading `inlet.control` without the secrets key reveals no webhook secret or access token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_in_the_control_log() {
    let dev = Dev::start();
    dev.create(
        "/integrations",
        json!({"name": "bb", "is_default": true, "api_host_url": "https://x.example.com",
               "access_token": "plain-access-token-value"}),
    )
    .await;
    let secret = dev.secret("bb").await;
    let rotated = dev
        .call("POST", "/integrations/bb/rotate-secret", Value::Null)
        .await
        .json();
    let mut control =
        TopicReader::new(&dev.inlet.ready.kafka_bootstrap_servers, "inlet.control").await;
    control
        .until(Duration::from_secs(10), |r| r.len() >= 2)
        .await;
    let raw: Vec<String> = control
        .records
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
        .collect();
    for record in &raw {
        assert!(
            !record.contains(&secret),
            "webhook secret in the control log"
        );
        assert!(!record.contains(rotated["webhook_secret"].as_str().expect("secret")));
        assert!(
            !record.contains("plain-access-token-value"),
            "token in the control log"
        );
    }
    assert!(raw[0].contains("\"webhook_secret\":\"v1:"), "{}", raw[0]);
}

/// The OpenAPI document lists every endpoint, and every listed endpoint is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_what_is_served() {
    let dev = Dev::start();
    let doc = common::send("GET", &dev.inlet.api("/openapi.json"), &[], "").await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 10, "{paths:?}");
    for (path, methods) in paths {
        for method in methods.as_object().expect("methods").keys() {
            let concrete = path
                .trim_start_matches("/api/v1")
                .replace("{id}", "nope")
                .replace("{name}", "nope");
            let answer = dev.call(&method.to_uppercase(), &concrete, json!({})).await;
            assert_ne!(answer.status, 405, "{method} {path}");
            assert_ne!(code(&answer), "not_found", "{method} {path} is not served");
        }
    }
}

/// Two ingest processes on one broker: creating the same name concurrently, exactly one wins and
/// the other gets 409; a third ingest started later folds the same log and answers every read the
/// same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree() {
    let broker = Inlet::start(&["dev", "--only-broker"], &[]);
    let bootstrap = broker.ready.kafka_bootstrap_servers.clone();
    let key = "replica-admin-key-0123456789";
    let ingest = || Inlet::ingest(&bootstrap, key, &[]);
    let a = ingest();
    let b = ingest();

    for round in 0..5 {
        let name = format!("race-{round}");
        let body = json!({"name": name, "api_host_url": "https://x.example.com"});
        let (first, second) = tokio::join!(
            admin(&a, key, "POST", "/integrations", body.clone()),
            admin(&b, key, "POST", "/integrations", body.clone()),
        );
        let mut statuses = [first.status, second.status];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "round {round}: {first:?} {second:?}");
    }
    admin(
        &a,
        key,
        "POST",
        "/spaces",
        json!({"id": "team", "name": "team", "inherit_entities": true}),
    )
    .await;
    let stack = admin(
        &b,
        key,
        "POST",
        "/stacks",
        json!({"id": "s1", "name": "s1", "space_id": "team", "integration": "race-0",
               "repository": "P/r", "branch": "main"}),
    )
    .await;
    assert_eq!(stack.status, 201, "{stack:?}");
    admin(
        &a,
        key,
        "POST",
        "/api-keys",
        json!({"name": "k", "bindings": [{"space_id": "team", "role": "reader"}]}),
    )
    .await;

    let late = ingest();
    for path in [
        "/spaces",
        "/integrations",
        "/integrations/race-3/details",
        "/stacks",
        "/stacks/s1",
        "/api-keys",
    ] {
        let expected = admin(&a, key, "GET", path, Value::Null).await;
        let from_b = admin(&b, key, "GET", path, Value::Null).await;
        let from_late = admin(&late, key, "GET", path, Value::Null).await;
        assert_eq!(expected.status, 200, "{path}");
        // Details carry each process's own webhook URL; compare the secret.
        let strip = |mut v: Value| {
            v.as_object_mut().map(|o| o.remove("webhook_url"));
            v
        };
        assert_eq!(strip(from_b.json()), strip(expected.json()), "{path} on b");
        assert_eq!(
            strip(from_late.json()),
            strip(expected.json()),
            "{path} on the late one"
        );
    }

    // An ingest with a different secrets key refuses to start, naming the problem.
    let dir = tempfile::tempdir().expect("tempdir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_inlet"))
        .args([
            "ingest",
            "--kafka-bootstrap-servers",
            &bootstrap,
            "--webhook-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .env("INLET_ADMIN_KEY", key)
        .env("INLET_SECRETS_KEY", "00".repeat(32))
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("secrets key"), "{stderr}");
}

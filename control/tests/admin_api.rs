//! The admin API in-process: requests go straight to [`Admin::handle`] (no listener), writes go
//! through a real control log on the embedded broker, so an answer is the fold's verdict.
//!
//! Covers `POST /integrations/{name}/reconcile`: the 202 and its id, coalescing, the body rules and
//! who may ask.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use inlet_control::admin::{Admin, AdminDeps};
use inlet_control::control_log::ControlLog;
use inlet_control::crypto::SecretsKey;
use inlet_control::deliveries::DeliveryLog;
use inlet_core::CancellationToken;
use inlet_core::config::{BitbucketConfig, KafkaConfig};
use inlet_core::kafka::{EmbeddedBroker, Kafka};
use inlet_core::metrics::Metrics;
use inlet_core::output::Outputs;
use inlet_core::secret::Secret;
use inlet_core::topics::Topics;
use serde_json::{Value, json};

const ROOT_KEY: &str = "admin-api-test-root-key-0123456789";

/// An admin API over a fresh embedded broker; the broker and the fold stop on drop.
struct Api {
    admin: Admin,
    control: ControlLog,
    shutdown: CancellationToken,
    _broker: EmbeddedBroker,
}

/// An answer: status and JSON body (`Null` when empty).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn reconcile_id(&self) -> String {
        self.body["reconcile_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no reconcile_id in {self:?}"))
            .to_owned()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Api {
    async fn start() -> Api {
        let topics = Topics::new("inlet.");
        let specs = topics.specs();
        let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&specs))
            .await
            .expect("join")
            .expect("embedded broker");
        let kafka = Kafka::new(&KafkaConfig::default(), broker.bootstrap_servers(), true);
        let metrics = Metrics::new();
        let producer = kafka
            .producer(Some(metrics.clone()))
            .await
            .expect("producer");
        let shutdown = CancellationToken::new();
        let (control, _task) = ControlLog::start(
            &kafka,
            topics.control(),
            producer.clone(),
            metrics.control.clone(),
            inlet_control::snapshot::SnapshotPolicy::default(),
            shutdown.clone(),
        )
        .await
        .expect("control log");
        let bitbucket = inlet_bitbucket::client::Client::new(
            &BitbucketConfig::default(),
            metrics.bitbucket.clone(),
        )
        .expect("bitbucket client");
        let deps = AdminDeps {
            admin_key: Secret::new(ROOT_KEY),
            secrets_key: SecretsKey::generate(),
            public_base_url: "http://inlet.test".to_owned(),
            outputs: Outputs::new(producer),
            triggers_topic: topics.triggers(),
            metrics,
            deliveries: DeliveryLog::default(),
            kafka,
            webhooks_topic: topics.webhooks(),
            deliveries_topic: topics.deliveries(),
            allow_http: false,
            bitbucket,
        };
        Api {
            admin: Admin::new(control.clone(), deps),
            control,
            shutdown,
            _broker: broker,
        }
    }

    /// `method path` as `key`, with `body` sent verbatim (`""`: no body).
    async fn raw(&self, key: &str, method: &str, path: &str, body: &str) -> Answer {
        let request = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(30), self.admin.handle(request))
            .await
            .expect("the admin API answers within 30 s");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON answer")
        };
        Answer { status, body }
    }

    async fn call(&self, key: &str, method: &str, path: &str, body: Value) -> Answer {
        self.raw(key, method, path, &body.to_string()).await
    }

    async fn create(&self, path: &str, body: Value) -> Value {
        let answer = self.call(ROOT_KEY, "POST", path, body).await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "POST {path}: {answer:?}"
        );
        answer.body
    }

    async fn space(&self, id: &str) {
        self.create("/spaces", json!({"id": id, "name": id})).await;
    }

    async fn integration(&self, name: &str, space: &str, is_default: bool) {
        let mut body = json!({"name": name, "is_default": is_default,
                              "api_host_url": "https://bitbucket.example.com"});
        if !is_default {
            body["space_id"] = Value::from(space);
        }
        self.create("/integrations", body).await;
    }

    /// A new API key with one binding; returns its secret.
    async fn key(&self, space: &str, role: &str) -> String {
        let created = self
            .create(
                "/api-keys",
                json!({"name": format!("{role}@{space}"),
                       "bindings": [{"space_id": space, "role": role}]}),
            )
            .await;
        created["secret"].as_str().expect("secret").to_owned()
    }

    async fn reconcile(&self, key: &str, name: &str) -> Answer {
        self.raw(key, "POST", &format!("/integrations/{name}/reconcile"), "")
            .await
    }
}

/// A writer of the integration's space gets 202 with a fresh id, and the request is in the
/// registry every router folds, for that incarnation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_answers_202_with_an_id() {
    let api = Api::start().await;
    api.space("team-a").await;
    api.integration("team-a-bb", "team-a", false).await;
    let writer = api.key("team-a", "writer").await;

    let answer = api.reconcile(&writer, "team-a-bb").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let id = answer.reconcile_id();
    assert!(
        id.starts_with("rec_") && id.len() == 36,
        "generated like trigger ids: {id}"
    );
    let registry = api.control.read();
    let request = registry.reconcile_request("team-a-bb").expect("recorded");
    assert_eq!(request.reconcile_id, id);
    assert_eq!(
        request.integration_id,
        registry.integration("team-a-bb").expect("integration").id
    );
}

/// Asking again within 2 s answers the pending id and appends nothing to the control log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_coalesces_within_two_seconds() {
    let api = Api::start().await;
    api.integration("bb", "root", true).await;
    let first = api.reconcile(ROOT_KEY, "bb").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{first:?}");
    let offset = api.control.applied_offset();
    for _ in 0..5 {
        let again = api.reconcile(ROOT_KEY, "bb").await;
        assert_eq!(again.status, StatusCode::ACCEPTED, "{again:?}");
        assert_eq!(again.reconcile_id(), first.reconcile_id());
    }
    // Every request caught up with the log first, so nothing was appended meanwhile.
    assert_eq!(api.control.applied_offset(), offset);
    // A re-created integration is another one: its first request gets a new id.
    assert_eq!(
        api.call(ROOT_KEY, "DELETE", "/integrations/bb", Value::Null)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    api.integration("bb", "root", true).await;
    let fresh = api.reconcile(ROOT_KEY, "bb").await;
    assert_eq!(fresh.status, StatusCode::ACCEPTED, "{fresh:?}");
    assert_ne!(fresh.reconcile_id(), first.reconcile_id());
}

/// No body and `{}` are taken; anything else is 400 and appends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_body_is_empty_or_an_empty_object() {
    let api = Api::start().await;
    api.integration("bb", "root", true).await;
    let path = "/integrations/bb/reconcile";
    for body in [r#"{"force": true}"#, "[]", "null", "\"x\"", "{"] {
        let answer = api.raw(ROOT_KEY, "POST", path, body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {answer:?}");
        assert_eq!(answer.code(), "invalid_body", "{body}");
    }
    assert_eq!(api.control.read().reconcile_request("bb"), None);
    let object = api.raw(ROOT_KEY, "POST", path, " {} ").await;
    assert_eq!(object.status, StatusCode::ACCEPTED, "{object:?}");
    let empty = api.raw(ROOT_KEY, "POST", path, "").await;
    assert_eq!(empty.status, StatusCode::ACCEPTED, "{empty:?}");
    assert_eq!(empty.reconcile_id(), object.reconcile_id());
    let get = api.raw(ROOT_KEY, "GET", path, "").await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED, "{get:?}");
}

/// A reader of the integration's space sees it but may not reconcile it (403); a writer of
/// another space, or a reader anywhere, may not reconcile the default integration either (403)
/// while a writer anywhere may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_needs_the_writer_role() {
    let api = Api::start().await;
    api.space("team-a").await;
    api.space("team-b").await;
    api.integration("bb", "root", true).await;
    api.integration("team-a-bb", "team-a", false).await;
    let reader = api.key("team-a", "reader").await;
    let refused = api.reconcile(&reader, "team-a-bb").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused:?}");
    assert_eq!(refused.code(), "forbidden");
    let refused = api.reconcile(&reader, "bb").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{refused:?}");
    assert_eq!(api.control.read().reconcile_request("team-a-bb"), None);
    assert_eq!(api.control.read().reconcile_request("bb"), None);

    let team_b_writer = api.key("team-b", "writer").await;
    let default = api.reconcile(&team_b_writer, "bb").await;
    assert_eq!(default.status, StatusCode::ACCEPTED, "{default:?}");
    let team_a_admin = api.key("team-a", "admin").await;
    let own = api.reconcile(&team_a_admin, "team-a-bb").await;
    assert_eq!(own.status, StatusCode::ACCEPTED, "{own:?}");
}

/// An integration that does not exist, or that the caller cannot see (a writer of team-b and
/// team-a's integration), is 404 `integration_not_found`, and nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_of_an_invisible_integration_is_not_found() {
    let api = Api::start().await;
    api.space("team-a").await;
    api.space("team-b").await;
    api.integration("team-a-bb", "team-a", false).await;
    let team_b_writer = api.key("team-b", "writer").await;

    let hidden = api.reconcile(&team_b_writer, "team-a-bb").await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{hidden:?}");
    assert_eq!(hidden.code(), "integration_not_found");
    let missing = api.reconcile(ROOT_KEY, "nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{missing:?}");
    assert_eq!(missing.code(), "integration_not_found");
    // The same answer as for a name that never existed: existence does not leak.
    assert_eq!(
        hidden.body["error"]["message"]
            .as_str()
            .map(|m| m.replace("team-a-bb", "x")),
        api.reconcile(&team_b_writer, "x").await.body["error"]["message"]
            .as_str()
            .map(str::to_owned)
    );
    assert_eq!(api.control.read().reconcile_request("team-a-bb"), None);
    let unauthenticated = api.reconcile("not-a-key", "team-a-bb").await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
}

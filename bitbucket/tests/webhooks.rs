//! The webhook calls of the REST client against the fake Bitbucket, in process on loopback:
//! what a sync creates, that a second one changes nothing, that a new secret reaches the
//! webhook, paging, scopes, an older server that refuses an event key, refusals and retries —
//! asserted on the fake's webhooks, the writes it answered, the returned values and the metrics.

use std::sync::Arc;

use inlet_bitbucket::client::{CallError, Client, Server};
use inlet_bitbucket::events;
use inlet_bitbucket::fake::FakeBitbucket;
use inlet_bitbucket::webhooks::{WebhookScope, WebhookSpec};
use inlet_core::config::BitbucketConfig;
use inlet_core::metrics::Metrics;
use inlet_core::secret::Secret;

const TOKEN: &str = "test-access-token";
const URL: &str = "https://inlet.example.com/webhooks/bitbucket-datacenter/bb";

const EIGHT: [&str; 8] = events::SUBSCRIBED;

struct Setup {
    fake: FakeBitbucket,
    client: Client,
    metrics: Arc<Metrics>,
    server: Server,
}

async fn setup() -> Setup {
    let fake = FakeBitbucket::start().await;
    fake.require_token(TOKEN);
    let metrics = Metrics::new();
    let config = BitbucketConfig {
        allow_http: true,
        ..BitbucketConfig::default()
    };
    let client = Client::new(&config, metrics.bitbucket.clone()).expect("client");
    let server = fake.server(TOKEN);
    Setup {
        fake,
        client,
        metrics,
        server,
    }
}

fn spec(secret: &str) -> WebhookSpec {
    WebhookSpec {
        name: "inlet (bb)".to_owned(),
        url: URL.to_owned(),
        secret: Secret::new(secret),
        events: EIGHT.map(str::to_owned).to_vec(),
    }
}

fn repository() -> WebhookScope {
    WebhookScope::new("INFRA", Some("network"))
}

impl Setup {
    fn calls(&self, endpoint: &str, outcome: &str) -> f64 {
        let series =
            format!("inlet_bitbucket_calls_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}}");
        let text = self.metrics.render();
        text.lines()
            .find_map(|line| line.strip_prefix(&series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
    }

    /// `METHOD path` of every request the fake received.
    fn requests(&self) -> Vec<String> {
        self.fake
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

/// A first sync creates the webhook with the URL, secret and eight events; a second one reads
/// the list and writes the identical configuration to the same id (nothing changes); a new
/// secret is then pushed to that webhook. Each endpoint is counted under its own label.
#[tokio::test]
async fn sync_creates_then_changes_nothing_then_pushes_a_new_secret() {
    let s = setup().await;
    let first = s
        .client
        .sync_webhook(&s.server, &repository(), &spec("secret-1"))
        .await
        .expect("created");
    assert!(first.created);
    assert!(first.refused_events.is_empty());
    assert_eq!(first.webhook.url, URL);
    assert_eq!(first.webhook.events, EIGHT);
    assert!(first.webhook.active);
    let hooks = s.fake.webhooks();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].id, first.webhook.id);
    assert_eq!(hooks[0].secret.as_deref(), Some("secret-1"));
    assert_eq!(
        (
            hooks[0].project_key.as_str(),
            hooks[0].repository_slug.as_deref()
        ),
        ("INFRA", Some("network"))
    );
    assert_eq!(
        s.requests(),
        [
            "GET /rest/api/latest/projects/INFRA/repos/network/webhooks",
            "POST /rest/api/latest/projects/INFRA/repos/network/webhooks"
        ]
    );

    s.fake.clear_requests();
    let second = s
        .client
        .sync_webhook(&s.server, &repository(), &spec("secret-1"))
        .await
        .expect("synced");
    assert!(!second.created);
    assert_eq!(second.webhook, first.webhook);
    let id = first.webhook.id;
    assert_eq!(
        s.requests(),
        [
            "GET /rest/api/latest/projects/INFRA/repos/network/webhooks".to_owned(),
            format!("PUT /rest/api/latest/projects/INFRA/repos/network/webhooks/{id}")
        ]
    );
    let last = s.fake.webhook_writes().pop().expect("a write");
    assert_eq!(
        (last.method.as_str(), last.id, last.changed),
        ("PUT", id, false)
    );
    assert_eq!(s.fake.webhooks().len(), 1);

    let rotated = s
        .client
        .update_webhook(&s.server, &repository(), id, &spec("secret-2"))
        .await
        .expect("updated");
    assert_eq!(rotated.id, id);
    assert_eq!(s.fake.webhooks()[0].secret.as_deref(), Some("secret-2"));
    assert!(s.fake.webhook_writes().pop().expect("a write").changed);

    assert_eq!(s.calls("webhooks_list", "ok"), 2.0);
    assert_eq!(s.calls("webhook_create", "ok"), 1.0);
    assert_eq!(s.calls("webhook_update", "ok"), 2.0);
    assert_eq!(s.calls("compare_changes", "ok"), 0.0);
    // The secret is in no request line or recorded header.
    for request in s.fake.requests() {
        assert!(!request.path.contains("secret-"));
        assert!(!request.query.unwrap_or_default().contains("secret-"));
    }
}

/// The list is read page by page: inlet's webhook after two others (one page each) is found and
/// updated, not duplicated; webhooks of the project level are another scope.
#[tokio::test]
async fn sync_finds_its_webhook_on_a_later_page_and_keeps_scopes_apart() {
    let s = setup().await;
    s.fake.set_page_size(1);
    s.fake.add_webhook(
        "INFRA",
        Some("network"),
        "https://ci.example.com/a",
        &["repo:refs_changed"],
    );
    s.fake.add_webhook(
        "INFRA",
        Some("network"),
        "https://ci.example.com/b",
        &["pr:opened"],
    );
    let ours = s
        .fake
        .add_webhook("INFRA", Some("network"), &format!("{URL}/"), &["pr:opened"]);
    let synced = s
        .client
        .sync_webhook(&s.server, &repository(), &spec("s"))
        .await
        .expect("synced");
    assert!(!synced.created);
    assert_eq!(synced.webhook.id, ours);
    assert_eq!(synced.webhook.events, EIGHT);
    let pages: Vec<String> = s
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.query_param("start").unwrap_or_default())
        .collect();
    assert_eq!(pages, ["0", "1", "2"]);

    let project = WebhookScope::new("INFRA", None);
    assert!(
        s.client
            .list_webhooks(&s.server, &project)
            .await
            .expect("listed")
            .is_empty()
    );
    let created = s
        .client
        .sync_webhook(&s.server, &project, &spec("s"))
        .await
        .expect("created");
    assert!(created.created);
    assert_eq!(s.fake.webhooks().len(), 4);
    assert_eq!(
        s.fake
            .webhooks()
            .iter()
            .find(|h| h.id == created.webhook.id)
            .map(|h| h.repository_slug.clone()),
        Some(None)
    );
}

/// A server older than `pr:from_ref_updated` answers 400 naming it: the webhook is created
/// without that key, and the result says which was refused.
#[tokio::test]
async fn an_older_server_gets_the_webhook_without_the_event_it_refuses() {
    let s = setup().await;
    s.fake.refuse_webhook_event(events::PR_FROM_REF_UPDATED);
    let synced = s
        .client
        .sync_webhook(&s.server, &repository(), &spec("s"))
        .await
        .expect("created");
    assert_eq!(synced.refused_events, [events::PR_FROM_REF_UPDATED]);
    let expected: Vec<&str> = EIGHT
        .into_iter()
        .filter(|e| *e != events::PR_FROM_REF_UPDATED)
        .collect();
    assert_eq!(synced.webhook.events, expected);
    assert_eq!(s.fake.webhooks()[0].events, expected);
    assert_eq!(s.calls("webhook_create", "client_error"), 1.0);
    assert_eq!(s.calls("webhook_create", "ok"), 1.0);
}

/// A token without admin rights: 403 with Bitbucket's message, nothing written, counted as a
/// client error. A 500 is retried; a wrong token is 401.
#[tokio::test]
async fn refusals_carry_bitbucket_s_message_and_5xx_is_retried() {
    let s = setup().await;
    s.fake.fail_webhooks(Some(403));
    let err = s
        .client
        .sync_webhook(&s.server, &repository(), &spec("s"))
        .await
        .expect_err("refused");
    assert_eq!(err.status(), Some(403));
    assert!(
        err.to_string()
            .contains("You are not permitted to access this resource"),
        "{err}"
    );
    assert!(s.fake.webhooks().is_empty());
    assert_eq!(s.calls("webhooks_list", "client_error"), 1.0);
    s.fake.fail_webhooks(None);

    s.fake.fail_next(1, 500, None);
    let synced = s
        .client
        .sync_webhook(&s.server, &repository(), &spec("s"))
        .await
        .expect("retried");
    assert!(synced.created);

    let wrong = s.fake.server("wrong-token");
    let err = s
        .client
        .list_webhooks(&wrong, &repository())
        .await
        .expect_err("401");
    assert!(
        matches!(err, CallError::Status { status: 401, .. }),
        "{err}"
    );
}

/// Deleting removes the webhook; deleting it again finds it gone (`false`), not an error.
#[tokio::test]
async fn delete_is_idempotent() {
    let s = setup().await;
    let synced = s
        .client
        .sync_webhook(&s.server, &repository(), &spec("s"))
        .await
        .expect("created");
    let id = synced.webhook.id;
    assert!(
        s.client
            .delete_webhook(&s.server, &repository(), id)
            .await
            .expect("deleted")
    );
    assert!(s.fake.webhooks().is_empty());
    assert!(
        !s.client
            .delete_webhook(&s.server, &repository(), id)
            .await
            .expect("already gone")
    );
    assert_eq!(s.calls("webhook_delete", "ok"), 2.0);
}

/// A create is not retried after a 5xx (Bitbucket may have created the webhook before failing:
/// a retry could make a second one); a 429, which Bitbucket answers before doing anything, is.
#[tokio::test]
async fn creates_are_not_retried_after_a_server_error() {
    let s = setup().await;
    s.fake.fail_next(1, 500, None);
    let failed = s
        .client
        .create_webhook(&s.server, &repository(), &spec("secret-1"))
        .await
        .expect_err("the 500 is the answer");
    assert!(
        matches!(
            failed,
            CallError::Status {
                status: 500,
                attempts: 1,
                ..
            }
        ),
        "{failed:?}"
    );
    assert_eq!(s.fake.requests().len(), 1);
    s.fake.fail_next(1, 429, Some(1));
    s.client
        .create_webhook(&s.server, &repository(), &spec("secret-1"))
        .await
        .expect("created after the 429");
    assert_eq!(s.fake.webhooks().len(), 1);
}

//! End to end: hostile input (issue 11). Each test sends what an attacker would and asserts the
//! safe answer: the status, what was or was not published or decided, and that the pipeline goes
//! on.

mod common;

use std::time::{Duration, Instant};

use common::{Inlet, admin, webhook};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const MAIN: &str = "178864a7d521b6f5e720b386b2c2b0ef8563e0dc";

async fn pipeline() -> (Inlet, String, String) {
    let dev = Inlet::dev();
    let key = dev.ready.admin_key.clone().expect("admin key");
    let secret = common::integration_secret(&dev, &key, "bb", true).await;
    let stack = admin(
        &dev,
        &key,
        "POST",
        "/stacks",
        json!({"id": "prod", "name": "prod", "repository": "INFRA/network", "branch": "main"}),
    )
    .await;
    assert_eq!(stack.status, 201, "{stack:?}");
    (dev, key, secret)
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

    let producer: FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &dev.ready.kafka_bootstrap_servers)
        .create()
        .expect("producer");
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "inlet-delivery-id",
            value: Some("euro-2"),
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
            value: Some("2026-12-01T00:00:00Z"),
        });
    producer
        .send(
            FutureRecord::to("inlet.webhooks")
                .key("bb/infra/network")
                .payload(&body)
                .headers(headers),
            Duration::from_secs(5),
        )
        .await
        .expect("produce");

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

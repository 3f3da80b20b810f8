//! End to end: the broker goes down while webhooks are in flight. Ingest never answers 202 for a
//! webhook that is not on the topic once the broker is back; the rest get 503 + Retry-After.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Inlet, TopicReader, admin, header, webhook};
use inlet_core::kafka::EmbeddedBroker;
use inlet_core::topics::Topics;
use serde_json::{Value, json};

/// Requests keep flowing while the only broker is down for three seconds: every 202 is on the
/// topic afterwards, everything else is a 503 with Retry-After, and both kinds occurred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_202_without_its_record() {
    let specs = Topics::new("inlet.").specs();
    let broker = Arc::new(
        tokio::task::spawn_blocking(move || EmbeddedBroker::start(&specs))
            .await
            .expect("join")
            .expect("broker"),
    );
    let bootstrap = broker.bootstrap_servers().to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("inlet.toml");
    std::fs::write(&config, "[ingest]\npublish_timeout_ms = 1000\n").expect("config");
    let key = "outage-admin-key-0123456789";
    let ingest = Inlet::ingest(
        &bootstrap,
        key,
        &[("INLET_CONFIG", config.to_str().expect("path"))],
    );
    let created = admin(
        &ingest,
        key,
        "POST",
        "/integrations",
        json!({"name": "bb", "is_default": true, "api_host_url": "https://x.example.com"}),
    )
    .await;
    assert_eq!(created.status, 201);
    let details = admin(&ingest, key, "GET", "/integrations/bb/details", Value::Null).await;
    let secret = details.json()["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let url = ingest.webhook_url("bb");

    // 8 senders, each sending one webhook every 50 ms for 6 s; the broker is down from 1 s to 4 s.
    let mut senders = Vec::new();
    for sender in 0..8 {
        let (url, secret) = (url.clone(), secret.clone());
        senders.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..120 {
                let delivery = format!("d-{sender}-{n}");
                let body = common::push_body("main", &format!("{:040x}", sender * 1000 + n));
                let answer = webhook(&url, "repo:refs_changed", &delivery, &secret, &body).await;
                answers.push((
                    delivery,
                    answer.status,
                    answer.headers.contains_key("retry-after"),
                ));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let down = broker.clone();
    tokio::task::spawn_blocking(move || down.broker_down(1))
        .await
        .expect("join")
        .expect("down");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up = broker.clone();
    tokio::task::spawn_blocking(move || up.broker_up(1))
        .await
        .expect("join")
        .expect("up");

    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    for sender in senders {
        for (delivery, status, retry_after) in sender.await.expect("sender") {
            match status {
                202 => {
                    accepted.insert(delivery);
                }
                503 => {
                    assert!(retry_after, "{delivery}: 503 without Retry-After");
                    refused += 1;
                }
                other => panic!("{delivery}: unexpected status {other}"),
            }
        }
    }
    assert!(refused > 0, "the outage produced no 503");
    assert!(!accepted.is_empty(), "nothing was accepted");

    let mut topic = TopicReader::new(&bootstrap, "inlet.webhooks").await;
    let published = |records: &[rdkafka::message::OwnedMessage]| -> BTreeSet<String> {
        records
            .iter()
            .filter_map(|m| header(m, "inlet-delivery-id"))
            .collect()
    };
    topic
        .until(Duration::from_secs(30), |r| {
            published(r).is_superset(&accepted)
        })
        .await;
    let on_topic = published(&topic.records);
    let missing: Vec<_> = accepted.difference(&on_topic).collect();
    assert!(missing.is_empty(), "202 without a record: {missing:?}");
    drop(ingest);
}

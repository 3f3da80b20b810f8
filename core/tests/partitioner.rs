//! `kafka::partition_for` against the producer itself: records produced to the embedded broker
//! land exactly where the function says, for librdkafka's default partitioner and for Java's
//! (murmur2). The router's reconciler relies on it to know which repositories it owns.

use std::collections::BTreeMap;
use std::time::Duration;

use inlet_core::config::KafkaConfig;
use inlet_core::kafka::{EmbeddedBroker, Kafka, partition_for};
use inlet_core::output::{Output, Outputs};
use inlet_core::topics::Topics;

async fn placements(partitioner: Option<&str>) {
    let topics = Topics::new("inlet.");
    let specs = topics.specs();
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&specs))
        .await
        .expect("join")
        .expect("embedded broker");
    let mut config = KafkaConfig {
        bootstrap_servers: Some(broker.bootstrap_servers().to_owned()),
        ..KafkaConfig::default()
    };
    if let Some(partitioner) = partitioner {
        config
            .librdkafka
            .insert("partitioner".to_owned(), partitioner.to_owned());
    }
    let kafka = Kafka::new(&config, broker.bootstrap_servers(), true);
    let outputs = Outputs::new(kafka.producer(None).await.expect("producer"));
    let mut seen = BTreeMap::new();
    for i in 0..300 {
        let key = format!("bb/proj{}/repo-{i}", i % 7);
        let output = Output::json(&topics.webhooks(), &key, &i);
        let delivered = outputs
            .producer()
            .send_result(
                rdkafka::producer::FutureRecord::to(&output.topic)
                    .key(&output.key[..])
                    .payload(&output.payload[..]),
            )
            .map_err(|(err, _)| err)
            .expect("enqueued");
        let (partition, _offset) = match tokio::time::timeout(Duration::from_secs(10), delivered)
            .await
            .expect("acknowledged in time")
            .expect("not cancelled")
        {
            Ok(delivery) => (delivery.partition, delivery.offset),
            Err((err, _)) => panic!("not produced: {err}"),
        };
        let expected = partition_for(kafka.partitioner(), key.as_bytes(), 12);
        assert_eq!(
            Some(partition),
            expected,
            "key {key} under {:?}",
            kafka.partitioner()
        );
        *seen.entry(partition).or_insert(0) += 1;
    }
    // The keys spread: a constant answer would also "match" a topic of one partition.
    assert_eq!(seen.len(), 12, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_for_mirrors_the_default_partitioner() {
    placements(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_for_mirrors_murmur2() {
    placements(Some("murmur2_random")).await;
}

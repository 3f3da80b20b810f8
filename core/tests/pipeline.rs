//! The at-least-once loop against the embedded broker, with a handler that misbehaves on purpose:
//! a record that makes the handler panic, and an output the broker refuses for good (too large),
//! each end on `inlet.dlq` with why, and the partition goes on to the next record.

use std::time::{Duration, Instant};

use inlet_core::CancellationToken;
use inlet_core::config::KafkaConfig;
use inlet_core::kafka::{EmbeddedBroker, Kafka, header};
use inlet_core::metrics::Metrics;
use inlet_core::output::{Output, Outputs};
use inlet_core::pipeline::{self, Handler, Poison, StageDeps};
use inlet_core::records::{Stage, headers};
use inlet_core::topics::Topics;
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::OwnedMessage;
use rdkafka::topic_partition_list::Offset;

/// Echoes each record to `inlet.runs`; panics on `panic`, answers 2 MB for `huge`.
struct Misbehaving {
    topic: String,
}

impl Handler for Misbehaving {
    fn stage(&self) -> Stage {
        Stage::Workers
    }

    async fn handle(&self, message: &OwnedMessage) -> Result<Vec<Output>, Poison> {
        let payload = message.payload().unwrap_or_default();
        match payload {
            b"panic" => panic!("a bug meets hostile input"),
            b"huge" => Ok(vec![Output {
                topic: self.topic.clone(),
                key: b"k".to_vec(),
                payload: vec![b'x'; 2 * 1024 * 1024].into(),
                headers: Vec::new(),
                tombstone: false,
            }]),
            other => Ok(vec![Output {
                topic: self.topic.clone(),
                key: b"k".to_vec(),
                payload: other.to_vec().into(),
                headers: Vec::new(),
                tombstone: false,
            }]),
        }
    }
}

async fn read(reader: &StreamConsumer, count: usize) -> Vec<OwnedMessage> {
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while records.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.recv()).await {
            Ok(Ok(message)) => records.push(message.detach()),
            Ok(Err(err)) => panic!("read: {err}"),
            Err(_) => panic!("only {} of {count} records: {records:?}", records.len()),
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_and_refused_outputs_go_to_the_dlq() {
    let topics = Topics::new("inlet.");
    let specs = topics.specs();
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&specs))
        .await
        .expect("join")
        .expect("embedded broker");
    let config = KafkaConfig {
        bootstrap_servers: Some(broker.bootstrap_servers().to_owned()),
        ..KafkaConfig::default()
    };
    let kafka = Kafka::new(&config, broker.bootstrap_servers(), true);
    let producer = kafka.producer(None).await.expect("producer");
    let outputs = Outputs::new(producer.clone());
    for payload in ["first", "panic", "huge", "last"] {
        let input = Output {
            topic: topics.triggers(),
            key: b"same-partition".to_vec(),
            payload: payload.as_bytes().to_vec().into(),
            headers: Vec::new(),
            tombstone: false,
        };
        outputs
            .send(&input, Duration::from_secs(10))
            .await
            .expect("input produced");
    }
    let consumer = kafka
        .consumer(
            "pipeline-test",
            &inlet_core::config::GroupMembership::default(),
            inlet_core::records::Stage::Workers,
            None,
        )
        .await
        .expect("consumer");
    let metrics = Metrics::new();
    let shutdown = CancellationToken::new();
    let deps = StageDeps {
        consumer: std::sync::Arc::new(consumer),
        input: vec![topics.triggers()],
        producer,
        topics: topics.clone(),
        drain: Duration::from_secs(5),
        metrics: metrics.clone(),
    };
    let handler = Misbehaving {
        topic: topics.runs(),
    };
    let stage = tokio::spawn(pipeline::run(deps, handler, 16, shutdown.clone()));

    let runs = kafka
        .read_all(&topics.runs(), Offset::Beginning)
        .await
        .expect("runs reader");
    let echoed: Vec<Vec<u8>> = read(&runs, 2)
        .await
        .iter()
        .map(|m| m.payload().unwrap_or_default().to_vec())
        .collect();
    // The partition moved past both bad records.
    assert_eq!(echoed, vec![b"first".to_vec(), b"last".to_vec()]);

    let dlq = kafka
        .read_all(&topics.dlq(), Offset::Beginning)
        .await
        .expect("dlq reader");
    let letters = read(&dlq, 2).await;
    let panicked = &letters[0];
    assert_eq!(panicked.payload(), Some(&b"panic"[..]));
    assert!(
        header(panicked, headers::ERROR)
            .is_some_and(|e| e.contains("panicked") && e.contains("hostile input")),
        "{panicked:?}"
    );
    let refused = &letters[1];
    assert!(
        header(refused, headers::ERROR).is_some_and(|e| e.contains("refused")),
        "{refused:?}"
    );
    assert_eq!(
        header(refused, "inlet-error-payload-bytes"),
        Some("2097152")
    );
    assert!(
        refused.payload().is_none_or(<[u8]>::is_empty),
        "the refused value is not copied"
    );
    assert_eq!(metrics.workers.dead_letters.get(), 2);

    shutdown.cancel();
    stage.await.expect("join").expect("stage");
    drop(runs);
    drop(dlq);
    drop(broker);
}

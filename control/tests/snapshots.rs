//! Service test of control snapshots on the embedded broker: what `snapshot::write` puts on
//! `inlet.control-snapshots` loads back as the same registry, and `snapshot::load` passes over a
//! manifest whose chunk digest does not match, one of another fold version, chunks without a
//! manifest, and snapshots that leave a gap before the log's start.

use std::sync::RwLock;

use inlet_control::registry::Registry;
use inlet_control::snapshot::{self, FOLD_VERSION, Manifest};
use inlet_control::synthetic;
use inlet_core::config::KafkaConfig;
use inlet_core::kafka::{EmbeddedBroker, Kafka, Producer};
use inlet_core::topics::Topics;
use rdkafka::producer::FutureRecord;

fn folded(stacks: usize, upto: Option<usize>) -> Registry {
    let log = synthetic::generate(stacks);
    let mut registry = Registry::new();
    for bytes in log.records.iter().take(upto.unwrap_or(usize::MAX)) {
        let record = serde_json::from_slice(bytes).expect("parse");
        registry.apply(&record).expect("accepted");
    }
    registry
}

async fn put_manifest(producer: &Producer, topic: &str, manifest: &Manifest) {
    let bytes = serde_json::to_vec(manifest).expect("serialize");
    producer
        .send(
            FutureRecord::to(topic)
                .partition(snapshot::MANIFEST_PARTITION)
                .key(&snapshot::manifest_key(manifest.offset))
                .payload(&bytes),
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("manifest written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_picks_the_newest_valid_snapshot() {
    let topics = Topics::new("inlet.");
    let specs = topics.specs();
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&specs))
        .await
        .expect("join")
        .expect("embedded broker");
    let kafka = Kafka::new(&KafkaConfig::default(), broker.bootstrap_servers(), true);
    let producer = kafka.producer(None).await.expect("producer");
    let topic = topics.control_snapshots();
    let partitions = kafka.partition_count(&topic).await.expect("partitions") as i32;
    assert_eq!(partitions, 12);

    // A valid snapshot at offset 1,000 (of a registry large enough for several chunks; which
    // records it folded does not matter to loading).
    let good = folded(5_000, Some(4_000));
    let lock = RwLock::new(good.clone());
    let manifest = snapshot::write(&lock, 1_000, &producer, &topic, partitions)
        .await
        .expect("written");
    assert!(
        manifest.chunks.len() > 2,
        "{} chunks",
        manifest.chunks.len()
    );
    assert!(
        manifest
            .chunks
            .iter()
            .all(|c| c.partition != snapshot::MANIFEST_PARTITION)
    );

    // Newer ones that must be passed over: a chunk digest that does not match (2,000), another
    // fold version (3,000), chunks whose manifest never came (4,000: written by `write` and its
    // manifest then removed with a tombstone).
    let newer = RwLock::new(folded(5_000, None));
    let mut corrupt = snapshot::write(&newer, 2_000, &producer, &topic, partitions)
        .await
        .expect("written");
    corrupt.chunks[1].sha256 = "00".repeat(32);
    put_manifest(&producer, &topic, &corrupt).await;
    let mut other = snapshot::write(&newer, 3_000, &producer, &topic, partitions)
        .await
        .expect("written");
    other.fold_version = FOLD_VERSION + 1;
    put_manifest(&producer, &topic, &other).await;
    snapshot::write(&newer, 4_000, &producer, &topic, partitions)
        .await
        .expect("written");
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&topic)
                .partition(snapshot::MANIFEST_PARTITION)
                .key(&snapshot::manifest_key(4_000)),
            std::time::Duration::from_secs(5),
        )
        .await
        .expect("tombstone written");

    let reader = kafka.reader().await.expect("reader");
    let loaded = snapshot::load(&reader, &topic, partitions, 0, 10_000)
        .await
        .expect("load")
        .expect("a usable snapshot");
    assert_eq!(loaded.manifest.offset, 1_000);
    assert_eq!(loaded.skipped, 2, "the corrupt and the other version");
    assert_eq!(loaded.registry, good);

    // A log whose first record is past 1,001 leaves a gap after the only valid snapshot.
    let reader = kafka.reader().await.expect("reader");
    let none = snapshot::load(&reader, &topic, partitions, 1_002, 10_000)
        .await
        .expect("load");
    assert!(none.is_none());
    // Nor is a snapshot past the log's end used (another cluster's, or a log recreated).
    let reader = kafka.reader().await.expect("reader");
    let none = snapshot::load(&reader, &topic, partitions, 0, 1_000)
        .await
        .expect("load");
    assert!(none.is_none());
}

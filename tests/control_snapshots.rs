//! End to end: a control log larger than the embedded broker keeps (5 MiB per partition, oldest
//! batches deleted past it) still gives a process started later the complete registry, from the
//! snapshots the first ingest process wrote on `inlet.control-snapshots` and the log's tail.

mod common;

use std::time::Duration;

use common::{Cluster, admin};
use inlet_control::commands::{CONTROL_SCHEMA, ControlCommand, ControlRecord, StackSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

/// Stacks written straight to the control log, each with about 3.2 KB of labels lz4 cannot
/// shrink: about 7 MB on the partition, more than the 5 MiB it keeps.
const STACKS: usize = 2_000;
/// Records per round; the test waits for ingest's fold (and its snapshot writes) after each.
const ROUND: usize = 200;

/// Hex that does not repeat, so lz4 leaves it about as large as it is.
fn noise(seed: u64, len: usize) -> String {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from_digit((state % 16) as u32, 16).unwrap_or('0')
        })
        .collect()
}

fn stack_record(index: usize) -> (String, Vec<u8>) {
    let record = ControlRecord {
        schema: CONTROL_SCHEMA.to_owned(),
        command_id: format!("cmd-{index:06}"),
        origin: "test-writer".to_owned(),
        issued_at: "2026-12-01T00:00:00Z".to_owned(),
        actor: "test".to_owned(),
        command: ControlCommand::CreateStack {
            stack: StackSpec {
                id: format!("stack-{index:05}"),
                name: format!("stack {index}"),
                space_id: "root".to_owned(),
                integration: "bb".to_owned(),
                repository: format!("PRJ/repo-{}", index % 97),
                branch: "main".to_owned(),
                project_root: String::new(),
                additional_project_globs: vec![],
                labels: (0..50)
                    .map(|n| noise((index * 50 + n) as u64, 64))
                    .collect(),
                disabled: false,
            },
        },
    };
    (
        record.command.entity_key(),
        serde_json::to_vec(&record).expect("serialize"),
    )
}

fn metric(text: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    common::metric_sum(text, name, with)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_gets_the_whole_registry_past_the_partition_limit() {
    let cluster = Cluster::start(&[("INLET_RECONCILE_INTERVAL_S", "0")]);
    let writer = cluster.stage("ingest");
    let key = cluster.admin_key;
    let created = admin(
        &writer,
        key,
        "POST",
        "/integrations",
        json!({"name": "bb", "is_default": true, "api_host_url": "https://bitbucket.example.com"}),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");

    let producer: FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut end = 0;
    for round in 0..STACKS / ROUND {
        let mut deliveries = Vec::new();
        for index in round * ROUND..(round + 1) * ROUND {
            let (key, payload) = stack_record(index);
            let delivery = producer
                .send_result(
                    FutureRecord::to("inlet.control")
                        .key(&key)
                        .payload(&payload),
                )
                .map_err(|(err, _)| err)
                .expect("enqueue");
            deliveries.push(delivery);
        }
        for delivery in deliveries {
            let delivery = delivery.await.expect("delivered").expect("acknowledged");
            end = end.max(delivery.offset + 1);
        }
        // The writer's fold passes a record only after the snapshot due there was written.
        let until = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let text = common::metrics(&writer).await;
            if metric(&text, "inlet_control_applied_offset", &[]) >= end as f64 {
                break;
            }
            assert!(
                std::time::Instant::now() < until,
                "ingest did not fold the log to {end}\n{}",
                writer.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let text = common::metrics(&writer).await;
    assert!(
        metric(
            &text,
            "inlet_control_snapshot_writes_total",
            &[("outcome", "written")]
        ) >= 2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "inlet_control_snapshot_writes_total",
            &[("outcome", "failed")]
        ),
        0.0
    );

    // The broker deleted the oldest control records: the integration and the first stacks.
    let probe: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &cluster.bootstrap)
        .set("group.id", "probe")
        .create()
        .expect("consumer");
    let (low, high) = probe
        .fetch_watermarks("inlet.control", 0, Duration::from_secs(5))
        .expect("watermarks");
    assert_eq!(high, end);
    assert!(low > 1, "the log still starts at {low}: not truncated");
    println!("control log {low}..{high}: the first {low} records are gone");

    // A process started now: snapshot + tail, complete.
    let reader = cluster.stage("ingest");
    let text = common::metrics(&reader).await;
    assert_eq!(
        metric(
            &text,
            "inlet_control_snapshot_loads_total",
            &[("outcome", "loaded")]
        ),
        1.0,
        "{}",
        reader.log()
    );
    assert_eq!(
        metric(
            &text,
            "inlet_control_registry_entities",
            &[("kind", "stacks")]
        ),
        STACKS as f64
    );
    assert_eq!(
        metric(&text, "inlet_control_applied_offset", &[]),
        end as f64
    );
    // The first stack, whose creation the broker no longer holds, and the integration.
    let first = admin(&reader, key, "GET", "/stacks/stack-00000", json!(null)).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.json()["integration_status"], "attached");
    let integration = admin(&reader, key, "GET", "/integrations/bb", json!(null)).await;
    assert_eq!(integration.status, 200, "{integration:?}");
    let last = admin(
        &reader,
        key,
        "GET",
        &format!("/stacks/stack-{:05}", STACKS - 1),
        json!(null),
    )
    .await;
    assert_eq!(last.status, 200, "{last:?}");
    assert!(reader.log().contains("control snapshot loaded"));
}

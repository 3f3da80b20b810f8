//! `inlet replay`: re-publish the webhooks of one integration received since a given time, after an
//! outage downstream. Each copy is marked as a redelivery, so the router's duplicate-delivery filter
//! lets it through while run deduplication still applies.
//!
//! Real Kafka could look offsets up by time; the embedded broker cannot, so this scans the webhook
//! topic up to its current end and filters on the `inlet-received-at` header. That is bounded by
//! the topic's retention (7 days) and fine for an occasional repair.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use inlet_core::clock::parse_rfc3339;
use inlet_core::config::Config;
use inlet_core::kafka::{Kafka, header};
use inlet_core::output::{Output, Outputs};
use inlet_core::records::headers;
use inlet_core::topics::Topics;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// `inlet replay` flags.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "INLET_KAFKA_BOOTSTRAP_SERVERS", value_name = "HOST:PORT")]
    pub kafka_bootstrap_servers: String,
    /// Prefix of every topic name.
    #[arg(long, env = "INLET_TOPIC_PREFIX", value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// The integration whose webhooks to replay.
    #[arg(long, value_name = "NAME")]
    pub integration: String,
    /// Replay webhooks received at or after this instant (RFC 3339, e.g. 2026-11-26T07:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub since: String,
    /// Count what would be replayed without publishing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs the replay and prints what it did.
pub async fn run(mut config: Config, args: ReplayArgs) -> anyhow::Result<()> {
    let since = parse_rfc3339(&args.since)
        .with_context(|| format!("`{}` is not an RFC 3339 time", args.since))?;
    if let Some(prefix) = &args.topic_prefix {
        config.kafka.topic_prefix = prefix.clone();
    }
    let topic = Topics::new(&config.kafka.topic_prefix).webhooks();
    let kafka = Kafka::new(&config.kafka, &args.kafka_bootstrap_servers, false);
    let reader = kafka.reader().await?;
    let outputs = Outputs::new(kafka.producer(None).await?);
    // Stamped on every copy: the router waits until its fold has every stack that exists now.
    let control_end = {
        let probe = kafka.reader().await?;
        let control = Topics::new(&config.kafka.topic_prefix).control();
        tokio::task::spawn_blocking(move || {
            probe.fetch_watermarks(&control, 0, Duration::from_secs(30))
        })
        .await??
        .1
    };
    let ends = {
        let probe = kafka.reader().await?;
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64)>> {
            let metadata = probe.fetch_metadata(Some(&topic), Duration::from_secs(30))?;
            let partitions = metadata
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            (0..partitions as i32)
                .map(|p| {
                    Ok((
                        p,
                        probe
                            .fetch_watermarks(&topic, p, Duration::from_secs(30))?
                            .1,
                    ))
                })
                .collect()
        })
        .await??
    };
    if ends.is_empty() {
        bail!("topic {topic} not found");
    }
    let mut assignment = TopicPartitionList::new();
    let mut remaining = 0;
    for (partition, end) in &ends {
        if *end > 0 {
            assignment.add_partition_offset(&topic, *partition, Offset::Beginning)?;
            remaining += 1;
        }
    }
    reader.assign(&assignment)?;
    let mut done = std::collections::HashSet::new();
    let (mut scanned, mut replayed) = (0u64, 0u64);
    while done.len() < remaining {
        let message = tokio::time::timeout(Duration::from_secs(30), reader.recv())
            .await
            .context("the broker stopped answering")??;
        let partition = message.partition();
        let end = ends
            .iter()
            .find(|(p, _)| *p == partition)
            .map(|(_, e)| *e)
            .unwrap_or(0);
        if message.offset() >= end - 1 {
            done.insert(partition);
        }
        if message.offset() >= end {
            continue;
        }
        scanned += 1;
        let ours = header(&message, headers::INTEGRATION_NAME) == Some(args.integration.as_str());
        let recent = header(&message, headers::RECEIVED_AT)
            .and_then(parse_rfc3339)
            .is_some_and(|at| at >= since);
        // Replays of replays would multiply; originals only.
        let original = header(&message, headers::REDELIVERY).is_none();
        if !(ours && recent && original) {
            continue;
        }
        replayed += 1;
        if args.dry_run {
            continue;
        }
        outputs
            .send(
                &Output::republished_webhook(&topic, &message.detach(), control_end),
                Duration::from_secs(30),
            )
            .await
            .context("re-publishing a webhook")?;
    }
    println!(
        "{} {replayed} webhook(s) of integration `{}` received since {} ({scanned} scanned)",
        if args.dry_run {
            "would replay"
        } else {
            "replayed"
        },
        args.integration,
        args.since
    );
    Ok(())
}

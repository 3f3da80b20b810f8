//! `inlet tail`: follow one of inlet's topics and print each record on one line.

use std::time::Duration;

use clap::{Args, ValueEnum};
use inlet_core::config::Config;
use inlet_core::kafka::{Kafka, header};
use inlet_core::records::headers;
use inlet_core::topics::Topics;
use rdkafka::Message;
use rdkafka::topic_partition_list::Offset;
use serde_json::Value;

/// Which topic to follow.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Topic {
    /// Run decisions (`inlet.runs`).
    Runs,
    /// What each stage did with each delivery (`inlet.deliveries`).
    Deliveries,
    /// Stack triggers (`inlet.triggers`).
    Triggers,
    /// Dead letters (`inlet.dlq`).
    Dlq,
}

/// `inlet tail` flags.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// The topic to follow.
    pub topic: Topic,
    /// Kafka bootstrap servers.
    #[arg(long, env = "INLET_KAFKA_BOOTSTRAP_SERVERS", value_name = "HOST:PORT")]
    pub kafka_bootstrap_servers: String,
    /// Prefix of every topic name.
    #[arg(long, env = "INLET_TOPIC_PREFIX", value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// Start from the oldest record instead of new ones only.
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Print raw JSON instead of one summary line per record.
    #[arg(long)]
    pub json: bool,
}

/// Follows the topic until Ctrl-C (or `--max` records).
pub async fn run(mut config: Config, args: TailArgs) -> anyhow::Result<()> {
    if let Some(prefix) = &args.topic_prefix {
        config.kafka.topic_prefix = prefix.clone();
    }
    let topics = Topics::new(&config.kafka.topic_prefix);
    let topic = match args.topic {
        Topic::Runs => topics.runs(),
        Topic::Deliveries => topics.deliveries(),
        Topic::Triggers => topics.triggers(),
        Topic::Dlq => topics.dlq(),
    };
    let kafka = Kafka::new(&config.kafka, &args.kafka_bootstrap_servers, false);
    let offset = if args.from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    let reader = kafka.read_all(&topic, offset).await?;
    let mut printed = 0;
    while args.max.is_none_or(|max| printed < max) {
        let message = match tokio::time::timeout(Duration::from_secs(3600), reader.recv()).await {
            Ok(message) => message?,
            Err(_) => continue,
        };
        let payload = message.payload().unwrap_or_default();
        let line = if args.json {
            String::from_utf8_lossy(payload).into_owned()
        } else {
            summarize(args.topic, &message, payload)
        };
        println!("{line}");
        printed += 1;
    }
    Ok(())
}

fn summarize(topic: Topic, message: &impl Message, payload: &[u8]) -> String {
    let value: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    match topic {
        Topic::Runs => {
            let sha = text(&value["commit"]["sha"]);
            format!(
                "{} {:<8} {:<9} {:<8} {} {}@{} {} {}{}",
                text(&value["decided_at"]),
                text(&value["status"]),
                text(&value["run_type"]),
                text(&value["trigger"]["kind"]),
                text(&value["stack_id"]),
                text(&value["commit"]["branch"]),
                &sha[..sha.len().min(12)],
                text(&value["trigger"]["delivery_id"]),
                text(&value["run_id"]),
                value["blocked_reason"]["code"]
                    .as_str()
                    .map(|code| format!(" blocked: {code}"))
                    .unwrap_or_default()
            )
        }
        Topic::Deliveries => format!(
            "{} {} {:<8} {:<13} stacks=[{}] {}",
            text(&value["at"]),
            text(&value["delivery_id"]),
            text(&value["stage"]),
            text(&value["outcome"]),
            value["stacks"]
                .as_array()
                .map(|s| s.iter().map(text).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            value["reasons"]
                .as_array()
                .map(|r| r.iter().map(text).collect::<Vec<_>>().join("; "))
                .unwrap_or_default()
        ),
        Topic::Triggers => format!(
            "{} {} {:<8} {} {}@{}",
            text(&value["received_at"]),
            text(&value["trigger_id"]),
            text(&value["run_type"]),
            text(&value["stack_id"]),
            text(&value["commit"]["branch"]),
            text(&value["commit"]["sha"])
        ),
        Topic::Dlq => format!(
            "{} stage={} error={} delivery={}",
            header(message, headers::ERROR_SOURCE).unwrap_or("-"),
            header(message, headers::ERROR_STAGE).unwrap_or("-"),
            header(message, headers::ERROR).unwrap_or("-"),
            header(message, headers::DELIVERY_ID).unwrap_or("-")
        ),
    }
}

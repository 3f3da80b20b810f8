//! `inlet run-update`: write one `RunUpdate` to `inlet.run-updates` by hand, as a run scheduler
//! would (DESIGN §4.3), e.g. to correct a build status or to try the reporter.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use inlet_core::clock::now_rfc3339;
use inlet_core::config::Config;
use inlet_core::kafka::Kafka;
use inlet_core::output::Outputs;
use inlet_core::records::{RUN_UPDATE_SCHEMA, RunState, RunUpdate};
use inlet_core::topics::Topics;

/// A run's state, as on the wire.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum State {
    /// Waiting for a runner.
    Queued,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with a failure.
    Failed,
    /// Stopped before it finished.
    Canceled,
}

impl From<State> for RunState {
    fn from(state: State) -> RunState {
        match state {
            State::Queued => RunState::Queued,
            State::Running => RunState::Running,
            State::Succeeded => RunState::Succeeded,
            State::Failed => RunState::Failed,
            State::Canceled => RunState::Canceled,
        }
    }
}

/// `inlet run-update` flags.
#[derive(Debug, Args)]
pub struct RunUpdateArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "INLET_KAFKA_BOOTSTRAP_SERVERS", value_name = "HOST:PORT")]
    pub kafka_bootstrap_servers: String,
    /// Prefix of every topic name.
    #[arg(long, env = "INLET_TOPIC_PREFIX", value_name = "PREFIX")]
    pub topic_prefix: Option<String>,
    /// The `run_id` of the decision.
    #[arg(long)]
    pub run_id: String,
    /// Its stack.
    #[arg(long)]
    pub stack_id: String,
    /// The run's state.
    #[arg(long, value_enum)]
    pub state: State,
    /// The run's page (the build status links to it).
    #[arg(long)]
    pub url: Option<String>,
    /// One line for the build status's description.
    #[arg(long)]
    pub summary: Option<String>,
}

/// Writes the update and waits for the broker's acknowledgement.
pub async fn run(mut config: Config, args: RunUpdateArgs) -> anyhow::Result<()> {
    if let Some(prefix) = &args.topic_prefix {
        config.kafka.topic_prefix = prefix.clone();
    }
    let topic = Topics::new(&config.kafka.topic_prefix).run_updates();
    let kafka = Kafka::new(&config.kafka, &args.kafka_bootstrap_servers, false);
    let producer = kafka.producer(None).await.context("connecting to Kafka")?;
    let update = RunUpdate {
        schema: RUN_UPDATE_SCHEMA.to_owned(),
        run_id: args.run_id,
        stack_id: args.stack_id,
        state: args.state.into(),
        url: args.url,
        summary: args.summary,
        at: now_rfc3339(),
    };
    let offset = Outputs::new(producer)
        .send(&update.output(&topic), Duration::from_secs(30))
        .await
        .map_err(|err| anyhow::anyhow!("writing the run update: {err}"))?;
    println!("{}", serde_json::to_string(&update)?);
    eprintln!("written to {topic} at offset {offset}");
    Ok(())
}

//! Command-line interface: subcommands, flags, and how flags and `INLET_*` variables override the
//! configuration file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use inlet_core::config::{Config, LogFormat};

/// inlet: Bitbucket Data Center webhooks → Kafka → run decisions for infrastructure-as-code stacks.
#[derive(Debug, Parser)]
#[command(name = "inlet", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (flags and INLET_* variables override it).
    #[arg(long, global = true, env = "INLET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format.
    #[arg(long, global = true, env = "INLET_LOG_FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every stage in one process on an embedded in-memory broker (or `--only-broker`).
    Dev(DevArgs),
    /// Run the webhook listener and admin API against a Kafka cluster.
    Ingest(IngestArgs),
    /// Run the router against a Kafka cluster.
    Router(StageArgs),
    /// Run the workers against a Kafka cluster.
    Workers(StageArgs),
    /// Run the reporter (build statuses to Bitbucket) against a Kafka cluster.
    Reporter(StageArgs),
    /// Load-test the pipeline (in-process by default) and report throughput and latency.
    Bench(crate::bench::BenchArgs),
    /// Re-publish an integration's webhooks received since a time (after a downstream outage).
    Replay(crate::replay::ReplayArgs),
    /// Sign and send a realistic Bitbucket webhook to an inlet.
    Send(crate::send::SendArgs),
    /// Follow runs, deliveries, triggers or dead letters, one line per record.
    Tail(crate::tail::TailArgs),
    /// Write a run update (what a run scheduler reports) to inlet.run-updates.
    RunUpdate(crate::run_update::RunUpdateArgs),
    /// Provision an integration's webhooks in Bitbucket through the admin API.
    Webhooks(crate::webhooks::WebhooksArgs),
}

/// Flags every stage shares.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, host:port[,host:port…].
    #[arg(long, env = "INLET_KAFKA_BOOTSTRAP_SERVERS", value_name = "HOST:PORT")]
    pub kafka_bootstrap_servers: Option<String>,

    /// Prefix of every topic name.
    #[arg(long, env = "INLET_TOPIC_PREFIX", value_name = "PREFIX")]
    pub topic_prefix: Option<String>,

    /// Write a JSON file with the process's addresses once it is ready.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

/// Flags of the listeners.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Webhook listener address (port 0 picks a free port).
    #[arg(long, env = "INLET_WEBHOOK_ADDR", value_name = "ADDR")]
    pub webhook_addr: Option<SocketAddr>,

    /// Admin API listener address (port 0 picks a free port).
    #[arg(long, env = "INLET_ADMIN_ADDR", value_name = "ADDR")]
    pub admin_addr: Option<SocketAddr>,

    /// Base URL Bitbucket reaches the webhook listener at (shown in webhook URLs).
    #[arg(long, env = "INLET_PUBLIC_BASE_URL", value_name = "URL")]
    pub public_base_url: Option<String>,
}

/// `inlet dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Shared Kafka flags.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Listener flags.
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Run only the embedded broker, for stages started as separate processes.
    #[arg(long)]
    pub only_broker: bool,
}

/// `inlet ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Shared Kafka flags.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Listener flags.
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// `inlet router` and `inlet workers`.
#[derive(Debug, Args)]
pub struct StageArgs {
    /// Shared Kafka flags.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Address of the operations listener: /healthz, /readyz, /metrics (port 0: any free port).
    #[arg(
        long,
        env = "INLET_METRICS_ADDR",
        value_name = "ADDR",
        default_value = "127.0.0.1:9090"
    )]
    pub metrics_addr: SocketAddr,
}

fn parse_log_format(value: &str) -> Result<LogFormat, String> {
    match value {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("`{other}` is not a log format: use text or json")),
    }
}

impl KafkaArgs {
    /// Applies these flags over `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(servers) = &self.kafka_bootstrap_servers {
            config.kafka.bootstrap_servers = Some(servers.clone());
        }
        if let Some(prefix) = &self.topic_prefix {
            config.kafka.topic_prefix = prefix.clone();
        }
    }
}

impl ListenArgs {
    /// Applies these flags over `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(addr) = self.webhook_addr {
            config.ingest.webhook_addr = addr;
        }
        if let Some(addr) = self.admin_addr {
            config.ingest.admin_addr = addr;
        }
        if let Some(url) = &self.public_base_url {
            config.ingest.public_base_url = Some(url.clone());
        }
    }
}

/// The configuration for `cli`: file, then `INLET_ADMIN_KEY` and `INLET_SECRETS_KEY`, then flags (which clap already
/// merged with their `INLET_*` variables).
pub fn config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    // Keys are read from the environment only, never flags, so they stay out of `ps`.
    if let Ok(key) = std::env::var("INLET_ADMIN_KEY")
        && !key.is_empty()
    {
        config.ingest.admin_key = Some(inlet_core::secret::Secret::new(key));
    }
    if let Ok(key) = std::env::var("INLET_SECRETS_KEY")
        && !key.is_empty()
    {
        config.ingest.secrets_key = Some(inlet_core::secret::Secret::new(key));
    }
    config.bitbucket.apply_allow_http_env(
        std::env::var(inlet_core::config::BitbucketConfig::ALLOW_HTTP_ENV)
            .ok()
            .as_deref(),
    )?;
    config.apply_instance_id_env(
        std::env::var(inlet_core::config::GroupMembership::INSTANCE_ID_ENV)
            .ok()
            .as_deref(),
    );
    config.reconcile.apply_interval_env(
        std::env::var(inlet_core::config::ReconcileConfig::INTERVAL_ENV)
            .ok()
            .as_deref(),
    )?;
    match &cli.command {
        Command::Dev(args) => {
            args.kafka.apply(&mut config);
            args.listen.apply(&mut config);
        }
        Command::Ingest(args) => {
            args.kafka.apply(&mut config);
            args.listen.apply(&mut config);
        }
        Command::Router(args) | Command::Workers(args) | Command::Reporter(args) => {
            args.kafka.apply(&mut config)
        }
        Command::Bench(_)
        | Command::Replay(_)
        | Command::Send(_)
        | Command::Tail(_)
        | Command::RunUpdate(_)
        | Command::Webhooks(_) => {}
    }
    config.validate()?;
    // The secrets key's format is the control plane's to check; it is checked here, with the rest
    // of the configuration, before anything starts.
    inlet_control::crypto::SecretsKey::from_config(&config)?;
    Ok(config)
}

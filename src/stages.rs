//! Starting stages: connecting to Kafka, following the control log, binding listeners, writing the
//! ready file, and running until shutdown. `main` only picks which of these to call.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use inlet_bitbucket::client::Client as BitbucketClient;
use inlet_control::StageDeps;
use inlet_control::control_log::ControlLog;
use inlet_control::crypto::SecretsKey;
use inlet_control::snapshot::SnapshotPolicy;
use inlet_core::CancellationToken;
use inlet_core::config::Config;
use inlet_core::kafka::{EmbeddedBroker, Kafka};
use inlet_core::metrics::Metrics;
use inlet_core::output::Outputs;
use inlet_core::pipeline::StageDeps as PipelineDeps;
use inlet_router::Deps as RouterDeps;

use crate::cli::StageArgs;
use inlet_core::config::StageConfig;
use inlet_core::kafka::GroupConsumer;
use inlet_core::ops::{Ops, WithProgress};
use inlet_core::ready::ReadyInfo;
use inlet_core::records::Stage;
use inlet_core::secret::Secret;
use inlet_core::topics::Topics;
use tokio::net::TcpListener;

/// A connection to the cluster shared by the stages of one process.
struct Connected {
    kafka: Kafka,
    topics: Topics,
    producer: inlet_core::kafka::Producer,
    control: ControlLog,
    control_task: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
}

async fn connect(
    config: &Config,
    bootstrap: &str,
    embedded: bool,
    stage: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Connected> {
    let kafka = Kafka::new(&config.kafka, bootstrap, embedded);
    let topics = Topics::new(&config.kafka.topic_prefix);
    kafka
        .ensure_topics(&topics.specs_for(stage), config.kafka.replication_factor)
        .await
        .context("creating topics")?;
    let metrics = Metrics::new();
    let producer = kafka
        .producer(Some(metrics.clone()))
        .await
        .context("creating the producer")?;
    let (control, control_task) = ControlLog::start(
        &kafka,
        topics.control(),
        producer.clone(),
        metrics.control.clone(),
        // The processes that append commands (the admin API) write snapshots; the others only
        // load them, and need no write access to the snapshot topic.
        SnapshotPolicy {
            write: matches!(stage, "ingest" | "dev"),
            ..SnapshotPolicy::default()
        },
        shutdown.clone(),
    )
    .await
    .context("following the control log")?;
    Ok(Connected {
        kafka,
        topics,
        producer,
        control,
        control_task,
        metrics,
    })
}

fn external_bootstrap(config: &Config, stage: &str) -> anyhow::Result<String> {
    match &config.kafka.bootstrap_servers {
        Some(servers) => Ok(servers.clone()),
        None => bail!(
            "`inlet {stage}` needs a Kafka cluster: pass --kafka-bootstrap-servers or set \
             INLET_KAFKA_BOOTSTRAP_SERVERS (`inlet dev` runs an embedded one)"
        ),
    }
}

fn drain(config: &Config) -> Duration {
    Duration::from_secs(config.shutdown_timeout_secs)
}

/// The member of `stage`'s consumer group, as `config` sets it up; the consume loop subscribes
/// it when it starts.
async fn member(
    connected: &Connected,
    config: &StageConfig,
    stage: Stage,
) -> anyhow::Result<GroupConsumer> {
    let group = &config.group_id;
    connected
        .kafka
        .consumer(
            group,
            &config.membership(),
            stage,
            Some(connected.metrics.clone()),
        )
        .await
        .with_context(|| format!("creating consumer {group}"))
}

struct Listeners {
    webhook: TcpListener,
    admin: TcpListener,
    webhook_base_url: String,
    admin_base_url: String,
    public_base_url: String,
}

async fn bind(config: &Config) -> anyhow::Result<Listeners> {
    let webhook = TcpListener::bind(config.ingest.webhook_addr)
        .await
        .with_context(|| {
            format!(
                "binding the webhook listener {}",
                config.ingest.webhook_addr
            )
        })?;
    let admin = TcpListener::bind(config.ingest.admin_addr)
        .await
        .with_context(|| format!("binding the admin listener {}", config.ingest.admin_addr))?;
    let webhook_base_url = format!("http://{}", webhook.local_addr()?);
    let admin_base_url = format!("http://{}", admin.local_addr()?);
    let public_base_url = config
        .ingest
        .public_base_url
        .clone()
        .unwrap_or_else(|| webhook_base_url.clone());
    Ok(Listeners {
        webhook,
        admin,
        webhook_base_url,
        admin_base_url,
        public_base_url,
    })
}

/// The keys ingest runs with.
struct IngestKeys {
    admin: Secret,
    secrets: SecretsKey,
}

/// The two services of an ingest process: the webhook edge and the admin API.
struct IngestProcess {
    ingest: inlet_ingest::Deps,
    admin_listener: TcpListener,
    admin: inlet_control::admin::AdminDeps,
    control: ControlLog,
}

async fn ingest_process(
    config: &Config,
    connected: &Connected,
    listeners: Listeners,
    keys: IngestKeys,
    shutdown: &CancellationToken,
) -> anyhow::Result<IngestProcess> {
    inlet_ingest::verify::check_secrets_key(&connected.control.read(), &keys.secrets)
        .map_err(anyhow::Error::msg)?;
    let (deliveries, _follower) = inlet_control::deliveries::DeliveryLog::start(
        &connected.kafka,
        connected.topics.deliveries(),
        shutdown.clone(),
    )
    .await
    .context("following the delivery log")?;
    Ok(IngestProcess {
        ingest: inlet_ingest::Deps {
            listener: listeners.webhook,
            control: connected.control.clone(),
            producer: connected.producer.clone(),
            webhooks_topic: connected.topics.webhooks(),
            secrets_key: keys.secrets.clone(),
            drain: drain(config),
            metrics: connected.metrics.clone(),
        },
        admin_listener: listeners.admin,
        admin: inlet_control::admin::AdminDeps {
            admin_key: keys.admin,
            secrets_key: keys.secrets,
            public_base_url: listeners.public_base_url,
            outputs: Outputs::new(connected.producer.clone()),
            triggers_topic: connected.topics.triggers(),
            metrics: connected.metrics.clone(),
            deliveries,
            kafka: connected.kafka.clone(),
            webhooks_topic: connected.topics.webhooks(),
            deliveries_topic: connected.topics.deliveries(),
            allow_http: config.bitbucket.allow_http,
            bitbucket: bitbucket_client(config, connected)?,
        },
        control: connected.control.clone(),
    })
}

/// Serves the webhook edge and the admin API until `shutdown`.
async fn serve_ingest(config: &Config, process: IngestProcess, shutdown: CancellationToken) {
    let limits = inlet_core::listener::ConnectionLimits::new(Duration::from_millis(
        config.ingest.header_read_timeout_ms,
    ));
    tokio::join!(
        inlet_ingest::run(&config.ingest, process.ingest, shutdown.clone()),
        inlet_control::admin::run(
            process.admin_listener,
            process.control,
            process.admin,
            limits,
            drain(config),
            shutdown,
        ),
    );
}

/// A consuming stage's dependencies: a member of its group, to read `topic`.
async fn stage_deps(
    config: &Config,
    connected: &Connected,
    stage: (&StageConfig, Stage),
    topic: &str,
) -> anyhow::Result<StageDeps> {
    Ok(StageDeps {
        pipeline: PipelineDeps {
            consumer: Arc::new(member(connected, stage.0, stage.1).await?),
            input: vec![topic.to_owned()],
            producer: connected.producer.clone(),
            topics: connected.topics.clone(),
            drain: drain(config),
            metrics: connected.metrics.clone(),
        },
        control: connected.control.clone(),
    })
}

/// The router's dependencies; `secrets_key` opens integrations' access tokens for Bitbucket
/// lookups (without it, path filters fail open).
async fn router_deps(
    config: &Config,
    connected: &Connected,
    secrets_key: Option<SecretsKey>,
) -> anyhow::Result<RouterDeps<BitbucketClient>> {
    let topic = connected.topics.webhooks();
    Ok(RouterDeps {
        stage: stage_deps(config, connected, (&config.router, Stage::Router), &topic).await?,
        changes: bitbucket_client(config, connected)?,
        secrets_key,
        history: Some((connected.kafka.clone(), config.router.group_id.clone())),
        reconcile: config.reconcile.clone(),
    })
}

/// The process's Bitbucket REST client.
fn bitbucket_client(config: &Config, connected: &Connected) -> anyhow::Result<BitbucketClient> {
    BitbucketClient::new(&config.bitbucket, connected.metrics.bitbucket.clone())
        .context("setting up the Bitbucket client")
}

async fn workers_deps(config: &Config, connected: &Connected) -> anyhow::Result<StageDeps> {
    let topic = connected.topics.triggers();
    stage_deps(config, connected, (&config.workers, Stage::Workers), &topic).await
}

fn write_ready(path: Option<&Path>, info: &ReadyInfo) -> anyhow::Result<()> {
    if let Some(path) = path {
        info.write(path)
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    Ok(())
}

async fn start_embedded(topics: &Topics) -> anyhow::Result<EmbeddedBroker> {
    let specs = topics.specs();
    let broker = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&specs))
        .await?
        .context("starting the embedded broker")?;
    tracing::warn!(
        bootstrap = broker.bootstrap_servers(),
        "EMBEDDED BROKER: all data is in memory only and is lost when this process exits; \
         it is for development and tests, never production"
    );
    Ok(broker)
}

/// How `inlet dev` runs.
#[derive(Default)]
pub struct DevOptions<'a> {
    /// Where to write the ready file.
    pub ready_file: Option<&'a Path>,
    /// Run only the embedded broker.
    pub only_broker: bool,
    /// Run the broker and ingest, without router and workers (`inlet bench --only-ingest`).
    pub only_ingest: bool,
    /// Told the ready info once every stage is ready, for in-process callers.
    pub on_ready: Option<tokio::sync::oneshot::Sender<ReadyInfo>>,
    /// Print no banner.
    pub quiet: bool,
}

/// `inlet dev`: every stage in one process, on the embedded broker unless bootstrap servers are
/// configured; or only the broker with `--only-broker`.
pub async fn dev(
    config: Config,
    options: DevOptions<'_>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let DevOptions {
        ready_file,
        only_broker,
        only_ingest,
        on_ready,
        quiet,
    } = options;
    let topics = Topics::new(&config.kafka.topic_prefix);
    let (broker, bootstrap, embedded) = match &config.kafka.bootstrap_servers {
        Some(servers) => (None, servers.clone(), false),
        None => {
            let broker = start_embedded(&topics).await?;
            let bootstrap = broker.bootstrap_servers().to_owned();
            (Some(broker), bootstrap, true)
        }
    };

    if only_broker {
        write_ready(
            ready_file,
            &ReadyInfo {
                kafka_bootstrap_servers: bootstrap.clone(),
                topic_prefix: topics.prefix().to_owned(),
                ..ReadyInfo::default()
            },
        )?;
        println!("inlet dev --only-broker\n  kafka bootstrap servers: {bootstrap}");
        shutdown.cancelled().await;
        drop(broker);
        return Ok(());
    }

    let (admin_key, generated) = match config.admin_key()? {
        Some(key) => (key, false),
        None => (Secret::generate(24), true),
    };
    // In memory the control log dies with the process, so a fresh key is as good as any; against
    // a real cluster a generated key could not open what an earlier run sealed, which the startup
    // check then reports.
    let secrets_key = SecretsKey::from_config(&config)?.unwrap_or_else(SecretsKey::generate);
    let connected = connect(&config, &bootstrap, embedded, "dev", &shutdown).await?;
    let listeners = bind(&config).await?;
    let (webhook_base_url, admin_base_url) = (
        listeners.webhook_base_url.clone(),
        listeners.admin_base_url.clone(),
    );
    let (router, workers, reporter) = if only_ingest {
        (None, None, None)
    } else {
        (
            Some(router_deps(&config, &connected, Some(secrets_key.clone())).await?),
            Some(workers_deps(&config, &connected).await?),
            Some(reporter_deps(&config, &connected, Some(secrets_key.clone())).await?),
        )
    };
    let ingest = ingest_process(
        &config,
        &connected,
        listeners,
        IngestKeys {
            admin: admin_key.clone(),
            secrets: secrets_key,
        },
        &shutdown,
    )
    .await?;

    let ready = ReadyInfo {
        webhook_base_url: Some(webhook_base_url.clone()),
        admin_base_url: Some(admin_base_url.clone()),
        admin_key: Some(admin_key.expose().to_owned()),
        kafka_bootstrap_servers: bootstrap.clone(),
        topic_prefix: topics.prefix().to_owned(),
    };
    write_ready(ready_file, &ready)?;
    if let Some(on_ready) = on_ready {
        let _ = on_ready.send(ready);
    }
    let key_line = if generated {
        admin_key.expose().to_owned()
    } else {
        "(from configuration)".to_owned()
    };
    if !quiet {
        println!(
            "inlet dev is ready\n  webhooks:  {webhook_base_url}/webhooks/bitbucket-datacenter/<integration>\n  \
         admin API: {admin_base_url}/api/v1\n  admin key: {key_line}\n  kafka:     {bootstrap}{}",
            if embedded {
                " (embedded, in memory only)"
            } else {
                ""
            }
        );
    }

    let router = async {
        match router {
            Some(deps) => inlet_router::run(&config.router, deps, shutdown.clone()).await,
            None => Ok(()),
        }
    };
    let workers = async {
        match workers {
            Some(deps) => inlet_workers::run(&config.workers, deps, shutdown.clone()).await,
            None => Ok(()),
        }
    };
    let reporter = async {
        match reporter {
            Some(deps) => inlet_reporter::run(&config.reporter, deps, shutdown.clone()).await,
            None => Ok(()),
        }
    };
    let (router_result, workers_result, reporter_result, ()) = tokio::join!(
        router,
        workers,
        reporter,
        serve_ingest(&config, ingest, shutdown.clone()),
    );
    router_result.context("router")?;
    workers_result.context("workers")?;
    reporter_result.context("reporter")?;
    // Every client goes before the broker it talks to: a `..` pattern would leave the producer,
    // the control log's and the probe's clients to be dropped after it, each then logging that
    // all brokers are down.
    let Connected {
        kafka,
        producer,
        control,
        control_task,
        metrics,
        topics: _,
    } = connected;
    drop((producer, control, metrics));
    let _ = control_task.await;
    drop(kafka);
    drop(broker);
    Ok(())
}

/// `inlet ingest` against a configured cluster.
pub async fn ingest(
    config: Config,
    ready_file: Option<&Path>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let bootstrap = external_bootstrap(&config, "ingest")?;
    let Some(admin_key) = config.admin_key()? else {
        bail!(
            "`inlet ingest` needs the bootstrap admin key: set INLET_ADMIN_KEY or \
             ingest.admin_key_file (every ingest replica must share it)"
        );
    };
    let Some(secrets_key) = SecretsKey::from_config(&config)? else {
        bail!(
            "`inlet ingest` needs the secrets key that seals webhook secrets in the control log: \
             set INLET_SECRETS_KEY or ingest.secrets_key_file to 32 random bytes in hex \
             (e.g. `openssl rand -hex 32`); every ingest replica must share it"
        );
    };
    let connected = connect(&config, &bootstrap, false, "ingest", &shutdown).await?;
    let listeners = bind(&config).await?;
    write_ready(
        ready_file,
        &ReadyInfo {
            webhook_base_url: Some(listeners.webhook_base_url.clone()),
            admin_base_url: Some(listeners.admin_base_url.clone()),
            admin_key: None,
            kafka_bootstrap_servers: bootstrap.clone(),
            topic_prefix: connected.topics.prefix().to_owned(),
        },
    )?;
    tracing::info!(
        webhooks = %listeners.webhook_base_url,
        admin = %listeners.admin_base_url,
        "ingest ready"
    );
    let deps = ingest_process(
        &config,
        &connected,
        listeners,
        IngestKeys {
            admin: admin_key,
            secrets: secrets_key,
        },
        &shutdown,
    )
    .await?;
    serve_ingest(&config, deps, shutdown).await;
    let _ = connected.control_task.await;
    Ok(())
}

/// Which consuming stage to run alone.
#[derive(Clone, Copy)]
enum Consuming {
    Router,
    Workers,
    Reporter,
}

/// `inlet reporter` against a configured cluster.
pub async fn reporter(
    config: Config,
    args: &StageArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    consuming(config, args, Consuming::Reporter, shutdown).await
}

/// The reporter's dependencies: a consumer of `inlet.runs` and `inlet.run-updates` in its group.
async fn reporter_deps(
    config: &Config,
    connected: &Connected,
    secrets_key: Option<SecretsKey>,
) -> anyhow::Result<inlet_reporter::Deps> {
    // A stack's decisions and updates must reach the same reporter (the consumer group assigns
    // the same partition numbers of both topics to one member): equal partition counts.
    let (runs, updates) = (
        connected
            .kafka
            .partition_count(&connected.topics.runs())
            .await?,
        connected
            .kafka
            .partition_count(&connected.topics.run_updates())
            .await?,
    );
    if runs != updates && runs > 0 && updates > 0 {
        bail!(
            "{} has {runs} partitions and {} has {updates}: the reporter needs the same count on              both, so that a stack's decisions and run updates reach the same process",
            connected.topics.runs(),
            connected.topics.run_updates()
        );
    }
    let consumer = member(connected, &config.reporter.stage(), Stage::Reporter).await?;
    Ok(inlet_reporter::Deps {
        stage: StageDeps {
            pipeline: PipelineDeps {
                consumer: Arc::new(consumer),
                input: vec![connected.topics.runs(), connected.topics.run_updates()],
                producer: connected.producer.clone(),
                topics: connected.topics.clone(),
                drain: drain(config),
                metrics: connected.metrics.clone(),
            },
            control: connected.control.clone(),
        },
        client: bitbucket_client(config, connected)?,
        secrets_key,
        kafka: Some(connected.kafka.clone()),
    })
}

/// `inlet router` against a configured cluster.
pub async fn router(
    config: Config,
    args: &StageArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    consuming(config, args, Consuming::Router, shutdown).await
}

/// `inlet workers` against a configured cluster.
pub async fn workers(
    config: Config,
    args: &StageArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    consuming(config, args, Consuming::Workers, shutdown).await
}

async fn consuming(
    config: Config,
    args: &StageArgs,
    stage: Consuming,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let name = match stage {
        Consuming::Router => "router",
        Consuming::Workers => "workers",
        Consuming::Reporter => "reporter",
    };
    let bootstrap = external_bootstrap(&config, name)?;
    let connected = connect(&config, &bootstrap, false, name, &shutdown).await?;
    let (mut router, mut workers, mut reporter) = (None, None, None);
    match stage {
        Consuming::Router => {
            let key = SecretsKey::from_config(&config)?;
            router = Some(router_deps(&config, &connected, key).await?);
        }
        Consuming::Workers => workers = Some(workers_deps(&config, &connected).await?),
        Consuming::Reporter => {
            let key = SecretsKey::from_config(&config)?;
            reporter = Some(reporter_deps(&config, &connected, key).await?);
        }
    }
    let ops_listener = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding the operations listener {}", args.metrics_addr))?;
    let ops_addr = ops_listener.local_addr()?;
    let ops = Arc::new(Ops {
        metrics: connected.metrics.clone(),
        readiness: WithProgress {
            inner: connected.control.clone(),
            metrics: connected.metrics.clone(),
        },
    });
    let ops_task = tokio::spawn(inlet_core::listener::serve(
        "operations",
        ops_listener,
        ops,
        inlet_core::listener::ConnectionLimits::new(Duration::from_secs(5)),
        Duration::from_secs(1),
        shutdown.clone(),
    ));
    write_ready(
        args.kafka.ready_file.as_deref(),
        &stage_ready(&bootstrap, &connected.topics),
    )?;
    tracing::info!(operations = %ops_addr, "{name} ready");
    if let Some(deps) = router {
        inlet_router::run(&config.router, deps, shutdown).await?;
    } else if let Some(deps) = workers {
        inlet_workers::run(&config.workers, deps, shutdown).await?;
    } else if let Some(deps) = reporter {
        inlet_reporter::run(&config.reporter, deps, shutdown).await?;
    }
    let _ = ops_task.await;
    let _ = connected.control_task.await;
    Ok(())
}

fn stage_ready(bootstrap: &str, topics: &Topics) -> ReadyInfo {
    ReadyInfo {
        kafka_bootstrap_servers: bootstrap.to_owned(),
        topic_prefix: topics.prefix().to_owned(),
        ..ReadyInfo::default()
    }
}

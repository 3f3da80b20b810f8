//! The one typed configuration tree.
//!
//! Layers, later wins: built-in defaults → TOML file (`--config`) → `INLET_*` environment variables
//! and command-line flags (the CLI applies both). [`Config::validate`] runs once, before anything
//! starts, and names the offending key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;

/// Everything inlet can be configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kafka connection and topics.
    pub kafka: KafkaConfig,
    /// The webhook and admin listeners.
    pub ingest: IngestConfig,
    /// The router stage.
    pub router: StageConfig,
    /// The workers stage.
    pub workers: StageConfig,
    /// The reporter stage.
    pub reporter: ReporterConfig,
    /// The router's reconciliation of deliveries Bitbucket dropped (DESIGN §5.2).
    pub reconcile: ReconcileConfig,
    /// Logging.
    pub log: LogConfig,
    /// The Bitbucket REST client (changed files, later build statuses and webhooks).
    pub bitbucket: BitbucketConfig,
    /// Seconds a stage may take to drain in-flight work on SIGTERM/Ctrl-C before it exits anyway.
    pub shutdown_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kafka: KafkaConfig::default(),
            ingest: IngestConfig::default(),
            router: StageConfig {
                group_id: "inlet-router".to_owned(),
                ..StageConfig::default()
            },
            workers: StageConfig {
                group_id: "inlet-workers".to_owned(),
                ..StageConfig::default()
            },
            reporter: ReporterConfig::default(),
            reconcile: ReconcileConfig::default(),
            log: LogConfig::default(),
            bitbucket: BitbucketConfig::default(),
            shutdown_timeout_secs: 20,
        }
    }
}

/// Kafka connection and topic settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]` of the brokers. Unset: `inlet dev` starts an embedded in-memory
    /// broker; the single stages refuse to start.
    pub bootstrap_servers: Option<String>,
    /// Prefix of every topic name.
    pub topic_prefix: String,
    /// `client.id` reported to the brokers.
    pub client_id: String,
    /// Create missing topics at startup (needs the cluster's permission to create topics).
    pub create_topics: bool,
    /// Replication factor of created topics; `-1` uses the broker's default.
    pub replication_factor: i32,
    /// Extra librdkafka properties (SASL, TLS, tuning), applied last: they override inlet's.
    pub librdkafka: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: None,
            topic_prefix: "inlet.".to_owned(),
            client_id: "inlet".to_owned(),
            create_topics: true,
            replication_factor: -1,
            librdkafka: BTreeMap::new(),
        }
    }
}

/// The ingest stage: webhook listener and admin API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Address of the public webhook listener.
    pub webhook_addr: SocketAddr,
    /// Address of the internal admin API listener.
    pub admin_addr: SocketAddr,
    /// Base URL Bitbucket reaches the webhook listener at (used in webhook URLs shown to admins);
    /// defaults to `http://<webhook_addr>`.
    pub public_base_url: Option<String>,
    /// The bootstrap root-admin API key (at least 16 characters).
    pub admin_key: Option<Secret>,
    /// A file holding the bootstrap root-admin API key (alternative to `admin_key`).
    pub admin_key_file: Option<PathBuf>,
    /// The AES-256 key (64 hex characters or base64) that seals webhook secrets and access tokens
    /// in the control log. Every ingest replica needs the same key; router and workers need none.
    pub secrets_key: Option<Secret>,
    /// A file holding the secrets key (alternative to `secrets_key`).
    pub secrets_key_file: Option<PathBuf>,
    /// Largest accepted webhook body in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Most webhook publishes awaiting the broker at once; beyond it requests get 503.
    pub max_in_flight: usize,
    /// Milliseconds to wait for the broker's acknowledgement before answering 503.
    pub publish_timeout_ms: u64,
    /// Milliseconds a client may take to send the request headers.
    pub header_read_timeout_ms: u64,
    /// Milliseconds a whole request (body included) may take.
    pub request_timeout_ms: u64,
    /// Milliseconds a body may go without sending any data; slower clients get 408 (a minimum
    /// data rate, so stalled bodies do not hold memory until the request timeout).
    pub body_idle_timeout_ms: u64,
    /// Bytes of request bodies all webhook requests together may hold in memory; beyond it new
    /// bodies get 503 with `Retry-After`, so memory stays bounded whatever clients do.
    pub max_buffered_bytes: usize,
    /// Open connections at most per listener; beyond it new connections wait in the backlog.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes; beyond it 431.
    pub max_head_bytes: usize,
    /// Seconds: signed events whose `date` is older are refused (400 `event_too_old`), so a
    /// captured body cannot be replayed later. Unset (the default): no age check, because
    /// Bitbucket's clock and redeliveries from its UI would otherwise be refused.
    pub max_event_age_secs: Option<u64>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            webhook_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            public_base_url: None,
            admin_key: None,
            admin_key_file: None,
            secrets_key: None,
            secrets_key_file: None,
            max_body_bytes: 1024 * 1024,
            max_in_flight: 4096,
            publish_timeout_ms: 5_000,
            header_read_timeout_ms: 5_000,
            request_timeout_ms: 15_000,
            body_idle_timeout_ms: 5_000,
            max_buffered_bytes: 256 * 1024 * 1024,
            max_connections: 10_000,
            max_head_bytes: 64 * 1024,
            max_event_age_secs: None,
        }
    }
}

/// A consuming stage (router or workers).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageConfig {
    /// Kafka consumer group id.
    pub group_id: String,
    /// Most input records whose outputs await the broker at once.
    pub max_in_flight: usize,
    /// Milliseconds without a heartbeat after which the group coordinator declares a member
    /// dead and gives its partitions to the others: the takeover time after a crash. Unset:
    /// 10000 on a Kafka cluster, 3000 on an embedded broker (`inlet dev`'s own, or another
    /// process's `inlet dev --only-broker`, recognised by its cluster id).
    pub session_timeout_ms: Option<u64>,
    /// Milliseconds between heartbeats to the group coordinator (at most a third of the session
    /// timeout, so two may be lost without the member being declared dead).
    pub heartbeat_interval_ms: u64,
    /// Milliseconds the stage may go without asking for records before it leaves the group so
    /// the others take its partitions (a hung process). Longer than the longest wait one record
    /// can cause: the control-log wait plus a Bitbucket call.
    pub max_poll_interval_ms: u64,
    /// How the group's partitions are shared ([`Assignor`]).
    pub assignor: Assignor,
    /// Static group membership (`group.instance.id`, KIP-345): a member that restarts under the
    /// same id within the session timeout gets its partitions back without a rebalance, but a
    /// static member never leaves the group on shutdown, so its partitions wait a session timeout
    /// when it does not come back. Unique per process within the group (a StatefulSet's pod
    /// name). `INLET_GROUP_INSTANCE_ID` sets it for every stage of the process. Unset: dynamic
    /// membership, and the member leaves the group on SIGTERM.
    pub group_instance_id: Option<String>,
}

impl Default for StageConfig {
    /// The router's defaults; [`Config::default`] gives workers their own group id. A `[workers]`
    /// table in a file that omits `group_id` is fixed up in [`Config::load`].
    fn default() -> Self {
        let group = GroupMembership::default();
        StageConfig {
            group_id: String::new(),
            max_in_flight: 1024,
            session_timeout_ms: group.session_timeout_ms,
            heartbeat_interval_ms: group.heartbeat_interval_ms,
            max_poll_interval_ms: group.max_poll_interval_ms,
            assignor: group.assignor,
            group_instance_id: group.group_instance_id,
        }
    }
}

impl StageConfig {
    /// How this stage's consumer takes part in its group.
    pub fn membership(&self) -> GroupMembership {
        GroupMembership {
            session_timeout_ms: self.session_timeout_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            max_poll_interval_ms: self.max_poll_interval_ms,
            assignor: self.assignor,
            group_instance_id: self.group_instance_id.clone(),
        }
    }
}

/// How a consumer group's partitions are shared among its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignor {
    /// Incremental (KIP-429): a rebalance moves only the partitions that change owner, and the
    /// other members go on reading theirs throughout. The default.
    CooperativeSticky,
    /// librdkafka's old default `range,roundrobin` (eager): every rebalance stops every member.
    /// Only to run beside members of an older inlet during an upgrade.
    Eager,
}

impl Assignor {
    /// The `partition.assignment.strategy` value.
    pub fn strategy(self) -> &'static str {
        match self {
            Assignor::CooperativeSticky => "cooperative-sticky",
            Assignor::Eager => "range,roundrobin",
        }
    }
}

/// The consumer-group settings of one stage; their defaults live here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembership {
    /// See [`StageConfig::session_timeout_ms`].
    pub session_timeout_ms: Option<u64>,
    /// See [`StageConfig::heartbeat_interval_ms`].
    pub heartbeat_interval_ms: u64,
    /// See [`StageConfig::max_poll_interval_ms`].
    pub max_poll_interval_ms: u64,
    /// See [`StageConfig::assignor`].
    pub assignor: Assignor,
    /// See [`StageConfig::group_instance_id`].
    pub group_instance_id: Option<String>,
}

/// How long a stage waits for its control fold to reach a record's control offset
/// (`inlet_control::control_log::CONTROL_WAIT` is this), the longest wait a record can cause
/// besides a Bitbucket call; `max_poll_interval_ms` must exceed both.
pub const CONTROL_WAIT_MS: u64 = 30_000;

impl Default for GroupMembership {
    fn default() -> Self {
        GroupMembership {
            session_timeout_ms: None,
            heartbeat_interval_ms: 1_000,
            max_poll_interval_ms: 60_000,
            assignor: Assignor::CooperativeSticky,
            group_instance_id: None,
        }
    }
}

/// The dotted keys of one stage's group settings, for error messages.
#[derive(Debug)]
pub struct GroupKeys {
    session_timeout_ms: &'static str,
    heartbeat_interval_ms: &'static str,
    max_poll_interval_ms: &'static str,
    group_instance_id: &'static str,
}

macro_rules! group_keys {
    ($table:literal) => {
        GroupKeys {
            session_timeout_ms: concat!($table, ".session_timeout_ms"),
            heartbeat_interval_ms: concat!($table, ".heartbeat_interval_ms"),
            max_poll_interval_ms: concat!($table, ".max_poll_interval_ms"),
            group_instance_id: concat!($table, ".group_instance_id"),
        }
    };
}

impl GroupKeys {
    /// `[router]`.
    pub const ROUTER: GroupKeys = group_keys!("router");
    /// `[workers]`.
    pub const WORKERS: GroupKeys = group_keys!("workers");
    /// `[reporter]`.
    pub const REPORTER: GroupKeys = group_keys!("reporter");
}

impl GroupMembership {
    /// The environment variable that sets [`StageConfig::group_instance_id`] of every stage.
    pub const INSTANCE_ID_ENV: &'static str = "INLET_GROUP_INSTANCE_ID";

    /// The session timeout when none is configured: on a cluster, or on the embedded broker
    /// (which waits a session timeout less a second for members to rejoin after any change,
    /// where a real broker goes on once every member rejoined, so it gets a shorter one).
    pub fn default_session_timeout_ms(embedded: bool) -> u64 {
        if embedded { 3_000 } else { 10_000 }
    }

    /// The session timeout in effect.
    pub fn session_timeout_ms(&self, embedded: bool) -> u64 {
        self.session_timeout_ms
            .unwrap_or_else(|| Self::default_session_timeout_ms(embedded))
    }

    /// Whether the member is static (`group.instance.id` set).
    pub fn is_static(&self) -> bool {
        self.group_instance_id.is_some()
    }

    /// Checks the bounds: the heartbeat fits the session timeout three times, and the poll
    /// interval outlasts the session timeout and the longest wait one record can cause
    /// (`call_timeout_ms`: one Bitbucket call, plus the control-log wait).
    pub fn validate(&self, keys: &GroupKeys, call_timeout_ms: u64) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        if let Some(session) = self.session_timeout_ms
            && !(1_000..=3_600_000).contains(&session)
        {
            return invalid(
                keys.session_timeout_ms,
                "must be between 1000 and 3600000".to_owned(),
            );
        }
        // An unset session timeout is checked against both of its defaults.
        let sessions = match self.session_timeout_ms {
            Some(session) => vec![session],
            None => vec![
                Self::default_session_timeout_ms(false),
                Self::default_session_timeout_ms(true),
            ],
        };
        for session in sessions {
            if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms * 3 > session {
                return invalid(
                    keys.heartbeat_interval_ms,
                    format!(
                        "must be at least 1 and at most a third of the session timeout \
                         ({session} ms)"
                    ),
                );
            }
            if self.max_poll_interval_ms < session {
                return invalid(
                    keys.max_poll_interval_ms,
                    format!("must be at least the session timeout ({session} ms)"),
                );
            }
        }
        let longest_wait = CONTROL_WAIT_MS + call_timeout_ms;
        if self.max_poll_interval_ms <= longest_wait || self.max_poll_interval_ms > 86_400_000 {
            return invalid(
                keys.max_poll_interval_ms,
                format!(
                    "must be above the longest wait one record can cause ({longest_wait} ms: the \
                     {CONTROL_WAIT_MS} ms control-log wait plus bitbucket.call_timeout_ms) and \
                     at most 86400000"
                ),
            );
        }
        if let Some(id) = &self.group_instance_id
            && (id.is_empty()
                || id.len() > 249
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return invalid(
                keys.group_instance_id,
                "must be 1 to 249 letters, digits, `.`, `_` or `-`".to_owned(),
            );
        }
        Ok(())
    }
}

/// The reporter: decisions and run updates to Bitbucket build statuses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReporterConfig {
    /// Kafka consumer group id.
    pub group_id: String,
    /// Most records being posted (or waiting to be committed) at once.
    pub max_in_flight: usize,
    /// The build status's link when a run update gives none: `{run_id}` and `{stack_id}` are
    /// filled in. Unset: the commit's page in Bitbucket.
    pub status_url: Option<String>,
    /// See [`StageConfig::session_timeout_ms`].
    pub session_timeout_ms: Option<u64>,
    /// See [`StageConfig::heartbeat_interval_ms`].
    pub heartbeat_interval_ms: u64,
    /// See [`StageConfig::max_poll_interval_ms`].
    pub max_poll_interval_ms: u64,
    /// See [`StageConfig::assignor`].
    pub assignor: Assignor,
    /// See [`StageConfig::group_instance_id`].
    pub group_instance_id: Option<String>,
}

impl Default for ReporterConfig {
    fn default() -> Self {
        let group = GroupMembership::default();
        ReporterConfig {
            group_id: "inlet-reporter".to_owned(),
            max_in_flight: 256,
            status_url: None,
            session_timeout_ms: group.session_timeout_ms,
            heartbeat_interval_ms: group.heartbeat_interval_ms,
            max_poll_interval_ms: group.max_poll_interval_ms,
            assignor: group.assignor,
            group_instance_id: group.group_instance_id,
        }
    }
}

impl ReporterConfig {
    /// The consume loop's settings.
    pub fn stage(&self) -> StageConfig {
        StageConfig {
            group_id: self.group_id.clone(),
            max_in_flight: self.max_in_flight,
            session_timeout_ms: self.session_timeout_ms,
            heartbeat_interval_ms: self.heartbeat_interval_ms,
            max_poll_interval_ms: self.max_poll_interval_ms,
            assignor: self.assignor,
            group_instance_id: self.group_instance_id.clone(),
        }
    }
}

/// Reconciliation (DESIGN §5.2): how often each router compares Bitbucket's branch heads and
/// open pull requests with what it saw, and how hard it may ask.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// Seconds between passes (jittered by up to a tenth); 0 turns periodic passes off (a
    /// `POST /integrations/{name}/reconcile` still runs one). `INLET_RECONCILE_INTERVAL_S`
    /// overrides.
    pub interval_s: u64,
    /// Repositories read at once in a pass (each takes one call per tracked branch plus one per
    /// page of its open pull requests); the per-host bound of `[bitbucket]` applies on top.
    pub max_repositories_in_flight: usize,
    /// The share of the interval one pass may take; a pass that would take longer stops and
    /// goes on where it stopped at the next one.
    pub max_pass_share: f64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            interval_s: 300,
            max_repositories_in_flight: 8,
            max_pass_share: 0.5,
        }
    }
}

impl ReconcileConfig {
    /// The environment variable that sets [`ReconcileConfig::interval_s`].
    pub const INTERVAL_ENV: &'static str = "INLET_RECONCILE_INTERVAL_S";

    /// Applies the value of [`Self::INTERVAL_ENV`] (`None` or empty: the file's value stays).
    pub fn apply_interval_env(&mut self, value: Option<&str>) -> Result<(), ConfigError> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(());
        };
        self.interval_s = value.parse().map_err(|_| ConfigError::Invalid {
            key: Self::INTERVAL_ENV,
            problem: "must be a whole number of seconds (0 turns periodic passes off)".to_owned(),
        })?;
        self.validate()
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        if self.interval_s > 7 * 24 * 3600 {
            return invalid("reconcile.interval_s", "must be at most 604800 (a week)");
        }
        if !(1..=1_024).contains(&self.max_repositories_in_flight) {
            return invalid(
                "reconcile.max_repositories_in_flight",
                "must be between 1 and 1024",
            );
        }
        if !(self.max_pass_share > 0.0 && self.max_pass_share <= 1.0) {
            return invalid("reconcile.max_pass_share", "must be above 0 and at most 1");
        }
        Ok(())
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (human) or `json`.
    pub format: LogFormat,
    /// `tracing` filter directives, e.g. `info,inlet_router=debug`. `INLET_LOG` overrides.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info,librdkafka=warn,rdkafka=warn".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The Bitbucket Data Center REST client: transport security, time and concurrency bounds, paging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BitbucketConfig {
    /// Allow `http://` Bitbucket base URLs (labs and tests only: the access token travels in
    /// clear). `INLET_BITBUCKET_ALLOW_HTTP=true` sets it.
    pub allow_http: bool,
    /// A PEM file of extra CA certificates trusted besides the platform's roots, for on-premises
    /// servers signed by a private CA.
    pub ca_bundle_file: Option<PathBuf>,
    /// Milliseconds to establish a TCP connection to Bitbucket.
    pub connect_timeout_ms: u64,
    /// Milliseconds one client call may take in all: every page, retry and wait included.
    pub call_timeout_ms: u64,
    /// Most requests in flight at once to one Bitbucket host (`host:port`).
    pub max_concurrency_per_host: usize,
    /// Retries of a request after a 429, a 5xx or a connection error (so at most
    /// `max_retries + 1` attempts); other 4xx are never retried.
    pub max_retries: u32,
    /// Most pages one paged call reads; a longer list is reported truncated.
    pub max_pages: u32,
    /// Items asked for per page of `compare/changes`.
    pub page_limit: u32,
}

impl Default for BitbucketConfig {
    fn default() -> Self {
        BitbucketConfig {
            allow_http: false,
            ca_bundle_file: None,
            connect_timeout_ms: 2_000,
            call_timeout_ms: 10_000,
            max_concurrency_per_host: 16,
            max_retries: 3,
            max_pages: 100,
            page_limit: 500,
        }
    }
}

impl BitbucketConfig {
    /// The environment variable that sets [`BitbucketConfig::allow_http`].
    pub const ALLOW_HTTP_ENV: &'static str = "INLET_BITBUCKET_ALLOW_HTTP";

    /// Applies the value of [`Self::ALLOW_HTTP_ENV`] (`None` or empty: unset, the file's value
    /// stays): `true`/`1`/`yes` or `false`/`0`/`no`, any case.
    pub fn apply_allow_http_env(&mut self, value: Option<&str>) -> Result<(), ConfigError> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(());
        };
        self.allow_http = match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => {
                return Err(ConfigError::Invalid {
                    key: Self::ALLOW_HTTP_ENV,
                    problem: "must be true or false".to_owned(),
                });
            }
        };
        Ok(())
    }

    /// Checks the ranges (called by [`Config::validate`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        if !(1..=600_000).contains(&self.call_timeout_ms) {
            return invalid(
                "bitbucket.call_timeout_ms",
                "must be between 1 and 600000".to_owned(),
            );
        }
        if !(1..=self.call_timeout_ms).contains(&self.connect_timeout_ms) {
            return invalid(
                "bitbucket.connect_timeout_ms",
                format!(
                    "must be between 1 and bitbucket.call_timeout_ms ({})",
                    self.call_timeout_ms
                ),
            );
        }
        if !(1..=4_096).contains(&self.max_concurrency_per_host) {
            return invalid(
                "bitbucket.max_concurrency_per_host",
                "must be between 1 and 4096".to_owned(),
            );
        }
        if self.max_retries > 10 {
            return invalid("bitbucket.max_retries", "must be at most 10".to_owned());
        }
        if !(1..=10_000).contains(&self.max_pages) {
            return invalid(
                "bitbucket.max_pages",
                "must be between 1 and 10000".to_owned(),
            );
        }
        if !(1..=10_000).contains(&self.page_limit) {
            return invalid(
                "bitbucket.page_limit",
                "must be between 1 and 10000".to_owned(),
            );
        }
        if let Some(path) = &self.ca_bundle_file
            && !path.is_file()
        {
            return invalid(
                "bitbucket.ca_bundle_file",
                format!("{} is not a readable file", path.display()),
            );
        }
        Ok(())
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this tree.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error (names the key).
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid {
        /// Dotted key, e.g. `ingest.max_body_bytes`.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl Config {
    /// Defaults, overlaid with the TOML file at `path` when given.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        // A stage table that leaves out its group id keeps the default one.
        let defaults = Config::default();
        if config.router.group_id.is_empty() {
            config.router.group_id = defaults.router.group_id;
        }
        if config.workers.group_id.is_empty() {
            config.workers.group_id = defaults.workers.group_id;
        }
        Ok(config)
    }

    /// Checks every value that could make a stage fail later.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let prefix = &self.kafka.topic_prefix;
        if prefix.len() > 200
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return invalid(
                "kafka.topic_prefix",
                "may only hold letters, digits, `.`, `_` and `-`",
            );
        }
        if let Some(servers) = &self.kafka.bootstrap_servers
            && servers.trim().is_empty()
        {
            return invalid(
                "kafka.bootstrap_servers",
                "is empty; unset it to use the embedded broker",
            );
        }
        if self.ingest.max_body_bytes == 0 {
            return invalid("ingest.max_body_bytes", "must be at least 1");
        }
        if self.ingest.max_in_flight == 0 {
            return invalid("ingest.max_in_flight", "must be at least 1");
        }
        if self.ingest.max_buffered_bytes < self.ingest.max_body_bytes {
            return invalid(
                "ingest.max_buffered_bytes",
                "must be at least ingest.max_body_bytes",
            );
        }
        if self.ingest.max_connections == 0 || self.ingest.body_idle_timeout_ms == 0 {
            return invalid(
                "ingest.max_connections",
                "and ingest.body_idle_timeout_ms must be at least 1",
            );
        }
        if !(8 * 1024..=16 * 1024 * 1024).contains(&self.ingest.max_head_bytes) {
            return invalid("ingest.max_head_bytes", "must be between 8192 and 16777216");
        }
        if self.ingest.publish_timeout_ms == 0 {
            return invalid("ingest.publish_timeout_ms", "must be at least 1");
        }
        if self.router.max_in_flight == 0 {
            return invalid("router.max_in_flight", "must be at least 1");
        }
        if self.workers.max_in_flight == 0 {
            return invalid("workers.max_in_flight", "must be at least 1");
        }
        let call_timeout = self.bitbucket.call_timeout_ms;
        (self.router.membership()).validate(&GroupKeys::ROUTER, call_timeout)?;
        (self.workers.membership()).validate(&GroupKeys::WORKERS, call_timeout)?;
        (self.reporter.stage().membership()).validate(&GroupKeys::REPORTER, call_timeout)?;
        if let Some(url) = &self.ingest.public_base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid(
                "ingest.public_base_url",
                "must start with http:// or https://",
            );
        }
        if let Some(key) = &self.ingest.admin_key
            && key.expose().len() < 16
        {
            return invalid("ingest.admin_key", "must be at least 16 characters");
        }
        self.bitbucket.validate()?;
        self.reconcile.validate()?;
        // Its format is checked by `SecretsKey::from_config` (inlet-control) at startup.
        self.secrets_key_text()?;
        Ok(())
    }

    /// The bootstrap admin key from `admin_key` or `admin_key_file`, if either is set.
    pub fn admin_key(&self) -> Result<Option<Secret>, ConfigError> {
        let key = secret_from(&self.ingest.admin_key, &self.ingest.admin_key_file)?;
        if key.as_ref().is_some_and(|k| k.expose().len() < 16) {
            return Err(ConfigError::Invalid {
                key: "ingest.admin_key_file",
                problem: "holds a key shorter than 16 characters".to_owned(),
            });
        }
        Ok(key)
    }

    /// Applies the value of [`GroupMembership::INSTANCE_ID_ENV`] to every stage (`None` or
    /// empty: the file's values stay).
    pub fn apply_instance_id_env(&mut self, value: Option<&str>) {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return;
        };
        self.router.group_instance_id = Some(value.to_owned());
        self.workers.group_instance_id = Some(value.to_owned());
        self.reporter.group_instance_id = Some(value.to_owned());
    }

    /// The secrets key's text from `secrets_key` or `secrets_key_file`, if either is set
    /// (`inlet_control::crypto::SecretsKey::from_config` parses it).
    pub fn secrets_key_text(&self) -> Result<Option<Secret>, ConfigError> {
        secret_from(&self.ingest.secrets_key, &self.ingest.secrets_key_file)
    }
}

/// A secret given inline or in a file.
fn secret_from(
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(secret) = inline {
        return Ok(Some(secret.clone()));
    }
    let Some(path) = file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(Some(Secret::new(text.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults are valid and match the documented addresses.
    #[test]
    fn defaults_validate() {
        let config = Config::default();
        config.validate().expect("defaults are valid");
        assert_eq!(config.ingest.webhook_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.ingest.admin_addr.to_string(), "127.0.0.1:8081");
        assert_eq!(config.kafka.topic_prefix, "inlet.");
    }

    /// A file overrides only what it names; unknown keys are errors that name the key.
    #[test]
    fn file_layer_and_unknown_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("inlet.toml");
        std::fs::write(
            &path,
            "[ingest]\nmax_body_bytes = 2048\n[kafka.librdkafka]\n\"security.protocol\" = \"SASL_SSL\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&path)).expect("load");
        assert_eq!(config.ingest.max_body_bytes, 2048);
        assert_eq!(config.ingest.publish_timeout_ms, 5_000);
        assert_eq!(
            config
                .kafka
                .librdkafka
                .get("security.protocol")
                .map(String::as_str),
            Some("SASL_SSL")
        );

        // A stage table may give only some of its keys.
        std::fs::write(
            &path,
            "[router]\nmax_in_flight = 8\n[workers]\ngroup_id = \"w\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&path)).expect("load");
        assert_eq!(config.router.group_id, "inlet-router");
        assert_eq!(config.router.max_in_flight, 8);
        assert_eq!(config.workers.group_id, "w");
        assert_eq!(config.workers.max_in_flight, 1024);

        std::fs::write(&path, "[ingest]\nmax_body_byte = 1\n").expect("write");
        let err = Config::load(Some(&path)).expect_err("unknown key");
        assert!(err.to_string().contains("max_body_byte"), "{err}");
    }

    /// Out-of-range values are refused with the key named.
    #[test]
    fn validation_names_the_key() {
        let mut config = Config::default();
        config.ingest.max_body_bytes = 0;
        let err = config.validate().expect_err("invalid");
        assert!(err.to_string().contains("ingest.max_body_bytes"));

        let mut config = Config::default();
        config.kafka.topic_prefix = "bad prefix".to_owned();
        assert!(config.validate().is_err());

        let mut config = Config::default();
        config.ingest.admin_key = Some(Secret::new("short"));
        let err = config.validate().expect_err("short key");
        assert!(!err.to_string().contains("short\""), "no secret in errors");
    }

    /// The Bitbucket client's defaults, its file table, its range checks and its env variable.
    #[test]
    fn bitbucket_section() {
        let defaults = BitbucketConfig::default();
        assert!(!defaults.allow_http);
        assert_eq!(
            (
                defaults.connect_timeout_ms,
                defaults.call_timeout_ms,
                defaults.max_concurrency_per_host,
                defaults.max_retries,
                defaults.max_pages,
                defaults.page_limit,
            ),
            (2_000, 10_000, 16, 3, 100, 500)
        );

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("inlet.toml");
        std::fs::write(&path, "[bitbucket]\nallow_http = true\nmax_retries = 1\n").expect("write");
        let config = Config::load(Some(&path)).expect("load");
        assert!(config.bitbucket.allow_http);
        assert_eq!(config.bitbucket.max_retries, 1);
        assert_eq!(config.bitbucket.page_limit, 500);
        std::fs::write(&path, "[bitbucket]\nallow_htp = true\n").expect("write");
        let err = Config::load(Some(&path)).expect_err("unknown key");
        assert!(err.to_string().contains("allow_htp"), "{err}");

        for (change, key) in [
            (
                (|c: &mut BitbucketConfig| c.call_timeout_ms = 0) as fn(&mut BitbucketConfig),
                "bitbucket.call_timeout_ms",
            ),
            (
                |c| c.connect_timeout_ms = c.call_timeout_ms + 1,
                "bitbucket.connect_timeout_ms",
            ),
            (
                |c| c.max_concurrency_per_host = 0,
                "bitbucket.max_concurrency_per_host",
            ),
            (|c| c.max_retries = 11, "bitbucket.max_retries"),
            (|c| c.max_pages = 0, "bitbucket.max_pages"),
            (|c| c.page_limit = 0, "bitbucket.page_limit"),
            (
                |c| c.ca_bundle_file = Some(PathBuf::from("/nonexistent/ca.pem")),
                "bitbucket.ca_bundle_file",
            ),
        ] {
            let mut config = Config::default();
            change(&mut config.bitbucket);
            let err = config.validate().expect_err(key);
            assert!(err.to_string().contains(key), "{err}");
        }

        let mut config = BitbucketConfig::default();
        config.apply_allow_http_env(Some("TRUE")).expect("true");
        assert!(config.allow_http);
        config.apply_allow_http_env(None).expect("unset");
        config.apply_allow_http_env(Some("")).expect("empty");
        assert!(config.allow_http, "unset and empty keep the value");
        config.apply_allow_http_env(Some("0")).expect("false");
        assert!(!config.allow_http);
        let err = config
            .apply_allow_http_env(Some("maybe"))
            .expect_err("not a boolean");
        assert!(
            err.to_string().contains("INLET_BITBUCKET_ALLOW_HTTP"),
            "{err}"
        );
    }

    /// The consumer-group settings: defaults (the embedded broker's shorter session timeout),
    /// a `[router]` table, static membership from the environment, and range checks naming the
    /// key.
    #[test]
    fn group_membership() {
        let config = Config::default();
        for membership in [
            config.router.membership(),
            config.workers.membership(),
            config.reporter.stage().membership(),
        ] {
            assert_eq!(membership, GroupMembership::default());
            assert_eq!(membership.session_timeout_ms(false), 10_000);
            assert_eq!(membership.session_timeout_ms(true), 3_000);
            assert_eq!(membership.heartbeat_interval_ms, 1_000);
            assert_eq!(membership.max_poll_interval_ms, 60_000);
            assert_eq!(membership.assignor.strategy(), "cooperative-sticky");
            assert!(!membership.is_static());
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("inlet.toml");
        std::fs::write(
            &path,
            "[router]\nsession_timeout_ms = 6000\nassignor = \"eager\"\n\
             [reporter]\nmax_poll_interval_ms = 90000\n",
        )
        .expect("write");
        let mut config = Config::load(Some(&path)).expect("load");
        config.validate().expect("valid");
        assert_eq!(config.router.membership().session_timeout_ms(false), 6_000);
        assert_eq!(config.router.membership().session_timeout_ms(true), 6_000);
        assert_eq!(config.router.assignor.strategy(), "range,roundrobin");
        assert_eq!(config.reporter.stage().max_poll_interval_ms, 90_000);
        assert_eq!(config.workers.membership(), GroupMembership::default());

        config.apply_instance_id_env(Some(""));
        assert!(!config.router.membership().is_static());
        config.apply_instance_id_env(Some("inlet-router-0"));
        for membership in [
            config.router.membership(),
            config.workers.membership(),
            config.reporter.stage().membership(),
        ] {
            assert_eq!(
                membership.group_instance_id.as_deref(),
                Some("inlet-router-0")
            );
        }

        for (change, key) in [
            (
                (|c: &mut StageConfig| c.session_timeout_ms = Some(500)) as fn(&mut StageConfig),
                "workers.session_timeout_ms",
            ),
            // A third of the embedded broker's 3 s at most.
            (
                |c| c.heartbeat_interval_ms = 1_500,
                "workers.heartbeat_interval_ms",
            ),
            (
                |c| {
                    c.session_timeout_ms = Some(60_000);
                    c.max_poll_interval_ms = 50_000;
                },
                "workers.max_poll_interval_ms",
            ),
            // The control-log wait plus a Bitbucket call is 40 s by default.
            (
                |c| c.max_poll_interval_ms = 40_000,
                "workers.max_poll_interval_ms",
            ),
            (
                |c| c.group_instance_id = Some("pod name".to_owned()),
                "workers.group_instance_id",
            ),
        ] {
            let mut config = Config::default();
            change(&mut config.workers);
            let err = config.validate().expect_err(key);
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
        std::fs::write(&path, "[workers]\nassignor = \"sticky\"\n").expect("write");
        let err = Config::load(Some(&path)).expect_err("unknown assignor");
        assert!(err.to_string().contains("assignor"), "{err}");
    }
}

//! Helpers for end-to-end tests: start `inlet` processes, talk HTTP to them, read topics.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use inlet_core::ready::ReadyInfo;
use inlet_core::secret::Secret;
use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;

/// A secrets key for processes that must share one (64 hex characters).
pub const SECRETS_KEY: &str = "5f3c1e0a9b8d7c6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e";

/// A running `inlet` process, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Inlet {
    child: Option<Child>,
    pub ready: ReadyInfo,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Inlet {
    /// Starts `inlet ARGS… --ready-file F` and waits until F appears.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Inlet {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready_file = dir.path().join("ready.json");
        let log = dir.path().join("inlet.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_inlet"));
        command.args(args);
        // Tests run in parallel: the router's and workers' operations listener takes any port.
        if matches!(args.first(), Some(&"router" | &"workers")) && !args.contains(&"--metrics-addr")
        {
            command.args(["--metrics-addr", "127.0.0.1:0"]);
        }
        command
            .arg("--ready-file")
            .arg(&ready_file)
            .env_remove("INLET_ADMIN_KEY")
            .env_remove("INLET_SECRETS_KEY")
            .env_remove("INLET_KAFKA_BOOTSTRAP_SERVERS")
            .env_remove("INLET_BITBUCKET_ALLOW_HTTP")
            .env("INLET_LOG", "info,inlet_core=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn inlet");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready_file)
                && let Ok(ready) = serde_json::from_str::<ReadyInfo>(&text)
            {
                return Inlet {
                    child: Some(child),
                    ready,
                    log,
                    _dir: dir,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "inlet {args:?} exited with {status} before it was ready:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "inlet {args:?} not ready after 60 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `inlet dev` on free ports with its embedded broker.
    pub fn dev() -> Inlet {
        Self::start(
            &[
                "dev",
                "--webhook-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ],
            &[],
        )
    }

    /// `inlet ingest` on free ports against `bootstrap`, with admin key `key`, the shared
    /// [`SECRETS_KEY`], and `extra` environment (e.g. `INLET_CONFIG`).
    pub fn ingest(bootstrap: &str, key: &str, extra: &[(&str, &str)]) -> Inlet {
        let mut env = vec![("INLET_ADMIN_KEY", key), ("INLET_SECRETS_KEY", SECRETS_KEY)];
        env.extend_from_slice(extra);
        Self::start(
            &[
                "ingest",
                "--kafka-bootstrap-servers",
                bootstrap,
                "--webhook-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ],
            &env,
        )
    }

    pub fn webhook_url(&self, integration: &str) -> String {
        format!(
            "{}/webhooks/bitbucket-datacenter/{integration}",
            self.ready
                .webhook_base_url
                .as_deref()
                .expect("webhook listener")
        )
    }

    pub fn api(&self, path: &str) -> String {
        format!(
            "{}/api/v1{path}",
            self.ready
                .admin_base_url
                .as_deref()
                .expect("admin listener")
        )
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The address of a router's, workers' or reporter's operations listener (`/metrics`,
    /// `/readyz`), from its `… ready operations=ADDR` log line: started with the default
    /// `--metrics-addr 127.0.0.1:0`, it took a free port no other process can race it for.
    pub fn operations_addr(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The line comes right after the ready file; the text log may colour the field name.
            if let Some(addr) = self.log().lines().find_map(|line| {
                let (_, rest) = line.split_once("operations")?;
                let rest = rest.trim_start_matches(|c: char| !c.is_ascii_digit());
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                addr.parse::<std::net::SocketAddr>().ok()?;
                Some(addr)
            }) {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no operations address in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait (at most 30 s) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.wait_exit()
    }

    /// SIGTERM without waiting: the process drains, commits, leaves its consumer group and exits
    /// on its own ([`Inlet::wait_exit`] waits for that).
    pub fn terminate(&self) {
        let pid = self.pid().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
    }

    /// SIGKILL: the process dies without draining or committing anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (at most 30 s, then kills) for the process to exit on its own.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().expect("wait");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Inlet {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {}", String::from_utf8_lossy(&self.body))
        })
    }
}

/// Sends one request.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body.into())).expect("request");
    let response = client.request(request).await.expect("HTTP request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// An admin API call with the given key and JSON body.
pub async fn admin(inlet: &Inlet, key: &str, method: &str, path: &str, body: Value) -> Answer {
    let auth = format!("Bearer {key}");
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    send(
        method,
        &inlet.api(path),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

/// Sends `body` as a Bitbucket webhook signed with `secret`.
pub async fn webhook(
    url: &str,
    event_key: &str,
    delivery_id: &str,
    secret: &str,
    body: &[u8],
) -> Answer {
    let signature = inlet_bitbucket::signature::sign(&Secret::new(secret), body);
    send(
        "POST",
        url,
        &[
            ("x-event-key", event_key),
            ("x-request-id", delivery_id),
            ("x-hub-signature", &signature),
            ("content-type", "application/json; charset=UTF-8"),
        ],
        Bytes::copy_from_slice(body),
    )
    .await
}

/// The push fixture with its commit replaced by `sha` and branch by `branch`.
pub fn push_body(branch: &str, sha: &str) -> Vec<u8> {
    let mut body: Value =
        serde_json::from_str(include_str!("../fixtures/repo_refs_changed.json")).expect("fixture");
    let change = &mut body["changes"][0];
    change["ref"]["id"] = Value::from(format!("refs/heads/{branch}"));
    change["ref"]["displayId"] = Value::from(branch);
    change["refId"] = Value::from(format!("refs/heads/{branch}"));
    change["toHash"] = Value::from(sha);
    serde_json::to_vec_pretty(&body).expect("json")
}

/// Reads a whole topic from the beginning, across all partitions.
pub struct TopicReader {
    consumer: StreamConsumer,
    pub records: Vec<OwnedMessage>,
}

impl TopicReader {
    pub async fn new(bootstrap: &str, topic: &str) -> TopicReader {
        let bootstrap = bootstrap.to_owned();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: StreamConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "inlet-tests")
                .set("enable.auto.commit", "false")
                .create()
                .expect("consumer");
            let metadata = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .expect("metadata");
            let mut assignment = TopicPartitionList::new();
            for partition in metadata.topics()[0].partitions() {
                assignment
                    .add_partition_offset(&topic, partition.id(), Offset::Beginning)
                    .expect("partition");
            }
            consumer.assign(&assignment).expect("assign");
            TopicReader {
                consumer,
                records: Vec::new(),
            }
        })
        .await
        .expect("reader")
    }

    /// Reads until `done(records)` holds, or panics after `timeout` showing what arrived.
    pub async fn until(&mut self, timeout: Duration, done: impl Fn(&[OwnedMessage]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.records) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "condition not met within {timeout:?}; records: {:#?}",
                self.values()
            );
            if let Ok(Ok(message)) = tokio::time::timeout(left, self.consumer.recv()).await {
                self.records.push(message.detach());
            }
        }
    }

    /// Reads whatever arrives during `duration`.
    pub async fn settle(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if let Ok(Ok(message)) = tokio::time::timeout(left, self.consumer.recv()).await {
                self.records.push(message.detach());
            }
        }
    }

    /// Record values parsed as JSON (non-JSON values as strings).
    pub fn values(&self) -> Vec<Value> {
        self.records
            .iter()
            .map(|m| {
                let payload = m.payload().unwrap_or_default();
                serde_json::from_slice(payload)
                    .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(payload).into_owned()))
            })
            .collect()
    }
}

/// The value of a header of `message`.
pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Decisions (as JSON) for delivery `delivery_id`.
pub fn decisions_for(records: &[OwnedMessage], delivery_id: &str) -> Vec<Value> {
    records
        .iter()
        .filter_map(|m| serde_json::from_slice::<Value>(m.payload()?).ok())
        .filter(|v| v["trigger"]["delivery_id"] == delivery_id)
        .collect()
}

/// Creates integration `name` (the default one when `is_default`) with `key` and returns its
/// webhook secret.
pub async fn integration_secret(inlet: &Inlet, key: &str, name: &str, is_default: bool) -> String {
    let created = admin(
        inlet,
        key,
        "POST",
        "/integrations",
        serde_json::json!({"name": name, "is_default": is_default,
                           "api_host_url": "https://bitbucket.example.com"}),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    webhook_secret(inlet, key, name).await
}

/// The webhook secret of integration `name` (from its details).
pub async fn webhook_secret(inlet: &Inlet, key: &str, name: &str) -> String {
    let details = admin(
        inlet,
        key,
        "GET",
        &format!("/integrations/{name}/details"),
        Value::Null,
    )
    .await;
    details.json()["webhook_secret"]
        .as_str()
        .unwrap_or_else(|| panic!("no webhook secret: {details:?}"))
        .to_owned()
}

/// Creates the default integration `bb` on the (fake) Bitbucket at `base_url`, which inlet
/// calls as user `inlet` with `token`.
pub async fn integration_on_fake(inlet: &Inlet, key: &str, base_url: &str, token: &str) {
    let created = admin(
        inlet,
        key,
        "POST",
        "/integrations",
        serde_json::json!({"name": "bb", "is_default": true, "api_host_url": base_url,
                           "username": "inlet", "access_token": token}),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
}

/// The process's `/metrics` text (from its admin listener).
pub async fn metrics(inlet: &Inlet) -> String {
    let base = inlet
        .ready
        .admin_base_url
        .as_deref()
        .expect("admin listener");
    let answer = send("GET", &format!("{base}/metrics"), &[], "").await;
    assert_eq!(answer.status, 200);
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// `inlet dev` with the default integration `bb` and stack `stack_id` on INFRA/network, tracking
/// main: (the process, the admin key, the webhook secret).
pub async fn dev_with_stack(stack_id: &str) -> (Inlet, String, String) {
    let dev = Inlet::dev();
    let key = dev.ready.admin_key.clone().expect("admin key");
    let secret = integration_secret(&dev, &key, "bb", true).await;
    let stack = admin(
        &dev,
        &key,
        "POST",
        "/stacks",
        serde_json::json!({"id": stack_id, "name": stack_id,
                           "repository": "INFRA/network", "branch": "main"}),
    )
    .await;
    assert_eq!(stack.status, 201, "{stack:?}");
    (dev, key, secret)
}

/// Writes a record straight to `topic` of `inlet`'s broker, as any producer could.
pub async fn produce(
    inlet: &Inlet,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: &[(&str, &str)],
) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &inlet.ready.kafka_bootstrap_servers)
        .create()
        .expect("producer");
    let mut owned = OwnedHeaders::new();
    for (name, value) in headers {
        owned = owned.insert(Header {
            key: name,
            value: Some(*value),
        });
    }
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(payload)
                .headers(owned),
            Duration::from_secs(5),
        )
        .await
        .expect("produce");
}

/// The fake Bitbucket requiring `token`, `inlet dev` allowed to call it (plain http), and the
/// default integration `bb` on it with that token: (the fake, the process, the admin key).
/// Periodic reconciliation is off (`INLET_RECONCILE_INTERVAL_S=0`), so the fake sees only the
/// calls a test causes; [`dev_on_fake_with`] sets other environment.
pub async fn dev_on_fake(token: &str) -> (inlet_bitbucket::fake::FakeBitbucket, Inlet, String) {
    dev_on_fake_with(token, &[("INLET_RECONCILE_INTERVAL_S", "0")]).await
}

/// [`dev_on_fake`] with `env` for the process.
pub async fn dev_on_fake_with(
    token: &str,
    env: &[(&str, &str)],
) -> (inlet_bitbucket::fake::FakeBitbucket, Inlet, String) {
    let fake = inlet_bitbucket::fake::FakeBitbucket::start().await;
    fake.require_token(token);
    let mut env = env.to_vec();
    env.push(("INLET_BITBUCKET_ALLOW_HTTP", "true"));
    let dev = Inlet::start(
        &[
            "dev",
            "--webhook-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ],
        &env,
    );
    let key = dev.ready.admin_key.clone().expect("admin key");
    integration_on_fake(&dev, &key, &fake.base_url(), token).await;
    (fake, dev, key)
}

/// A loopback address with a port that was free a moment ago, for a process's listener whose
/// address a test must know (the ready file does not name the operations listener).
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").to_string()
}

/// The `/metrics` text served at `addr`.
pub async fn metrics_at(addr: &str) -> String {
    let answer = send("GET", &format!("http://{addr}/metrics"), &[], "").await;
    assert_eq!(answer.status, 200);
    String::from_utf8_lossy(&answer.body).into_owned()
}

/// The samples of metric `name` in a Prometheus text exposition, with their labels.
pub fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => rest.split_once('}')?,
                None => ("", rest),
            };
            let value = value.strip_prefix(' ')?.trim().parse::<f64>().ok()?;
            // inlet's label values are enum names and ids: no commas or quotes inside.
            let labels = labels
                .split(',')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    Some((key.to_owned(), value.trim_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value))
        })
        .collect()
}

/// The sum of the samples of metric `name` whose labels include every `(key, value)` of `with`.
pub fn metric_sum(text: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .into_iter()
        .filter(|(labels, _)| {
            with.iter()
                .all(|(key, value)| labels.get(*key).map(String::as_str) == Some(*value))
        })
        .map(|(_, value)| value)
        .sum()
}

/// The partitions a router, workers or reporter process reads, from its
/// `inlet_consumer_lag_records{stage, partition}` series (refreshed every 5 s; a partition a
/// rebalance took away disappears at the next refresh).
pub fn partitions_read(text: &str, stage: &str) -> BTreeSet<i32> {
    samples(text, "inlet_consumer_lag_records")
        .into_iter()
        .filter(|(labels, _)| labels.get("stage").map(String::as_str) == Some(stage))
        .filter_map(|(labels, _)| labels.get("partition")?.parse().ok())
        .collect()
}

/// An embedded broker run alone (`inlet dev --only-broker`) and a config for stage processes
/// against it, with fast group rebalances (the embedded broker's default session timeout, 3 s,
/// which stage processes take once they see its cluster id): for tests that kill and restart
/// single stages.
pub struct Cluster {
    /// The broker process; the cluster lives as long as it does.
    pub broker: Inlet,
    /// Its bootstrap address.
    pub bootstrap: String,
    /// The admin key of ingest processes.
    pub admin_key: &'static str,
    config: tempfile::TempDir,
    env: Vec<(&'static str, &'static str)>,
}

impl Cluster {
    /// A broker, the config, and `env` for every stage started on it (besides the admin key,
    /// the shared secrets key and the config).
    pub fn start(env: &[(&'static str, &'static str)]) -> Cluster {
        let broker = Inlet::start(&["dev", "--only-broker"], &[]);
        let config = tempfile::tempdir().expect("tempdir");
        // Stage processes recognise the embedded broker by its cluster id and take its session
        // timeout (3 s); they cannot tell how long a fetch waits on it, so that is set here.
        std::fs::write(
            config.path().join("inlet.toml"),
            "[kafka.librdkafka]\n\"fetch.wait.max.ms\" = \"10\"\n",
        )
        .expect("config");
        Cluster {
            bootstrap: broker.ready.kafka_bootstrap_servers.clone(),
            broker,
            admin_key: "cluster-admin-key-0123456789",
            config,
            env: env.to_vec(),
        }
    }

    /// A stage process (`ingest`, `router`, `workers`, `reporter`) against the broker.
    pub fn stage(&self, stage: &str) -> Inlet {
        self.stage_with(stage, &[])
    }

    /// [`Cluster::stage`] with more arguments (e.g. `--metrics-addr`).
    pub fn stage_with(&self, stage: &str, extra: &[&str]) -> Inlet {
        let config = self
            .config
            .path()
            .join("inlet.toml")
            .to_string_lossy()
            .into_owned();
        let mut args = vec![stage, "--kafka-bootstrap-servers", self.bootstrap.as_str()];
        args.extend_from_slice(extra);
        if stage == "ingest" {
            args.extend([
                "--webhook-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ]);
        }
        let mut env = vec![
            ("INLET_ADMIN_KEY", self.admin_key),
            ("INLET_SECRETS_KEY", SECRETS_KEY),
            ("INLET_CONFIG", config.as_str()),
        ];
        env.extend(self.env.iter().copied());
        Inlet::start(&args, &env)
    }
}

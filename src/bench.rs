//! `inlet bench`: a load generator shipped with the binary, as `redis-benchmark` or `pgbench` ship
//! with their servers.
//!
//! It starts the dev pipeline in-process (or targets a running inlet), creates an integration and
//! stacks, sends signed, realistic, unique pushes (varying repository, branch and commit) at a
//! fixed rate or flat out, and reports accepted requests per second, errors by status, ingest
//! latency percentiles and end-to-end latency from request to `RunDecision` on `inlet.runs`.
//!
//! At a fixed rate, latency is measured from when each request was *due*, not when it was sent, so
//! a stalled server shows up in the percentiles (no coordinated omission). `--compare` also runs the
//! same load against a bare hyper + HMAC + produce loop on the same broker: the ceiling for this
//! design. The load generator runs on its own runtime (threads named [`LOAD_THREAD`]), so each
//! server's CPU per accepted request is the process's less those threads and the embedded
//! broker's, as `../shared/perf/ingest-vs-ceiling` measures it with separate processes.
//!
//! Against several processes (`--url` once per ingest replica, `--metrics-url` once per process),
//! it also reports what each process handled during the measured phase ([`scrape`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use inlet_bitbucket::signature::sign;
use inlet_core::CancellationToken;
use inlet_core::config::Config;
use inlet_core::kafka::{Kafka, header};
use inlet_core::ready::ReadyInfo;
use inlet_core::records::headers;
use inlet_core::secret::Secret;
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::topic_partition_list::Offset;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::stages::{self, DevOptions};

mod registry;
mod scrape;

/// `inlet bench` flags.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Target a running inlet's webhook base URL instead of starting one in-process. Repeat it
    /// for several ingest replicas: connections go to each in turn, as behind a load balancer.
    #[arg(long, value_name = "URL", requires = "admin_url")]
    pub url: Vec<String>,
    /// The running inlet's admin base URL (key from INLET_ADMIN_KEY).
    #[arg(long, value_name = "URL")]
    pub admin_url: Option<String>,
    /// Kafka bootstrap servers of the running inlet, for end-to-end latency.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka_bootstrap_servers: Option<String>,
    /// Requests per second; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of unmeasured load first.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Size of each webhook body in bytes.
    #[arg(long, default_value_t = 5000)]
    pub body_bytes: usize,
    /// Stacks to create.
    #[arg(long, default_value_t = 1000)]
    pub stacks: usize,
    /// Repositories the stacks (and pushes) are spread over.
    #[arg(long, default_value_t = 100)]
    pub repositories: usize,
    /// In-process: run only ingest (no router, no workers), to measure the edge alone.
    #[arg(long)]
    pub only_ingest: bool,
    /// Also run the same load against a bare hyper + HMAC + produce loop and report the ratio.
    #[arg(long)]
    pub compare: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// A process's Prometheus endpoint (e.g. `http://127.0.0.1:9090/metrics`), read when the
    /// measured phase starts and ends to report what that process handled: webhooks accepted,
    /// routed, decisions. Repeat it once per process (ingest, router, workers replicas).
    #[arg(long = "metrics-url", value_name = "URL")]
    pub metrics_urls: Vec<String>,
    /// In-process: give every stack a project root and answer the router's changed-files lookups
    /// from a fake Bitbucket that takes this many milliseconds per request (path filters on).
    #[arg(long, value_name = "MS", conflicts_with = "url")]
    pub bitbucket_latency_ms: Option<u64>,
    /// Instead of load: start `inlet dev --only-broker`, write a synthetic control log of
    /// `--registry-stacks` stacks and 1,000 integrations and its snapshot, then start each stage
    /// against it `--runs` times and report its time to ready and its memory (docs/BENCHMARKS.md).
    #[arg(long, conflicts_with_all = ["url", "compare", "only_ingest"])]
    pub registry_scale: bool,
    /// Stacks of the --registry-scale registry.
    #[arg(long, default_value_t = 100_000)]
    pub registry_stacks: usize,
    /// Starts of each stage with --registry-scale.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Profiling aid: skip the inlet phase and load only the bare loop (implies --compare).
    #[arg(long, hide = true)]
    pub baseline_only: bool,
}

/// Runs the benchmark.
pub async fn run(config: Config, args: BenchArgs) -> anyhow::Result<()> {
    if args.registry_scale {
        return registry::run(&config, args.registry_stacks, args.runs.max(1), args.json).await;
    }
    if args.concurrency == 0 || args.repositories == 0 || args.duration == 0 {
        bail!("--concurrency, --repositories and --duration must be at least 1");
    }
    let shutdown = CancellationToken::new();
    let fake = match args.bitbucket_latency_ms {
        Some(ms) => {
            let fake = inlet_bitbucket::fake::FakeBitbucket::start().await;
            fake.set_delay(Duration::from_millis(ms));
            // Every push touches the root all bench stacks share: each lookup keeps every stack.
            fake.set_default_compare(vec![inlet_bitbucket::fake::FakeChange::modify(
                "infra/main.tf",
            )]);
            Some(fake)
        }
        None => None,
    };
    let (target, pipeline) = match (args.url.first(), &args.admin_url) {
        (Some(url), Some(admin_url)) => {
            let key = std::env::var("INLET_ADMIN_KEY")
                .context("targeting a running inlet needs INLET_ADMIN_KEY")?;
            let ready = ReadyInfo {
                webhook_base_url: Some(url.trim_end_matches('/').to_owned()),
                admin_base_url: Some(admin_url.trim_end_matches('/').to_owned()),
                admin_key: Some(key),
                kafka_bootstrap_servers: args.kafka_bootstrap_servers.clone().unwrap_or_default(),
                topic_prefix: config.kafka.topic_prefix.clone(),
            };
            (ready, None)
        }
        _ => {
            let mut config = config.clone();
            config.bitbucket.allow_http |= fake.is_some();
            config.ingest.webhook_addr = SocketAddr::from(([127, 0, 0, 1], 0));
            config.ingest.admin_addr = SocketAddr::from(([127, 0, 0, 1], 0));
            // Bench traffic is not capped by the in-flight limit it measures against.
            config.ingest.max_in_flight = config.ingest.max_in_flight.max(args.concurrency * 2);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let only_ingest = args.only_ingest;
            let stop = shutdown.clone();
            let task = tokio::spawn(async move {
                stages::dev(
                    config,
                    DevOptions {
                        only_ingest,
                        on_ready: Some(tx),
                        quiet: true,
                        ..DevOptions::default()
                    },
                    stop,
                )
                .await
            });
            let ready = rx.await.context("the in-process pipeline did not start")?;
            (ready, Some(task))
        }
    };

    let setup = Setup::create(&target, &args, fake.as_ref().map(|f| f.base_url())).await?;
    let clients = LoadRuntime::new()?;
    eprintln!(
        "bench: {} stacks on {} repositories ready; {} s warmup, {} s measured, {}, {} connections, {}-byte bodies",
        args.stacks,
        args.repositories,
        args.warmup,
        args.duration,
        rate_text(args.rate),
        args.concurrency,
        args.body_bytes
    );

    let e2e = if args.only_ingest || target.kafka_bootstrap_servers.is_empty() {
        None
    } else {
        Some(DecisionWatch::start(&config, &target).await?)
    };
    // In-process, the router's and workers' consumer groups form a few seconds after the stages
    // are ready (the embedded broker waits for more members first); load sent before would wait
    // for them and show start-up as latency.
    if e2e.is_some() && args.url.is_empty() {
        let metrics = format!(
            "{}/metrics",
            target.admin_base_url.as_deref().unwrap_or_default()
        );
        if !scrape::wait_for_groups(&metrics, &["router", "workers"], Duration::from_secs(30)).await
        {
            eprintln!("bench: router and workers have no partitions after 30 s; measuring anyway");
        }
    }
    let bases = if args.url.is_empty() {
        vec![target.webhook_base_url.clone().unwrap_or_default()]
    } else {
        args.url.clone()
    };
    let inlet_urls: Vec<String> = bases
        .iter()
        .map(|base| {
            format!(
                "{}/webhooks/bitbucket-datacenter/{}",
                base.trim_end_matches('/'),
                setup.integration
            )
        })
        .collect();
    let inlet = if args.baseline_only {
        LoadReport::empty()
    } else {
        load(
            &args,
            &inlet_urls,
            &args.metrics_urls,
            &setup,
            e2e.as_ref(),
            clients.handle(),
        )
        .await?
    };
    let e2e_report = match &e2e {
        Some(watch) => Some(watch.finish(inlet.accepted).await),
        None => None,
    };

    let baseline = if args.compare || args.baseline_only {
        let (url, stop) = baseline::start(&config, &target, &setup.secret).await?;
        let report = load(&args, &[url], &[], &setup, None, clients.handle()).await?;
        stop.cancel();
        Some(report)
    } else {
        None
    };

    // Changed-files lookups only: the reporter's build-status posts go to the same fake.
    let bitbucket_calls = fake.as_ref().map(|f| f.change_lookups().len() as u64);
    let report = Report {
        bitbucket_latency_ms: args.bitbucket_latency_ms,
        bitbucket_calls,
        rate: args.rate,
        concurrency: args.concurrency,
        duration_secs: args.duration,
        body_bytes: args.body_bytes,
        stacks: args.stacks,
        repositories: args.repositories,
        only_ingest: args.only_ingest,
        ratio_to_baseline: baseline
            .as_ref()
            .map(|b| inlet.accepted_per_sec / b.accepted_per_sec.max(1e-9)),
        cpu_ratio_to_baseline: baseline.as_ref().and_then(|b| {
            (inlet.server_cpu_us_per_request > 0.0)
                .then(|| b.server_cpu_us_per_request / inlet.server_cpu_us_per_request)
        }),
        inlet,
        end_to_end: e2e_report,
        baseline,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print();
    }

    // Close every client of the embedded broker before the pipeline stops it: the end-to-end
    // reader and the load generator's connections (the bare loop let go of its producer when
    // it was stopped).
    drop(e2e);
    drop(clients);
    shutdown.cancel();
    if let Some(task) = pipeline {
        task.await??;
    }
    Ok(())
}

fn rate_text(rate: u64) -> String {
    if rate == 0 {
        "flat out".to_owned()
    } else {
        format!("{rate} req/s")
    }
}

/// The integration, its secret and the body template the load uses.
struct Setup {
    integration: String,
    secret: Secret,
    template: Template,
}

impl Setup {
    /// The bench's integration and stacks; with `bitbucket` (a fake's base URL) the integration
    /// calls it and every stack has the project root `infra`, so each push costs a lookup.
    async fn create(
        target: &ReadyInfo,
        args: &BenchArgs,
        bitbucket: Option<String>,
    ) -> anyhow::Result<Setup> {
        let admin = Admin {
            base: format!(
                "{}/api/v1",
                target.admin_base_url.as_deref().unwrap_or_default()
            ),
            key: target.admin_key.clone().unwrap_or_default(),
        };
        let integration = format!("bench-{}", Secret::generate(3).expose());
        admin
            .call(
                "POST",
                "/integrations",
                json!({"name": integration,
                       "api_host_url": bitbucket.as_deref().unwrap_or("https://bitbucket.example.com"),
                       "access_token": "bench-token"}),
                201,
            )
            .await?;
        let details = admin
            .call(
                "GET",
                &format!("/integrations/{integration}/details"),
                Value::Null,
                200,
            )
            .await?;
        let secret = Secret::new(
            details["webhook_secret"]
                .as_str()
                .context("details without a secret")?,
        );
        // Stacks go in concurrently: the control log serialises them anyway.
        let next = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        let root = if bitbucket.is_some() { "infra" } else { "" };
        for _ in 0..32 {
            let (admin, next, integration) = (admin.clone(), next.clone(), integration.clone());
            let (stacks, repositories) = (args.stacks as u64, args.repositories as u64);
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= stacks {
                        return Ok::<_, anyhow::Error>(());
                    }
                    // The first stack of each repository tracks main; the others other branches.
                    let branch = if i < repositories {
                        "main".to_owned()
                    } else {
                        format!("env-{}", i / repositories)
                    };
                    admin
                        .call(
                            "POST",
                            "/stacks",
                            json!({"id": format!("{integration}-{i}"), "name": format!("stack {i}"),
                                   "integration": integration,
                                   "repository": format!("BENCH/repo-{}", i % repositories),
                                   "branch": branch, "project_root": root}),
                            201,
                        )
                        .await?;
                }
            }));
        }
        for worker in workers {
            worker.await??;
        }
        Ok(Setup {
            integration,
            secret,
            template: Template::new(args.body_bytes),
        })
    }
}

/// A tiny admin API client.
#[derive(Clone)]
struct Admin {
    base: String,
    key: String,
}

impl Admin {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Value,
        expect: u16,
    ) -> anyhow::Result<Value> {
        let url: hyper::Uri = format!("{}{path}", self.base).parse()?;
        let authority = url.authority().context("URL without host")?.clone();
        let stream = TcpStream::connect(authority.as_str()).await?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let body = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let request = hyper::Request::builder()
            .method(method)
            .uri(url.path())
            .header("host", authority.as_str())
            .header("authorization", format!("Bearer {}", self.key))
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        if status != expect {
            bail!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// A realistic push body split around what varies per request.
struct Template {
    parts: Vec<String>,
}

impl Template {
    /// A `repo:refs_changed` body of about `size` bytes, padded with a repository description.
    fn new(size: usize) -> Template {
        let body = |description: &str| {
            json!({
                "eventKey": "repo:refs_changed",
                "date": "2026-11-26T09:58:11+1000",
                "actor": {"name": "bench", "emailAddress": "bench@example.com", "id": 7,
                          "displayName": "Bench Bot", "active": true, "slug": "bench", "type": "NORMAL",
                          "links": {"self": [{"href": "https://bitbucket.example.com/users/bench"}]}},
                "repository": {"slug": "{{REPO}}", "id": 84, "name": "{{REPO}}", "scmId": "git",
                    "state": "AVAILABLE", "statusMessage": "Available", "forkable": true,
                    "description": description,
                    "project": {"key": "BENCH", "id": 12, "name": "Bench", "public": false, "type": "NORMAL",
                                "links": {"self": [{"href": "https://bitbucket.example.com/projects/BENCH"}]}},
                    "public": false, "archived": false,
                    "links": {"clone": [
                        {"href": "ssh://git@bitbucket.example.com:7999/bench/{{REPO}}.git", "name": "ssh"},
                        {"href": "https://bitbucket.example.com/scm/bench/{{REPO}}.git", "name": "http"}],
                        "self": [{"href": "https://bitbucket.example.com/projects/BENCH/repos/{{REPO}}/browse"}]}},
                "changes": [{"ref": {"id": "refs/heads/{{BRANCH}}", "displayId": "{{BRANCH}}", "type": "BRANCH"},
                             "refId": "refs/heads/{{BRANCH}}",
                             "fromHash": "ecddabb624f6f5ba43816f5926e580a5f680a932",
                             "toHash": "{{SHA}}", "type": "UPDATE"}]
            })
            .to_string()
        };
        let bare = body("").len();
        let filler = "Terraform for the shared network: VPCs, peering, transit gateways. ";
        let description: String = filler
            .chars()
            .cycle()
            .take(size.saturating_sub(bare + 40))
            .collect();
        let text = body(&description);
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        // Compact JSON never holds `{{` outside a string, so the markers split it safely.
        while let Some(at) = rest.find("{{") {
            let end = rest[at..]
                .find("}}")
                .map(|e| at + e + 2)
                .unwrap_or(rest.len());
            parts.push(rest[..at].to_owned());
            parts.push(rest[at..end].to_owned());
            rest = &rest[end..];
        }
        parts.push(rest.to_owned());
        Template { parts }
    }

    /// The body of request `n`: repository, branch and commit vary, the commit always unique.
    fn render(&self, n: u64, repositories: u64) -> Vec<u8> {
        let repo = format!("repo-{}", n % repositories);
        // Every fourth push goes to a feature branch (proposed runs), the rest to main.
        let branch = if n % 4 == 3 {
            format!("feature-{}", n % 97)
        } else {
            "main".to_owned()
        };
        let sha = format!("{n:040x}");
        let mut out = String::with_capacity(self.parts.iter().map(String::len).sum::<usize>() + 64);
        for part in &self.parts {
            match part.as_str() {
                "{{REPO}}" => out.push_str(&repo),
                "{{BRANCH}}" => out.push_str(&branch),
                "{{SHA}}" => out.push_str(&sha),
                other => out.push_str(other),
            }
        }
        out.into_bytes()
    }
}

/// What one load phase measured.
#[derive(Debug, Serialize)]
struct LoadReport {
    accepted: u64,
    accepted_per_sec: f64,
    errors: BTreeMap<String, u64>,
    latency_ms: Percentiles,
    /// CPU the whole process used during the phase, warmup included.
    cpu_seconds: f64,
    /// CPU the server spent per accepted request in the measured phase, in microseconds: the
    /// process less the load generator's threads and the embedded broker's (router, workers and
    /// the end-to-end reader included when they run).
    server_cpu_us_per_request: f64,
    /// Wall-clock length of the phase, warmup included.
    wall_seconds: f64,
    /// What each `--metrics-url` process handled during the measured phase.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    processes: Vec<scrape::ProcessReport>,
}

impl LoadReport {
    fn empty() -> LoadReport {
        LoadReport {
            accepted: 0,
            accepted_per_sec: 0.0,
            errors: BTreeMap::new(),
            latency_ms: Percentiles {
                p50: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            },
            cpu_seconds: 0.0,
            server_cpu_us_per_request: 0.0,
            wall_seconds: 0.0,
            processes: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
struct Percentiles {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            p50: ms(histogram.value_at_quantile(0.5)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

#[derive(Default)]
struct Tally {
    accepted: u64,
    errors: BTreeMap<String, u64>,
}

/// Runs warmup and measured load against `urls` (connection `i` to `urls[i % len]`), reading
/// each of `metrics_urls` when the measured phase starts and when it ends.
async fn load(
    args: &BenchArgs,
    urls: &[String],
    metrics_urls: &[String],
    setup: &Setup,
    watch: Option<&DecisionWatch>,
    clients: &tokio::runtime::Handle,
) -> anyhow::Result<LoadReport> {
    let mut targets = Vec::new();
    for url in urls {
        let uri: hyper::Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
        let authority = uri.authority().context("URL without host")?.to_string();
        targets.push((authority, uri.path().to_owned()));
    }
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + Duration::from_secs(args.warmup);
    let stop_at = measure_from + Duration::from_secs(args.duration);
    let scrapes = (!metrics_urls.is_empty()).then(|| {
        let urls = metrics_urls.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let before = scrape::read_all(&urls).await;
            let read_at = Instant::now();
            tokio::time::sleep_until(stop_at.into()).await;
            let after = scrape::read_all(&urls).await;
            let seconds = read_at.elapsed().as_secs_f64();
            urls.iter()
                .zip(before.into_iter().zip(after))
                .map(|(url, (before, after))| {
                    scrape::ProcessReport::between(url, before, after, seconds)
                })
                .collect::<Vec<_>>()
        })
    });
    let counter = Arc::new(AtomicU64::new(0));
    let serial = Arc::new(AtomicU64::new(rand_start()));
    let cpu_before = cpu_seconds();
    let wall_before = Instant::now();
    let measured_cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        CpuSplit::now()
    });
    let template = Arc::new(setup.template.parts.clone());
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let (authority, path) = &targets[i % targets.len()];
        let (counter, serial, template) = (counter.clone(), serial.clone(), template.clone());
        let (authority, path, secret) = (authority.clone(), path.clone(), setup.secret.clone());
        let integration = setup.integration.clone();
        let (rate, repositories) = (args.rate, args.repositories as u64);
        let pending = watch.map(|w| w.pending.clone());
        // On the load generator's runtime, connection included: its sockets are polled by its
        // threads, not by the server's.
        tasks.push(clients.spawn(async move {
            let stream = TcpStream::connect(authority.as_str())
                .await
                .with_context(|| format!("connecting to {authority}"))?;
            let _ = stream.set_nodelay(true);
            let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let template = Template {
                parts: (*template).clone(),
            };
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid bounds"));
            let mut tally = Tally::default();
            loop {
                let index = counter.fetch_add(1, Ordering::Relaxed);
                // When the request is due: at a fixed rate, its slot; flat out, now.
                let due = match (index * 1_000_000_000).checked_div(rate) {
                    Some(nanos) => start + Duration::from_nanos(nanos),
                    None => Instant::now(),
                };
                if due >= stop_at {
                    break;
                }
                if rate > 0 {
                    tokio::time::sleep_until(due.into()).await;
                }
                let n = serial.fetch_add(1, Ordering::Relaxed);
                let body = template.render(n, repositories);
                let bench_key = format!("{integration}/bench/repo-{}", n % repositories);
                let signature = sign(&secret, &body);
                let delivery = format!("bench-{n}");
                let request = hyper::Request::builder()
                    .method("POST")
                    .uri(path.as_str())
                    .header("host", authority.as_str())
                    .header("content-type", "application/json; charset=UTF-8")
                    .header("x-event-key", "repo:refs_changed")
                    .header("x-request-id", delivery.as_str())
                    .header("x-bench-key", bench_key)
                    .header("x-hub-signature", signature)
                    .body(Full::new(Bytes::from(body)))?;
                let measured = due >= measure_from;
                if let (true, Some(pending)) = (measured, &pending) {
                    pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(delivery, due);
                }
                let response = sender.send_request(request).await?;
                let status = response.status().as_u16();
                response.into_body().collect().await?;
                if !measured {
                    continue;
                }
                let micros = due.elapsed().as_micros().max(1) as u64;
                let _ = histogram.record(micros);
                if status == 202 {
                    tally.accepted += 1;
                } else {
                    *tally.errors.entry(status.to_string()).or_default() += 1;
                }
            }
            Ok::<_, anyhow::Error>((histogram, tally))
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut tally = Tally::default();
    for task in tasks {
        let (h, t) = task.await??;
        histogram.add(h)?;
        tally.accepted += t.accepted;
        for (status, count) in t.errors {
            *tally.errors.entry(status).or_default() += count;
        }
    }
    let elapsed = Instant::now()
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(1e-9);
    let elapsed = elapsed.min(args.duration as f64).max(1e-9);
    let cpu_end = CpuSplit::now();
    let server_seconds = measured_cpu.await?.server_until(&cpu_end);
    let processes = match scrapes {
        Some(task) => task.await?,
        None => Vec::new(),
    };
    Ok(LoadReport {
        accepted: tally.accepted,
        accepted_per_sec: tally.accepted as f64 / elapsed,
        errors: tally.errors,
        latency_ms: Percentiles::of(&histogram),
        cpu_seconds: cpu_seconds() - cpu_before,
        server_cpu_us_per_request: server_seconds * 1e6 / tally.accepted.max(1) as f64,
        wall_seconds: wall_before.elapsed().as_secs_f64(),
        processes,
    })
}

/// A random starting serial, so repeated runs against one pipeline send new commits.
fn rand_start() -> u64 {
    let hex = Secret::generate(4);
    u64::from_str_radix(hex.expose(), 16).unwrap_or_default() << 24
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_cpu(&stat).map(|(_, seconds)| seconds))
        .unwrap_or(0.0)
}

/// The command name and CPU seconds (utime + stime) of a `/proc/<pid>[/task/<tid>]/stat` line.
fn stat_cpu(stat: &str) -> Option<(&str, f64)> {
    // The name is in parentheses and may hold spaces and parentheses: up to the last `)`.
    let (head, rest) = stat.rsplit_once(')')?;
    let (_, name) = head.split_once('(')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    // Linux reports them in USER_HZ, 100 on every mainstream architecture.
    Some((name, (ticks(11)? + ticks(12)?) / 100.0))
}

/// The name of the load generator's threads (its own runtime), so that their CPU is not counted
/// as the server's.
const LOAD_THREAD: &str = "bench-load";

/// The embedded broker's threads: librdkafka's mock broker and the thread that holds it.
fn is_broker_thread(name: &str) -> bool {
    name == "rdk:mock" || name.starts_with("inlet-embedded")
}

/// This process's CPU seconds at one moment, split by who spent them.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSplit {
    process: f64,
    load: f64,
    broker: f64,
}

impl CpuSplit {
    fn now() -> CpuSplit {
        let mut split = CpuSplit {
            process: cpu_seconds(),
            ..CpuSplit::default()
        };
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return split;
        };
        for task in tasks.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            match stat_cpu(&stat) {
                Some((name, seconds)) if name.starts_with(LOAD_THREAD) => split.load += seconds,
                Some((name, seconds)) if is_broker_thread(name) => split.broker += seconds,
                _ => {}
            }
        }
        split
    }

    /// CPU seconds the server spent from `self` to `later`: the whole process (threads that
    /// exited included) less the load generator's and the embedded broker's threads, which live
    /// through a phase.
    fn server_until(&self, later: &CpuSplit) -> f64 {
        let process = later.process - self.process;
        let others = (later.load - self.load) + (later.broker - self.broker);
        (process - others).max(0.0)
    }
}

/// The load generator's runtime: its own threads, named [`LOAD_THREAD`], so the server's CPU
/// can be told from the client's as `../shared/perf/ingest-vs-ceiling` does with two processes.
/// Shut down without blocking on drop (a runtime dropped inside another one's task would panic).
struct LoadRuntime(Option<tokio::runtime::Runtime>);

impl LoadRuntime {
    fn new() -> anyhow::Result<LoadRuntime> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(LOAD_THREAD)
            .enable_all()
            .build()?;
        Ok(LoadRuntime(Some(runtime)))
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        match &self.0 {
            Some(runtime) => runtime.handle(),
            None => unreachable!("the runtime is taken only on drop"),
        }
    }
}

impl Drop for LoadRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Follows `inlet.runs` and measures from each request's due time to its first decision.
struct DecisionWatch {
    pending: Arc<Mutex<HashMap<String, Instant>>>,
    /// Every decision of measured deliveries: (first due time seen, last decision time).
    span: Arc<Mutex<Option<(Instant, Instant)>>>,
    /// Decisions (all stacks) of measured deliveries.
    decisions: Arc<AtomicU64>,
    histogram: Arc<Mutex<Histogram<u64>>>,
    decided: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl DecisionWatch {
    async fn start(config: &Config, target: &ReadyInfo) -> anyhow::Result<DecisionWatch> {
        let kafka = Kafka::new(&config.kafka, &target.kafka_bootstrap_servers, true);
        let topic = format!("{}runs", target.topic_prefix);
        let consumer: StreamConsumer = kafka.read_all(&topic, Offset::End).await?;
        let pending: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
            1,
            600_000_000,
            3,
        )?));
        let decided = Arc::new(AtomicU64::new(0));
        let decisions = Arc::new(AtomicU64::new(0));
        let span: Arc<Mutex<Option<(Instant, Instant)>>> = Arc::default();
        let stop = CancellationToken::new();
        let task = {
            let (pending, histogram, decided, stop) = (
                pending.clone(),
                histogram.clone(),
                decided.clone(),
                stop.clone(),
            );
            let (decisions, span) = (decisions.clone(), span.clone());
            let due_of: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
            tokio::spawn(async move {
                loop {
                    let message = tokio::select! {
                        _ = stop.cancelled() => return,
                        message = consumer.recv() => message,
                    };
                    let Ok(message) = message else { continue };
                    let Some(delivery) = header(&message, headers::DELIVERY_ID) else {
                        continue;
                    };
                    let due = pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(delivery);
                    // Count every decision of a measured delivery (one per stack), and the time
                    // from the first such request's due time to the last decision.
                    let measured_due = {
                        let mut due_of = due_of.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(due) = due {
                            due_of.insert(delivery.to_owned(), due);
                        }
                        due_of.get(delivery).copied()
                    };
                    if let Some(first_due) = measured_due {
                        decisions.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        let mut span = span.lock().unwrap_or_else(|p| p.into_inner());
                        *span = Some(match *span {
                            Some((start, _)) => (start.min(first_due), now),
                            None => (first_due, now),
                        });
                    }
                    if let Some(due) = due {
                        let micros = due.elapsed().as_micros().max(1) as u64;
                        let _ = histogram
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .record(micros);
                        decided.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = message.offset();
                }
            })
        };
        Ok(DecisionWatch {
            pending,
            span,
            decisions,
            histogram,
            decided,
            stop,
            task,
        })
    }

    /// Waits (up to 30 s) for the decisions of the accepted requests, then reports.
    async fn finish(&self, accepted: u64) -> EndToEnd {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.decided.load(Ordering::Relaxed) < accepted && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let the last decisions of each delivery (one per stack) arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.stop.cancel();
        let histogram = self.histogram.lock().unwrap_or_else(|p| p.into_inner());
        let decisions = self.decisions.load(Ordering::Relaxed);
        let seconds = self
            .span
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(start, end)| end.saturating_duration_since(start).as_secs_f64())
            .unwrap_or_default();
        EndToEnd {
            decided: self.decided.load(Ordering::Relaxed),
            decisions,
            decisions_per_sec: decisions as f64 / seconds.max(1e-9),
            latency_ms: Percentiles::of(&histogram),
        }
    }
}

impl Drop for DecisionWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Serialize)]
struct EndToEnd {
    /// Measured deliveries that reached a decision.
    decided: u64,
    /// Decisions (one per stack triggered) of measured deliveries.
    decisions: u64,
    /// Those decisions per second, from the first measured request to the last decision: the
    /// router's and workers' throughput when the load exceeds it.
    decisions_per_sec: f64,
    latency_ms: Percentiles,
}

#[derive(Debug, Serialize)]
struct Report {
    /// Latency of the fake Bitbucket answering path-filter lookups, when one was used.
    bitbucket_latency_ms: Option<u64>,
    /// Requests the fake Bitbucket received (warmup included).
    bitbucket_calls: Option<u64>,
    rate: u64,
    concurrency: usize,
    duration_secs: u64,
    body_bytes: usize,
    stacks: usize,
    repositories: usize,
    only_ingest: bool,
    inlet: LoadReport,
    end_to_end: Option<EndToEnd>,
    baseline: Option<LoadReport>,
    ratio_to_baseline: Option<f64>,
    /// The bare loop's server CPU per request over inlet's (the figure of
    /// `../shared/perf/ingest-vs-ceiling`): 1 means inlet costs what the bare loop does.
    cpu_ratio_to_baseline: Option<f64>,
}

impl Report {
    fn print(&self) {
        let phase = |name: &str, report: &LoadReport| {
            println!("{name}");
            println!(
                "  accepted        {} ({:.0}/s)",
                report.accepted, report.accepted_per_sec
            );
            let errors: Vec<String> = report
                .errors
                .iter()
                .map(|(status, count)| format!("{status}: {count}"))
                .collect();
            println!(
                "  errors          {}",
                if errors.is_empty() {
                    "none".to_owned()
                } else {
                    errors.join(", ")
                }
            );
            let l = &report.latency_ms;
            println!(
                "  latency         p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
                l.p50, l.p99, l.p999, l.max
            );
            println!(
                "  CPU             {:.1} s in {:.1} s for the whole process, load generator included ({:.2} cores)",
                report.cpu_seconds,
                report.wall_seconds,
                report.cpu_seconds / report.wall_seconds.max(1e-9)
            );
            println!(
                "  server CPU      {:.1} µs per accepted request (the process less the load generator's and the embedded broker's threads)",
                report.server_cpu_us_per_request
            );
        };
        println!(
            "inlet bench: {} s at {}, {} connections, {}-byte bodies, {} stacks on {} repositories{}",
            self.duration_secs,
            rate_text(self.rate),
            self.concurrency,
            self.body_bytes,
            self.stacks,
            self.repositories,
            if self.only_ingest {
                ", ingest only"
            } else {
                ""
            }
        );
        phase("inlet", &self.inlet);
        if let Some(e2e) = &self.end_to_end {
            let l = &e2e.latency_ms;
            println!(
                "  end-to-end      p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  ({} of {} decided)",
                l.p50, l.p99, l.p999, l.max, e2e.decided, self.inlet.accepted
            );
            println!(
                "  decisions       {} ({:.0}/s from the first measured request to the last decision)",
                e2e.decisions, e2e.decisions_per_sec
            );
        }
        let processes = &self.inlet.processes;
        if let Some(seconds) = processes.iter().map(|p| p.seconds).reduce(f64::max) {
            println!(
                "  per process     what each --metrics-url handled in the {seconds:.1} s measured"
            );
            for process in processes {
                for line in process.lines(processes) {
                    println!("    {line}");
                }
            }
        }
        if let (Some(ms), Some(calls)) = (self.bitbucket_latency_ms, self.bitbucket_calls) {
            println!(
                "  bitbucket       {calls} changed-files calls at {ms} ms each, warmup included \
                 ({:.2} per accepted webhook)",
                calls as f64 / self.inlet.accepted.max(1) as f64
            );
        }
        if let Some(baseline) = &self.baseline {
            phase("bare hyper + HMAC + produce", baseline);
        }
        if let Some(ratio) = self.ratio_to_baseline {
            println!("inlet / bare loop: {ratio:.2} of its requests per second");
        }
        if let Some(ratio) = self.cpu_ratio_to_baseline {
            println!("bare loop / inlet CPU per request = {ratio:.2}");
        }
    }
}

/// The ceiling for this design: a bare hyper server that verifies the HMAC and produces the body,
/// answering once the broker acknowledged. No routing table, limits, parsing or metrics.
mod baseline {
    use super::*;
    use hyper::server::conn::http1 as server;
    use hyper::service::service_fn;
    use rdkafka::producer::FutureRecord;
    use std::convert::Infallible;

    pub async fn start(
        config: &Config,
        target: &ReadyInfo,
        secret: &Secret,
    ) -> anyhow::Result<(String, CancellationToken)> {
        if target.kafka_bootstrap_servers.is_empty() {
            bail!("--compare needs the Kafka bootstrap servers");
        }
        let kafka = Kafka::new(&config.kafka, &target.kafka_bootstrap_servers, true);
        let producer = kafka.producer(None).await?;
        let topic = format!("{}webhooks", target.topic_prefix);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}/bare", listener.local_addr()?);
        let stop = CancellationToken::new();
        let secret = secret.clone();
        let token = stop.clone();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let _ = stream.set_nodelay(true);
                let (producer, topic, secret) = (producer.clone(), topic.clone(), secret.clone());
                let stopped = token.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (producer, topic, secret) =
                                (producer.clone(), topic.clone(), secret.clone());
                            async move {
                                let signature = request
                                    .headers()
                                    .get("x-hub-signature")
                                    .map(|v| v.as_bytes().to_vec());
                                // Keyed like inlet's records (which are keyed by repository), so
                                // both spread over partitions alike.
                                let key = request
                                    .headers()
                                    .get("x-request-id")
                                    .map(|v| v.as_bytes().to_vec())
                                    .unwrap_or_default();
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let status = if inlet_bitbucket::signature::verify(
                                    signature.as_deref(),
                                    &body,
                                    [&secret],
                                )
                                .is_err()
                                {
                                    401
                                } else {
                                    match producer
                                        .send(
                                            FutureRecord::to(&topic)
                                                .key(key.as_slice())
                                                .payload(body.as_ref()),
                                            Duration::from_secs(5),
                                        )
                                        .await
                                    {
                                        Ok(_) => 202,
                                        Err(_) => 503,
                                    }
                                };
                                let mut response = hyper::Response::new(Full::new(Bytes::new()));
                                *response.status_mut() =
                                    hyper::StatusCode::from_u16(status).unwrap_or_default();
                                Ok::<_, Infallible>(response)
                            }
                        });
                    let serving =
                        server::Builder::new().serve_connection(TokioIo::new(stream), service);
                    // Stopped, a connection lets go of its producer at once, not when its client
                    // goes: no producer of the bare loop outlives the embedded broker.
                    tokio::select! {
                        _ = serving => {}
                        _ = stopped.cancelled() => {}
                    }
                });
            }
        });
        Ok((url, stop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rendered bodies are the requested size, valid pushes, and unique per request.
    #[test]
    fn template_renders_unique_valid_pushes() {
        let template = Template::new(5000);
        let a = template.render(1, 10);
        let b = template.render(2, 10);
        assert!((4900..=5100).contains(&a.len()), "{}", a.len());
        assert_ne!(a, b);
        let push = inlet_bitbucket::parse_refs_changed(&a).expect("valid push");
        assert_eq!(push.repository.full_name(), "BENCH/repo-1");
        assert_eq!(push.changes[0].to_hash, format!("{:040x}", 1));
        let feature = template.render(3, 10);
        let push = inlet_bitbucket::parse_refs_changed(&feature).expect("valid push");
        assert_eq!(push.changes[0].reference.short_name(), "feature-3");
    }

    /// A stat line's name may hold spaces and parentheses; CPU is utime + stime in USER_HZ.
    #[test]
    fn stat_lines_parse() {
        let line = "4242 (rdk:main (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 9";
        assert_eq!(stat_cpu(line), Some(("rdk:main (x) y", 3.0)));
        assert_eq!(stat_cpu("4242 (short) S 1 2"), None);
    }

    /// CPU spent on a thread named like the load generator's is the load's, not the server's.
    #[cfg(target_os = "linux")]
    #[test]
    fn load_threads_are_not_the_server() {
        let before = CpuSplit::now();
        let spent = std::thread::Builder::new()
            .name(format!("{LOAD_THREAD}-test"))
            .spawn(|| {
                // Busy until this thread's own counters show 50 ms (their granularity is 10 ms).
                let own = || {
                    std::fs::read_to_string("/proc/thread-self/stat")
                        .ok()
                        .and_then(|stat| stat_cpu(&stat).map(|(_, s)| s))
                        .unwrap_or(0.0)
                };
                let mut x = 0u64;
                while own() < 0.05 {
                    for i in 0..100_000u64 {
                        x = x.wrapping_mul(31).wrapping_add(i);
                    }
                }
                std::hint::black_box(x);
                // Measured while the thread still exists, as a phase's end is.
                CpuSplit::now()
            })
            .expect("spawn")
            .join()
            .expect("join");
        assert!(spent.load - before.load >= 0.05, "{before:?} {spent:?}");
        // The process counted it; the server's share does not.
        let process = spent.process - before.process;
        assert!(process >= 0.05, "{before:?} {spent:?}");
        assert!(
            before.server_until(&spent) <= process - (spent.load - before.load) + 1e-9,
            "{before:?} {spent:?}"
        );
    }
}

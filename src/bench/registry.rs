//! `inlet bench --registry-scale`: how long each stage takes to be ready, and how much memory it
//! holds, with a large registry (by default 100,000 stacks and 1,000 integrations, the log of
//! `inlet_control::synthetic`).
//!
//! Steps: start `inlet dev --only-broker` as a child process; write the synthetic log to its
//! `inlet.control` (the embedded broker keeps only its last 5 MiB) and, as a writing process would,
//! the snapshot of its last offset to `inlet.control-snapshots`; then, one after the other and
//! `--runs` times, start `inlet ingest`, `inlet router`, `inlet workers` and `inlet reporter`
//! against it and measure the time from spawning the process to its ready file, and its resident
//! memory (VmRSS, and the peak VmHWM, from /proc) one second after it was ready. Linux only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use inlet_control::commands::ControlRecord;
use inlet_control::registry::Registry;
use inlet_control::{snapshot, synthetic};
use inlet_core::config::Config;
use inlet_core::kafka::Kafka;
use inlet_core::topics::Topics;
use rdkafka::producer::FutureRecord;
use serde::Serialize;

/// The key the synthetic log's secrets are sealed with (ingest checks that it opens them).
const SECRETS_KEY_HEX: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// One stage start.
#[derive(Debug, Serialize)]
struct Start {
    stage: &'static str,
    run: usize,
    ready_ms: u64,
    /// From the stage's log: loading the snapshot, and catching up (snapshot + tail).
    snapshot_ms: Option<u64>,
    catch_up_ms: Option<u64>,
    rss_mib: f64,
    hwm_mib: f64,
}

/// Runs the registry-scale measurement with `stacks` stacks, `runs` times per stage.
pub async fn run(config: &Config, stacks: usize, runs: usize, json: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the inlet binary")?;
    let dir = std::env::temp_dir().join(format!("inlet-registry-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut broker = Guard(
        Command::new(&exe)
            .args(["dev", "--only-broker", "--ready-file"])
            .arg(dir.join("broker.json"))
            .env("INLET_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting the embedded broker")?,
    );
    let ready = wait_ready(
        &dir.join("broker.json"),
        &mut broker.0,
        Duration::from_secs(60),
    )?;
    let bootstrap = ready["kafka_bootstrap_servers"]
        .as_str()
        .context("the broker's ready file names no bootstrap servers")?
        .to_owned();

    let loaded = Instant::now();
    let (records, bytes, sizes) = load(config, &bootstrap, stacks).await?;
    eprintln!(
        "wrote {records} control records ({:.1} MiB) and their snapshot ({sizes:?}) in {:.1?}",
        bytes as f64 / (1024.0 * 1024.0),
        loaded.elapsed()
    );

    let mut starts = Vec::new();
    for run in 1..=runs {
        for stage in ["ingest", "router", "workers", "reporter"] {
            let start = start_stage(&exe, &dir, &bootstrap, stage, run)?;
            eprintln!(
                "run {run} {stage:>8}: ready in {} ms (snapshot loaded in {:?} ms, caught up in \
                 {:?} ms), VmRSS {:.1} MiB, VmHWM {:.1} MiB",
                start.ready_ms, start.snapshot_ms, start.catch_up_ms, start.rss_mib, start.hwm_mib
            );
            starts.push(start);
        }
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    report(&starts, json);
    Ok(())
}

/// Writes the synthetic log to `inlet.control` and the snapshot of its last offset.
async fn load(
    config: &Config,
    bootstrap: &str,
    stacks: usize,
) -> anyhow::Result<(usize, usize, inlet_control::registry::RegistrySizes)> {
    let topics = Topics::new(&config.kafka.topic_prefix);
    let kafka = Kafka::new(&config.kafka, bootstrap, false);
    let producer = kafka.producer(None).await?;
    let log = synthetic::generate(stacks);
    let mut registry = Registry::new();
    let topic = topics.control();
    let mut last = -1;
    // Acknowledged in windows: the producer's queue holds at most 100,000 messages.
    for window in log.records.chunks(10_000) {
        let mut deliveries = Vec::with_capacity(window.len());
        for bytes in window {
            let record: ControlRecord = serde_json::from_slice(bytes)?;
            if let Err(rejection) = registry.apply(&record) {
                bail!("the synthetic log was rejected: {rejection:?}");
            }
            let key = record.command.entity_key();
            let delivery = producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(bytes))
                .map_err(|(err, _)| err)?;
            deliveries.push(delivery);
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(delivery)) => last = last.max(delivery.offset),
                Ok(Err((err, _))) => bail!("writing the control log: {err}"),
                Err(_) => bail!("writing the control log: canceled"),
            }
        }
    }
    if last + 1 != log.records.len() as i64 {
        bail!(
            "the control log was not empty: its last offset is {last}, {} records written",
            log.records.len()
        );
    }
    let sizes = registry.sizes();
    let partitions = kafka.partition_count(&topics.control_snapshots()).await? as i32;
    let registry = RwLock::new(registry);
    snapshot::write(
        &registry,
        last,
        &producer,
        &topics.control_snapshots(),
        partitions,
    )
    .await
    .map_err(|err| anyhow::anyhow!("writing the snapshot: {err}"))?;
    Ok((log.records.len(), log.bytes(), sizes))
}

/// Starts `stage`, waits for its ready file, reads its memory a second later and stops it.
fn start_stage(
    exe: &Path,
    dir: &Path,
    bootstrap: &str,
    stage: &'static str,
    run: usize,
) -> anyhow::Result<Start> {
    let ready_file = dir.join(format!("{stage}-{run}.json"));
    let log_file = dir.join(format!("{stage}-{run}.log"));
    let mut command = Command::new(exe);
    command
        .arg(stage)
        .args(["--kafka-bootstrap-servers", bootstrap, "--ready-file"])
        .arg(&ready_file)
        .env("INLET_LOG", "info,librdkafka=warn,rdkafka=warn")
        .env("INLET_SECRETS_KEY", SECRETS_KEY_HEX)
        .env("INLET_RECONCILE_INTERVAL_S", "0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_file)?);
    if stage == "ingest" {
        command
            .args([
                "--webhook-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .env("INLET_ADMIN_KEY", "registry-bench-admin-key-0123");
    } else {
        command.args(["--metrics-addr", "127.0.0.1:0"]);
    }
    let started = Instant::now();
    let mut child = Guard(
        command
            .spawn()
            .with_context(|| format!("starting {stage}"))?,
    );
    if let Err(err) = wait_ready(&ready_file, &mut child.0, Duration::from_secs(120)) {
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        bail!("{stage}: {err}\n{log}");
    }
    let ready_ms = started.elapsed().as_millis() as u64;
    std::thread::sleep(Duration::from_secs(1));
    let (rss_mib, hwm_mib) = memory(child.0.id())?;
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    let elapsed = |message: &str| -> Option<u64> {
        let line = log.lines().find(|line| line.contains(message))?;
        let (_, rest) = line.split_once("elapsed_ms=")?;
        rest.split_whitespace().next()?.parse().ok()
    };
    Ok(Start {
        stage,
        run,
        ready_ms,
        snapshot_ms: elapsed("control snapshot loaded"),
        catch_up_ms: elapsed("control log caught up"),
        rss_mib,
        hwm_mib,
    })
}

/// VmRSS and VmHWM of process `pid`, in MiB.
fn memory(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading /proc (Linux only)")?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn wait_ready(
    path: &PathBuf,
    child: &mut Child,
    limit: Duration,
) -> anyhow::Result<serde_json::Value> {
    let until = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(value) = serde_json::from_str(&text)
        {
            return Ok(value);
        }
        if let Some(status) = child.try_wait()? {
            bail!("the process exited before it was ready: {status}");
        }
        if Instant::now() > until {
            bail!("not ready within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops the child (SIGTERM, then SIGKILL after 20 s) when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn report(starts: &[Start], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(starts).unwrap_or_default()
        );
        return;
    }
    println!(
        "stage     ready ms (min / median / max)   VmRSS MiB (min / median / max)   VmHWM MiB (max)"
    );
    for stage in ["ingest", "router", "workers", "reporter"] {
        let of: Vec<&Start> = starts.iter().filter(|s| s.stage == stage).collect();
        if of.is_empty() {
            continue;
        }
        let spread = |values: Vec<f64>| -> (f64, f64, f64) {
            let mut values = values;
            values.sort_by(f64::total_cmp);
            (
                values[0],
                values[values.len() / 2],
                values[values.len() - 1],
            )
        };
        let ready = spread(of.iter().map(|s| s.ready_ms as f64).collect());
        let rss = spread(of.iter().map(|s| s.rss_mib).collect());
        let hwm = spread(of.iter().map(|s| s.hwm_mib).collect());
        println!(
            "{stage:<9} {:>6.0} / {:>6.0} / {:>6.0}            {:>6.1} / {:>6.1} / {:>6.1}            {:>6.1}",
            ready.0, ready.1, ready.2, rss.0, rss.1, rss.2, hwm.2
        );
    }
}

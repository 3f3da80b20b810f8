//! Per-process counts for `inlet bench --metrics-url`: each process's `/metrics` is read when the
//! measured phase starts and when it ends, and the difference is what that process handled in
//! it: webhooks accepted (ingest), webhooks routed and triggers emitted (router), decisions
//! (workers), build statuses (reporter). With several replicas of a stage it shows how the load
//! was split between them.
//!
//! Read-only and best effort: a process that cannot be read (stopped, wrong URL) is reported as
//! such and does not fail the benchmark.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

/// The stages a process can be, in the order they are reported.
const STAGES: [&str; 4] = ["ingest", "router", "workers", "reporter"];

/// What one read of a process's metrics says, summed over labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// `inlet_ingest_requests_total{outcome="accepted"}`.
    accepted: f64,
    /// `inlet_ingest_requests_total` with any other outcome (pings, refusals, 503s).
    not_accepted: f64,
    /// `inlet_router_events_total{outcome="routed"}`.
    routed: f64,
    /// `inlet_router_triggers_total`.
    triggers: f64,
    /// `inlet_workers_decisions_total` with status `requested` or `blocked` (a `RunDecision`
    /// written to `inlet.runs`; status `none` writes none).
    decisions: f64,
    /// `inlet_reporter_statuses_total`.
    statuses: f64,
    /// Partitions each consuming stage reads: its `inlet_consumer_lag_records{stage, partition}`
    /// series.
    partitions: BTreeMap<String, usize>,
    /// Partitions the consumer group has assigned each stage now:
    /// `inlet_consumer_assigned_partitions{stage}`.
    assigned: BTreeMap<String, f64>,
}

impl Snapshot {
    /// Reads a Prometheus text exposition; lines it does not understand are skipped.
    pub fn parse(text: &str) -> Snapshot {
        let mut snapshot = Snapshot::default();
        for (name, labels, value) in text.lines().filter_map(sample) {
            let label = |key: &str| labels.get(key).map(String::as_str);
            match name {
                "inlet_ingest_requests_total" if label("outcome") == Some("accepted") => {
                    snapshot.accepted += value;
                }
                "inlet_ingest_requests_total" => snapshot.not_accepted += value,
                "inlet_router_events_total" if label("outcome") == Some("routed") => {
                    snapshot.routed += value;
                }
                "inlet_router_triggers_total" => snapshot.triggers += value,
                "inlet_workers_decisions_total"
                    if matches!(label("status"), Some("requested" | "blocked")) =>
                {
                    snapshot.decisions += value;
                }
                "inlet_reporter_statuses_total" => snapshot.statuses += value,
                "inlet_consumer_assigned_partitions" => {
                    if let Some(stage) = label("stage") {
                        *snapshot.assigned.entry(stage.to_owned()).or_default() += value;
                    }
                }
                "inlet_consumer_lag_records" => {
                    if let Some(stage) = label("stage") {
                        *snapshot.partitions.entry(stage.to_owned()).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
        snapshot
    }
}

/// One sample line: `name{key="value",…} value [timestamp]`, label values unescaped.
fn sample(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([',', ' ']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.trim().to_owned(), value);
            rest = &after[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some((name, labels, value))
}

/// What one process handled during the measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    /// The `/metrics` URL.
    pub url: String,
    /// The stages it ran (those whose counters moved, or that read partitions), `+`-joined;
    /// `idle` when none did.
    pub stage: String,
    /// Seconds between the two reads.
    pub seconds: f64,
    /// Webhooks accepted (202).
    pub accepted: f64,
    /// Webhook requests with any other outcome.
    pub not_accepted: f64,
    /// Webhooks routed.
    pub routed: f64,
    /// Stack triggers emitted.
    pub triggers: f64,
    /// Run decisions written.
    pub decisions: f64,
    /// Build statuses (and other reporter outcomes).
    pub statuses: f64,
    /// Partitions read at the end, per consuming stage.
    pub partitions: BTreeMap<String, usize>,
    /// Why the process could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ProcessReport {
    /// The difference of two reads `seconds` apart. A counter lower at the end than at the start
    /// means the process restarted in between: its whole end value counts (Prometheus's reset
    /// rule).
    pub fn between(
        url: &str,
        before: Result<Snapshot, String>,
        after: Result<Snapshot, String>,
        seconds: f64,
    ) -> ProcessReport {
        let (before, after) = match (before, after) {
            (Ok(before), Ok(after)) => (before, after),
            (Err(err), _) => return ProcessReport::failed(url, format!("at the start: {err}")),
            (_, Err(err)) => return ProcessReport::failed(url, format!("at the end: {err}")),
        };
        let delta = |end: f64, start: f64| if end >= start { end - start } else { end };
        let mut report = ProcessReport {
            url: url.to_owned(),
            stage: String::new(),
            seconds,
            accepted: delta(after.accepted, before.accepted),
            not_accepted: delta(after.not_accepted, before.not_accepted),
            routed: delta(after.routed, before.routed),
            triggers: delta(after.triggers, before.triggers),
            decisions: delta(after.decisions, before.decisions),
            statuses: delta(after.statuses, before.statuses),
            partitions: after.partitions,
            error: None,
        };
        let stages: Vec<&str> = STAGES
            .into_iter()
            .filter(|stage| report.count(stage) > 0.0 || report.partitions.contains_key(*stage))
            .collect();
        report.stage = if stages.is_empty() {
            "idle".to_owned()
        } else {
            stages.join("+")
        };
        report
    }

    fn failed(url: &str, error: String) -> ProcessReport {
        ProcessReport {
            url: url.to_owned(),
            stage: "unreadable".to_owned(),
            seconds: 0.0,
            accepted: 0.0,
            not_accepted: 0.0,
            routed: 0.0,
            triggers: 0.0,
            decisions: 0.0,
            statuses: 0.0,
            partitions: BTreeMap::new(),
            error: Some(error),
        }
    }

    /// The count `stage` is measured by.
    fn count(&self, stage: &str) -> f64 {
        match stage {
            "ingest" => self.accepted + self.not_accepted,
            "router" => self.routed,
            "workers" => self.decisions,
            "reporter" => self.statuses,
            _ => 0.0,
        }
    }

    /// One line per stage the process ran: count, rate, share of that stage's total over
    /// `all`, partitions.
    pub fn lines(&self, all: &[ProcessReport]) -> Vec<String> {
        if let Some(error) = &self.error {
            return vec![format!("{}  unreadable {error}", self.url)];
        }
        if self.stage == "idle" {
            return vec![format!("{}  idle (nothing handled)", self.url)];
        }
        let rate = |count: f64| count / self.seconds.max(1e-9);
        let share = |stage: &str| {
            let total: f64 = all.iter().map(|p| p.count(stage)).sum();
            100.0 * self.count(stage) / total.max(1e-9)
        };
        self.stage
            .split('+')
            .map(|stage| {
                let what = match stage {
                    "ingest" => {
                        let mut text = format!(
                            "accepted {:.0} ({:.0}/s)",
                            self.accepted,
                            rate(self.accepted)
                        );
                        if self.not_accepted > 0.0 {
                            text.push_str(&format!(", {:.0} not accepted", self.not_accepted));
                        }
                        text
                    }
                    "router" => format!(
                        "routed {:.0} ({:.0}/s), {:.0} triggers",
                        self.routed,
                        rate(self.routed),
                        self.triggers
                    ),
                    "workers" => format!(
                        "decisions {:.0} ({:.0}/s)",
                        self.decisions,
                        rate(self.decisions)
                    ),
                    _ => format!(
                        "statuses {:.0} ({:.0}/s)",
                        self.statuses,
                        rate(self.statuses)
                    ),
                };
                let partitions = match self.partitions.get(stage) {
                    Some(count) => format!(", {count} partitions"),
                    None => String::new(),
                };
                format!(
                    "{}  {stage:<8} {what}, {:.0} % of the {stage} total{partitions}",
                    self.url,
                    share(stage)
                )
            })
            .collect()
    }
}

/// Waits until the process at `url` has partitions assigned to each of `stages` (its consumer
/// groups have formed), for at most `deadline`; whether they did. Load sent before that waits in
/// the topic for the group, which is start-up, not the pipeline's latency.
pub async fn wait_for_groups(url: &str, stages: &[&str], deadline: Duration) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Ok(Ok(text)) = tokio::time::timeout(Duration::from_secs(5), fetch(url)).await {
            let snapshot = Snapshot::parse(&text);
            if stages
                .iter()
                .all(|stage| snapshot.assigned.get(*stage).is_some_and(|n| *n > 0.0))
            {
                return true;
            }
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads every URL at once; one result per URL, in order.
pub async fn read_all(urls: &[String]) -> Vec<Result<Snapshot, String>> {
    let reads: Vec<_> = urls
        .iter()
        .map(|url| {
            let url = url.clone();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(5), fetch(&url))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 5 s")))
                    .map(|text| Snapshot::parse(&text))
                    .map_err(|err| format!("{err:#}"))
            })
        })
        .collect();
    let mut results = Vec::new();
    for read in reads {
        results.push(read.await.unwrap_or_else(|err| Err(err.to_string())));
    }
    results
}

/// `GET url` over plain HTTP/1.1: the body of a 200.
async fn fetch(url: &str) -> anyhow::Result<String> {
    let uri: hyper::Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// metrics URLs are read");
    }
    let authority = uri.authority().context("URL without host")?.clone();
    let stream = TcpStream::connect(authority.as_str()).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = hyper::Request::builder()
        .uri(path)
        .header("host", authority.as_str())
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTER_BEFORE: &str = r#"# HELP inlet_router_events_total Webhooks routed, by event key and outcome.
# TYPE inlet_router_events_total counter
inlet_router_events_total{event="repo:refs_changed",outcome="routed"} 100
inlet_router_events_total{event="pr:opened",outcome="routed"} 20
inlet_router_events_total{event="repo:refs_changed",outcome="ignored"} 5
# TYPE inlet_router_triggers_total counter
inlet_router_triggers_total 300
inlet_ingest_in_flight_requests 0
inlet_workers_decisions_total{reason="none",status="requested"} 0
"#;

    const ROUTER_AFTER: &str = r#"inlet_router_events_total{event="repo:refs_changed",outcome="routed"} 1100
inlet_router_events_total{event="pr:opened",outcome="routed"} 20
inlet_router_events_total{event="repo:refs_changed",outcome="ignored"} 9
inlet_router_triggers_total 3300
inlet_consumer_lag_records{partition="0",stage="router"} 3
inlet_consumer_lag_records{partition="1",stage="router"} 0
inlet_consumer_lag_records{partition="4",stage="router"} 12
inlet_ingest_in_flight_requests 0
"#;

    const INGEST_BEFORE: &str = r#"inlet_ingest_requests_total{event="repo:refs_changed",integration="a",outcome="accepted"} 10
inlet_ingest_requests_total{event="repo:refs_changed",integration="b",outcome="accepted"} 5
inlet_router_triggers_total 0
"#;

    const INGEST_AFTER: &str = r#"inlet_ingest_requests_total{event="repo:refs_changed",integration="a",outcome="accepted"} 2010
inlet_ingest_requests_total{event="repo:refs_changed",integration="b",outcome="accepted"} 505
inlet_ingest_requests_total{event="repo:refs_changed",integration="a",outcome="unavailable"} 7
inlet_ingest_requests_total{event="other",integration="_unknown",outcome="not_found"} 3
inlet_router_triggers_total 0
"#;

    const WORKERS_AFTER: &str = r#"inlet_workers_decisions_total{reason="none",status="requested"} 2900
inlet_workers_decisions_total{reason="integration_detached",status="blocked"} 100
inlet_workers_decisions_total{reason="stack_deleted",status="none"} 50
inlet_consumer_lag_records{partition="7",stage="workers"} 0
"#;

    fn report(url: &str, before: &str, after: &str) -> ProcessReport {
        ProcessReport::between(
            url,
            Ok(Snapshot::parse(before)),
            Ok(Snapshot::parse(after)),
            10.0,
        )
    }

    /// The counts are differences of the right series, summed over their labels; the stage is
    /// what moved or what reads partitions; series of other stages at zero do not count.
    #[test]
    fn differences_per_stage() {
        let router = report("r", ROUTER_BEFORE, ROUTER_AFTER);
        assert_eq!(router.stage, "router");
        assert_eq!(router.routed, 1000.0);
        assert_eq!(router.triggers, 3000.0);
        assert_eq!(router.partitions.get("router"), Some(&3));

        let ingest = report("i", INGEST_BEFORE, INGEST_AFTER);
        assert_eq!(ingest.stage, "ingest");
        assert_eq!(ingest.accepted, 2500.0);
        assert_eq!(ingest.not_accepted, 10.0);

        // Blocked decisions are decisions; "none" is not one.
        let workers = report("w", "", WORKERS_AFTER);
        assert_eq!(workers.stage, "workers");
        assert_eq!(workers.decisions, 3000.0);

        let dev = report(
            "d",
            "",
            &format!("{INGEST_AFTER}{ROUTER_AFTER}{WORKERS_AFTER}"),
        );
        assert_eq!(dev.stage, "ingest+router+workers");
        assert_eq!(dev.lines(&[]).len(), 3);

        assert_eq!(report("x", ROUTER_AFTER, ROUTER_AFTER).stage, "router");
        assert_eq!(report("x", INGEST_AFTER, INGEST_AFTER).stage, "idle");
    }

    /// Each line gives the count, the rate over the phase and the share of the stage's total.
    #[test]
    fn lines_show_rate_and_share() {
        let first = report("http://a/metrics", ROUTER_BEFORE, ROUTER_AFTER);
        let second = report(
            "http://b/metrics",
            "",
            "inlet_router_events_total{outcome=\"routed\"} 3000\n",
        );
        let all = [first.clone(), second.clone()];
        assert_eq!(
            first.lines(&all),
            [
                "http://a/metrics  router   routed 1000 (100/s), 3000 triggers, 25 % of the router total, 3 partitions"
            ]
        );
        assert_eq!(
            second.lines(&all),
            [
                "http://b/metrics  router   routed 3000 (300/s), 0 triggers, 75 % of the router total"
            ]
        );
    }

    /// A restarted process (counters lower at the end) counts its whole end value; a process
    /// that cannot be read is reported, not a failure.
    #[test]
    fn resets_and_unreadable_processes() {
        let restarted = report("r", ROUTER_AFTER, ROUTER_BEFORE);
        assert_eq!(restarted.routed, 120.0);
        let gone = ProcessReport::between(
            "http://gone/metrics",
            Ok(Snapshot::default()),
            Err("connection refused".to_owned()),
            10.0,
        );
        assert_eq!(gone.stage, "unreadable");
        assert_eq!(
            gone.lines(&[]),
            ["http://gone/metrics  unreadable at the end: connection refused"]
        );
    }

    /// Label values with escaped quotes, commas and braces, timestamps after the value, and
    /// lines that are not samples.
    #[test]
    fn parses_the_text_format() {
        let (name, labels, value) =
            sample(r#"inlet_ingest_requests_total{integration="a,\"b\"}",outcome="accepted"} 4 1700000000000"#)
                .expect("sample");
        assert_eq!(name, "inlet_ingest_requests_total");
        assert_eq!(labels["integration"], "a,\"b\"}");
        assert_eq!(labels["outcome"], "accepted");
        assert_eq!(value, 4.0);
        assert_eq!(
            sample("inlet_router_triggers_total 1.5e3").map(|s| s.2),
            Some(1500.0)
        );
        assert!(sample("# TYPE inlet_router_triggers_total counter").is_none());
        assert!(sample("").is_none());
        assert!(sample("garbage{").is_none());
    }
}

//! End to end: the alert rules (deploy/prometheus/inlet-rules.yml) and the Grafana dashboard
//! (deploy/grafana/inlet-dashboard.json) only query metrics that `inlet` exports, with labels it
//! sets, and the dashboard shows every metric `inlet` exports. Their PromQL and the alerts' logic
//! are checked by scripts/check-observability.sh (promtool).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Inlet, admin, send, webhook};
use serde_json::{Value, json};

const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/inlet-rules.yml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/grafana/inlet-dashboard.json"
);
const WAIT: Duration = Duration::from_secs(30);

/// Metric name → the label names its `{…}` matchers use, over every query of a file.
type Selected = BTreeMap<String, BTreeSet<String>>;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Skips the string literal opening at `chars[at]`; returns the index after it.
fn skip_string(chars: &[char], at: usize) -> usize {
    let quote = chars[at];
    let mut i = at + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' && quote != '`' {
            2
        } else {
            1
        };
    }
    i + 1
}

/// Reads the label names of `{name op "value", …}` opening at `chars[at]` (PromQL matchers, or
/// a sample's labels in the text format); returns them and the index after the `}`.
fn label_names(chars: &[char], at: usize) -> (BTreeSet<String>, usize) {
    let mut names = BTreeSet::new();
    let mut expect_name = true;
    let mut i = at + 1;
    while i < chars.len() && chars[i] != '}' {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i),
            ',' => {
                expect_name = true;
                i += 1;
            }
            c if expect_name && (c.is_ascii_alphabetic() || c == '_') => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                names.insert(chars[start..i].iter().collect());
                expect_name = false;
            }
            _ => i += 1,
        }
    }
    (names, i + 1)
}

/// Adds the `inlet_…` metrics `expr` selects (names with a `:` are recording rules), with the
/// labels their matchers use.
fn select(expr: &str, into: &mut Selected) {
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            c if is_name_char(c) => {
                let start = i;
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
                let token: String = chars[start..i].iter().collect();
                if !token.starts_with("inlet_") || token.contains(':') {
                    continue;
                }
                let labels = into.entry(token).or_default();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                if next < chars.len() && chars[next] == '{' {
                    let (names, end) = label_names(&chars, next);
                    labels.extend(names);
                    i = end;
                }
            }
            _ => i += 1,
        }
    }
}

/// The `expr` values of a Prometheus rules file (inline or block scalars) and the names its
/// recording rules define. Enough YAML for rule files; no YAML dependency.
fn rule_exprs(yaml: &str) -> (Vec<String>, BTreeSet<String>) {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let unquote = |value: &str| {
        let value = value.trim();
        let quoted = value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')));
        if quoted {
            value[1..value.len() - 1].to_owned()
        } else {
            value.to_owned()
        }
    };
    let mut exprs = Vec::new();
    let mut records = BTreeSet::new();
    for (index, line) in lines.iter().enumerate() {
        let key = line.trim_start().trim_start_matches("- ");
        if let Some(name) = key.strip_prefix("record:") {
            records.insert(unquote(name));
        } else if let Some(value) = key.strip_prefix("expr:") {
            let value = value.trim();
            if value.starts_with('|') || value.starts_with('>') {
                let block: Vec<&str> = lines[index + 1..]
                    .iter()
                    .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                    .copied()
                    .collect();
                exprs.push(block.join("\n"));
            } else {
                exprs.push(unquote(value));
            }
        }
    }
    (exprs, records)
}

/// Every query of a dashboard: panel targets' `expr` and template variables' `definition`.
fn dashboard_exprs(node: &Value, into: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "definition", Value::String(expr)) => into.push(expr.clone()),
                    _ => dashboard_exprs(value, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| dashboard_exprs(item, into)),
        _ => {}
    }
}

/// A `/metrics` scrape: sample name → label names seen, and family name → type.
struct Scrape {
    samples: Selected,
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = Selected::new();
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    types.insert(name.to_owned(), kind.to_owned());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let chars: Vec<char> = line.chars().collect();
                let end = chars
                    .iter()
                    .position(|c| *c == '{' || c.is_whitespace())
                    .unwrap_or(chars.len());
                let labels = samples.entry(chars[..end].iter().collect()).or_default();
                if chars.get(end) == Some(&'{') {
                    labels.extend(label_names(&chars, end).0);
                }
            }
        }
        Scrape { samples, types }
    }

    /// What is wrong with `selected` (queried in `file`) against this scrape.
    fn problems(&self, file: &str, selected: &Selected) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, labels) in selected {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|family| self.types.get(*family).map(String::as_str) == Some("histogram"));
            let Some(have) = self.samples.get(name) else {
                let kind = match (family, self.types.get(name).map(String::as_str)) {
                    (Some(family), _) => format!("histogram {family} has no samples"),
                    (None, Some("histogram")) => {
                        "a histogram: query its _bucket, _sum or _count series".to_owned()
                    }
                    (None, Some(kind)) => format!("a {kind} without samples"),
                    (None, None) => "not exported".to_owned(),
                };
                problems.push(format!("{file}: {name}: {kind}"));
                continue;
            };
            for label in labels.difference(have) {
                problems.push(format!(
                    "{file}: {name} has no label `{label}` (it has {have:?})"
                ));
            }
        }
        problems
    }
}

/// The family a sample name belongs to (histograms' `_bucket`, `_sum`, `_count` → the histogram).
fn family<'a>(scrape: &Scrape, name: &'a str) -> &'a str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|family| scrape.types.get(*family).map(String::as_str) == Some("histogram"))
        .unwrap_or(name)
}

/// Every metric the alert rules and the dashboard query is in a running `inlet dev`'s scrape once
/// a push was decided and a bad and an unknown webhook were refused, with the labels their
/// matchers use; every `inlet_` family in the scrape is on the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboard_query_exported_metrics() {
    let (rule_queries, records) = rule_exprs(&std::fs::read_to_string(RULES).expect("rules"));
    let mut in_rules = Selected::new();
    for expr in &rule_queries {
        select(expr, &mut in_rules);
    }
    in_rules.retain(|name, _| !records.contains(name));
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("dashboard"))
            .expect("dashboard JSON");
    let mut dashboard_queries = Vec::new();
    dashboard_exprs(&dashboard, &mut dashboard_queries);
    let mut on_dashboard = Selected::new();
    for expr in &dashboard_queries {
        select(expr, &mut on_dashboard);
    }
    // The extraction found the queries (not a vacuous pass).
    assert!(rule_queries.len() >= 7, "{rule_queries:#?}");
    for name in [
        "inlet_ingest_requests_total",
        "inlet_consumer_lag_records",
        "inlet_workers_decisions_total",
    ] {
        assert!(
            in_rules.contains_key(name),
            "{name} not found in {in_rules:#?}"
        );
    }
    assert_eq!(
        in_rules["inlet_workers_decisions_total"],
        BTreeSet::from(["reason".to_owned(), "status".to_owned()])
    );
    assert!(dashboard_queries.len() >= 20, "{dashboard_queries:#?}");

    // Traffic that makes every labelled series exist: a decided push, a request with a wrong
    // signature and one for an integration that does not exist.
    let dev = Inlet::dev();
    let key = dev.ready.admin_key.clone().expect("admin key");
    let created = admin(
        &dev,
        &key,
        "POST",
        "/integrations",
        json!({"name": "bb", "is_default": true, "api_host_url": "https://bitbucket.example.com"}),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    let stack = admin(
        &dev,
        &key,
        "POST",
        "/stacks",
        json!({"id": "network-prod", "name": "network-prod", "integration": "bb",
               "repository": "INFRA/network", "branch": "main"}),
    )
    .await;
    assert_eq!(stack.status, 201, "{stack:?}");
    let details = admin(&dev, &key, "GET", "/integrations/bb/details", Value::Null).await;
    let secret = details.json()["webhook_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let push = common::push_body("main", "178864a7d521b6f5e720b386b2c2b0ef8563e0dc");
    let url = dev.webhook_url("bb");
    let accepted = webhook(&url, "repo:refs_changed", "obs-push", &secret, &push).await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let forged = webhook(&url, "repo:refs_changed", "obs-forged", "wrong", &push).await;
    assert_eq!(forged.status, 401, "{forged:?}");
    let unknown = webhook(
        &dev.webhook_url("nope"),
        "repo:refs_changed",
        "obs-unknown",
        &secret,
        &push,
    )
    .await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    let deadline = Instant::now() + WAIT;
    loop {
        let story = admin(&dev, &key, "GET", "/deliveries/obs-push", Value::Null).await;
        let decided = story.status == 200
            && story.json()["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["stage"] == "workers"));
        if decided {
            break;
        }
        assert!(Instant::now() < deadline, "no decision: {story:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Consumer lag is measured every 5 s: scrape until everything is there, or show what is not.
    let metrics_url = format!(
        "{}/metrics",
        dev.ready.admin_base_url.as_deref().expect("admin listener")
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = send("GET", &metrics_url, &[], "").await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        let scrape = Scrape::parse(&text);
        let mut problems = scrape.problems("deploy/prometheus/inlet-rules.yml", &in_rules);
        problems.extend(scrape.problems("deploy/grafana/inlet-dashboard.json", &on_dashboard));
        let shown: BTreeSet<&str> = on_dashboard
            .keys()
            .map(|name| family(&scrape, name))
            .collect();
        for name in scrape.types.keys() {
            if name.starts_with("inlet_") && !shown.contains(name.as_str()) {
                problems.push(format!(
                    "{name} is exported but not on deploy/grafana/inlet-dashboard.json"
                ));
            }
        }
        if problems.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}\n\nscrape:\n{text}",
            problems.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

//! How long a process takes to fold `inlet.control` at startup, and what a repository lookup costs
//! on the folded registry.
//!
//! The log is generated once, as the JSON records sit on the topic: about 50 spaces in a tree (some
//! inheriting), 1,000 integrations (one default in `root`, the rest spread over the spaces, webhook
//! secrets and half of the access tokens sealed), 101,000 stack creations on 10,000 repositories,
//! then 5,000 stack updates, 1,000 stack deletions, 100 integration updates, 20 secret rotations
//! and 10 API keys, interleaved. The folded registry holds 100,000 stacks. Every command is
//! accepted: the set-up folds the log once and panics on the first rejection.
//!
//! The log is `inlet_control::synthetic` (shared with `inlet bench --registry-scale`). Run with
//! `cargo bench -p inlet-control --bench fold`. Benchmarks:
//!
//! - `control_fold/parse_and_apply`: what a starting process does, parse every record with
//!   serde_json and `Registry::apply` it to a fresh registry;
//! - `control_fold/parse_only` and `control_fold/apply_only`: the two halves, to see where the
//!   time goes;
//! - `stacks_on_repository/{hit,miss}/<n>_stacks`: one indexed lookup on registries of 1,000,
//!   10,000 and 100,000 stacks, ten stacks per repository in each (about 2.4 share an integration,
//!   so a hit returns that many). Finding the index entry (`miss`) should not grow with the registry;
//!   a hit also resolves each returned stack id in the ordered stack map.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use inlet_control::commands::ControlRecord;
use inlet_control::registry::Registry;
use inlet_control::synthetic::{Log, STACKS, generate};

/// What a starting process does: parse each record and apply it, in order, to a fresh registry.
/// Returns the registry and how many commands were rejected.
fn fold(records: &[Vec<u8>]) -> (Registry, usize) {
    let mut registry = Registry::new();
    let mut rejected = 0;
    for bytes in records {
        let record: ControlRecord = serde_json::from_slice(bytes).expect("parse a control record");
        if registry.apply(&record).is_err() {
            rejected += 1;
        }
    }
    (registry, rejected)
}

/// Folds `log` once, panicking on the first rejection or on unexpected sizes.
fn checked_fold(log: &Log) -> Registry {
    let mut registry = Registry::new();
    for (offset, bytes) in log.records.iter().enumerate() {
        let record: ControlRecord = serde_json::from_slice(bytes).expect("parse a control record");
        if let Err(rejection) = registry.apply(&record) {
            panic!(
                "the generated log is wrong: offset {offset} ({}) rejected: {} ({})",
                record.command.kind(),
                rejection.message,
                rejection.code
            );
        }
    }
    assert_eq!(registry.sizes(), log.expected, "folded sizes");
    registry
}

fn control_fold(c: &mut Criterion) {
    let started = Instant::now();
    let log = generate(STACKS);
    let generated_in = started.elapsed();
    let started = Instant::now();
    let registry = checked_fold(&log);
    let folded_in = started.elapsed();
    let sizes = registry.sizes();
    let bytes = log.bytes();
    eprintln!(
        "control log: {} records, {:.1} MiB of JSON ({} bytes per record on average), generated \
         in {:.1?}; one checked fold in {:.2?} → {} spaces, {} integrations, {} stacks, {} API keys",
        log.records.len(),
        bytes as f64 / (1024.0 * 1024.0),
        bytes / log.records.len(),
        generated_in,
        folded_in,
        sizes.spaces,
        sizes.integrations,
        sizes.stacks,
        sizes.api_keys,
    );
    drop(registry);

    let mut group = c.benchmark_group("control_fold");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(25))
        .throughput(Throughput::Elements(log.records.len() as u64));

    group.bench_function("parse_and_apply", |b| {
        b.iter_with_large_drop(|| {
            let (registry, rejected) = fold(black_box(&log.records));
            assert_eq!(rejected, 0, "every command is accepted");
            registry
        })
    });

    group.bench_function("parse_only", |b| {
        b.iter_with_large_drop(|| {
            black_box(&log.records)
                .iter()
                .map(|bytes| serde_json::from_slice(bytes).expect("parse"))
                .collect::<Vec<ControlRecord>>()
        })
    });

    let parsed: Vec<ControlRecord> = log
        .records
        .iter()
        .map(|bytes| serde_json::from_slice(bytes).expect("parse"))
        .collect();
    group.bench_function("apply_only", |b| {
        b.iter_with_large_drop(|| {
            let mut registry = Registry::new();
            for record in black_box(&parsed) {
                let _ = registry.apply(record);
            }
            registry
        })
    });
    group.finish();
}

fn stacks_on_repository(c: &mut Criterion) {
    let mut group = c.benchmark_group("stacks_on_repository");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(5));
    for stacks in [1_000, 10_000, STACKS] {
        let registry = checked_fold(&generate(stacks));
        // Real (integration, repository) pairs, spelled as Bitbucket might: lower-case repository.
        let keys: Vec<(String, String)> = registry
            .stacks()
            .step_by((stacks / 1_000).max(1))
            .map(|s| (s.integration.to_string(), s.repository.to_lowercase()))
            .collect();
        let matches: usize = keys
            .iter()
            .map(|(integration, repository)| {
                registry
                    .stacks_on_repository(integration, repository)
                    .count()
            })
            .sum();
        eprintln!(
            "registry of {stacks} stacks: a hit returns {:.1} stacks on average",
            matches as f64 / keys.len() as f64
        );
        let mut next = 0usize;
        group.bench_with_input(
            BenchmarkId::new("hit", format!("{stacks}_stacks")),
            &registry,
            |b, registry| {
                b.iter(|| {
                    let (integration, repository) = &keys[next % keys.len()];
                    next += 1;
                    registry
                        .stacks_on_repository(black_box(integration), black_box(repository))
                        .count()
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("miss", format!("{stacks}_stacks")),
            &registry,
            |b, registry| {
                b.iter(|| {
                    registry
                        .stacks_on_repository(black_box("bitbucket"), black_box("NOPE/nothing"))
                        .count()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, control_fold, stacks_on_repository);
criterion_main!(benches);

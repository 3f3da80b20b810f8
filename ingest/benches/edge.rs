//! Micro-benchmarks of the webhook edge's per-request work: signature verification (with the
//! sealed secret opened, as ingest does), payload parsing, and the envelope the edge reads.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use inlet_bitbucket::signature::{sign, verify};
use inlet_bitbucket::{self as bitbucket, events};
use inlet_control::crypto::SecretsKey;
use inlet_core::secret::Secret;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/../tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// A push padded to `size` bytes with a repository description, like `inlet bench` sends.
fn push_of_size(size: usize) -> Vec<u8> {
    let mut body: serde_json::Value =
        serde_json::from_slice(&fixture("repo_refs_changed.json")).expect("fixture");
    let bare = serde_json::to_vec(&body).expect("json").len();
    body["repository"]["description"] = "x".repeat(size.saturating_sub(bare + 20)).into();
    serde_json::to_vec(&body).expect("json")
}

fn signature(c: &mut Criterion) {
    let key = SecretsKey::generate();
    let secret = Secret::generate(32);
    let sealed = key.seal(&secret, "webhook_secret/i1");
    let mut group = c.benchmark_group("verify_signature");
    for size in [1_000usize, 5_000, 50_000] {
        let body = push_of_size(size);
        let header = sign(&secret, &body);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| {
                let opened = key.open(&sealed, "webhook_secret/i1").expect("open");
                verify(Some(header.as_bytes()), body, [&opened]).expect("valid")
            })
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_event");
    let cases = [
        ("push_5k", events::REFS_CHANGED, push_of_size(5_000)),
        (
            "push_multi",
            events::REFS_CHANGED,
            fixture("repo_refs_changed_multi.json"),
        ),
        ("pr_opened", events::PR_OPENED, fixture("pr_opened.json")),
        (
            "pr_comment",
            events::PR_COMMENT_ADDED,
            fixture("pr_comment_added.json"),
        ),
    ];
    for (name, key, body) in &cases {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| {
                bitbucket::parse(key, body)
                    .expect("valid")
                    .expect("handled")
            })
        });
    }
    group.finish();
}

/// What the edge reads of a body (`envelope`): the fast path against serde_json alone.
fn envelope(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    for name in ["pr_opened.json", "repo_refs_changed_multi.json"] {
        let body = fixture(name);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("skim", name), &body, |b, body| {
            b.iter(|| bitbucket::envelope(Some(events::PR_OPENED), body).expect("valid"))
        });
        group.bench_with_input(BenchmarkId::new("serde", name), &body, |b, body| {
            b.iter(|| bitbucket::envelope_by_serde(Some(events::PR_OPENED), body).expect("valid"))
        });
    }
    group.finish();
}

criterion_group!(benches, signature, parse, envelope);
criterion_main!(benches);

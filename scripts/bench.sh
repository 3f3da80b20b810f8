#!/usr/bin/env bash
# The measurements behind docs/BENCHMARKS.md, in one run. Needs a quiet machine: every phase shares
# its cores with the load generator.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
inlet=target/release/inlet
echo "== ingest alone, flat out, against the bare hyper + HMAC + produce loop"
$inlet bench --only-ingest --duration 10 --warmup 2 --stacks 10 --repositories 10 --concurrency 256 --compare 2>/dev/null
echo
echo "== ingest alone at a fixed 10,000 requests/s"
$inlet bench --only-ingest --duration 10 --warmup 2 --stacks 10 --repositories 10 --concurrency 256 --rate 10000 2>/dev/null
echo
echo "== whole pipeline at 1,000 pushes/s, 1,000 stacks on 100 repositories (10 decisions per push)"
$inlet bench --duration 10 --warmup 2 --stacks 1000 --repositories 100 --concurrency 64 --rate 1000 2>/dev/null
echo
echo "== whole pipeline at 2,000 pushes/s, 10,000 and 100,000 stacks (10 per repository)"
$inlet bench --duration 10 --warmup 2 --stacks 10000 --repositories 1000 --concurrency 64 --rate 2000 2>/dev/null
$inlet bench --duration 10 --warmup 2 --stacks 100000 --repositories 10000 --concurrency 64 --rate 2000 2>/dev/null
echo
echo "== criterion: edge, routing, fold"
cargo bench --quiet -p inlet-ingest --bench edge -- --warm-up-time 1 --measurement-time 3 2>/dev/null | grep -E "time:"
cargo bench --quiet -p inlet-router --bench route -- --warm-up-time 1 --measurement-time 3 2>/dev/null | grep -E "time:"
cargo bench --quiet -p inlet-control --bench fold 2>/dev/null | grep -E "time:"

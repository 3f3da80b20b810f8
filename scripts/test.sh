#!/usr/bin/env bash
# The project's test command (README, .ci/run): installs what the build needs on a fresh Debian
# machine, then checks formatting and lints, the monitoring files (Prometheus rules and their unit
# tests, the Grafana dashboard) and the deploy files (Dockerfile, Compose, Kubernetes), and runs
# every test, then fuzzes the admin API against its OpenAPI document (schemathesis) and the
# parsers of untrusted input (cargo-fuzz) for a bounded time.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/debian-packages.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
scripts/check-observability.sh
# The deploy checks load every inlet.toml with the real binary, which the tests need anyway.
cargo build --locked --quiet
scripts/validate-deploy.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
scripts/api-fuzz.sh
# About a minute of fuzzing in all (15 s per target) on a fresh corpus; scripts/fuzz.sh says how to
# run longer. The build of the fuzz targets is most of this step's time.
FUZZ_SECONDS=${FUZZ_SECONDS:-15} scripts/fuzz.sh

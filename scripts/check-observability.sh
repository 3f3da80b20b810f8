#!/usr/bin/env bash
# Checks the monitoring files in deploy/: the Prometheus rules (`promtool check rules`), their unit
# tests (`promtool test rules`), and the Grafana dashboard (valid JSON, every query valid PromQL).
# tests/observability.rs checks, against a running `inlet dev`, that every metric they name exists.
#
# On a fresh Debian machine it installs promtool first (package `prometheus`, which ships
# /usr/bin/promtool; Debian has no promtool-only package), like scripts/test.sh does for the build
# dependencies: as root, or it says what is missing. When promtool is present it only runs the
# checks (a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

rules=deploy/prometheus/inlet-rules.yml
rule_tests=deploy/prometheus/tests/inlet-rules.test.yml
dashboard=deploy/grafana/inlet-dashboard.json

if ! command -v promtool >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]]; then
    echo "installing promtool (Debian package prometheus)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    # The package also installs the Prometheus server as a service; only promtool is wanted here.
    # Where systemd runs (not in containers) it was started on :9090: stop it and keep it off.
    if [[ -d /run/systemd/system ]] && systemctl is-enabled prometheus.service >/dev/null 2>&1; then
      systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    fi
  else
    echo "promtool missing (run as root, or: apt-get install prometheus)" >&2
    exit 1
  fi
fi
if ! command -v python3 >/dev/null 2>&1; then
  echo "python3 missing (it checks the dashboard JSON)" >&2
  exit 1
fi

promtool check rules "$rules"
promtool test rules "$rule_tests"

python3 -m json.tool "$dashboard" >/dev/null
echo "$dashboard: valid JSON"

# The dashboard's queries, with Grafana's variables replaced, as recording rules: promtool parses
# each one as PromQL (checking `promtool check rules` on a file it does not load).
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 - "$dashboard" >"$scratch/dashboard-queries.yml" <<'PY'
import json
import sys

with open(sys.argv[1]) as f:
    dashboard = json.load(f)


def panels(items):
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


queries = [
    (panel.get("title", "?"), target["expr"])
    for panel in panels(dashboard.get("panels", []))
    for target in panel.get("targets", [])
    if target.get("expr")
]
if not queries:
    sys.exit("the dashboard has no queries")
substitutions = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$integration": ".*",
}
print("groups:")
print("  - name: dashboard-queries")
print("    rules:")
for index, (title, expr) in enumerate(queries):
    for variable, value in substitutions.items():
        expr = expr.replace(variable, value)
    if "$" in expr:
        sys.exit(f"panel {title!r}: unknown variable in {expr}")
    print(f"      - record: dashboard_query_{index}")
    print(f"        expr: {json.dumps(expr)}")
PY
if ! output=$(promtool check rules "$scratch/dashboard-queries.yml" 2>&1); then
  echo "$output" >&2
  echo "$dashboard: a query is not valid PromQL" >&2
  exit 1
fi
echo "$dashboard: $(grep -c 'record:' "$scratch/dashboard-queries.yml") queries are valid PromQL"

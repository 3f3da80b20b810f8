#!/usr/bin/env bash
# Fuzzes the admin API against its own OpenAPI document: starts `inlet dev` (the debug build the
# tests use), installs schemathesis from PyPI in a temporary venv and runs every check on every
# operation. Any failure (a schema-valid request refused, an invalid one accepted, a 5xx, an
# answer that does not match the document, a missing `Allow`, ...) fails the script.
#
#   scripts/api-fuzz.sh                 # 100 examples per operation, a random seed (printed)
#   API_FUZZ_EXAMPLES=500 API_FUZZ_SEED=1234 scripts/api-fuzz.sh
#   API_FUZZ_VENV=/tmp/st scripts/api-fuzz.sh   # reuse a venv between runs
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
schemathesis_version=4.32.5
examples=${API_FUZZ_EXAMPLES:-100}
work=$(mktemp -d)
dev_pid=
cleanup() {
  [[ -n $dev_pid ]] && kill "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

venv=${API_FUZZ_VENV:-$work/venv}
if [[ ! -x $venv/bin/schemathesis ]] || ! "$venv/bin/schemathesis" --version | grep -q "$schemathesis_version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

binary=${INLET_BINARY:-$root/target/debug/inlet}
[[ -x $binary ]] || cargo build --locked --quiet
key="api-fuzz-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
# api-fuzz.toml: a short Bitbucket deadline without retries, so the operations that call Bitbucket
# answer their 502 at once (tests/schemathesis/schemathesis.toml says why that 502 is expected).
INLET_ADMIN_KEY=$key "$binary" --config "$root/tests/schemathesis/api-fuzz.toml" dev \
  --webhook-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 --ready-file "$work/ready.json" >"$work/inlet.log" 2>&1 &
dev_pid=$!
for _ in $(seq 120); do
  [[ -s $work/ready.json ]] && break
  kill -0 "$dev_pid" 2>/dev/null || { cat "$work/inlet.log" >&2; exit 1; }
  sleep 0.5
done
[[ -s $work/ready.json ]] || { echo "inlet dev did not become ready" >&2; cat "$work/inlet.log" >&2; exit 1; }
admin=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin_base_url"])' "$work/ready.json")

seed=()
[[ -n ${API_FUZZ_SEED:-} ]] && seed=(--seed "$API_FUZZ_SEED")
# One worker: Hypothesis on CPython 3.11 now and then trips over its own threads ("AST
# constructor recursion depth mismatch"). A run that ends in such an error of the tool itself,
# with no failure of the API reported, is retried once; an API failure never is.
run() {
  # Run from the temporary directory: Hypothesis keeps its example database in the working one.
  (cd "$work" && SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$root/tests/schemathesis" \
    "$venv/bin/schemathesis" --config-file "$root/tests/schemathesis/schemathesis.toml" \
      run "$admin/api/v1/openapi.json" --url "$admin" \
      -H "Authorization: Bearer $key" --checks all --max-examples "$examples" --workers 1 \
      --no-color "${seed[@]}") 2>&1 | tee "$work/schemathesis.out"
  return "${PIPESTATUS[0]}"
}
status=0
run || status=$?
if ((status != 0)) && ! grep -q '^Failures:' "$work/schemathesis.out" \
  && grep -qE '^(Runtime Error|Test Execution Error)' "$work/schemathesis.out"; then
  echo "schemathesis itself failed (no API failure reported); running it once more" >&2
  status=0
  run || status=$?
fi
if ((status != 0)); then
  echo "schemathesis failed (exit $status); inlet's log:" >&2
  tail -n 50 "$work/inlet.log" >&2
fi
exit "$status"

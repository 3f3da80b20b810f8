#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input (issue 11 item 9) for a bounded time: the webhook
# signature header, Bitbucket payloads under every event key, control records folded into a
# registry, and the admin API's request bodies; and, differentially, the edge's fast envelope
# reader against serde_json's. The targets live in fuzz/ (its own cargo
# project, excluded from the workspace) and run under cargo-fuzz's libFuzzer on the stable
# toolchain, by default without a sanitizer: the crates forbid `unsafe`, so what is looked for
# is a panic (slicing, overflow, a broken invariant) or a hang.
#
# Each target runs FUZZ_SECONDS (default 15) on a corpus in fuzz/corpus/<target> (kept between
# local runs, never committed) seeded from fuzz/seeds/<target>; bitbucket_payload also from
# ../shared/bitbucket-payloads and tests/fixtures. FUZZ_SECONDS=0 only replays the corpus.
# FUZZ_TARGETS="a b" runs only those. FUZZ_SANITIZER=address builds with AddressSanitizer, in
# fuzz/target/address; its flag is unstable, so that build sets RUSTC_BOOTSTRAP=1 on the stable
# toolchain, and it runs at about a third of the speed. Every target runs even after another
# crashed; the script then exits non-zero and names each crashing input, to reproduce with
#   cargo fuzz run --sanitizer none <target> <input>     (in fuzz/; the script prints it)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-15}
sanitizer=${FUZZ_SANITIZER:-none}
build=(--sanitizer "$sanitizer")
rerun="cargo fuzz run --sanitizer $sanitizer"
if [[ $sanitizer != none ]]; then
  export RUSTC_BOOTSTRAP=1
  build+=(--target-dir "target/$sanitizer")
  rerun="RUSTC_BOOTSTRAP=1 $rerun --target-dir target/$sanitizer"
fi
read -ra targets <<<"${FUZZ_TARGETS:-signature_header bitbucket_payload envelope_skim control_fold admin_bodies}"
cargo_fuzz_version=0.13.2

# The workspace's C libraries (librdkafka's build) and a C++ compiler for libFuzzer itself.
scripts/debian-packages.sh

if [[ $(cargo fuzz --version 2>/dev/null) != "cargo-fuzz $cargo_fuzz_version" ]]; then
  echo "installing cargo-fuzz $cargo_fuzz_version"
  cargo install --locked --quiet --version "$cargo_fuzz_version" cargo-fuzz </dev/null
fi

cd fuzz
# The fuzz build takes the workspace's versions of every crate they share (only libFuzzer's
# crates are its own), so it builds what the tests test.
cp ../Cargo.lock Cargo.lock
started=$SECONDS
cargo fuzz build "${build[@]}" </dev/null
echo "fuzz targets built in $((SECONDS - started)) s"

crashes=()
for target in "${targets[@]}"; do
  corpus=corpus/$target
  artifacts=artifacts/$target
  mkdir -p "$corpus" "$artifacts"
  if [[ -d seeds/$target ]]; then
    cp seeds/"$target"/* "$corpus"/
  fi
  if [[ $target == bitbucket_payload || $target == envelope_skim ]]; then
    cp ../tests/fixtures/*.json "$corpus"/
    if compgen -G "$root/../shared/bitbucket-payloads/*.json" >/dev/null; then
      cp "$root"/../shared/bitbucket-payloads/*.json "$corpus"/
      chmod u+w "$corpus"/*.json
    else
      echo "note: ../shared/bitbucket-payloads not found; $target starts from the fixtures only"
    fi
  fi
  if ((seconds > 0)); then
    budget=(-max_total_time="$seconds")
  else
    budget=(-runs=0)
  fi
  mkdir -p logs
  log=logs/$target.log
  before=$(find "$artifacts" -type f | sort)
  echo "fuzzing $target for $seconds s (corpus: $(find "$corpus" -type f | wc -l) inputs)"
  status=0
  # libFuzzer stops itself after max_total_time; the outer timeout only guards a stuck start.
  timeout --kill-after=10 $((seconds + 300)) \
    cargo fuzz run "${build[@]}" "$target" "$corpus" -- \
    "${budget[@]}" -timeout=10 -rss_limit_mb=2048 -dict=dicts/"$target".dict \
    -print_final_stats=1 </dev/null >"$log" 2>&1 || status=$?
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" | sed 's/^/  /' || true
  echo "  corpus now $(find "$corpus" -type f | wc -l) inputs"
  new=$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort))
  if ((status != 0)) || [[ -n $new ]]; then
    echo "$target FAILED (exit $status); from $PWD/$log:" >&2
    # The panic and its stack trace, or else the end of the log.
    report=$(sed -n '/panicked at\|^==[0-9]*== ERROR/,/^SUMMARY/p' "$log")
    if [[ -n $report ]]; then echo "$report" >&2; else tail -n 40 "$log" >&2; fi
    for input in $new; do
      echo "crashing input: $PWD/$input" >&2
      echo "  reproduce: (cd fuzz && $rerun $target $input)" >&2
      crashes+=("$target: $PWD/$input")
    done
    [[ -n $new ]] || crashes+=("$target: exit $status, no input saved (see $PWD/$log)")
  fi
done

if ((${#crashes[@]})); then
  echo "fuzzing found ${#crashes[@]} failure(s):" >&2
  printf '  %s\n' "${crashes[@]}" >&2
  exit 1
fi
echo "fuzzing found nothing: ${targets[*]}"

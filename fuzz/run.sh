#!/usr/bin/env bash
# Build every fuzz target with libFuzzer on the stable toolchain and run each for SECONDS
# (default 30), one after another. Fails if any target crashes (a panic, a failed
# assertion, a timeout or running out of memory); the input that did it is left in
# fuzz/artifacts/ and its path printed. Prints, per target, the executions run and the
# corpus size. Usage: bash fuzz/run.sh [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
secs=${1:-30}
host=$(rustc -vV | sed -n 's/^host: //p')

# What `cargo fuzz build --sanitizer none` passes, minus nothing that needs nightly:
# SanitizerCoverage from rustc's own LLVM (edge counters, the PC table and comparison
# tracing libFuzzer feeds on) and `--cfg fuzzing`. With an explicit --target, RUSTFLAGS
# reach only the code that runs in the target, not build scripts or proc macros.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing"
export CARGO_INCREMENTAL=0

# Every [[bin]] but the seed writer is a target.
mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v -e '^portcullis-fuzz$' -e '^seeds$')

echo "== building ${#targets[@]} fuzz targets (libFuzzer, stable, $host)"
# Not --locked: fuzz/Cargo.lock pins what the gateway's Cargo.lock pins, and a dependency the
# gateway gains later is added to it here rather than failing the run.
cargo build --release --target "$host" --bins
bin="target/$host/release"
mkdir -p artifacts

failed=()
printf '%-16s %12s %8s %8s %s\n' target executions exec/s corpus cov
for t in "${targets[@]}"; do
  # New inputs go to a working corpus under target/ (kept between local runs, never
  # committed); the committed seeds in corpus/<target> are only read.
  work="target/corpus/$t"
  mkdir -p "$work"
  log="target/$t.log"
  status=0
  nice -n 10 "$bin/$t" "$work" "corpus/$t" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t-" -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+(DONE|INITED)' "$log" | tail -1 || true)
  corpus=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$done_line")
  cov=$(sed -n 's/.* cov: \([0-9]*\) .*/\1/p' <<<"$done_line")
  printf '%-16s %12s %8s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${corpus:-?}" "${cov:-?}"
  if ((status != 0)); then
    failed+=("$t")
    echo "!! $t failed (exit $status); its log, last lines:"
    tail -n 40 "$log" | sed 's/^/   /'
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    echo "!! the input is kept in fuzz/${artifact:-artifacts/} (replay: fuzz/$bin/$t fuzz/${artifact:-artifacts/...})"
  fi
done

if ((${#failed[@]})); then
  echo "== fuzzing FAILED: ${failed[*]}"
  exit 1
fi
echo "== fuzzing passed: ${#targets[@]} targets, ${secs}s each"

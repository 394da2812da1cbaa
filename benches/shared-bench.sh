#!/usr/bin/env bash
# Run ../shared/bench/run.sh with Portcullis as the "gateway" row, beside nginx and HAProxy.
#   benches/shared-bench.sh bare          # one route, no policy
#   benches/shared-bench.sh full          # mTLS + pin + IP allowlist + license + JWT
#   QUICK=1 TESTS="ka-tls13 close-tls13" benches/shared-bench.sh full
# Extra variables (QUICK, TESTS, SETUPS, REPS, DURATION, ...) pass through to run.sh.
set -euo pipefail
mode=${1:?usage: shared-bench.sh bare|full}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench="${SHARED_BENCH:-$root/../shared/bench/run.sh}"
cd "$root"
cargo build --release --locked --bin portcullis

work=/tmp/portcullis-bench-gw
mkdir -p "$work"
if [[ "$mode" == full ]]; then
  secret="$work/hs256.secret"
  export GATEWAY_AUTH_HEADER="Authorization: Bearer $("$root/benches/bench-token.sh" "$secret")"
  export PORTCULLIS_BENCH_SECRET="$secret"
fi
export GATEWAY_CMD="$root/benches/gateway.sh $mode"
export SETUPS="${SETUPS:-nginx1 haproxy1 gateway}"
exec "$bench"

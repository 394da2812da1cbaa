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
  # HS256: a 32-byte secret and a token valid for a day with the route's scope, made with
  # openssl so the bench needs nothing else.
  secret="$work/hs256.secret"
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$secret"
  b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
  now=$(date +%s)
  header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
  payload=$(printf '{"iss":"https://bench.portcullis.test","aud":"portcullis-bench","sub":"bench-client","scope":"bench","iat":%d,"exp":%d,"jti":"bench-1"}' "$now" $((now + 86400)) | b64url)
  sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -mac HMAC -macopt "key:$(cat "$secret")" -binary | b64url)
  export GATEWAY_AUTH_HEADER="Authorization: Bearer $header.$payload.$sig"
  export PORTCULLIS_BENCH_SECRET="$secret"
fi
export GATEWAY_CMD="$root/benches/gateway.sh $mode"
export SETUPS="${SETUPS:-nginx1 haproxy1 gateway}"
exec "$bench"

#!/usr/bin/env bash
# Run ../shared/bench/run.sh with Portcullis as the "gateway" row, beside nginx and HAProxy.
#   benches/shared-bench.sh bare          # one route, no policy
#   benches/shared-bench.sh full          # mTLS + pin + IP allowlist + license + JWT
#   benches/shared-bench.sh tls-upstream  # bare, upstream over TLS (HTTP/1.1), verified
#   benches/shared-bench.sh h2-upstream   # bare, upstream over TLS with HTTP/2 (ALPN h2)
#   benches/shared-bench.sh pq            # bare; every tlsload client offers the post-quantum
#                                         # hybrid (X25519MLKEM768, then X25519) instead of the
#                                         # bench's classic default, to price the hybrid handshake
#   QUICK=1 TESTS="ka-tls13 close-tls13" benches/shared-bench.sh full
# Extra variables (QUICK, TESTS, SETUPS, REPS, DURATION, ...) pass through to run.sh.
#
# The upstream modes need an HTTPS upstream and nginx/HAProxy configs that proxy to it, which
# the shared bench does not have: they run a copy of it whose conf/ templates are replaced by
# benches/config/{nginx-upstream.conf.in,haproxy-upstream.cfg.in}, with
# examples/bench_upstream.rs serving HTTPS on 127.0.0.1:18443 (pinned beside the plain
# upstream, on the load generator's CPU). nginx cannot speak HTTP/2 to an upstream, so in
# h2-upstream its row is HTTP/1.1 over TLS.
set -euo pipefail
mode=${1:?usage: shared-bench.sh bare|full|tls-upstream|h2-upstream|pq}
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

case "$mode" in
  bare|full) exec "$bench" ;;
  pq)
    # The shared bench has no key-exchange setting: run a copy whose tlsload calls add
    # --kx x25519mlkem768 (the gateway runs its bare config, hybrid first by default).
    export GATEWAY_CMD="$root/benches/gateway.sh bare"
    copy="$work/shared-bench-pq"
    rm -rf "$copy" && mkdir -p "$copy"
    (cd "$(dirname "$bench")" && tar --exclude=./results --exclude=./run --exclude=./pki -cf - .) \
      | tar -xf - -C "$copy"
    sed -i 's|"$BIN/tlsload" --json|"$BIN/tlsload" --kx x25519mlkem768 --json|' "$copy/run.sh"
    grep -q -- '--kx x25519mlkem768' "$copy/run.sh" || { echo "could not set --kx in $copy/run.sh" >&2; exit 1; }
    "$copy/run.sh"
    echo "results: $copy/results/latest/summary.md" >&2
    exit 0 ;;
  tls-upstream) alpn=http/1.1; proto=http1 ;;
  h2-upstream) alpn=h2; proto=h2 ;;
  *) echo "unknown mode $mode (bare, full, tls-upstream, h2-upstream, pq)" >&2; exit 2 ;;
esac

cargo build --release --locked --example bench_upstream
copy="$work/shared-bench-$mode"
rm -rf "$copy" && mkdir -p "$copy"
(cd "$(dirname "$bench")" && tar --exclude=./results --exclude=./run --exclude=./pki -cf - .) \
  | tar -xf - -C "$copy"
up=127.0.0.1:${BENCH_UPSTREAM_TLS_PORT:-18443}
sed -e "s|@UPSTREAM_TLS@|$up|g" benches/config/nginx-upstream.conf.in > "$copy/conf/nginx.conf.in"
sed -e "s|@UPSTREAM_TLS@|$up|g" -e "s|@UPSTREAM_ALPN@|$alpn|g" \
  benches/config/haproxy-upstream.cfg.in > "$copy/conf/haproxy.cfg.in"
"$copy/pki.sh" "$copy/pki" >&2
taskset -c "${UPSTREAM_CPU:-0}" "$root/target/release/examples/bench_upstream" "$up" \
  "$copy/pki/server-ecdsa-chain.pem" "$copy/pki/server-ecdsa.key" &
up_pid=$!
trap 'kill "$up_pid" 2>/dev/null || true' EXIT
export BENCH_UPSTREAM_TLS="$up" UPSTREAM_PROTOCOL="$proto"
"$copy/run.sh"
echo "results: $copy/results/latest/summary.md" >&2

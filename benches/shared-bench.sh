#!/usr/bin/env bash
# Run ../shared/bench/run.sh with Portcullis as the "gateway" row, beside nginx and HAProxy.
#   benches/shared-bench.sh bare          # one route, no policy
#   benches/shared-bench.sh full          # mTLS + pin + IP allowlist + license + JWT
#   benches/shared-bench.sh tls-upstream  # bare, upstream over TLS (HTTP/1.1), verified
#   benches/shared-bench.sh h2-upstream   # bare, upstream over TLS with HTTP/2 (ALPN h2)
#   benches/shared-bench.sh pq            # bare; every tlsload client offers the post-quantum
#                                         # hybrid (X25519MLKEM768, then X25519) instead of the
#                                         # bench's classic default, to price the hybrid handshake
#   benches/shared-bench.sh h2-front      # full policy; HTTP/2 from the client (h2load, TLS 1.3,
#                                         # ALPN h2) to every row: test ka-h2 only
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
mode=${1:?usage: shared-bench.sh bare|full|tls-upstream|h2-upstream|pq|h2-front}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench="${SHARED_BENCH:-$root/../shared/bench/run.sh}"
cd "$root"
cargo build --release --locked --bin portcullis

work=/tmp/portcullis-bench-gw
mkdir -p "$work"
if [[ "$mode" == full || "$mode" == h2-front ]]; then
  secret="$work/hs256.secret"
  export GATEWAY_AUTH_HEADER="Authorization: Bearer $("$root/benches/bench-token.sh" "$secret")"
  export PORTCULLIS_BENCH_SECRET="$secret"
fi
export GATEWAY_CMD="$root/benches/gateway.sh $mode"
export SETUPS="${SETUPS:-nginx1 haproxy1 gateway}"

# A fresh copy of the shared bench (no results, run state or PKI) for a mode that edits its
# configs or tests; prints its path.
bench_copy() {
  local copy="$work/shared-bench-$1"
  rm -rf "$copy" && mkdir -p "$copy"
  (cd "$(dirname "$bench")" && tar --exclude=./results --exclude=./run --exclude=./pki -cf - .) \
    | tar -xf - -C "$copy"
  echo "$copy"
}

case "$mode" in
  bare|full) exec "$bench" ;;
  pq)
    # The shared bench has no key-exchange setting: run a copy whose tlsload calls add
    # --kx x25519mlkem768 (the gateway runs its bare config, hybrid first by default).
    export GATEWAY_CMD="$root/benches/gateway.sh bare"
    copy=$(bench_copy pq)
    sed -i 's|"$BIN/tlsload" --json|"$BIN/tlsload" --kx x25519mlkem768 --json|' "$copy/run.sh"
    grep -q -- '--kx x25519mlkem768' "$copy/run.sh" || { echo "could not set --kx in $copy/run.sh" >&2; exit 1; }
    "$copy/run.sh"
    echo "results: $copy/results/latest/summary.md" >&2
    exit 0 ;;
  h2-front)
    # The shared bench has no HTTP/2 client test: run a copy with HTTP/2 on the ECDSA port of
    # nginx (`http2`, nginx 1.22's listen flag) and HAProxy (`alpn h2,http/1.1`), and a test
    # ka-h2 that drives it with h2load (Debian's nghttp2-client; installed if missing): CONNS/4
    # connections with 4 streams each, so as many requests in flight as the other keep-alive
    # tests. The gateway offers h2 on every listener already and runs its full policy. The
    # floor proxy speaks HTTP/1.1 only, so it has no row here.
    command -v h2load >/dev/null || apt-get install -y nghttp2-client >&2
    export GATEWAY_CMD="$root/benches/gateway.sh full"
    copy=$(bench_copy h2-front)
    sed -i 's|listen 127.0.0.1:@PORT_ECDSA@ ssl;|listen 127.0.0.1:@PORT_ECDSA@ ssl http2;|' "$copy/conf/nginx.conf.in"
    sed -i 's|^\(\s*bind 127.0.0.1:@PORT_ECDSA@ ssl crt [^ ]*\)$|\1 alpn h2,http/1.1|' "$copy/conf/haproxy.cfg.in"
    h2="$root/benches/h2load-json.sh"
    sed -i "s|^  want_test ka-tls13 |  want_test ka-h2 \&\& measure \"\$setup\" ka-h2 h2load \"\$WARMUP\" -- \"\${lg[@]}\" $h2 -c \$((CONNS / 4)) -m 4 -t 1 -D \"\$DURATION\" --warm-up-time \"\$WARMUP\" \"\${hdr[@]}\" --connect-to 127.0.0.1:\$PORT_BASE \"https://localhost:\$PORT_BASE/\"\n&|" "$copy/run.sh"
    grep -q 'ka-h2 h2load' "$copy/run.sh" && grep -q 'ssl http2;' "$copy/conf/nginx.conf.in" \
      && grep -q 'alpn h2' "$copy/conf/haproxy.cfg.in" \
      || { echo "could not add the h2 test to $copy" >&2; exit 1; }
    export TESTS="${TESTS:-ka-h2}" SETUPS="${SETUPS:-nginx1 haproxy1 gateway}"
    "$copy/run.sh"
    # The shared summary knows its own tests only: ka-h2's medians and ratios from raw.jsonl.
    python3 "$root/benches/h2-summary.py" "$copy/results/latest/raw.jsonl" \
      | tee "$copy/results/latest/h2-summary.md"
    echo "results: $copy/results/latest/h2-summary.md" >&2
    exit 0 ;;
  tls-upstream) alpn=http/1.1; proto=http1 ;;
  h2-upstream) alpn=h2; proto=h2 ;;
  *) echo "unknown mode $mode (bare, full, tls-upstream, h2-upstream, pq, h2-front)" >&2; exit 2 ;;
esac

cargo build --release --locked --example bench_upstream
copy=$(bench_copy "$mode")
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

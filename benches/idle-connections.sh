#!/usr/bin/env bash
# RSS of the gateway holding many idle TLS connections (issue 23: "RSS with 100,000 idle
# connections reported").
#
#   benches/idle-connections.sh              # 100,000 connections, bare config
#   CONNS=20000 benches/idle-connections.sh
#
# The shared bench's idle test holds 8,000 connections from one address; 100,000 need more
# than one address pair (one source and destination pair has ~28,000 ephemeral ports here)
# and more file descriptors than its shell allows. So the gateway listens on 127.0.0.1-4
# (four listeners, one certificate), four tlsload processes hold a quarter each, every
# connection makes one request first (as the shared idle test does), and both sides run
# with a raised descriptor limit. Gateway on CPU 1, loadgen and upstream on CPU 0, as in
# ../shared/bench. Prints the RSS before and while holding, and KiB per connection.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="${SHARED_BENCH_DIR:-$root/../shared/bench}"
conns=${CONNS:-100000}
hold_secs=${HOLD_SECS:-5}
work=/tmp/portcullis-idle
# The shared bench's load generator and upstream, built where its run.sh builds them.
bench_target=${BENCH_TARGET:-/tmp/portcullis-bench-target}
bin_dir="$bench_target/release"

cd "$root"
cargo build --release --locked --bin portcullis
(cd "$shared/loadgen" && CARGO_TARGET_DIR="$bench_target" cargo build --release --quiet)
(cd "$shared/upstream" && CARGO_TARGET_DIR="$bench_target" cargo build --release --quiet)
rm -rf "$work" && mkdir -p "$work"
"$shared/pki.sh" "$work/pki" >/dev/null

# One descriptor per connection on each side, plus headroom. Where the hard limit cannot be
# raised (a container without CAP_SYS_RESOURCE), hold what it allows and say so.
if ! ulimit -n $((conns + 10000)) 2>/dev/null; then
  hard=$(ulimit -Hn)
  ulimit -n "$hard"
  if ((conns > hard - 1000)); then
    echo "the descriptor hard limit here is $hard (not raisable): holding $((hard - 1000)) connections, not $conns" >&2
    conns=$((hard - 1000))
  fi
fi

quarter=$(((conns + 3) / 4))
{
  echo "[server]"
  echo "max_connections = $((conns + 1000))"
  echo "watch_config = false"
  for i in 1 2 3 4; do
    cat <<EOF

[[listeners]]
name = "idle$i"
bind = "127.0.0.$i:7443"
tls_resumption = false
[[listeners.certificates]]
chain = "$work/pki/server-ecdsa-chain.pem"
key = "$work/pki/server-ecdsa.key"
EOF
  done
  cat <<EOF

[[routes]]
name = "all"
path_prefix = "/"
upstream = ["http://127.0.0.1:18080"]
EOF
} > "$work/portcullis.toml"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

UPSTREAM_THREADS=1 taskset -c 0 "$bin_dir/bench-upstream" 127.0.0.1:18080 > "$work/upstream.log" 2>&1 &
pids+=($!)
PORTCULLIS_LOG=warn taskset -c 1 "$root/target/release/portcullis" run --config "$work/portcullis.toml" \
  > "$work/gateway.log" 2>&1 &
gw=$!
pids+=("$gw")
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.4/7443) 2>/dev/null && break; sleep 0.1; done

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$gw/status"; }
tls=(--cacert "$work/pki/ca.pem" --sni localhost --tls13)
# Warm the allocator and TLS context before the baseline, as the shared idle test does.
taskset -c 0 "$bin_dir/tlsload" -c 8 -d 1 --warmup 0 "${tls[@]}" https://127.0.0.1:7443/ >/dev/null 2>&1 || true
sleep 1
before=$(rss)

holders=()
for i in 1 2 3 4; do
  taskset -c 0 "$bin_dir/tlsload" --hold "$quarter" --hold-secs $((hold_secs + 240)) --timeout 300 \
    "${tls[@]}" "https://127.0.0.$i:7443/" > "$work/hold$i.out" 2>&1 &
  holders+=($!)
  pids+=($!)
done
# Wait until every holder has opened its share (or given up).
for _ in $(seq 1 3000); do
  n=$(cat "$work"/hold?.out 2>/dev/null | grep -c '^HOLDING' || true)
  ((n == 4)) && break
  sleep 0.1
done
sleep "$hold_secs"
held=$(rss)
grep -h 'first_error' "$work"/hold?.out | head -2 >&2 || true
python3 - "$before" "$held" "$work"/hold?.out <<'PY'
import re, sys
before, held = int(sys.argv[1]), int(sys.argv[2])
ok = errs = 0
open_s = 0.0
for f in sys.argv[3:]:
    m = re.search(r"^HOLDING ok=(\d+) err=(\d+) open_secs=([0-9.]+)", open(f).read(), re.M)
    if m:
        ok += int(m[1]); errs += int(m[2]); open_s = max(open_s, float(m[3]))
print(f"idle TLS 1.3 connections held: {ok:,} (errors {errs:,}; opened in {open_s} s)")
print(f"gateway RSS: {before/1024:,.1f} MiB before, {held/1024:,.1f} MiB holding")
if ok:
    print(f"per idle connection: {(held - before) / ok:.2f} KiB")
PY

#!/usr/bin/env bash
# One gateway load test with ../shared/bench's layout (gateway on CPU 1, the load generator
# and upstream on CPU 0), for A/B comparisons of two builds and for profiles; faster than a
# whole ../shared/bench run. Needs ../shared/bench's tlsload and bench-upstream built (any
# run of benches/shared-bench.sh builds them).
#
#   benches/profile.sh MODE TEST           MODE: full | bare
#                                          TEST: ka | close | mtls | closemtls | idle
#   BIN=/tmp/old-portcullis benches/profile.sh full ka     # another build
#   PERF=1 benches/profile.sh full close                   # + perf record -> $OUT/perf.data
#   STRACE=1 benches/profile.sh full ka                    # + syscall counts -> $OUT/strace.out
#   HEAPTRACK=1 benches/profile.sh bare idle               # + heaptrack -> $OUT/heaptrack.zst
#
# Prints the load generator's req/s and latency and the gateway's CPU ticks (1/100 s) over
# the run (warm-up included); with the gateway's core saturated, req/s is the figure to
# compare. `idle` prints RSS per idle TLS connection (N connections, default 2000).
# The machine is shared: interleave builds (A B A B ...) and compare pairs, not single runs.
set -uo pipefail
mode=${1:?usage: profile.sh full|bare ka|close|mtls|closemtls|idle}
test=${2:?usage: profile.sh full|bare ka|close|mtls|closemtls|idle}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools=${BENCH_BIN:-/tmp/portcullis-bench-target/release}
OUT=${OUT:-/tmp/portcullis-profile}
bin=${BIN:-$root/target/release/portcullis}
mkdir -p "$OUT"
pki=$OUT/pki
[[ -f $pki/client.pem ]] || bash "$root/../shared/bench/pki.sh" "$pki" >/dev/null
for t in tlsload bench-upstream; do
  [[ -x $tools/$t ]] || { echo "profile.sh: $tools/$t missing: run benches/shared-bench.sh once" >&2; exit 2; }
done

pat='run --config portcullis.toml'
pkill -f "$tools/bench-upstream"; pkill -f "$pat"; sleep 0.3
UPSTREAM_THREADS=1 taskset -c 0 "$tools/bench-upstream" 127.0.0.1:18080 >"$OUT/upstream.log" 2>&1 &
export BENCH_PKI=$pki BENCH_UPSTREAM=127.0.0.1:18080 GATEWAY_PORT_ECDSA=7443 GATEWAY_PORT_RSA=7444 GATEWAY_PORT_MTLS=7445
export PORTCULLIS_BENCH_WORK=$OUT/gw
hdr=()
if [[ $mode == full ]]; then
  # The same HS256 token benches/shared-bench.sh makes.
  secret=$OUT/hs256.secret
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret"
  b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
  now=$(date +%s)
  h=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
  p=$(printf '{"iss":"https://bench.portcullis.test","aud":"portcullis-bench","sub":"bench-client","scope":"bench","iat":%d,"exp":%d,"jti":"bench-1"}' "$now" $((now + 86400)) | b64url)
  s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -mac HMAC -macopt "key:$(cat "$secret")" -binary | b64url)
  hdr=(-H "Authorization: Bearer $h.$p.$s")
  export PORTCULLIS_BENCH_SECRET=$secret
fi
if [[ -n ${HEAPTRACK:-} ]]; then
  # Only `run` under heaptrack: the provisioning commands print to stdout.
  wrapper=$OUT/heaptrack-wrapper.sh
  printf '#!/bin/bash\nif [[ $1 == run ]]; then exec heaptrack -o %s/heaptrack %s "$@"; fi\nexec %s "$@"\n' \
    "$OUT" "$bin" "$bin" >"$wrapper"
  chmod +x "$wrapper"
  bin=$wrapper
fi
PORTCULLIS_BIN=$bin taskset -c 1 "$root/benches/gateway.sh" "$mode" >"$OUT/gateway.log" 2>&1 &
for _ in $(seq 150); do (echo >/dev/tcp/127.0.0.1/7443) 2>/dev/null && break; sleep 0.1; done
# The gateway itself, not heaptrack's wrapper shell.
gpid=$(pgrep -f "$pat" | while read -r p; do [[ $(readlink /proc/$p/exe) == */bash ]] || echo "$p"; done | tail -1)
T=(--cacert "$pki/ca.pem" --sni localhost)
url=https://127.0.0.1:7443/
mtls=https://127.0.0.1:7445/
cert=(--cert "$pki/client.pem" --key "$pki/client.key")
case $test in
  ka) args=(-c 64 --tls13) ;;
  close) args=(-c 64 --close --tls13) ;;
  mtls) args=(-c 64 --tls13 "${cert[@]}"); url=$mtls ;;
  closemtls) args=(-c 64 --close --tls13 "${cert[@]}"); url=$mtls ;;
  idle) ;;
  *) echo "profile.sh: unknown test $test" >&2; exit 2 ;;
esac
rss() { awk '/VmRSS/{print $2}' "/proc/$gpid/status"; }
if [[ $test == idle ]]; then
  n=${N:-2000}
  taskset -c 0 "$tools/tlsload" -c 8 -d 1 --warmup 0 "${T[@]}" "${hdr[@]}" --tls13 "$url" >/dev/null 2>&1
  sleep 1
  before=$(rss)
  taskset -c 0 "$tools/tlsload" --hold "$n" --hold-secs 6 --timeout 60 "${T[@]}" "${hdr[@]}" --tls13 "$url" >"$OUT/hold.out" 2>&1 &
  hpid=$!
  for _ in $(seq 600); do grep -q HOLDING "$OUT/hold.out" && break; sleep 0.1; done
  sleep 1
  held=$(rss)
  head -1 "$OUT/hold.out"
  echo "RSS before $before KiB, holding $held KiB: $(( (held - before) * 1000 / n ))e-3 KiB per idle connection"
  wait "$hpid"
else
  t0=$(awk '{print $14+$15}' "/proc/$gpid/stat")
  [[ -n ${STRACE:-} ]] && { timeout -s INT 4 strace -c -f -p "$gpid" -o "$OUT/strace.out" 2>/dev/null & }
  ppid=""
  if [[ -n ${PERF:-} ]]; then
    perf record -F 2000 -e cpu-clock -g -p "$gpid" -o "$OUT/perf.data" -- sleep 6 >/dev/null 2>&1 &
    ppid=$!
  fi
  taskset -c 0 "$tools/tlsload" --json --threads 1 -d "${DUR:-6}" --warmup 1 "${T[@]}" "${hdr[@]}" "${args[@]}" "$url" >"$OUT/load.json" 2>"$OUT/load.err"
  t1=$(awk '{print $14+$15}' "/proc/$gpid/stat")
  python3 - "$t0" "$t1" "$OUT/load.json" <<'PY'
import json, sys
t0, t1, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
r = json.loads(open(path).read().strip().splitlines()[-1])
print({k: r.get(k) for k in ("rps", "p50_us", "p99_us", "errors")}, "gateway cpu ticks", t1 - t0)
PY
  [[ -n $ppid ]] && wait "$ppid"
fi
kill "$gpid" 2>/dev/null
pkill -f "$tools/bench-upstream"
wait 2>/dev/null
true

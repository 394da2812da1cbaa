#!/usr/bin/env bash
# One gateway load test with ../shared/bench's layout (gateway on CPU 1, the load generator
# and upstream on CPU 0), for A/B comparisons of two builds and for profiles; faster than a
# whole ../shared/bench run. Needs ../shared/bench's tlsload and bench-upstream built (any
# run of benches/shared-bench.sh builds them).
#
#   benches/profile.sh MODE TEST           MODE: full | bare
#                                          TEST: ka | rate | close | mtls | closemtls | idle | h2
#                                                | wrk (ka with wrk, as ka-wrk)
#   BIN=/tmp/old-portcullis benches/profile.sh full ka     # another build
#   PERF=1 benches/profile.sh full close                   # + perf record -> $OUT/perf.data
#   STRACE=1 benches/profile.sh full ka                    # + syscall counts -> $OUT/strace.out
#   HEAPTRACK=1 benches/profile.sh bare idle               # + heaptrack -> $OUT/heaptrack.zst
#   CALLGRIND=1 benches/profile.sh full ka                 # user-space instructions per request
#   KX=x25519mlkem768 CALLGRIND=1 benches/profile.sh bare close   # the hybrid handshake
#   PEER=nginx PERF=1 benches/profile.sh bare ka           # the same test against nginx or
#   PEER=haproxy STRACE=1 benches/profile.sh bare ka       # HAProxy, as ../shared/bench runs them
#   UPSTREAM=tls CALLGRIND=1 benches/profile.sh bare ka    # upstream over TLS (HTTP/1.1), as
#   UPSTREAM=h2 PEER=nginx ... benches/profile.sh bare ka  # `shared-bench.sh tls-upstream` and
#                                                          # `h2-upstream` run it (MODE is then
#                                                          # the bare upstream config whatever
#                                                          # is given; nginx: HTTP/1.1 over TLS)
#
# CALLGRIND=1 runs the server under valgrind's callgrind (gateway or PEER=nginx) and counts
# its instructions over 10 s of a 25 s keep-alive run, after the connections are up:
# repeatable to within ~0.5% whatever else the machine does, unlike req/s (kernel time is
# not counted). Requests are counted by calls to a function called once per request.
#
# `h2` drives HTTP/2 with h2load (16 connections x 4 streams, ALPN h2; peers get HTTP/2 on
# their ECDSA port as `shared-bench.sh h2-front` gives them); under callgrind its requests are
# counted by HPACK header-block decodes, one per request.
#
# Prints the load generator's req/s and latency and the gateway's CPU ticks (1/100 s) over
# the run (warm-up included); with the gateway's core saturated, req/s is the figure to
# compare. `idle` prints RSS per idle TLS connection (N connections, default 2000).
# The machine is shared: interleave builds (A B A B ...) and compare pairs, not single runs.
set -uo pipefail
mode=${1:?usage: profile.sh full|bare ka|rate|close|mtls|closemtls|idle|h2|wrk}
test=${2:?usage: profile.sh full|bare ka|rate|close|mtls|closemtls|idle|h2|wrk}
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
peer=${PEER:-}
upstream_tls=${UPSTREAM:-}
tls_up=$root/target/release/examples/bench_upstream
case $upstream_tls in
  "") ;;
  tls|h2) [[ -x $tls_up ]] || { echo "profile.sh: $tls_up missing: cargo build --release --example bench_upstream" >&2; exit 2; }
          mode=$([[ $upstream_tls == tls ]] && echo tls-upstream || echo h2-upstream) ;;
  *) echo "profile.sh: UPSTREAM is tls or h2" >&2; exit 2 ;;
esac
pkill -f "$tools/bench-upstream"; pkill -f "$tls_up"; pkill -f "$pat"; pkill -f "$OUT/peer/"; sleep 0.3
UPSTREAM_THREADS=1 taskset -c 0 "$tools/bench-upstream" 127.0.0.1:18080 >"$OUT/upstream.log" 2>&1 &
export BENCH_PKI=$pki BENCH_UPSTREAM=127.0.0.1:18080 GATEWAY_PORT_ECDSA=7443 GATEWAY_PORT_RSA=7444 GATEWAY_PORT_MTLS=7445
if [[ -n $upstream_tls ]]; then
  export BENCH_UPSTREAM_TLS=127.0.0.1:18443
  export UPSTREAM_PROTOCOL=$([[ $upstream_tls == tls ]] && echo http1 || echo h2)
  taskset -c 0 "$tls_up" "$BENCH_UPSTREAM_TLS" "$pki/server-ecdsa-chain.pem" "$pki/server-ecdsa.key" >"$OUT/upstream-tls.log" 2>&1 &
  conf=$OUT/upstream-conf; mkdir -p "$conf"
  sed -e "s|@UPSTREAM_TLS@|$BENCH_UPSTREAM_TLS|g" "$root/benches/config/nginx-upstream.conf.in" >"$conf/nginx.conf.in"
  alpn=$([[ $upstream_tls == tls ]] && echo http/1.1 || echo h2)
  sed -e "s|@UPSTREAM_TLS@|$BENCH_UPSTREAM_TLS|g" -e "s|@UPSTREAM_ALPN@|$alpn|g" \
    "$root/benches/config/haproxy-upstream.cfg.in" >"$conf/haproxy.cfg.in"
else
  conf=$root/../shared/bench/conf
fi
export PORTCULLIS_BENCH_WORK=$OUT/gw
hdr=()
if [[ $mode == full ]]; then
  secret=$OUT/hs256.secret
  hdr=(-H "Authorization: Bearer $("$root/benches/bench-token.sh" "$secret")")
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
# A reference peer from ../shared/bench's own config templates (1 worker or thread, pinned
# like the gateway); the request header of `full` is then sent but not checked by them.
render() { # template out port_base
  sed -e "s|@RUN@|$(dirname "$2")|g" -e "s|@PKI@|$pki|g" -e "s|@WORKERS@|1|g" \
      -e "s|@THREADS@|1|g" -e "s|@UPSTREAM@|127.0.0.1:18080|g" -e "s|@PORT_ECDSA@|$3|g" \
      -e "s|@PORT_RSA@|$(($3 + 1))|g" -e "s|@PORT_MTLS@|$(($3 + 2))|g" "$1" >"$2"
  if [[ $test == wrk ]]; then
    # ../shared/bench's ka-wrk (an OpenSSL client, 64 connections); its req/s as JSON.
    taskset -c 0 wrk -t1 -c64 -d"$1" "$url" | awk '/Requests\/sec/ {printf "JSON {\"rps\": %s, \"errors\": 0}\n", $2}'
  elif [[ $test == h2 ]]; then
    sed -i -e 's|listen 127.0.0.1:\([0-9]*\) ssl;|listen 127.0.0.1:\1 ssl http2;|' \
      -e "s|^\\(\\s*bind 127.0.0.1:$3 ssl crt [^ ]*\\)$|\\1 alpn h2,http/1.1|" "$2"
  fi
}
cg=()
per_request=""
if [[ -n ${CALLGRIND:-} ]]; then
  rm -f "$OUT"/callgrind.out*
  cg=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$OUT/callgrind.out")
  case $peer in
    # One TLS record sealed for the client per response (the bench's bodies are small).
    "") per_request=EVP_AEAD_CTX_seal; per=1
        # A TLS upstream: one record sealed to it as well.
        [[ $upstream_tls == tls ]] && per=2
        # HTTP/2 packs several responses in a record: count header blocks instead.
        [[ $test == h2 ]] && { per_request=h2::hpack::decoder::Decoder::decode; per=1; }
        # An HTTP/2 upstream packs several requests in a record too; its response headers
        # are decoded once per request (twice with an HTTP/2 front).
        if [[ $upstream_tls == h2 ]]; then
          per_request=h2::hpack::decoder::Decoder::decode; per=1
          [[ $test == h2 ]] && per=2
        fi
        wrapper=$OUT/callgrind-wrapper.sh
        printf '#!/bin/bash\nif [[ $1 == run ]]; then exec %s %s "$@"; fi\nexec %s "$@"\n' \
          "${cg[*]}" "$bin" "$bin" >"$wrapper"
        chmod +x "$wrapper"
        bin=$wrapper ;;
    nginx) per_request=ngx_http_create_request; per=1 ;;
    *) echo "profile.sh: CALLGRIND=1 works for the gateway and PEER=nginx" >&2; exit 2 ;;
  esac
fi
case $peer in
  "")
    port=7443
    PORTCULLIS_BIN=$bin taskset -c 1 "$root/benches/gateway.sh" "$mode" >"$OUT/gateway.log" 2>&1 &
    ;;
  nginx)
    port=8443; rm -rf "$OUT/peer"; mkdir -p "$OUT/peer"
    render "$conf/nginx.conf.in" "$OUT/peer/nginx.conf" $port
    # Under callgrind, one process (no master): valgrind follows no fork into its output.
    single=""; [[ -n $per_request ]] && single=" master_process off;"
    taskset -c 1 "${cg[@]}" nginx -p "$OUT/peer" -c "$OUT/peer/nginx.conf" -g "daemon off;$single" >"$OUT/gateway.log" 2>&1 &
    ;;
  haproxy)
    port=9443; rm -rf "$OUT/peer"; mkdir -p "$OUT/peer"
    render "$conf/haproxy.cfg.in" "$OUT/peer/haproxy.cfg" $port
    taskset -c 1 haproxy -db -f "$OUT/peer/haproxy.cfg" >"$OUT/gateway.log" 2>&1 &
    ;;
  *) echo "profile.sh: PEER is nginx or haproxy" >&2; exit 2 ;;
esac
for _ in $(seq 150); do (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
case $peer in
  # The gateway itself, not heaptrack's wrapper shell.
  "") gpid=$(pgrep -f "$pat" | while read -r p; do [[ $(readlink /proc/$p/exe) == */bash ]] || echo "$p"; done | tail -1) ;;
  nginx) sleep 0.3
    if [[ -n $per_request ]]; then gpid=$(pgrep -f "valgrind.*$OUT/peer/nginx.conf" | tail -1)
    else gpid=$(pgrep -f 'nginx: worker' | tail -1); fi ;;
  haproxy) gpid=$(pgrep -f "$OUT/peer/haproxy.cfg" | tail -1) ;;
esac
T=(--cacert "$pki/ca.pem" --sni localhost)
url=https://127.0.0.1:$port/
mtls=https://127.0.0.1:$((port + 2))/
cert=(--cert "$pki/client.pem" --key "$pki/client.key")
case $test in
  ka) args=(-c 64 --tls13) ;;
  rate) args=(-c 16 --rate 5000 --tls13) ;;  # ../shared/bench's lat-rate
  close) args=(-c 64 --close --tls13) ;;
  mtls) args=(-c 64 --tls13 "${cert[@]}"); url=$mtls ;;
  closemtls) args=(-c 64 --close --tls13 "${cert[@]}"); url=$mtls ;;
  idle|h2|wrk) ;;
  *) echo "profile.sh: unknown test $test" >&2; exit 2 ;;
esac
# KX=x25519mlkem768 makes tlsload offer the post-quantum hybrid first (its default offers
# classic groups only, as ../shared/bench's does), to price the hybrid handshake.
[[ -n ${KX:-} ]] && args+=(--kx "$KX")
rss() { awk '/VmRSS/{print $2}' "/proc/$gpid/status"; }
# The keep-alive load for SECONDS, its JSON result line on stdout.
load() { # seconds
  if [[ $test == wrk ]]; then
    # ../shared/bench's ka-wrk (an OpenSSL client, 64 connections); its req/s as JSON.
    taskset -c 0 wrk -t1 -c64 -d"$1" "$url" | awk '/Requests\/sec/ {printf "JSON {\"rps\": %s, \"errors\": 0}\n", $2}'
  elif [[ $test == h2 ]]; then
    taskset -c 0 "$root/benches/h2load-json.sh" -c 16 -m 4 -t 1 -D "$1" --warm-up-time 1 "${hdr[@]}" \
      --connect-to "127.0.0.1:$port" "https://localhost:$port/"
  else
    taskset -c 0 "$tools/tlsload" --json --threads 1 -d "$1" --warmup 1 "${T[@]}" "${hdr[@]}" "${args[@]}" "$url"
  fi
}
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
elif [[ -n $per_request ]]; then
  # Valgrind is ~50x slower: a long run, measured in its middle.
  load 25 >"$OUT/load.json" 2>"$OUT/load.err" &
  lpid=$!
  sleep 8
  callgrind_control -i on "$gpid" >/dev/null 2>&1
  sleep 10
  callgrind_control -d "$gpid" >/dev/null 2>&1
  callgrind_control -i off "$gpid" >/dev/null 2>&1
  wait "$lpid"
  python3 "$root/benches/callgrind-calls.py" "$OUT/callgrind.out.1" "$per_request" "$per"
else
  t0=$(awk '{print $14" "$15}' "/proc/$gpid/stat")
  [[ -n ${STRACE:-} ]] && { timeout -s INT 4 strace -c -f -p "$gpid" -o "$OUT/strace.out" 2>/dev/null & }
  ppid=""
  if [[ -n ${PERF:-} ]]; then
    perf record -F 2000 -e cpu-clock -g -p "$gpid" -o "$OUT/perf.data" -- sleep 6 >/dev/null 2>&1 &
    ppid=$!
  fi
  load "${DUR:-6}" >"$OUT/load.json" 2>"$OUT/load.err"
  t1=$(awk '{print $14" "$15}' "/proc/$gpid/stat")
  warm=1; [[ $test == wrk ]] && warm=0  # wrk has no warm-up
  python3 - "$t0" "$t1" "$OUT/load.json" "${DUR:-6}" "$warm" <<'PY'
import json, sys
(u0, s0), (u1, s1) = (map(int, t.split()) for t in sys.argv[1:3])
r = json.loads(open(sys.argv[3]).read().strip().splitlines()[-1].removeprefix("JSON "))
print({k: r.get(k) for k in ("rps", "p50_us", "p99_us", "errors")}, "server cpu ticks", u1 + s1 - u0 - s0)
# Ticks include the warm-up (1 s, none with wrk); req/s is over the measured seconds only.
n = (r.get("rps") or 0) * (float(sys.argv[4]) + float(sys.argv[5]))
if n:
    print(f"~us/req (warm-up counted at the same rate): user {(u1 - u0) * 1e4 / n:.2f}, "
          f"system {(s1 - s0) * 1e4 / n:.2f}, total {(u1 + s1 - u0 - s0) * 1e4 / n:.2f}")
PY
  [[ -n $ppid ]] && wait "$ppid"
fi
kill "$gpid" 2>/dev/null
[[ -n $peer ]] && pkill -f "$OUT/peer/"
[[ -n $per_request ]] && { sleep 1; pkill -f "valgrind.*--callgrind-out-file=$OUT/"; }
pkill -f "$tools/bench-upstream"; pkill -f "$tls_up"
wait 2>/dev/null
true

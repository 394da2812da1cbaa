#!/usr/bin/env bash
# The gateway side of ../shared/bench/run.sh (its GATEWAY_CMD): fill benches/config/MODE.toml
# with the bench's environment (BENCH_PKI, BENCH_UPSTREAM, GATEWAY_PORT_*), provision what
# the full policy needs (licensing key, two activated licenses, the HS256 secret), then exec
# the release binary, so the process the bench measures is the gateway itself.
#   MODE: bare | full | tls-upstream | h2-upstream   (run by benches/shared-bench.sh; see
#   benches/RESULTS.md). The upstream modes use config/upstream.toml with BENCH_UPSTREAM_TLS
#   and UPSTREAM_PROTOCOL.
set -euo pipefail
mode=${1:?usage: gateway.sh bare|full|tls-upstream|h2-upstream}
template=$mode
[[ "$mode" == tls-upstream || "$mode" == h2-upstream ]] && template=upstream
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${PORTCULLIS_BIN:-$here/../target/release/portcullis}"
work="${PORTCULLIS_BENCH_WORK:-/tmp/portcullis-bench-gw}/$mode"
rm -rf "$work" && mkdir -p "$work" && cd "$work"

pin=""
if [[ "$mode" == full ]]; then
  pin=$("$bin" pin "$BENCH_PKI/client.pem" | awk '/^spki pin:/ {print $3}')
  "$bin" license keygen --out . --name license >/dev/null
  cp "${PORTCULLIS_BENCH_SECRET:?the HS256 secret file (benches/shared-bench.sh makes it)}" hs256.secret
fi
sed -e "s|@BENCH_PKI@|$BENCH_PKI|g" -e "s|@BENCH_UPSTREAM@|$BENCH_UPSTREAM|g" \
    -e "s|@GATEWAY_PORT_ECDSA@|${GATEWAY_PORT_ECDSA:-7443}|g" -e "s|@GATEWAY_PORT_RSA@|${GATEWAY_PORT_RSA:-7444}|g" \
    -e "s|@GATEWAY_PORT_MTLS@|${GATEWAY_PORT_MTLS:-7445}|g" -e "s|@CLIENT_PIN@|$pin|g" \
    -e "s|@BENCH_UPSTREAM_TLS@|${BENCH_UPSTREAM_TLS:-}|g" -e "s|@UPSTREAM_PROTOCOL@|${UPSTREAM_PROTOCOL:-auto}|g" \
    "$here/config/$template.toml" > portcullis.toml
# More config for one experiment (e.g. a [tracing] section), appended as written.
[[ -n "${PORTCULLIS_BENCH_EXTRA:-}" ]] && cat "$PORTCULLIS_BENCH_EXTRA" >> portcullis.toml
if [[ "$mode" == full ]]; then
  # The mTLS machine: its key and its address; everyone else on loopback: the address.
  "$bin" license activate --config portcullis.toml "$("$bin" license issue --key license.key \
      --customer bench --machine-id bench-client --pin "$pin" --ip 127.0.0.0/8 --match pin_and_ip \
      --routes mtls --expires 2099-12-31 --id bench-mtls)" >/dev/null
  "$bin" license activate --config portcullis.toml "$("$bin" license issue --key license.key \
      --customer bench --machine-id loopback --ip 127.0.0.0/8 --match ip \
      --routes oneway --expires 2099-12-31 --id bench-oneway)" >/dev/null
fi
# Access logging off, as the references run (access_log off); metrics stay on.
export PORTCULLIS_LOG="${PORTCULLIS_LOG:-warn}"
exec "$bin" run --config portcullis.toml

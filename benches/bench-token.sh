#!/usr/bin/env bash
# The full-policy bench's credentials: writes a fresh 32-byte HS256 secret to SECRET_FILE and
# prints a token signed with it, valid for a day, with the bench route's scope. Made with
# openssl so the benches need nothing else. Used by shared-bench.sh and profile.sh.
#   token=$(benches/bench-token.sh /tmp/hs256.secret)
set -euo pipefail
secret=${1:?usage: bench-token.sh SECRET_FILE}
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '{"iss":"https://bench.portcullis.test","aud":"portcullis-bench","sub":"bench-client","scope":"bench","iat":%d,"exp":%d,"jti":"bench-1"}' "$now" $((now + 86400)) | b64url)
sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -mac HMAC -macopt "key:$(cat "$secret")" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$sig"

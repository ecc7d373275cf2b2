#!/usr/bin/env bash
# OpenAPI-driven fuzzing: schemathesis generates requests for every operation of the running
# server's /openapi.json (with a valid root key), and checks that none gets a 5xx and every
# answer matches the documented status codes, content types, headers and schemas.
# Usage: scripts/api_fuzz.sh [examples-per-operation]   (.ci/run uses the default, 20;
# a longer run: scripts/api_fuzz.sh 500)
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-20}"
if ! python3 -c 'import schemathesis' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi
cargo build --locked -p keyward --bin keyward
dir=$(mktemp -d)
stop_server() {
  kill "$server" 2>/dev/null || return 0
  # A graceful stop takes well under a second; never let a stuck one hold CI.
  for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
}
trap 'stop_server; rm -rf "$dir"' EXIT
# A server of its own on embedded SQLite, whatever the caller's environment says.
env -u KEYWARD_MASTER_KEY -u DATABASE_URL -u REDIS_URL KEYWARD_LOG=warn \
  target/debug/keyward serve --listen 127.0.0.1:0 --data-dir "$dir/data" \
  > "$dir/out" 2> "$dir/err" &
server=$!
for _ in $(seq 100); do
  grep -q '^Keyward listening on ' "$dir/out" 2>/dev/null && break
  sleep 0.1
done
base=$(sed -n 's/^Keyward listening on //p' "$dir/out")
key=$(sed -n 's/^ *live: //p' "$dir/out")
[ -n "$base" ] && [ -n "$key" ] || { cat "$dir/err"; echo "the server did not start"; exit 1; }
schemathesis run "$base/openapi.json" --header "Authorization: Bearer $key" \
  --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance,response_headers_conformance \
  --phases coverage,fuzzing,stateful --max-examples "$examples" --workers 1 \
  --exclude-path /ws --seed 1 --warnings off

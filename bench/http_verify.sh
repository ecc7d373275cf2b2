#!/usr/bin/env bash
# HTTP benchmark of `POST /api/v1/keys/verify` against `GET /healthz` on the same server, in
# the same run, plus idle and 100k-keys memory. Results go to stdout; copy them into
# docs/benchmarks.md. Usage: bench/http_verify.sh [seconds-per-run] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  apt-get update && apt-get install -y wrk
fi
cargo build --release -p keyward
exec python3 bench/http_verify.py "${CARGO_TARGET_DIR:-target}/release/keyward" "${1:-10}" "${2:-3}"

#!/usr/bin/env bash
# The cluster figures of docs/benchmarks.md: import throughput, verification latency with
# 1,000,000 keys against 10,000, PostgreSQL against SQLite verify throughput, and revocation
# propagation across three nodes. Needs the PostgreSQL named by KEYWARD_BENCH_DATABASE_URL
# (default postgres://postgres@127.0.0.1:5432/test; the run makes and drops its own
# databases). Usage: bench/cluster.sh [revocations] [keys] [wrk-seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v psql >/dev/null; then
  apt-get update && apt-get install -y wrk postgresql-client
fi
cargo build --release -p keyward
exec python3 bench/cluster.py "${CARGO_TARGET_DIR:-target}/release/keyward" "${1:-1000}" "${2:-1000000}" "${3:-5}"

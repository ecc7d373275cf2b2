#!/usr/bin/env bash
# HTTP benchmark of usage control (issue 5): verify with a rate limit and credits against
# plain verify on the same server, in the same run, on the in-process engine; then with
# Redis on one node and on three nodes (PostgreSQL shared), with Redis round trips per
# verification counted from Redis's own command statistics.
# Usage: bench/usage.sh [seconds-per-run] [runs]
# Needs: wrk; Redis at KEYWARD_BENCH_REDIS_URL (default redis://127.0.0.1:6379); for three
# nodes PostgreSQL at KEYWARD_BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test)
# and psql.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  apt-get update && apt-get install -y wrk
fi
cargo build --release -p keyward
exec python3 bench/usage.py "${CARGO_TARGET_DIR:-target}/release/keyward" "${1:-10}" "${2:-3}"

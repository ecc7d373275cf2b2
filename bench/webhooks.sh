#!/usr/bin/env bash
# Webhook delivery and leak reports, measured (issue 22): key creation with webhooks on
# against off, EVENTS events to 5 endpoints (lost, repeated, commit-to-receipt p50/p99),
# the same with one endpoint hanging, and a 500-key GitHub report.
# Usage: bench/webhooks.sh [EVENTS] [SECONDS] [ADMIN_URL]   (ADMIN_URL: PostgreSQL, 3 nodes)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 1; }
cargo build --release --locked -p keyward >/dev/null
exec python3 bench/webhooks.py target/release/keyward "${1:-10000}" "${2:-10}" "${3:-}"

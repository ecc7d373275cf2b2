#!/usr/bin/env bash
# The customer portal, measured (issue 23): page render for a customer with 1,000 keys and
# the session exchange, p50/p99, with references from the same run.
# Usage: bench/portal.sh [REQUESTS] [ADMIN_URL]   (ADMIN_URL: PostgreSQL instead of SQLite)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p keyward >/dev/null
cd bench
exec python3 portal.py ../target/release/keyward "${1:-500}" "${2:-}"

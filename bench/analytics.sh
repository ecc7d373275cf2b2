#!/usr/bin/env bash
# Usage analytics (issue 8): verify throughput with recording on against off, the usage query
# over 30 days of per-minute counts, and the first page of a 100,000-key list.
# Usage: bench/analytics.sh [seconds-per-run] [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  apt-get update && apt-get install -y wrk
fi
cargo build --release -p keyward
exec python3 bench/analytics.py "${CARGO_TARGET_DIR:-target}/release/keyward" "${1:-10}" "${2:-3}"

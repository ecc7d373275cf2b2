#!/usr/bin/env bash
# Soak and fault run (issue 9): three nodes on PostgreSQL and Redis under mixed traffic
# (verifications, metered keys, create/rotate/revoke, demo sandboxes, WebSocket clients) for
# the given time (default 600 s), while one node restarts and PostgreSQL and Redis are each
# blocked for 20 s. Prints RSS and descriptor figures, revoked-key acceptances, credit
# overspend, and 5xx answers in and out of the fault windows; exits non-zero on a violation.
# Not part of .ci/run. Needs the machine's PostgreSQL and Redis
# (KEYWARD_SOAK_DATABASE_URL, KEYWARD_SOAK_REDIS_URL; the local ones by default).
# Usage: bench/soak.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p keyward
python3 bench/soak.py "${CARGO_TARGET_DIR:-target}/release/keyward" "${1:-600}"

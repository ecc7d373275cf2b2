#!/usr/bin/env bash
# Issue 19, item 1: one node over a large key population in PostgreSQL with the
# verification cache bounded: RSS, and throughput on a large working set against a small
# one in the same run. Writes the keys straight into a fresh database (minutes for
# millions), then verifies random keys with wrk.
# Usage: bench/memory.sh [keys] [working-set] [budget-bytes] [seconds]
#   default: 10000000 keys, a working set of 1000000, a 256 MiB budget, 10 s.
# Needs KEYWARD_TEST_DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test); installs
# wrk and psql from Debian when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KEYWARD_TEST_DATABASE_URL:?set KEYWARD_TEST_DATABASE_URL to a PostgreSQL server}"
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v psql >/dev/null || missing+=(postgresql-client)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -p keyward
python3 bench/memory.py "${CARGO_TARGET_DIR:-target}/release/keyward" \
  "$KEYWARD_TEST_DATABASE_URL" "${1:-10000000}" "${2:-1000000}" "${3:-268435456}" "${4:-10}"

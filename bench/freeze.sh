#!/usr/bin/env bash
# Issue 19, item 3: three `keyward serve` nodes on PostgreSQL, one frozen with SIGSTOP at
# random moments under write load, N times (default 100). Every revoke made on another node
# meanwhile must return within two leases and a second, and the resumed node must never
# accept the revoked key. Prints the slowest revoke.
# Usage: bench/freeze.sh [freezes]   (needs KEYWARD_TEST_DATABASE_URL, e.g.
# postgres://postgres@127.0.0.1:5432/test)
set -euo pipefail
cd "$(dirname "$0")/.."
: "${KEYWARD_TEST_DATABASE_URL:?set KEYWARD_TEST_DATABASE_URL to a PostgreSQL server}"
KEYWARD_TEST_FREEZES="${1:-100}" KEYWARD_TEST_BACKEND=postgres \
  cargo test --locked -p keyward --test it -- cluster::revokes_never_hang_behind_a_frozen_node \
  --nocapture 2>&1 | grep -E "freezes:|test result|panicked|round"

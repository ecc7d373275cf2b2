#!/usr/bin/env bash
# The whole test suite: unit, property and integration tests (the latter start real servers
# on random ports with fresh databases), built with the benchmarks so they cannot rot, then
# the TypeScript SDK's tests against the server built here. The storage and HTTP suites then
# run again on PostgreSQL when KEYWARD_TEST_DATABASE_URL names one.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
# The TypeScript SDK against the server just built (docs/sdk-typescript.md), from its lockfile.
echo "== the TypeScript SDK (sdks/typescript)"
(
  cd sdks/typescript
  npm ci --no-audit --no-fund
  npm run typecheck
  KEYWARD_BIN="$PWD/../../target/debug/keyward" npm test
)
if [ -n "${KEYWARD_TEST_DATABASE_URL:-}" ]; then
  echo "== the storage and HTTP suites again, on PostgreSQL"
  KEYWARD_TEST_BACKEND=postgres cargo test --locked -p keyward-store -p keyward --test sql_store --test it
else
  echo "skipped: the PostgreSQL run of the suite (set KEYWARD_TEST_DATABASE_URL to run it)"
fi

#!/usr/bin/env bash
# The whole test suite: unit, property and integration tests (the latter start real servers
# on random ports with fresh databases). Also builds the benchmarks so they cannot rot.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked

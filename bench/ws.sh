#!/usr/bin/env bash
# Benchmark of the WebSocket event stream (issue 7): memory per idle socket, delivery latency
# to 2,000 sockets, and 5,000 events a second fanned out to 100 sockets.
# Usage: bench/ws.sh [sockets] [rounds] [fan-out seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -p keyward --bin keyward --example ws_bench
target="${CARGO_TARGET_DIR:-target}/release"
exec "$target/examples/ws_bench" "$target/keyward" "${1:-2000}" "${2:-30}" "${3:-20}"

#!/usr/bin/env bash
# HTTP benchmark of issue 6: verify-request with a JWT public key and a cached ES256 JWT
# against keys/verify with a secret key, same server, same run.
# Usage: bench/credentials.sh [seconds-per-run] [runs]
# Needs: wrk (installed from Debian when missing) and openssl (signs the test token).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null; then
  apt-get update && apt-get install -y wrk
fi
cargo build --release -p keyward
exec python3 bench/credentials.py "${CARGO_TARGET_DIR:-target}/release/keyward" "${1:-10}" "${2:-3}"

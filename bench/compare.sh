#!/usr/bin/env bash
# Keyward against nginx, HAProxy, Envoy and Express Gateway on this machine, in one run
# (issue 9), and Keyward behind nginx and Envoy against their own key checks (issue 20).
# Usage: bench/compare.sh [seconds-per-run] [runs]
# Installs what it needs when missing (wrk, nginx, HAProxy and Node.js from Debian; Express
# Gateway from npm, at the version in bench/peers/express-gateway/package-lock.json; the
# Python `cryptography` package, to sign JWTs), builds Keyward in release mode, starts every
# system on loopback with the configuration in bench/peers/, and prints a Markdown table,
# also saved as target/compare-<date>.md. Every process it starts is stopped by PID.
# KW_COMPARE_BASELINE=<another keyward binary> measures that build too, each case right after
# the same case of this one, with a table of ratios; KW_COMPARE_ONLY=keyward skips the peers.
# KW_COMPARE_CASES=<regex> measures only the matching "system: case" (issue 24 reruns),
# KW_COMPARE_CONNECTIONS=<n> opens n connections instead of 32.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
need() { command -v "$1" >/dev/null || missing+=("$2"); }
need wrk wrk
need nginx nginx-light
need haproxy haproxy
need node nodejs
need npm npm
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -c "import cryptography" 2>/dev/null || python3 -m pip install --quiet cryptography
# Envoy, for its api_key_auth filter and ext_authz in front of Keyward (issue 20).
command -v envoy >/dev/null || python3 -m pip install --quiet -r scripts/gateway-requirements.txt
(cd bench/peers/express-gateway && npm ci --no-audit --no-fund --silent)
cargo build --release -p keyward
cargo build --release -p keyward-server --example null_ext_authz
mkdir -p target
python3 bench/compare.py "${CARGO_TARGET_DIR:-target}/release/keyward" "${1:-10}" "${2:-3}" \
  | tee "target/compare-$(date +%F).md"

#!/usr/bin/env bash
# Coverage-guided fuzzing of Keyward's parsers with cargo-fuzz (libFuzzer), which needs a
# nightly toolchain (`rustup toolchain install nightly`; `cargo install cargo-fuzz`).
# Usage: scripts/fuzz.sh [seconds-per-target] [jobs-at-once] [target ...]
# Each target runs for the given time (default 600) and adds what it finds to
# fuzz/corpus/<target>; a crash is saved under fuzz/artifacts/<target> and stops the run.
# The stable test suite replays fuzz/corpus and fuzz/regressions (crates/keyward-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
jobs="${2:-1}"
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(key_format credential_headers signature_header jwt_preparse permission_query management_json)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -O
mkdir -p target/fuzz-logs
run() {
  local target="$1"
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  cargo +nightly fuzz run -O "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -max_len=4096 \
    -artifact_prefix="fuzz/artifacts/$target/" > "target/fuzz-logs/$target.log" 2>&1
  local status=$?
  echo "$target: exit $status; $(grep -E '^stat::number_of_executed_units' "target/fuzz-logs/$target.log" | tail -1)"
  return $status
}
failed=0
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || failed=1; done
  run "$target" &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n || failed=1; done
exit $failed

#!/usr/bin/env bash
# Builds the cargo-fuzz targets and runs each for a fixed time; exits non-zero if any target
# crashes (a panic, a failed property, a timeout or running out of memory), after printing how to
# reproduce it. See README.md in this directory.
#
#   tests/fuzz/ci.sh                        # CI: every target, 25 s each
#   tests/fuzz/ci.sh 600                    # the longer run: 10 minutes per target
#   tests/fuzz/ci.sh 60 auth_header page_token
#
# Environment: FUZZ_SANITIZER (default `none`; `address` works too, see README.md),
# FUZZ_JOBS (targets run at once, default 1).
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.2
SECONDS_PER_TARGET="${1:-25}"
shift || true
SANITIZER="${FUZZ_SANITIZER:-none}"
JOBS="${FUZZ_JOBS:-1}"
ALL_TARGETS=(auth_header token_verify request_validation page_token)
if [ "$#" -gt 0 ]; then TARGETS=("$@"); else TARGETS=("${ALL_TARGETS[@]}"); fi

# libFuzzer instrumentation needs unstable rustc flags; only the stable toolchain is installed.
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }
started=$SECONDS

step "cargo-fuzz ${CARGO_FUZZ_VERSION}"
if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz ${CARGO_FUZZ_VERSION}" ]; then
  cargo install --locked cargo-fuzz --version "${CARGO_FUZZ_VERSION}"
fi
cargo fuzz --version

step "build (sanitizer: ${SANITIZER})"
# Fuzz exactly the dependency versions the services ship with: start from the root lock file
# (cargo adds the fuzz-only crates, which Cargo.toml pins, and drops what is unused).
cp ../../Cargo.lock Cargo.lock
build_started=$SECONDS
cargo fuzz build --sanitizer "${SANITIZER}"
echo "built in $((SECONDS - build_started)) s"

# Extra libFuzzer options per target.
options_for() {
  local opts=(-max_total_time="${SECONDS_PER_TARGET}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  [ -f "dict/$1.dict" ] && opts+=(-dict="dict/$1.dict")
  # Requests up to the services' message limit, so the 10,000-character description is reachable.
  [ "$1" = request_validation ] && opts+=(-max_len=65536)
  printf '%s\n' "${opts[@]}"
}

run_target() {
  local target=$1 log="logs/$1.log" corpora=("corpus/$1")
  mkdir -p "corpus/$target" "artifacts/$target" logs
  [ -d "seeds/$target" ] && corpora+=("seeds/$target")
  local before
  before=$(ls "artifacts/$target")
  local opts
  mapfile -t opts < <(options_for "$target")
  # The first corpus directory collects what the fuzzer finds; seeds/ is only read.
  if cargo fuzz run --sanitizer "${SANITIZER}" "$target" "${corpora[@]}" -- "${opts[@]}" >"$log" 2>&1; then
    summarize "$target" ok
    return 0
  fi
  summarize "$target" FAILED
  echo "---- what failed (full log: tests/fuzz/$log)"
  grep -m1 -A8 -E 'panicked at|ERROR: libFuzzer|ALARM: working|out-of-memory|deadly signal' "$log" || tail -n 40 "$log"
  sed -n '/^Failing input:/,/^Minimize test case/p' "$log"
  local new
  new=$(comm -13 <(echo "$before") <(ls "artifacts/$target") || true)
  for artifact in $new; do
    echo "---- reproduce (from the repository root):"
    echo "  cd tests/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer ${SANITIZER} $target artifacts/$target/$artifact"
    echo "  cd tests/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz fmt --sanitizer ${SANITIZER} $target artifacts/$target/$artifact   # the input, decoded"
    echo "  input (base64, to recreate the file on another checkout):"
    echo "    echo '$(base64 -w0 "artifacts/$target/$artifact" | head -c 4000)' | base64 -d > tests/fuzz/artifacts/$target/$artifact"
  done
  return 1
}

summarize() {
  local target=$1 verdict=$2 log="logs/$1.log"
  local execs rate cov
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$log" | tail -n 1)
  printf '%-20s %-6s execs=%s exec/s=%s %s\n' "$target" "$verdict" "${execs:-?}" "${rate:-?}" "${cov:-}"
}

step "run: ${TARGETS[*]} (${SECONDS_PER_TARGET} s each, ${JOBS} at once)"
failed=()
if [ "$JOBS" -le 1 ]; then
  for target in "${TARGETS[@]}"; do
    run_target "$target" || failed+=("$target")
  done
else
  # Each target in its own background job; the output is printed target by target.
  mkdir -p logs
  pids=()
  for target in "${TARGETS[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    run_target "$target" >"logs/$target.summary" 2>&1 &
    pids+=("$!")
  done
  for i in "${!TARGETS[@]}"; do
    wait "${pids[$i]}" || failed+=("${TARGETS[$i]}")
    cat "logs/${TARGETS[$i]}.summary"
  done
fi

echo "fuzzing took $((SECONDS - started)) s in all"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]} (logs in tests/fuzz/logs/, inputs in tests/fuzz/artifacts/)" >&2
  exit 1
fi
echo "no crash in ${TARGETS[*]}"

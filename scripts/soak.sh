#!/usr/bin/env bash
# Soak, bench mode: orchestratord's soak test (tests/it/soak.rs) for longer than CI's 60 s:
# clients at 10x the workers' capacity with random cancels and disconnects, one worker
# SIGKILLed and started again; prints the report (tasks accepted/ended/lost, RSS and fds of
# orchestratord and the surviving worker before/after, admission p50/p99), also left in
# target/soak-report.json.
#
# usage: scripts/soak.sh [SECONDS (default 600)] [--real]   (--real: llorch-candled + SmolLM2
#        workers instead of fault-worker; needs scripts/fetch-test-model.sh smollm2)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=600
WORKER=fault
for a in "$@"; do
  case "$a" in
    --real) WORKER=real ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *[!0-9]*) echo "unknown argument: $a (see --help)" >&2; exit 2 ;;
    *) SECS="$a" ;;
  esac
done
LLORCH_SOAK_SECS="$SECS" LLORCH_SOAK_WORKER="$WORKER" \
  cargo test --release --workspace --test it soak_at_ten_times_capacity -- --nocapture --test-threads=1
echo "== soak.sh: report in target/soak-report.json" >&2

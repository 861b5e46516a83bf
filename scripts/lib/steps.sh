# Step timing for scripts/quickstart.sh, scripts/test.sh and .ci/run (sourced, not run).
#
#   step NAME CMD...   run CMD, append "NAME<TAB>seconds<TAB>ok|FAILED" to $LLORCH_STEPS_FILE
#                      and return CMD's status
#   step_since NAME T0 record a step that started at epoch second T0 and ended now (ok)
#   steps_summary      print the table of every step recorded so far, with the total
#
# LLORCH_STEPS_FILE defaults to target/ci-steps.tsv; .ci/run empties it first so one run's
# steps (the quickstart's and the test suite's) end up in one table.
LLORCH_STEPS_FILE="${LLORCH_STEPS_FILE:-$(pwd)/target/ci-steps.tsv}"
export LLORCH_STEPS_FILE

step() {
  local name=$1 t0 status=0
  shift
  echo "== step: $name" >&2
  t0=$(date +%s)
  "$@" || status=$?
  mkdir -p "$(dirname "$LLORCH_STEPS_FILE")"
  printf '%s\t%s\t%s\n' "$name" "$(($(date +%s) - t0))" "$([ "$status" = 0 ] && echo ok || echo FAILED)" \
    >>"$LLORCH_STEPS_FILE"
  return "$status"
}

step_since() {
  mkdir -p "$(dirname "$LLORCH_STEPS_FILE")"
  printf '%s\t%s\tok\n' "$1" "$(($(date +%s) - $2))" >>"$LLORCH_STEPS_FILE"
}

steps_summary() {
  [ -s "$LLORCH_STEPS_FILE" ] || return 0
  awk -F'\t' '
    BEGIN { print "== step times (s) ==" }
    { printf "%-52s %6d  %s\n", $1, $2, $3; if ($1 !~ /^ /) total += $2 }
    END { printf "%-52s %6d  (%d min %d s)\n", "total", total, total / 60, total % 60 }
  ' "$LLORCH_STEPS_FILE" >&2
}

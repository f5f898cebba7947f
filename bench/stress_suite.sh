#!/usr/bin/env bash
# Run a pytest command beside a CPU hog (every core busy), RUNS times in a row.
#
#   bench/stress_suite.sh [COMMAND] [RUNS]
#
#   COMMAND  the test command, one string (default: the whole suite,
#            ".venv/bin/python -m pytest -q")
#   RUNS     how many times to run it (default 1)
#
# Environment: HOG_CORES (busy processes, default every core), PYTHON (interpreter for the
# hog, default .venv/bin/python), STRESS_LOG_DIR (where each run's full output is kept,
# default a new temporary directory).
#
# Prints each run's pytest summary line (and its FAILED/ERROR lines), then a tally; exits
# 0 only if every run passed. The hog is killed on exit, however the script ends.
set -u

cd "$(dirname "$0")/.." || exit 2
CMD=${1:-.venv/bin/python -m pytest -q}
RUNS=${2:-1}
PY=${PYTHON:-.venv/bin/python}
LOG_DIR=${STRESS_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/dios-stress.XXXXXX")}
mkdir -p "$LOG_DIR"

case "$RUNS" in
    ''|*[!0-9]*|0) echo "stress: RUNS must be a positive integer, not '$RUNS'" >&2; exit 2 ;;
esac

HOG=
RUN=
cleanup() {
    if [ -n "$RUN" ]; then  # interrupted during a run: stop it too
        kill -TERM "$RUN" 2>/dev/null
        wait "$RUN" 2>/dev/null
        RUN=
    fi
    if [ -n "$HOG" ]; then
        kill -TERM "$HOG" 2>/dev/null
        wait "$HOG" 2>/dev/null
        HOG=
    fi
}
trap cleanup EXIT
trap 'echo "stress: interrupted" >&2; exit 130' INT TERM HUP

"$PY" bench/cpu_hog.py ${HOG_CORES:+-n "$HOG_CORES"} &
HOG=$!
sleep 0.5
if ! kill -0 "$HOG" 2>/dev/null; then
    echo "stress: the CPU hog did not start" >&2
    exit 2
fi

echo "stress: $RUNS run(s) of: $CMD"
echo "stress: full output of each run in $LOG_DIR"
passed=0
failed=0
for i in $(seq 1 "$RUNS"); do
    log="$LOG_DIR/run-$i.log"
    start=$(date +%s)
    # in the background, so that a signal to this script is handled at once (a trap waits
    # for a foreground command to finish)
    bash -c "$CMD" >"$log" 2>&1 &
    RUN=$!
    wait "$RUN"
    rc=$?
    RUN=
    took=$(( $(date +%s) - start ))
    # pytest's last line: "3 passed in 1.23s" (-q) or "==== 3 passed in 1.23s ====".
    summary=$(grep -E '[0-9]+ (passed|failed|error|errors|skipped|deselected)|no tests ran' "$log" \
              | grep -E ' in [0-9.]+s' | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
    [ -n "$summary" ] || summary="(no pytest summary line; last line: $(tail -n 1 "$log"))"
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        verdict=PASS
    else
        failed=$((failed + 1))
        verdict="FAIL (exit $rc)"
    fi
    echo "run $i/$RUNS: $verdict, ${took}s wall: $summary"
    if [ "$rc" -ne 0 ]; then
        grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/    /'
    fi
done

echo "stress: $passed of $RUNS run(s) passed, $failed failed (hog on ${HOG_CORES:-all} core(s))"
[ "$failed" -eq 0 ]

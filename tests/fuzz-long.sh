#!/usr/bin/env bash
# The long fuzz run: every property/fuzz target for SECS seconds (600 by
# default) in release mode, and a report in
# bench/results/<date>-<commit>-fuzz.md with the cases each target ran,
# rewritten after every target so that a run cut short still says what it
# did. A failing input is saved in <crate>/tests/regressions/<target>.txt:
# commit it, and CI replays it on every run from then on.
#
#   tests/fuzz-long.sh              # 10 minutes per target, one at a time (about 2 hours)
#   FUZZ_JOBS=2 tests/fuzz-long.sh  # two targets at a time
#   tests/fuzz-long.sh 60           # a minute per target
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
jobs="${FUZZ_JOBS:-1}"
commit="$(git rev-parse --short HEAD)"
report="bench/results/$(date -u +%F)-${commit}-fuzz.md"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# crate, cargo target selection, test-name filter
selections=(
  "hoard-pypi|--test fuzz|"
  "hoard-npm|--test it|fuzz::"
  "hoard-cluster|--test fuzz|"
  "hoard-server|--lib|form_fuzz::"
)

# Build once, and run the test executables themselves: one target each.
: >"$work/targets"
for s in "${selections[@]}"; do
  IFS='|' read -r crate selection filter <<<"$s"
  # shellcheck disable=SC2086
  exe="$(cargo test --release --no-run -p "$crate" $selection 2>&1 |
    sed -n 's/^ *Executable .*(\(.*\))$/\1/p' | tail -1)"
  [ -x "$exe" ] || { echo "no test executable for $crate $selection" >&2; exit 1; }
  "$exe" --list --format terse | sed -n 's/: test$//p' | grep -F "$filter" |
    while read -r name; do echo "$exe $name"; done >>"$work/targets"
done
count="$(wc -l <"$work/targets")"
echo "$count targets, $secs s each, $jobs at a time"

report() {
  {
    echo "# Long fuzz run, $(date -u '+%F %H:%M') UTC, commit $commit"
    echo
    echo "\`FUZZ_JOBS=$jobs tests/fuzz-long.sh $secs\` on $(nproc) cores (load $(cut -d' ' -f1-3 /proc/loadavg))."
    echo "Each target ran for at least $secs s of wall-clock time, in rounds of 10,000"
    echo "proptest cases (an input each, shrunk on failure)."
    echo
    echo "| target | test | cases | seconds |"
    echo "|---|---|---|---|"
    for log in "$work"/*.log; do
      [ -e "$log" ] || continue
      test="$(basename "$log" .log)"
      sed -n "s/.*fuzz \([a-z0-9_]*\): \([0-9]*\) cases in \([0-9.]*\) s.*/| \1 | \`$test\` | \2 | \3 |/p" "$log"
    done
    echo
    if ls "$work"/*.failed >/dev/null 2>&1; then
      echo "Result: FAILED:"
      echo
      echo '```'
      grep -hE "fuzz target .* failed|panicked" "$work"/*.log | head -40
      echo '```'
    elif [ "$1" = done ]; then
      echo "Result: no failure in $count targets."
    else
      echo "Result so far: no failure (the run is not finished)."
    fi
  } >"$report"
}

run_one() {
  local exe="$1" name="$2"
  local log="$work/$name.log"
  if ! HOARD_FUZZ_SECS="$secs" "$exe" --exact "$name" --nocapture --test-threads=1 >"$log" 2>&1; then
    touch "$work/$name.failed"
  fi
  grep -oE "fuzz [a-z0-9_]+: [0-9]+ cases in [0-9.]+ s|FAILED|panicked.*" "$log" || true
}

while read -r exe name; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
    wait -n || true
    report running
  done
  echo "fuzzing $name"
  run_one "$exe" "$name" &
done <"$work/targets"
wait
report done
echo "wrote $report"
! ls "$work"/*.failed >/dev/null 2>&1

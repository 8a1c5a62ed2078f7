#!/usr/bin/env bash
# The long fuzz run: every property/fuzz target for SECS seconds (600 by
# default) in release mode, one after the other, and a report in
# bench/results/<date>-<commit>-fuzz.md with the cases each target ran.
# A failing input is saved in <crate>/tests/regressions/<target>.txt:
# commit it, and CI replays it on every run from then on.
#
#   tests/fuzz-long.sh          # 10 minutes per target (about 2 hours)
#   tests/fuzz-long.sh 60       # a minute per target
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
commit="$(git rev-parse --short HEAD)"
report="bench/results/$(date -u +%F)-${commit}-fuzz.md"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# crate, cargo target selection, test-name filter
targets=(
  "hoard-pypi|--test fuzz|"
  "hoard-npm|--test it|fuzz::"
  "hoard-cluster|--test fuzz|"
  "hoard-server|--lib|form_fuzz::"
)

# The report so far: written after every crate, so that a run cut short
# still says what it did.
report() {
  {
  echo "# Long fuzz run, $(date -u '+%F %H:%M') UTC, commit $commit"
  echo
  echo "\`tests/fuzz-long.sh $secs\` on $(nproc) cores (load $(cut -d' ' -f1-3 /proc/loadavg))."
  echo "Each target ran for $secs s; cases are proptest cases (an input, shrunk on failure)."
  echo
  echo "| target | cases | seconds |"
  echo "|---|---|---|"
  sed -n 's/^fuzz \([a-z0-9_]*\): \([0-9]*\) cases in \([0-9.]*\) s$/| \1 | \2 | \3 |/p' "$log"
  echo
  if [ "$status" != 0 ]; then
    echo "Result: FAILED; see the regressions files and the output:"
    echo
    echo '```'
    grep -E "fuzz target .* failed|panicked" "$log" | head -40
    echo '```'
  elif [ "$1" = done ]; then
    echo "Result: no failure."
  else
    echo "Result so far: no failure (the run is not finished)."
  fi
  } >"$report"
}

cargo build --release --tests -p hoard-pypi -p hoard-npm -p hoard-cluster -p hoard-server
status=0
for t in "${targets[@]}"; do
  IFS='|' read -r crate selection filter <<<"$t"
  # shellcheck disable=SC2086
  if ! HOARD_FUZZ_SECS="$secs" cargo test --release -q -p "$crate" $selection -- \
      --test-threads=1 --nocapture $filter 2>&1 | tee -a "$log"; then
    status=1
  fi
  report running
done
report done
echo "wrote $report"
exit "$status"

#!/usr/bin/env bash
# The toy benchmark of docs/results.md: every rule x every strategy on the committed toy generator, settings
# chosen by their mean edit_score over 3 copy/paste examples on validation seeds, reported on test seeds with
# the spread over 5 examples. Two rules at a time, one torch thread each (this machine has 2 cores);
# Then `python -m rewrite.bench.benchmark toy_<rule> --out experiments/results/toy_<rule> --tune` (all phases
# done, so nothing reruns) writes the chosen rule's settings into the generator config.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
bench() { "$PY" -m rewrite.bench.benchmark "toy_$1" --out "experiments/results/toy_$1" --examples 5 \
          --choose-examples 3 "${@:2}" > "${LOGS:-/tmp}/benchmark_toy_$1.log" 2>&1; }
(bench add_tree; bench remove_watermark) &
(bench no_reflections; bench dome_to_spire) &
wait

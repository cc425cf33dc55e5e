#!/usr/bin/env bash
# The toy benchmark of docs/results.md: every rule x every strategy on the committed toy generator, settings
# chosen by their mean edit_score over 3 copy/paste examples on validation seeds, reported on test seeds with
# the spread over 5 examples. One rule at a time, two jobs side by side (--launcher cores: one torch thread each
# on this 2-core machine); FID over 200 samples for add_tree only (about 3 CPU-minutes a rule).
# Then `python -m rewrite.bench.benchmark toy_add_tree --out experiments/results/toy_add_tree --tune` (all phases
# done, so nothing reruns) writes the chosen rule's settings into the generator config.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
bench() { "$PY" -m rewrite.bench.benchmark "toy_$1" --out "experiments/results/toy_$1" --examples 5 \
          --choose-examples 3 --launcher cores "${@:2}" > "${LOGS:-/tmp}/benchmark_toy_$1.log" 2>&1; }
bench add_tree
bench no_reflections --fid-samples 0
bench dome_to_spire --fid-samples 0
bench remove_watermark --fid-samples 0

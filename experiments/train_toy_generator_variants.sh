#!/bin/bash
# Train several toy-generator variants side by side on one GPU (a small model leaves most of a big GPU
# idle, so N processes get nearly N times the work done), e.g. the side-by-side probes of a recipe:
#
#   MAXT=00:00:08:00 bash experiments/train_toy_generator_variants.sh runs \
#       "lin architecture.mapping_hidden=0" "mlp architecture.mapping_hidden=256"
#
# Each argument is "NAME extra overrides"; every variant writes OUTDIR/NAME.pt + .json, NAME.log and
# NAME-logs/ (CSV: train loss, validation MAE / mIoU / tops / rule source recall every 500 steps). Environment: MAXT (Lightning
# max_time, default 8 min), BS (batch, 128), ACC (accelerator, gpu), KILL (hard limit in s, MAXT + 75 s).
set -u
[ $# -ge 2 ] || { echo "usage: $0 OUTDIR 'NAME overrides...' [...]" >&2; exit 2; }
out=$1; shift
mkdir -p "$out"
MAXT=${MAXT:-00:00:08:00}; BS=${BS:-128}; ACC=${ACC:-gpu}
IFS=: read -r hh mm ss <<< "${MAXT#*:}"  # DD:HH:MM:SS -> seconds
KILL=${KILL:-$((10#$hh * 3600 + 10#$mm * 60 + 10#$ss + 75))}
common=(trainer.accelerator="$ACC" trainer.max_time="$MAXT" batch_size="$BS" torch_threads=4 matmul_precision=high
        +trainer.benchmark=true trainer.enable_progress_bar=false trainer.log_every_n_steps=50 eval.every=500
        save_every=500 loss.perceptual=0.3)
for spec in "$@"; do
  read -r name overrides <<< "$spec"
  # shellcheck disable=SC2086  # the overrides are meant to split into words
  timeout "$KILL" python3 -m rewrite.toyworld.models.training "${common[@]}" out="$out/$name.pt" \
    log_dir="$out/$name-logs" hydra.run.dir="$out/$name-hydra" $overrides > "$out/$name.log" 2>&1 &
done
wait
for spec in "$@"; do
  read -r name _ <<< "$spec"
  echo "== $name: $(tail -1 "$out/$name.log")"
done

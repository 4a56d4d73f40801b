#!/usr/bin/env bash
# Choosing the fast recipe and the trainer's thresholds on ToyBench's dev split (never test);
# the fast recipe (conf/recipe/fast.yaml) is dev-b4-lr1e-2 at its step 200, the dev-fast-*
# runs are each later method of the family switched on over it:
#   bash experiments/fast_dev.sh [RUN ...]      # default: all of them, one after another
# Every run records the fixed-batch loss every 10 steps without stopping
# (train.early_stop.threshold=0) so `python -m experiments.calibrate` can replay DVAR on the
# whole budget. Jobs run two at a time on one thread each (joblib), which only the dev runs do:
# their seconds compare among themselves, not with the test runs'. dev-paper-validated keeps the
# word at its best validation score (the oracle on a grid of its own seeds every 50 steps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
RECORD=(train.early_stop.every=10 train.early_stop.threshold=0
        hydra/launcher=joblib hydra.launcher.n_jobs=2)
FAST=(+recipe=fast application.every=50)

declare -A RUNS=(
  [dev-paper]="application.every=50"
  [dev-cross]="word.init=encoder_output train.max_steps=200 application.every=50"
  [dev-cross-lr1e-2]="word.init=encoder_output optimizer.lr=1e-2 train.max_steps=200 application.every=50"
  [dev-lr2e-2]="optimizer.lr=2e-2 train.max_steps=150 application.every=50"
  [dev-b4-lr1e-2]="train.batch_size=4 optimizer.lr=1e-2 train.max_steps=300 application.every=50"
  [dev-b4-lr2e-2]="train.batch_size=4 optimizer.lr=2e-2 train.max_steps=200 application.every=50"
  [dev-b8-lr2e-2]="train.batch_size=8 optimizer.lr=2e-2 train.max_steps=150 application.every=50"
  [dev-overfit-lr5e-2]="optimizer.lr=5e-2 train.max_steps=200 application.every=50"
  [dev-overfit-b4-lr1e-1]="train.batch_size=4 optimizer.lr=1e-1 train.max_steps=400 application.every=100"
  [dev-fast-norm]="${FAST[*]} word.norm=vocab"
  [dev-fast-xti]="${FAST[*]} word.per_layer=true"
  [dev-fast-masked]="${FAST[*]} dataset.masked=true"
  [dev-paper-validated]="application.every=50 validation.every=50 train.early_stop.keep=validated"
)
ORDER=(dev-paper dev-cross dev-cross-lr1e-2 dev-lr2e-2 dev-b4-lr2e-2 dev-b4-lr1e-2 dev-b8-lr2e-2
       dev-overfit-lr5e-2 dev-overfit-b4-lr1e-1 dev-fast-norm dev-fast-xti dev-fast-masked
       dev-paper-validated)
for name in "${@:-${ORDER[@]}}"; do
  # shellcheck disable=SC2086
  "$PY" -m tirun.toybench split=dev seeds=1 name="$name" "${RECORD[@]}" ${RUNS[$name]}
done

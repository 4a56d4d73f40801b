#!/usr/bin/env bash
# A 4-job toy-world sweep (2 learning rates x 1 or 2 vectors) and its report, in one command:
#   bash experiments/sweep_demo.sh [more overrides, e.g. tracker=wandb or hydra/launcher=joblib]
# Writes the jobs, report.md, report.csv and tradeoff.png to $OUT (experiments/results/sweep_demo).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
OUT=${OUT:-experiments/results/sweep_demo}

if [ -d tirun/assets/toy/model ]; then
  MODEL=(model=toy)
  STEPS=${STEPS:-400}
else
  # The toy model is built by `make toy-model`; until then the same sweep runs on the tiny
  # random-weight model with a few small samples, so the pipeline (not the scores) is shown.
  echo "sweep_demo: tirun/assets/toy/model not found: using model=tiny (random weights)" >&2
  MODEL=(model=tiny application.sampling.samples=2 application.sampling.steps=4)
  STEPS=${STEPS:-20}
fi

rm -rf "$OUT"
HF_HUB_OFFLINE=1 "$PY" -m tirun --multirun +exp=object "${MODEL[@]}" tracker=none \
  optimizer.lr=1e-3,5e-3 word.num_vectors=1,2 train.max_steps="$STEPS" train.checkpoint_every=0 \
  hydra.sweep.dir="$OUT" "$@"
"$PY" -m tirun.report "$OUT"

#!/usr/bin/env bash
# A 4-job toy-world sweep (2 learning rates x 1 or 3 vectors of the object preset's word) and
# its report, in one command:
#   bash experiments/sweep_demo.sh [more overrides, e.g. tracker=wandb or hydra/launcher=joblib]
#   bash experiments/sweep_demo.sh --record     # rewrite the committed experiments/results/sweep_demo
# Each job is scored as a ToyBench job is (application=toybench: the oracle reads 64 samples of
# the concept's neutral prompts, reconstruction, and 64 of its edit prompts, editability, for the
# final word and for the initializer), so the report draws the jobs on reconstruction against
# editability. Writes the jobs, report.html, report.md, report.csv and tradeoff.png to $OUT:
# multirun/sweep_demo/<date>/<time>; with --record (first), experiments/results/sweep_demo, which
# it empties first: the committed demo the docs link to is rewritten only when asked.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
if [ "${1:-}" = --record ]; then
  shift
  OUT=experiments/results/sweep_demo
  rm -rf "$OUT"
else
  OUT=${OUT:-multirun/sweep_demo/$(date +%Y-%m-%d/%H-%M-%S)}
fi

if [ -d tirun/assets/toy/model ]; then
  SETUP=(model=toy application=toybench)
  STEPS=${STEPS:-150}
else
  # The toy model and its oracle are built by `make toy-model`; until then the same sweep runs
  # on the tiny random-weight model with a few small samples and no scores, so the pipeline
  # (not the scores) is shown.
  echo "sweep_demo: tirun/assets/toy/model not found: using model=tiny (random weights)" >&2
  SETUP=(model=tiny application.sampling.samples=2 application.sampling.steps=4)
  STEPS=${STEPS:-20}
fi

HF_HUB_OFFLINE=1 "$PY" -m tirun --multirun +exp=object "${SETUP[@]}" tracker=none \
  optimizer.lr=2e-3,1e-2 word.num_vectors=1,3 train.max_steps="$STEPS" train.checkpoint_every=0 \
  hydra.sweep.dir="$OUT" "$@"
"$PY" -m tirun.report "$OUT"

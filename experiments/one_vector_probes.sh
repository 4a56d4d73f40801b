#!/usr/bin/env bash
# Is a one-vector word's miss on v3 its initializer's? The paper recipe (seed 0) on the dev
# split's two misses, started from another one-token word of the toy vocabulary: red_square from
# "red" (ToyBench starts it from "square" and it draws squares in random colours) and
# blue_shadowed_bricks from "bricks" (it starts from "shadowed" and misses the backdrop). Each job
# scores the word it starts from and its final word (application.every=0); the report lists them.
#   bash experiments/one_vector_probes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2} HF_HUB_OFFLINE=1
probe() {  # NAME CONCEPT INITIALIZER
  $PY -m tirun +toybench=default dataset.concept="$2" word.initializer="$3" application.every=0 \
    tracker=none hydra.run.dir="toybench_runs/v3-dev-init/$1"
}
probe red_square-red red_square red
probe blue_shadowed_bricks-bricks blue_shadowed_bricks bricks
$PY -m tirun.toybench --report experiments/results/toybench/v3-dev-init toybench_runs/v3-dev-init \
  tracker=none

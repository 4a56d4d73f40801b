#!/usr/bin/env bash
# The paper's figure on the paper's axes: the words of its eight test-split rows (stored in
# experiments/results/toybench/paper-figure/words/) rescored by `python -m tirun.toybench
# --words`, which now reads each edit's prompt adherence (and context leak) beside ToyBench's
# scores; the text ceiling rerun for human captions' adherence; one report of both planes.
#   bash experiments/paper_axes.sh                  # seed 0 of every row
#   FIRST_SEED=1 SEEDS=2 bash experiments/paper_axes.sh   # add seeds 1-2 (same run folders)
#   REPORT_ONLY=1 bash experiments/paper_axes.sh    # redraw the report from the scored words
#   ONLY="two three" NO_CEILING=1 bash experiments/paper_axes.sh   # score some rows only
# Sampling is ToyBench's own on the same seeds, so reconstruction and editability come out as
# the training jobs scored them (checked in the report against paper-figure/per_concept.csv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${THREADS:-2} MKL_NUM_THREADS=${THREADS:-2} HF_HUB_OFFLINE=1
WORDS=experiments/results/toybench/paper-figure/words
ROWS=(paper two three progressive image-tokens l2 lr1e-4 lr2e-2)
if [[ -z ${REPORT_ONLY:-} ]]; then
  if [[ ${FIRST_SEED:-0} == 0 && -z ${NO_CEILING:-} ]]; then
    $PY -m tirun.toybench.ceiling --samples 16
  fi
  for row in ${ONLY:-${ROWS[@]}}; do
    $PY -m tirun.toybench --words "$WORDS/v3-test-$row-3seeds" split=test \
      first_seed="${FIRST_SEED:-0}" seeds="${SEEDS:-1}" name="axes-$row" tracker=none
  done
fi
# the per-row reports `--words` writes are left out: the combined one holds every word
rm -rf $(printf "experiments/results/toybench/axes-%s " "${ROWS[@]}")
SCORED=()  # the rows scored so far, the paper recipe first (the reference)
for row in "${ROWS[@]}"; do [[ -d toybench_runs/axes-$row ]] && SCORED+=("toybench_runs/axes-$row"); done
$PY -m tirun.toybench --report experiments/results/toybench/paper-figure-axes "${SCORED[@]}" \
  tracker=none

#!/usr/bin/env bash
# The paper's figure on toy model v4: the eight v4-test-*-3seeds rows of toybench_test.sh, two
# jobs at a time, one seed of every row before the next seed (seed 0 of all eight gives the
# whole figure at one seed first). About 26 minutes per row and seed on 2 cores, 10.5 hours in
# all, so it runs in several sittings: a row's seed whose 30 words are all scored is skipped,
# and one a kill cut short is removed and run again (a row and seed is the unit a rerun redoes).
#   bash experiments/v4_figure.sh            # whatever is left, in order
#   bash experiments/v4_figure.sh --status   # what is done
#   STOP_BY=14:00 bash experiments/v4_figure.sh   # start no row and seed that would end later
#                                               # (a deadline: no half-run unit to redo)
# Then `python -m experiments.paper_figure_v4`: the report of the rows done and their verdicts.
set -euo pipefail
cd "$(dirname "$0")/.."
# the rows: ROWS of experiments/paper_figure_v4.py, which reports them (one list for both)
mapfile -t ROWS < <(.venv/bin/python -c 'from experiments.paper_figure_v4 import ROWS; print(*ROWS, sep="\n")')
((${#ROWS[@]})) || { echo "v4_figure.sh: no rows read from experiments/paper_figure_v4.py" >&2; exit 1; }
CONCEPTS=30   # the test split's, fixed in tirun/toyworld/concepts.py
UNIT_SECONDS=$((27 * 60))   # a row and seed, measured: 26 minutes and change

# a seed's jobs: the run's folder for seed 0, its seedK subfolder for seed K (toybench's layout)
jobs_folder() { if (($2 == 0)); then echo "toybench_runs/$1"; else echo "toybench_runs/$1/seed$2"; fi; }
# a job is done when its metrics.json says it finished and holds its ToyBench scores
scored() {
  local count=0 file
  for file in "$1"/[0-9]*/metrics.json; do
    [[ -f $file ]] && grep -q '"status": "finished"' "$file" && grep -q '"toybench"' "$file" &&
      count=$((count + 1))
  done
  echo "$count"
}

for seed in 0 1 2; do
  for row in "${ROWS[@]}"; do
    run="v4-test-$row-3seeds"
    folder=$(jobs_folder "$run" "$seed")
    done_jobs=$(scored "$folder")
    if [[ ${1:-} == --status ]]; then echo "$run seed $seed: $done_jobs of $CONCEPTS"; continue; fi
    ((done_jobs == CONCEPTS)) && continue
    if [[ -n ${STOP_BY:-} ]] && (($(date +%s) + UNIT_SECONDS > $(date -d "$STOP_BY" +%s))); then
      echo "$(date -u +%FT%TZ) stopped before $run seed $seed: it would end after $STOP_BY" >&2
      exit 0
    fi
    # a cut-short seed: its numbered job folders and sweep record go (other seeds' folders stay)
    rm -rf "$folder"/[0-9]* "$folder/multirun.yaml" "$folder/.submitit"
    echo "$(date -u +%FT%TZ) $run seed $seed" >&2
    FIRST_SEED=$seed SEEDS=1 PAIRS=1 bash experiments/toybench_test.sh "$run"
  done
done

#!/usr/bin/env bash
# Two jobs at once on a 2-CPU SLURM node, one CPU each, against one job alone with both (the
# variation application's seconds, from each job's metrics.json), for this checkout and for an
# earlier commit (default eefd73f, whose runs took every CPU they saw, run with Hydra's own
# `hydra/launcher=slurm`; tirun/job_environment.py caps a run at its share): docs/slurm.md,
# "A job uses its share". Needs a cluster up
# (cluster/local_slurm.sh start) and a quiet machine (touch /tmp/quiet on a shared one).
#   experiments/two_jobs_timing.sh [BEFORE_COMMIT]
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:-eefd73f}
out=$(mktemp -d /tmp/two-jobs-timing.XXXX)
git archive "$before" | (mkdir -p "$out/before" && tar -x -C "$out/before")
unset OMP_NUM_THREADS
export HF_HUB_OFFLINE=1 WANDB_MODE=offline
python=$PWD/.venv/bin/python
common=(+exp=object model=tiny train.max_steps=2 tracker=none hydra.launcher.partition=debug
        hydra.launcher.mem_gb=2)

sweep() {  # sweep NAME TREE ARGS...: one multirun, then each job's threads and application time
    local name=$1 tree=$2; shift 2
    local started=$SECONDS
    (cd "$tree" && PYTHONPATH=$tree "$python" -m tirun --multirun "$@" "${common[@]}" \
        hydra.sweep.dir="$out/$name" >"$out/$name.log" 2>&1)
    echo "$name: the sweep $((SECONDS - started)) s"
    for metrics in "$out/$name"/*/metrics.json; do
        "$python" -c "import json, sys; m = json.load(open(sys.argv[1])); print('  job',
            sys.argv[1].split('/')[-2], 'threads', m['timing'].get('threads'), 'variation_s',
            round(m['applications']['variation']['wall_time_s'], 1))" "$metrics"
    done
}

sweep before_two_at_once "$out/before" hydra/launcher=slurm hydra.launcher.gpus_per_node=0 \
    hydra.launcher.cpus_per_task=1 optimizer.lr=1e-3,5e-3
sweep after_two_at_once "$PWD" hydra/launcher=slurm_cpu hydra.launcher.cpus_per_task=1 \
    optimizer.lr=1e-3,5e-3
sweep after_one_alone "$PWD" hydra/launcher=slurm_cpu hydra.launcher.cpus_per_task=2 \
    optimizer.lr=1e-3
echo "folders and logs in $out"

#!/usr/bin/env bash
# Toy model v5, from its pretraining to every measurement its issue asks for before any result,
# one step after another; run it alone on the machine, in the background, with its log:
#   nohup bash experiments/v5_model.sh > logs/v5-model.log 2>&1 &
#   bash experiments/v5_model.sh --status        # which steps are done
# Steps (each skipped when its product exists, so a stopped run resumes at the step it was in):
#   1. the denoiser, pretrained with captions that name the unnamed values by words the shipped
#      tokenizer then retires (tirun/toyworld/pretrain.py; the oracle and the VAE are v4's: the
#      renders did not change, and the same seeds give the same weights), into outputs/toy-v5;
#      65 minutes on two quiet cores. Then copied into tirun/assets/toy. A run that finished
#      and was committed to experiments/results/toy-v5-pretraining is installed instead.
#   2. the text ceiling and each concept's reachability (python -m tirun.toybench.ceiling), 48
#      samples a concept: tirun/assets/toy/model/text_ceiling.json and
#      experiments/results/text_ceiling.md.
#   3. the model's quality: plain diffusers, DDIM 25, guidance 3, 16 samples a seen colour-shape
#      pair (4 backdrops x 4): experiments/results/toy_quality.md.
#   4. the dev curves of the one-vector paper recipe, scored every 50 steps to 400
#      (experiments/fast_dev.sh v5-dev-one-curve), ~20 minutes; each word at steps 100, 200
#      and 400 in experiments/results/toybench/v5-dev-one-curve/steps.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=outputs/toy-v5
ASSETS=tirun/assets/toy
MODEL=$ASSETS/model
done_1() { [[ -f $MODEL/retired_words.safetensors ]]; }
done_2() { grep -q reachability "$MODEL/text_ceiling.json" 2>/dev/null; }
done_3() { [[ experiments/results/toy_quality.md -nt $MODEL/retired_words.safetensors ]]; }
done_4() { [[ -d experiments/results/toybench/v5-dev-one-curve ]]; }

if [[ ${1:-} == --status ]]; then
  for step in 1 2 3 4; do
    if "done_$step"; then echo "step $step: done"; else echo "step $step: to do"; fi
  done
  exit 0
fi

COMMITTED=experiments/results/toy-v5-pretraining  # a finished denoiser run, committed as it ended
if ! done_1 && [[ -f $COMMITTED/model/retired_words.safetensors ]]; then
  rm -rf "$MODEL"
  cp -r "$COMMITTED/model" "$MODEL"
  cp "$COMMITTED/pretrain_log.txt" "$ASSETS/pretrain_log.txt"
fi
if ! done_1; then
  rm -rf "$OUT"
  mkdir -p "$OUT/model"
  cp -r "$MODEL/vae" "$OUT/model/"
  cp -r "$ASSETS/oracle" "$OUT/"
  # the record: the oracle's and the VAE's stages as their run logged them, then this denoiser
  sed -n '1,/stage vae done/p' "$ASSETS/pretrain_log.txt" > "$OUT/pretrain_log.txt"
  "$PY" -m tirun.toyworld.pretrain --stage denoiser --out "$OUT"
  grep -q "denoiser: saved" "$OUT/pretrain_log.txt"
  rm -rf "$MODEL"
  cp -r "$OUT/model" "$MODEL"
  cp "$OUT/pretrain_log.txt" "$ASSETS/pretrain_log.txt"
fi
done_2 || "$PY" -m tirun.toybench.ceiling --samples 16
done_3 || "$PY" -m experiments.toy_quality --samples 4 --steps 25 --guidance 3
if ! done_4; then
  bash experiments/fast_dev.sh v5-dev-one-curve
  "$PY" -m experiments.dev_curves toybench_runs/v5-dev-one-curve \
    > experiments/results/toybench/v5-dev-one-curve/steps.md
fi
echo "v5 model: all steps done"

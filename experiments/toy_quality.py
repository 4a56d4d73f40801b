"""Does the pretrained toy model draw what it is told? Scored by the oracle.

    python -m experiments.toy_quality [--samples 3] [--model DIR] [--oracle DIR]

Prompts name seen combinations ("a photo of a red star on grass"); the oracle reads shape,
colour and background off each sample (bars: shape ≥ 95% and every named shape ≥ 90%, colour
and background ≥ 98%), and the style off style prompts (every style ≥ 95%). The skew of the bias word and the unnamed shape are
reported beside it. Writes experiments/results/toy_quality.md.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import Counter
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from tirun.toyworld.oracle import DEFAULT_PATH as ORACLE_PATH
from tirun.toyworld.oracle import Oracle
from tirun.toyworld.render import BACKGROUNDS, COLOURS, SHAPES, STYLES, Attributes
from tirun.toyworld.world import BIAS_WORD, UNNAMED_SHAPE, is_held_out

MODEL_PATH = ORACLE_PATH.parent / "model"
RESULTS = Path(__file__).parent / "results" / "toy_quality.md"
BARS = {"shape": 0.95, "colour": 0.98, "background": 0.98}
SHAPE_BAR = 0.90  # every named shape
STYLE_BAR = 0.95  # every style


def generate(
    pipe: StableDiffusionPipeline, prompts: list[str], seed: int, steps: int, guidance: float
) -> torch.Tensor:
    """One sample per prompt, [N, 3, 32, 32] in [0, 1], in batches of 64 with fixed seeds."""
    out = []
    for start in range(0, len(prompts), 64):
        batch = prompts[start : start + 64]
        gens = [torch.Generator().manual_seed(seed + start + i) for i in range(len(batch))]
        images = pipe(
            batch,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=gens,
            output_type="pt",
        ).images
        out.append(images)
    return torch.cat(out)


def accuracy(pred: dict[str, list[str]], truth: list[dict[str, str]], key: str) -> float:
    return sum(p == t[key] for p, t in zip(pred[key], truth, strict=True)) / len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=MODEL_PATH)
    parser.add_argument("--oracle", type=Path, default=ORACLE_PATH)
    parser.add_argument("--samples", type=int, default=3, help="samples per seen combination")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)  # on a shared 2-core machine one thread is far faster than two
    t0 = time.time()
    pipe = StableDiffusionPipeline.from_pretrained(
        args.model, safety_checker=None, feature_extractor=None
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    oracle = Oracle.load(args.oracle)

    # 1. seen shape × colour × background combinations, named in full
    named = [s for s in SHAPES if s != UNNAMED_SHAPE]
    combos = [
        {"shape": s, "colour": c, "background": b}
        for s, c, b in itertools.product(named, COLOURS, BACKGROUNDS)
        if not is_held_out(Attributes(s, c, b, "filled"))
    ] * args.samples
    prompts = [f"a photo of a {a['colour']} {a['shape']} on {a['background']}" for a in combos]
    pred = oracle.predict(generate(pipe, prompts, args.seed, args.steps, args.guidance))
    main_acc = {k: accuracy(pred, combos, k) for k in ("shape", "colour", "background")}
    joint = sum(all(pred[k][i] == a[k] for k in a) for i, a in enumerate(combos)) / len(combos)
    drawn_as = {
        s: Counter(p for p, a in zip(pred["shape"], combos, strict=True) if a["shape"] == s)
        for s in named
    }

    # 2. styles, named with a shape and colour
    colours = list(COLOURS)
    styled = []
    for (i, st), (j, s) in itertools.product(enumerate(STYLES), enumerate(named)):
        # the first colour, from a rotating start, that pretraining drew with this shape and style
        for k in range(len(colours)):
            combo = {"shape": s, "colour": colours[(i + j + k) % len(colours)], "style": st}
            if not is_held_out(Attributes(**combo, background="white")):
                styled.append(combo)
                break
    styled *= args.samples
    style_prompts = [
        f"a painting of a {a['colour']} {a['shape']} in the style of {a['style']}" for a in styled
    ]
    style_pred = oracle.predict(
        generate(pipe, style_prompts, args.seed + 10_000, args.steps, args.guidance)
    )
    style_acc = {k: accuracy(style_pred, styled, k) for k in ("style", "shape", "colour")}
    per_style = {}
    for st in STYLES:
        rows = [i for i, a in enumerate(styled) if a["style"] == st]
        pred_st = {k: [v[i] for i in rows] for k, v in style_pred.items()}
        per_style[st] = {k: accuracy(pred_st, [styled[i] for i in rows], k) for k in style_acc}
    style_misses = {
        st: Counter(
            f"{a['shape']} read as {style_pred['style'][i]} {style_pred['shape'][i]}"
            for i, a in enumerate(styled)
            if a["style"] == st and style_pred["style"][i] != st
        )
        for st in STYLES
    }

    # 3. the bias word and the unnamed shape, unprompted for colour
    n = 32
    toy = Counter(
        oracle.predict(
            generate(
                pipe,
                [f"a photo of a {BIAS_WORD}"] * n,
                args.seed + 20_000,
                args.steps,
                args.guidance,
            )
        )["colour"]
    )
    obj = Counter(
        oracle.predict(
            generate(
                pipe, ["a photo of a object"] * n, args.seed + 30_000, args.steps, args.guidance
            )
        )["shape"]
    )

    passed = all(v >= BARS[k] for k, v in main_acc.items())
    passed = passed and all(c[s] / c.total() >= SHAPE_BAR for s, c in drawn_as.items())
    style_passed = all(acc["style"] >= STYLE_BAR for acc in per_style.values())
    lines = [
        "# Toy model quality (oracle-scored)",
        "",
        f"Model `{args.model}`, DDIM {args.steps} steps, guidance {args.guidance}, seed {args.seed}; "
        f"{time.time() - t0:.0f} s on this machine.",
        "",
        f'## Seen combinations: "a photo of a COLOUR SHAPE on BACKGROUND" ({len(combos)} samples)',
        "",
        "| attribute | accuracy | bar |",
        "|---|---|---|",
        *[f"| {k} | {v:.1%} | {BARS[k]:.0%} |" for k, v in main_acc.items()],
        f"| all three | {joint:.1%} | – |",
        "",
        f"Bars met (and every named shape ≥ {SHAPE_BAR:.0%}): **{'yes' if passed else 'no'}**.",
        "",
        "Each named shape and what the oracle read (a retrain that misses the bar shows here "
        "which word the model confuses):",
        "",
        "| named | right | read as |",
        "|---|---:|---|",
        *[
            f"| {s} | {c[s] / c.total():.0%} | "
            + ", ".join(f"{k} {v}" for k, v in c.most_common())
            + " |"
            for s, c in drawn_as.items()
        ],
        "",
        f'## Styles: "a painting of a COLOUR SHAPE in the style of STYLE" ({len(styled)} samples)',
        "",
        "| style named | " + " | ".join(style_acc) + " |",
        "|---|" + "---:|" * len(style_acc),
        *[
            f"| {st} | " + " | ".join(f"{v:.1%}" for v in acc.values()) + " |"
            for st, acc in per_style.items()
        ],
        "| all | " + " | ".join(f"{v:.1%}" for v in style_acc.values()) + " |",
        "",
        f"Style bar (every style ≥ {STYLE_BAR:.0%}) met: **{'yes' if style_passed else 'no'}**.",
        "",
        "Where a style was missed, the named shape and what the oracle read (style, shape):",
        "",
        *[
            f"- {st}: " + ", ".join(f"{k} ×{v}" for k, v in misses.most_common())
            for st, misses in style_misses.items()
            if misses
        ],
        "",
        f'## Bias word: colours of "a photo of a {BIAS_WORD}" ({n} samples; pretraining drew it 90% red)',
        "",
        ", ".join(f"{c} {toy[c] / n:.0%}" for c in COLOURS),
        "",
        f'## Unnamed shape: shapes of "a photo of a object" ({n} samples; {UNNAMED_SHAPE} is 1/7 of pretraining images)',
        "",
        ", ".join(f"{s} {obj[s] / n:.0%}" for s in SHAPES),
        "",
    ]
    report = "\n".join(lines)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()

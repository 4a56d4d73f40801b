"""Does the pretrained toy model draw what it is told, and what it is never told? Scored by the
oracle.

    python -m experiments.toy_quality [--samples 3] [--model DIR] [--oracle DIR]

Prompts name seen combinations ("a photo of a red star on grass"); the oracle reads shape,
colour and background off each sample (the world's bars, that ToyBench's scores rest on: every
named shape ≥ 93%, colour and background ≥ 98%), the technique off style prompts (every named
technique ≥ 93%), and the light and the size off prompts that name them (each ≥ 93%, the
shapes' bar). What no caption names (the diamond, hatching, the marks) must be drawn across its
variety: each value in at least half its pretraining share of the samples whose prompt leaves
its attribute open; the oracle's reading of it on clean renders is in the pretraining log. The
skew of the bias word is reported beside it. Writes experiments/results/toy_quality.md.
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
from tirun.toyworld.render import (
    BACKGROUNDS,
    COLOURS,
    LIGHTS,
    MARKS,
    SHAPES,
    SIZES,
    STYLES,
    UNNAMED,
    Attributes,
)
from tirun.toyworld.world import BIAS_WORD, TINY_P, UNNAMED_SHAPE, is_held_out

MODEL_PATH = ORACLE_PATH.parent / "model"
RESULTS = Path(__file__).parent / "results" / "toy_quality.md"
BARS = {"colour": 0.98, "background": 0.98}
SHAPE_BAR = 0.93  # every named shape
STYLE_BAR = 0.93  # every named technique
NAMED_BAR = 0.93  # every light and size, when named
# What pretraining draws of each unnamed value where nothing names its attribute: a shape's
# caption drops it 30% of the time ("object"), so the diamond is a seventh of all drawings.
UNNAMED_SHARES = {
    ("shape", "diamond"): 1 / len(SHAPES),
    ("style", "hatched"): 1 / len(STYLES),
    ("mark", "dot"): 1 / len(MARKS),
    ("mark", "stripe"): 1 / len(MARKS),
}


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


def _table(rows: dict[str, dict[str, float]], keys: list[str]) -> list[str]:
    return [
        "| named | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
        *[f"| {n} | " + " | ".join(f"{r[k]:.1%}" for k in keys) + " |" for n, r in rows.items()],
    ]


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

    def read(prompts: list[str], offset: int) -> dict[str, list[str]]:
        return oracle.predict(
            generate(pipe, prompts, args.seed + offset, args.steps, args.guidance)
        )

    # 1. seen shape × colour × background combinations, named in full
    named = [s for s in SHAPES if s != UNNAMED_SHAPE]
    combos = [
        {"shape": s, "colour": c, "background": b}
        for s, c, b in itertools.product(named, COLOURS, BACKGROUNDS)
        if not is_held_out(Attributes(s, c, b, "filled"))
    ] * args.samples
    pred = read(
        [f"a photo of a {a['colour']} {a['shape']} on {a['background']}" for a in combos], 0
    )
    main_acc = {k: accuracy(pred, combos, k) for k in ("shape", "colour", "background")}
    joint = sum(all(pred[k][i] == a[k] for k in a) for i, a in enumerate(combos)) / len(combos)
    drawn_as = {
        s: Counter(p for p, a in zip(pred["shape"], combos, strict=True) if a["shape"] == s)
        for s in named
    }

    # 2. the named techniques, with a shape and colour
    colours = list(COLOURS)
    techniques = [st for st in STYLES if st not in UNNAMED]
    styled = []
    for (i, st), (j, s) in itertools.product(enumerate(techniques), enumerate(named)):
        # the first colour, from a rotating start, that pretraining drew with this shape and style
        for k in range(len(colours)):
            combo = {"shape": s, "colour": colours[(i + j + k) % len(colours)], "style": st}
            if not is_held_out(Attributes(**combo, background="white")):
                styled.append(combo)
                break
    styled *= args.samples
    style_pred = read(
        [
            f"a painting of a {a['colour']} {a['shape']} in the style of {a['style']}"
            for a in styled
        ],
        10_000,
    )
    per_style = {}
    for st in techniques:
        rows = [i for i, a in enumerate(styled) if a["style"] == st]
        pred_st = {k: [v[i] for i in rows] for k, v in style_pred.items()}
        per_style[st] = {
            k: accuracy(pred_st, [styled[i] for i in rows], k) for k in ("style", "shape", "colour")
        }

    # 3. the light and the size, named with a seen colour and shape
    lit = [
        {"shape": s, "colour": colours[(j + k) % len(colours)], key: value}
        for key, values in (("light", list(LIGHTS)), ("size", list(SIZES)))
        for k, value in enumerate(values)
        for j, s in enumerate(named)
        if not is_held_out(Attributes(s, colours[(j + k) % len(colours)], "white", "filled"))
    ] * args.samples
    lit_prompts = [
        f"a photo of a {a['size']} {a['colour']} {a['shape']}" if "size" in a
        else f"a photo of a {a['colour']} {a['shape']} in {a['light']} light"
        for a in lit
    ]  # fmt: skip
    lit_pred = read(lit_prompts, 15_000)
    per_named = {}
    for key, values in (("light", list(LIGHTS)), ("size", list(SIZES))):
        for value in values:
            rows = [i for i, a in enumerate(lit) if a.get(key) == value]
            per_named[f"{key} {value}"] = {
                "read right": sum(lit_pred[key][i] == value for i in rows) / len(rows),
                "shape": sum(lit_pred["shape"][i] == lit[i]["shape"] for i in rows) / len(rows),
                "colour": sum(lit_pred["colour"][i] == lit[i]["colour"] for i in rows) / len(rows),
            }

    # 4. the unnamed values, where nothing names their attribute: the marks and hatching in
    # section 1's samples, the diamond in "a photo of a object"; and the bias word
    n = 32
    obj = read(["a photo of a object"] * n, 30_000)
    toy = Counter(read([f"a photo of a {BIAS_WORD}"] * n, 20_000)["colour"])
    unnamed = {}
    for (key, value), share in UNNAMED_SHARES.items():
        readings = obj[key] if key == "shape" else pred[key]
        unnamed[(key, value)] = (readings.count(value) / len(readings), share)

    passed = all(v >= BARS[k] for k, v in main_acc.items() if k in BARS)
    passed = passed and all(c[s] / c.total() >= SHAPE_BAR for s, c in drawn_as.items())
    style_passed = all(acc["style"] >= STYLE_BAR for acc in per_style.values())
    named_passed = all(r["read right"] >= NAMED_BAR for r in per_named.values())
    unnamed_passed = all(drawn >= share / 2 for drawn, share in unnamed.values())
    yes = {True: "yes", False: "no"}
    lines = [
        "# Toy model quality (oracle-scored)",
        "",
        f"`python -m experiments.toy_quality --samples {args.samples}`: model `{args.model}`, DDIM "
        f"{args.steps} steps, guidance {args.guidance}, seed {args.seed}; "
        f"{time.time() - t0:.0f} s on this machine.",
        "",
        f'## Seen combinations: "a photo of a COLOUR SHAPE on BACKGROUND" ({len(combos)} samples)',
        "",
        "| attribute | accuracy | bar |",
        "|---|---|---|",
        *[f"| {k} | {v:.1%} | {BARS.get(k, SHAPE_BAR):.0%} |" for k, v in main_acc.items()],
        f"| all three | {joint:.1%} | – |",
        "",
        f"Bars met (colour and background ≥ 98%, every named shape ≥ {SHAPE_BAR:.0%}): "
        f"**{yes[passed]}**.",
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
        f'## Techniques: "a painting of a COLOUR SHAPE in the style of STYLE" ({len(styled)} samples)',
        "",
        *_table(per_style, ["style", "shape", "colour"]),
        "",
        f"Every named technique ≥ {STYLE_BAR:.0%}: **{yes[style_passed]}**.",
        "",
        f'## Light and size: "a photo of a COLOUR SHAPE in LIGHT light", "a photo of a SIZE '
        f'COLOUR SHAPE" ({len(lit)} samples)',
        "",
        *_table(per_named, ["read right", "shape", "colour"]),
        "",
        f"Every light and size ≥ {NAMED_BAR:.0%}: **{yes[named_passed]}**.",
        "",
        "## What no caption names, drawn where nothing names its attribute",
        "",
        "| value | share of samples | pretraining share |",
        "|---|---:|---:|",
        *[
            f"| {key} {value} | {drawn:.1%} | {share:.1%} |"
            for (key, value), (drawn, share) in unnamed.items()
        ],
        "",
        f"Marks and hatching read off section 1's {len(combos)} samples, the diamond off "
        f'{n} samples of "a photo of a object". Every value drawn in at least half its '
        f"pretraining share: **{yes[unnamed_passed]}**. (Pretraining draws {TINY_P:.0%} of "
        "objects tiny.)",
        "",
        f'## Bias word: colours of "a photo of a {BIAS_WORD}" ({n} samples; pretraining drew it '
        "90% red)",
        "",
        ", ".join(f"{c} {toy[c] / n:.0%}" for c in COLOURS),
        "",
    ]
    report = "\n".join(lines)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()

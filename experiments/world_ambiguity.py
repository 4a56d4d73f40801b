"""Which of the toy world's attribute combinations look alike, in pixels and to the oracle?

    python -m experiments.world_ambiguity [--renders 300]

Shapes that share pixels are read as each other (the pairs found so far: docs/history.md). The
suspects here are a circle's 2-pixel outline and a ring's band, behind the weakest named shape
(circle, read as ring) and the weakest style (outlined, every miss a ring or a circle). This
renders them and their controls as pretraining draws them (a quarter small and anywhere), reads
them with the oracle, and measures how much an outlined circle's and a ring's pixels overlap at
the same size and place (the same render seed). Writes experiments/results/world_ambiguity.md.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from tirun.toyworld.oracle import Oracle
from tirun.toyworld.render import BACKGROUNDS, COLOURS, Attributes, render_with_mask
from tirun.toyworld.world import TINY_P

RESULTS = Path(__file__).parent / "results" / "world_ambiguity.md"
DRAWN = (  # (shape, style): the suspects, then controls
    ("circle", "outlined"),
    ("ring", "filled"),
    ("ring", "outlined"),
    ("ring", "mosaic"),
    ("circle", "filled"),
    ("square", "outlined"),
    ("star", "outlined"),
)
OVERLAPS = (
    (("circle", "outlined"), ("ring", "filled")),
    (("ring", "outlined"), ("ring", "filled")),
)


def renders(shape: str, style: str, count: int, seed: int) -> np.ndarray:
    """``count`` images [N, 32, 32, 3] of random colour and background, tiny as often as in
    pretraining."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        attrs = Attributes(shape, str(rng.choice(list(COLOURS))), str(rng.choice(list(BACKGROUNDS))), style)  # fmt: skip
        size = "tiny" if rng.random() < TINY_P else "big"
        attrs = Attributes(**{**attrs.as_dict(), "size": size})
        images.append(render_with_mask(attrs, int(rng.integers(0, 2**31)))[0])
    return np.stack(images)


def overlap(a: tuple[str, str], b: tuple[str, str], count: int, size: str) -> float:
    """Mean intersection over union of two drawings' coverage at the same size and place."""
    ious = []
    for seed in range(count):
        ma = render_with_mask(Attributes(a[0], "red", "white", a[1], size=size), seed)[1]
        mb = render_with_mask(Attributes(b[0], "red", "white", b[1], size=size), seed)[1]
        ious.append(np.minimum(ma, mb).sum() / np.maximum(ma, mb).sum())
    return float(np.mean(ious))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=300, help="renders per drawing")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    oracle = Oracle.load()
    lines = [
        "# Look-alikes in the toy world",
        "",
        f"`python -m experiments.world_ambiguity --renders {args.renders}`: fresh renders as "
        f"pretraining draws them ({TINY_P:.0%} tiny and anywhere), random colour and "
        "background, read by the packaged oracle.",
        "",
        "| drawn | shape read right | style read right | read as (style shape) |",
        "|---|---:|---:|---|",
    ]
    for i, (shape, style) in enumerate(DRAWN):
        images = renders(shape, style, args.renders, seed=i)
        read = oracle.predict(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
        pairs = Counter(f"{st} {sh}" for st, sh in zip(read["style"], read["shape"], strict=True))
        lines.append(
            f"| {style} {shape} | {np.mean([s == shape for s in read['shape']]):.1%} | "
            f"{np.mean([s == style for s in read['style']]):.1%} | "
            + ", ".join(f"{k} {v}" for k, v in pairs.most_common(3))
            + " |"
        )
    lines += [
        "",
        "Pixel overlap (mean IoU of the coverage masks, same size and place, "
        f"{args.renders // 3} seeds):",
        "",
        "| drawings | large, centred | small, anywhere |",
        "|---|---:|---:|",
    ]
    for a, b in OVERLAPS:
        cells = [overlap(a, b, args.renders // 3, size) for size in ("big", "tiny")]
        lines.append(f"| {a[1]} {a[0]} / {b[1]} {b[0]} | {cells[0]:.2f} | {cells[1]:.2f} |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

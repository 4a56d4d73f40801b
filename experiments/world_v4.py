"""ToyBench v4's concepts as a user would see them: each concept's five training images in a row.

    python -m experiments.world_v4

Writes `experiments/results/world_v4.png` (one row per dev and test concept: its name, what it
defines, its shared context, then its images at 3×) and `experiments/results/world_v4.md` (the
concepts with their difficulty, as `python -m tirun.toybench --list` prints them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from tirun.toyworld.concepts import split

RESULTS = Path(__file__).parent / "results"
SCALE, LABEL = 3, 330  # image zoom; width of the label column in pixels


def figure(out: Path) -> None:
    concepts = split("dev") + split("test")
    side = 32 * SCALE
    sheet = Image.new("RGB", (LABEL + 5 * (side + 4), len(concepts) * (side + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, concept in enumerate(concepts):
        y = row * (side + 4)
        defines = ", ".join(concept.attributes.values())
        context = ", ".join(concept.context.values()) or "none"
        draw.text((6, y + 12), f"{concept.name} ({concept.split})", fill="black")
        draw.text((6, y + 36), f"defines: {defines}", fill="black")
        draw.text((6, y + 60), f"context: {context}", fill="black")
        for i, image in enumerate(concept.images()):
            sheet.paste(image.resize((side, side), Image.Resampling.NEAREST),
                        (LABEL + i * (side + 4), y))  # fmt: skip
    sheet.save(out)


def listing(out: Path) -> None:
    lines = [
        "# ToyBench v4's concepts",
        "",
        "`python -m experiments.world_v4` (the rows of `python -m tirun.toybench --list`); "
        "their images: [world_v4.png](world_v4.png).",
        "",
        "| concept | kind | split | defines | initializer | context | attributes | beyond the "
        "initializer | unnamed | context strength |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for c in split("dev") + split("test"):
        d = c.difficulty
        defines = ", ".join(f"{k}={v}" for k, v in c.attributes.items())
        context = ", ".join(f"{k}={v}" for k, v in c.context.items()) or "–"
        lines.append(
            f"| {c.name} | {c.kind} | {c.split} | {defines} | {c.initializer} | {context} | "
            f"{d['defines']} | {d['beyond_initializer']} | {d['unnamed']} | {d['context']} |"
        )
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    figure(args.out / "world_v4.png")
    listing(args.out / "world_v4.md")


if __name__ == "__main__":
    main()

"""What the toy model draws when a sentence names a ToyBench concept's attributes outright.

    python -m experiments.text_ceiling [--samples 16]

No word is learned: objects are drawn from "a photo of a COLOUR SHAPE", styles from "a painting
of a COLOUR SHAPE in the style of STYLE" (circle, square, star). A concept the model cannot draw
from its own names is one no word should be expected to reach, which separates the model's
limits from the method's on the benchmark's worst words. Writes
`experiments/results/text_ceiling.md`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tirun import sampling
from tirun.applications.context import Sampling
from tirun.metrics import oracle as oracle_metrics
from tirun.toyworld.concepts import Concept, split

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results" / "text_ceiling.md"
STYLE_SUBJECTS = ("circle", "square", "star")


def named_prompts(concept: Concept) -> list[str]:
    """Sentences that name every attribute of ``concept`` in the words pretraining captions use."""
    a = concept.attributes
    if concept.kind == "object":
        return [f"a photo of a {a['colour']} {a['shape']}"]
    return [
        f"a painting of a {a['colour']} {s} in the style of {a['style']}" for s in STYLE_SUBJECTS
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.text_ceiling")
    parser.add_argument("--samples", type=int, default=16, help="samples per prompt")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["+toybench=default"])
    components = instantiate(cfg.model)
    components.freeze()
    settings = Sampling(**cfg.application.sampling)
    pipe = components.pipeline("ddim")
    pipe.set_progress_bar_config(disable=True)
    oracle = oracle_metrics.load()
    lines = [
        "# The toy model drawing each ToyBench concept from its attributes' names",
        "",
        f"`python -m experiments.text_ceiling --samples {args.samples}`: no learned word; the "
        f"sampler and seeds of ToyBench's scores ({settings.steps} DDIM steps, guidance "
        f"{settings.guidance}, seeds 0–{args.samples - 1}).",
        "",
        "| concept | split | prompts | samples | whole concept | per attribute |",
        "|---|---|---|---:|---:|---|",
    ]
    for concept in split("dev") + split("test"):
        prompts = named_prompts(concept)
        rows = sampling.sample(pipe, prompts, args.samples, settings.steps, settings.guidance, 0,
                               components.resolution)  # fmt: skip
        images = [image for row in rows for image in row]
        whole = oracle_metrics.match_rate(oracle, images, concept.attributes)
        rates = oracle_metrics.attribute_rates(oracle, rows, [concept.attributes] * len(rows))
        per = ", ".join(f"{k} {v:.2f}" for k, v in rates.items())
        line = f"| {concept.name} | {concept.split} | {len(prompts)} | {len(images)} | {whole:.3f} | {per} |"
        print(line, flush=True)
        lines.append(line)
    args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

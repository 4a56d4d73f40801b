"""Short pretraining probes of the toy model's levers, each scored the same way.

    python -m experiments.toy_probes [--minutes 8] [--only NAME ...]

Every probe trains the denoiser stage (`tirun.toyworld.pretrain --stage denoiser`) for the same
wall-clock minutes on the packaged VAE and oracle (run `--stage oracle vae` first), changing one
lever from `base`: captions that name colour and shape together, classifier-free dropout, the
UNet's width, or min-SNR-γ loss weighting. Each is scored on what the retrain must reach: shape and colour of seen pairs
named in full, and the text ceiling of ToyBench's *dev* concepts (test is never looked at
here). Equal wall time, not equal steps, because the real run is bounded by minutes on two
cores. Appends a row per probe to `experiments/results/toy_probes.md`; probe models stay in
`toy_probes/` (ignored).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path

import torch

from tirun import sampling
from tirun.applications.context import Sampling
from tirun.metrics import oracle as oracle_metrics
from tirun.models import load_pretrained
from tirun.toybench.ceiling import concept_ceiling
from tirun.toyworld import pretrain
from tirun.toyworld.concepts import NAMED_SHAPES, split
from tirun.toyworld.render import COLOURS, Attributes
from tirun.toyworld.world import is_held_out

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "tirun" / "assets" / "toy"
PROBES_DIR = ROOT / "toy_probes"
RESULTS = ROOT / "experiments" / "results" / "toy_probes.md"
PROBES: dict[str, list[str]] = {
    "base": [],
    "pair0.5": ["--caption-pair-p", "0.5"],
    "empty0.2": ["--caption-empty-p", "0.2"],
    "wide48-96-128": ["--unet-widths", "48", "96", "128"],
    "minsnr5": ["--min-snr-gamma", "5"],
}
SETTINGS = Sampling(samples=16, steps=20, guidance=3.0, scheduler="ddim", seed=0, batch_size=64)


def seen_pair_rates(pipe, oracle, samples: int) -> dict[str, float]:
    """Shape (per named shape) and colour accuracy of "a photo of a COLOUR SHAPE", seen pairs."""
    pairs = [(s, c) for s in NAMED_SHAPES for c in COLOURS
             if not is_held_out(Attributes(s, c, "white", "filled"))]  # fmt: skip
    rows = sampling.sample(pipe, [f"a photo of a {c} {s}" for s, c in pairs], samples,
                           SETTINGS.steps, SETTINGS.guidance, 500, 32, 64)  # fmt: skip
    out: dict[str, list[bool]] = {}
    for (shape, colour), row in zip(pairs, rows, strict=True):
        read = oracle.predict(row)
        out.setdefault(shape, []).extend(r == shape for r in read["shape"])
        out.setdefault("colour", []).extend(r == colour for r in read["colour"])
        out.setdefault("shape", []).extend(r == shape for r in read["shape"])
    return {k: sum(v) / len(v) for k, v in out.items()}


def probe(name: str, minutes: float) -> str:
    out = PROBES_DIR / name
    shutil.rmtree(out, ignore_errors=True)
    (out / "model").mkdir(parents=True)
    shutil.copytree(ASSETS / "model" / "vae", out / "model" / "vae")
    started = time.time()
    pretrain.main(["--stage", "denoiser", "--out", str(out), "--denoiser-steps", "100000",
                   "--denoiser-minutes", str(minutes), *PROBES[name]])  # fmt: skip
    log = (out / "pretrain_log.txt").read_text()
    steps = re.findall(r"denoiser(?: step|: stopped at step) (\d+)", log)[-1]
    components = load_pretrained(str(out / "model"), 32)
    components.freeze()
    pipe = components.pipeline("ddim")
    pipe.set_progress_bar_config(disable=True)
    oracle = oracle_metrics.load()
    seen = seen_pair_rates(pipe, oracle, samples=2)
    ceilings = {c.name: concept_ceiling(pipe, oracle, c, 16, SETTINGS, 32)["whole"]
                for c in split("dev")}  # fmt: skip
    mean = sum(ceilings.values()) / len(ceilings)
    row = (
        f"| {name} | {' '.join(PROBES[name]) or '–'} | {steps} | {seen['shape']:.3f} | "
        f"{min(seen[s] for s in NAMED_SHAPES):.2f} | {seen['colour']:.3f} | {mean:.3f} | "
        f"{min(ceilings.values()):.3f} | "
        + ", ".join(f"{k} {v:.2f}" for k, v in ceilings.items())
        + f" | {(time.time() - started) / 60:.0f} |"
    )
    with RESULTS.open("a") as f:
        f.write(row + "\n")
    print(row, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.toy_probes")
    parser.add_argument("--minutes", type=float, default=8.0, help="denoiser minutes per probe")
    parser.add_argument("--only", nargs="+", choices=list(PROBES), default=list(PROBES))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if not RESULTS.is_file():
        RESULTS.write_text(
            "# Toy model probes: one lever each, equal wall time (`python -m experiments.toy_probes`)\n\n"
            'Seen pairs: "a photo of a COLOUR SHAPE", 2 samples per pair; dev ceiling: each dev '
            "concept from its attributes' names, 48 samples (`tirun.toybench.ceiling`).\n\n"
            "| probe | lever | steps | seen shape | worst shape | seen colour | dev ceiling mean | "
            "dev ceiling min | per dev concept | minutes |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---|---:|\n"
        )
    for name in args.only:
        probe(name, args.minutes)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Short pretraining probes of the toy model's levers, each scored the same way.

    python -m experiments.toy_probes [--minutes 8] [--only NAME ...]
    python -m experiments.toy_probes --profile   # the pretraining step's cost by UNet width

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
from tirun.metrics import oracle as oracle_metrics
from tirun.models import load_pretrained
from tirun.sampling import Sampling
from tirun.toybench.ceiling import concept_ceiling
from tirun.toyworld import pretrain
from tirun.toyworld.concepts import split
from tirun.toyworld.render import COLOURS, Attributes
from tirun.toyworld.world import NAMED_SHAPES, is_held_out

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
    add_row(row)
    print(row, flush=True)
    return row


def add_row(row: str) -> None:
    """Put ``row`` under the probe table's last row, above the notes written below it."""
    lines = RESULTS.read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("| probe |"))
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines.insert(end, row)
    RESULTS.write_text("\n".join(lines) + "\n")


def profile(repeats: int = 6) -> list[str]:
    """Seconds of one denoiser training step (UNet forward, backward, AdamW at batch 64, the
    median of ``repeats``) for the probes' UNet widths and layer counts, and the share the
    77-token context costs against 16 tokens: what capacity would cost in steps."""
    import json

    from diffusers import UNet2DConditionModel

    base = json.loads(
        (ROOT / "tirun" / "assets" / "arch" / "toy" / "unet" / "config.json").read_text()
    )
    shapes = {"32/64/128 (v2, v3)": {}, "32/64/128, 2 layers a block": {"layers_per_block": 2},
              "48/96/128": {"block_out_channels": [48, 96, 128]},
              "40/80/160": {"block_out_channels": [40, 80, 160], "norm_num_groups": 8}}  # fmt: skip

    def step_seconds(config: dict, tokens: int = 77) -> tuple[float, float]:
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(config)
        optimizer = torch.optim.AdamW(unet.parameters())
        x, t = torch.randn(64, 4, 16, 16), torch.randint(0, 1000, (64,))
        text = torch.randn(64, tokens, config["cross_attention_dim"])
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            unet(x, t, text).sample.pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        return sum(p.numel() for p in unet.parameters()) / 1e6, sorted(times)[repeats // 2]

    lines = ["| UNet | parameters (M) | s / step at batch 64 |", "|---|---:|---:|"]
    for name, change in shapes.items():
        params, seconds = step_seconds({**base, **change})
        lines.append(f"| {name} | {params:.2f} | {seconds:.3f} |")
    lines.append(f"| 32/64/128, 16-token context | – | {step_seconds(base, 16)[1]:.3f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.toy_probes")
    parser.add_argument("--minutes", type=float, default=8.0, help="denoiser minutes per probe")
    parser.add_argument("--only", nargs="+", choices=list(PROBES), default=list(PROBES))
    parser.add_argument("--profile", action="store_true", help="time the step by UNet width")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    if args.profile:
        print("\n".join(profile()))
        return 0
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

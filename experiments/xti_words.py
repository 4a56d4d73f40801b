"""ToyBench's XTI words turned into words of a few vectors (`tirun.xti_convert`), for scoring
with `python -m tirun.toybench --words OUT`:

    python -m experiments.xti_words toybench_runs/v3-test-xti-3seeds/seed0 OUT [--vectors 3]

Every job of the run folder gives `OUT/CONCEPT.safetensors`, fitted on the images and
templates the job trained on; `OUT/fit.md` lists each fit's relative error, start and end, and
its seconds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import OmegaConf

from tirun import embeddings, xti
from tirun.files import atomic_write
from tirun.models import load_pretrained
from tirun.xti_convert import fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path, help="a ToyBench run of XTI words (+recipe=xti)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--vectors", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    components = load_pretrained("toy", resolution=32)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [
        "| concept | relative error at the start | at the end | seconds |",
        "|---|---:|---:|---:|",
    ]
    ends = []
    for word_file in sorted(args.run.rglob(xti.FILE_NAME)):
        cfg = OmegaConf.load(word_file.parent / "config.yaml")
        concept = cfg.dataset.concept
        started = time.perf_counter()
        word, errors = fit(components, word_file, instantiate(cfg.dataset.images),
                           instantiate(cfg.template), args.vectors, args.steps, args.lr,
                           seed=int(cfg.train.seed))  # fmt: skip
        seconds = time.perf_counter() - started
        embeddings.save(word, args.out / f"{concept}.safetensors", "diffusers")
        ends.append(errors["relative_error_end"])
        rows.append(f"| {concept} | {errors['relative_error_start']:.3f} | "
                    f"{errors['relative_error_end']:.3f} | {seconds:.1f} |")  # fmt: skip
        print(rows[-1], flush=True)
    rows.append(f"| mean | | {statistics.fmean(ends):.3f} | |")
    text = "\n".join([f"# {args.vectors} vectors fitted to {args.run}, {args.steps} steps, "
                      f"lr {args.lr}", "", *rows]) + "\n"  # fmt: skip
    atomic_write(args.out / "fit.md", lambda tmp: tmp.write_text(text))


if __name__ == "__main__":
    main()

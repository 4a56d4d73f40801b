"""ToyBench: Textual Inversion measured on many held-out toy concepts, with a fixed dev/test split.

    python -m tirun.toybench --list                     # name kind split attrs initializer
    python -m tirun.toybench --export DIR               # every concept's training images
    python -m tirun.toybench split=dev seeds=1          # the quick mode (8 words)
    python -m tirun.toybench split=test seeds=3 name=paper [TRAINING OVERRIDES ...]
    python -m tirun.toybench --record split=test seeds=3 name=NAME   # into the committed results
    python -m tirun.toybench split=test seeds=3 hydra/launcher=joblib   # Hydra's launchers
    python -m tirun.toybench split=test seeds=2 first_seed=1 name=NAME   # add seeds 1 and 2
    python -m tirun.toybench --words DIR split=test     # score another tool's word files
    python -m tirun.toybench --words REPORT/words/RUN split=test seeds=3   # rescore a run's words
    python -m tirun.toybench --report OUT RUN [RUN ...] [tracker=none]  # side by side (the first: reference)

A run trains every concept of the split × seed as one Hydra multirun of `python -m tirun
+toybench=default` (any training override passes through, e.g. `word.num_vectors=2`), scores
each word along its training, and writes the report into `outputs/toybench/NAME/` (with
`--record`, into `experiments/results/toybench/NAME/`, the committed results the docs cite; the
jobs' folders go to `toybench_runs/NAME/`). Choose settings on `split=dev` only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tirun.toyworld.concepts import CONCEPTS, SPLITS, concept_captions, split

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results" / "toybench"  # the committed record: --record only
OUTPUTS = Path("outputs") / "toybench"
RUNS = Path("toybench_runs")  # the jobs' folders, under the folder it is run from
OWN_KEYS = ("split", "seeds", "first_seed", "name")


def list_lines() -> list[str]:
    """One line a concept; ``reachability=0.NN`` where the toy model's text ceiling measured
    what the concept's answer (its names with the retired words put back) draws."""
    from tirun.packaged import PACKAGED_MODELS
    from tirun.toybench.ceiling import read_ceilings

    reach = read_ceilings(PACKAGED_MODELS["toy"], "reachability")
    return [
        c.line() + (f" reachability={reach[c.name]:.2f}" if c.name in reach else "")
        for c in CONCEPTS.values()
    ]


def export(folder: Path, count: int = 5, seed: int = 0) -> list[Path]:
    """Each concept's training images as PNG (one folder per concept, as `--list` names it),
    with each image's mask in `masks/` and its own captions (`{}` for the word) in `NN.txt`."""
    written = []
    for concept in CONCEPTS.values():
        target = folder / concept.name
        (target / "masks").mkdir(parents=True, exist_ok=True)
        captions = concept_captions(concept.name, count, seed)
        for i, (image, mask) in enumerate(concept.images_with_masks(count, seed)):
            image.save(target / f"{i:02d}.png")
            mask.save(target / "masks" / f"{i:02d}.png")
            (target / f"{i:02d}.txt").write_text("\n".join(captions[i]) + "\n")
            written.append(target / f"{i:02d}.png")
        (target / "concept.json").write_text(
            json.dumps(
                {
                    "name": concept.name,
                    "kind": concept.kind,
                    "split": concept.split,
                    "attributes": concept.attributes,
                    "initializer": concept.initializer,
                    "context": concept.context,
                    "difficulty": concept.difficulty,
                },
                indent=2,
            )
            + "\n"
        )
    return written


WORD_SUFFIXES = (".safetensors", ".pt", ".bin")


def word_files(folder: Path, name: str) -> dict[int, Path]:
    """The words for concept ``name`` in ``folder``, by seed: ``NAME.safetensors|.pt|.bin`` or
    ``NAME/learned_embeds.safetensors`` (seed 0), and ``NAME_seedK.safetensors|.pt|.bin`` (seed
    K, as a report's `words/RUN/` names them)."""
    found: dict[int, Path] = {}
    for candidate in (
        *(folder / f"{name}{suffix}" for suffix in WORD_SUFFIXES),
        folder / name / "learned_embeds.safetensors",
    ):
        if candidate.is_file():
            found[0] = candidate
            break
    for candidate in sorted(folder.glob(f"{name}_seed*")):
        seed = candidate.name[len(name) + len("_seed") :].split(".")[0]
        if seed.isdigit() and candidate.suffix in WORD_SUFFIXES and candidate.is_file():
            found.setdefault(int(seed), candidate)
    return dict(sorted(found.items()))


def score_words(
    folder: Path, names: list[str], out: Path, samples_per_set: int = 64, seeds: range = range(1)
) -> Path:
    """Score word files made by any tool as ToyBench scores its own (through diffusers' own
    `load_textual_inversion`): the words in ``folder`` of the concepts ``names`` and the seeds
    ``seeds`` (`word_files`), saying which concepts it has no word for; writes a run folder the
    report reads (`out/NAME` for seed 0's word, `out/NAME_seedK` for seed K's)."""
    from tirun.files import write_json
    from tirun.toybench.score import score_word, scorer

    components, oracle, settings = scorer()
    found = {n: {k: f for k, f in word_files(folder, n).items() if k in seeds} for n in names}
    missing = [n for n, files in found.items() if not files]
    if len(missing) == len(names):
        raise ValueError(
            f"--words {folder}: no word file for {', '.join(missing)} "
            "(NAME.safetensors, NAME_seedK.safetensors, .pt or .bin)"
        )
    if missing:
        print(f"--words {folder}: no word for {', '.join(missing)}; scoring the others", flush=True)
    for name, files in found.items():
        concept = CONCEPTS[name]
        for seed, source in files.items():
            scores = score_word(components, oracle, concept, settings, str(source), samples_per_set)
            scores.pop("rows")
            outcomes = scores.pop("outcomes")
            point = {"step": 0, "seconds": 0.0, **scores}
            bench = {"concept": name, "kind": concept.kind, "split": concept.split, "seed": seed,
                     "difficulty": concept.difficulty, "curve": [point], "final": point,
                     "outcomes": outcomes, "file": str(source)}  # fmt: skip
            job = out / (name if seed == 0 else f"{name}_seed{seed}")
            write_json(job / "metrics.json", {"applications": {"toybench": bench}})
            print(
                f"{name} seed {seed}: reconstruction {scores['reconstruction']:.3f} "
                f"editability {scores['editability']:.3f} adherence {scores['adherence']:.3f}",
                flush=True,
            )
    return out


def seeds_folder(seeds: range) -> str:
    """Where a run continued from seed N > 0 puts its jobs inside the run's folder."""
    last = seeds[-1]
    return f"seed{last}" if len(seeds) == 1 else f"seeds{seeds[0]}-{last}"


def run(split_name: str, seeds: range, name: str, overrides: list[str]) -> Path:
    """Train and score every concept of the split × seed through `python -m tirun --multirun`.

    A run continued with `first_seed=N` (N > 0) writes its jobs into a subfolder of the run's
    folder (`seeds1-2`), beside the earlier ones and not over their Hydra job numbers; the
    report reads every job under the run's folder."""
    from tirun.__main__ import composition_error

    concepts = ",".join(c.name for c in split(split_name))
    # every job's config, checked on the first concept and seed before any job starts
    problem = composition_error(
        ["+toybench=default", f"dataset.concept={concepts.split(',')[0]}",
         f"train.seed={seeds.start}", *overrides]
    )  # fmt: skip
    if problem:
        raise ValueError(problem)
    runs = RUNS / name
    sweep = runs / seeds_folder(seeds) if seeds.start > 0 else runs
    command = [
        sys.executable, "-m", "tirun", "--multirun", "+toybench=default",
        f"dataset.concept={concepts}", f"train.seed={','.join(map(str, seeds))}",
        f"hydra.sweep.dir={sweep}", *overrides,
    ]  # fmt: skip
    print(" ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    return runs


def whole_number(own: dict[str, str], key: str, default: str, lowest: int) -> int:
    """A count setting (`seeds=3`: seeds 0, 1, 2), refused in one line unless a whole number of
    at least ``lowest``."""
    text = own.get(key, default)
    if not text.isdigit() or int(text) < lowest:
        meaning = {"seeds": "how many seeds each concept trains, e.g. seeds=3",
                   "first_seed": "the seed to start from, e.g. first_seed=1"}[key]  # fmt: skip
        raise ValueError(f"{key}={text} is not a whole number of {lowest} or more: {meaning}")
    return int(text)


def is_setting(argument: Path) -> bool:
    """`key=value` (a setting or an override), not a folder: no `/` and nothing of that name."""
    text = str(argument)
    return "=" in text and "/" not in text and not argument.exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tirun.toybench",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--list", action="store_true", help="one line per concept")
    parser.add_argument("--export", type=Path, help="write every concept's images here")
    parser.add_argument("--words", type=Path, help="score the word files in this folder")
    parser.add_argument("--report", type=Path, nargs="+", metavar=("OUT", "RUN"))
    parser.add_argument(
        "--record",
        action="store_true",
        help=f"write the report into {RESULTS.relative_to(ROOT)}/NAME (committed), not {OUTPUTS}/NAME",
    )
    parser.add_argument(
        "settings", nargs="*", help="split=dev|test seeds=N name=NAME, then overrides"
    )
    args = parser.parse_args(argv)
    if args.report:  # `--report OUT RUN ... tracker=none`: the settings after the folders
        settings = [str(a) for a in args.report if is_setting(a)]
        args.report = [a for a in args.report if not is_setting(a)]
        args.settings = settings + args.settings
    own = {k: v for k, _, v in (s.partition("=") for s in args.settings) if k in OWN_KEYS}
    overrides = [s for s in args.settings if s.partition("=")[0] not in OWN_KEYS]
    split_name = own.get("split", "dev")
    try:
        count = whole_number(own, "seeds", "1", lowest=1)
        first_seed = whole_number(own, "first_seed", "0", lowest=0)
        seeds = range(first_seed, first_seed + count)
        if split_name not in SPLITS:
            raise ValueError(f"split={split_name!r} is unknown; use one of {SPLITS}")
        if args.list:
            print("\n".join(list_lines()))
            return 0
        if args.export:
            written = export(args.export)
            print(f"wrote {len(written)} images of {len(CONCEPTS)} concepts into {args.export}")
            return 0
        from tirun.toybench.report import report

        name = own.get("name") or f"{split_name}-{count}seed{'s' if count > 1 else ''}"
        if args.report:
            if len(args.report) < 2:
                raise ValueError("--report needs OUT and at least one RUN folder")
            out = args.report[0]
            print(report(out, list(args.report[1:])), end="")
        else:
            if args.words:
                names = [c.name for c in split(split_name)]
                runs = score_words(args.words, names, RUNS / name, seeds=seeds)
            else:
                runs = run(split_name, seeds, name, overrides)
            out = (RESULTS if args.record else OUTPUTS) / name
            print(report(out, [runs], [name]), end="")
        print(f"wrote {out}")
        if "tracker=none" not in overrides:
            from tirun.tracking import publish_report

            folder = publish_report(out.name, out, RUNS / "wandb")
            print(f"W&B: the report's figures and table in {folder}")
        return 0
    except ValueError as error:
        print(f"tirun.toybench: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as error:
        print(
            f"tirun.toybench: error: the training sweep failed ({error.returncode}); see its output above",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())

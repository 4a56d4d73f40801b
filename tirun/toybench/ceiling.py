"""The text ceiling: what the toy model draws when a sentence names a concept's attributes.

    python -m tirun.toybench.ceiling [--samples 16] [--model DIR]

No word is learned. Each concept is drawn from three sentences in the words pretraining
captions use ("a photo of a green cross", "a painting of a red star in the style of mosaic",
"a painting of a blue circle on bricks in the style of shadowed"), on ToyBench's sampler, and the
oracle reads every sample. This is the paper's "human captions" reference: a concept the model
cannot draw from its own names is one no word should be expected to reach, and a word's score
is read against it (the report's "fraction of the ceiling"). Where the model keeps the words
pretraining said for the unnamed values (``retired_words.safetensors``), the same sentences with
those words put back ("a photo of a green dotted star") give each concept's reachability: what
the best conditioning known draws, the bar a learned word could reach. Writes
`experiments/results/text_ceiling.md` and, in the model's folder, `text_ceiling.json`, which
the ToyBench report reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tirun.files import write_json
from tirun.toyworld.concepts import Concept, split
from tirun.toyworld.render import UNNAMED, Attributes, in_style, object_phrase

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results" / "text_ceiling.md"
CEILING_FILE = "text_ceiling.json"  # in the model's folder, beside model_index.json
REACHABLE = 0.7  # a benchmark concept's answer draws it at least this often
_OBJECT_FRAMES = ("a photo of a {}", "a rendering of a {}", "a good photo of a {}")
_STYLE_FRAMES = (
    "a painting in the style of {}",
    "a rendering in the style of {}",
    "a good painting in the style of {}",
)


def object_name(attributes: dict[str, str]) -> str:
    """An object's colour and shape in the words captions use: "purple star"."""
    plain = Attributes(attributes["shape"], attributes["colour"], "white", "filled")
    return object_phrase(plain, {"colour", "shape"})


def named_sentence(
    attributes: dict[str, str], frame: int = 0, unnamed: frozenset[str] = UNNAMED
) -> str:
    """A sentence naming ``attributes`` as pretraining captions do, the unnamed ones left out:
    "a photo of a purple star on grass", "a photo of a tiny red star in warm light", or with a
    technique "a painting of a green star on sand in the style of outlined".

    Args:
        attributes: what to say.
        frame: which of the three object (or style) frames.
        unnamed: values left unsaid; by default the diamond, hatching and the marks, which no
            shipped word names. With none, they are said by their retired words: the answer.
    """
    keys = ("size", "mark", "colour", "shape", "background", "light")
    named = {k for k in keys if k in attributes and attributes[k] not in unnamed}
    full = Attributes(**{"shape": "circle", "colour": "red", "background": "white",
                         "style": "filled", **attributes})  # fmt: skip
    phrase = object_phrase(full, named)
    if full.style == "filled" or full.style in unnamed:
        return _OBJECT_FRAMES[frame].format(phrase)
    return in_style(_STYLE_FRAMES[frame], phrase, full.style)


def named_prompts(concept: Concept, unnamed: frozenset[str] = UNNAMED) -> list[str]:
    """Three sentences that name every nameable attribute of ``concept`` as pretraining
    captions do: an object's colour and shape (in its technique, if it has one), or a style's
    technique and palette on three shapes pretraining draws in that palette. With
    ``unnamed=frozenset()``, the answer: every attribute said, by the retired words too."""
    if concept.kind == "object":
        return [named_sentence(concept.attributes, i, unnamed) for i in range(3)]
    subjects = [adds["shape"] for _, adds in concept.editability if adds.keys() == {"shape"}]
    return [
        named_sentence({**concept.attributes, "shape": s}, i, unnamed)
        for i, s in enumerate(subjects[:3])
    ]


def named_edits(concept: Concept) -> list[tuple[str, dict[str, str]]]:
    """The concept's editability prompts with its names in place of the word, each with what a
    right sample shows: the "human captions" point of the paper's editability axis."""
    edits = []
    for _, adds in concept.editability:
        expected = {**concept.attributes, **adds}
        edits.append((named_sentence(expected), expected))
    return edits


def concept_ceiling(
    pipe, oracle, concept: Concept, samples: int, settings, resolution: int, answer: bool = False
) -> dict:
    """The share of ``samples`` per sentence of :func:`named_prompts` that show the whole concept
    (``whole``: "human captions" reconstruction) and its nameable part (``named``: what its
    names can reach, the ceiling's bar), each attribute's own rate, and the share of ``samples`` per sentence of
    :func:`named_edits` that show the concept and the edit (``editability``) and that show the
    edit, concept or not (``adherence``: "human captions" on the paper's editability axis).
    With ``answer``, also the share that the answer's sentences draw (``reachability``; the
    names' own for a concept with nothing unnamed).

    Args:
        pipe: a text-to-image pipeline of the model (no word loaded).
        oracle: the attribute classifier.
        concept: the concept to name.
        samples: samples per sentence (image j on seed ``settings.seed + j``).
        settings: ToyBench's sampler (steps, guidance, seed, batch size).
        resolution: image side in pixels.
        answer: ``pipe`` knows the retired words (:func:`load_retired_words`).
    """
    from tirun import sampling
    from tirun.metrics import oracle as oracle_metrics

    prompts = named_prompts(concept)
    edits = named_edits(concept)
    rows = sampling.sample(pipe, prompts + [e for e, _ in edits], samples, settings.steps,
                           settings.guidance, settings.seed, resolution,
                           settings.batch_size)  # fmt: skip
    rows, edit_rows = rows[: len(prompts)], rows[len(prompts) :]
    images = [image for row in rows for image in row]
    edit_hits = [oracle_metrics.match_rate(oracle, row, expected)
                 for row, (_, expected) in zip(edit_rows, edits, strict=True)]  # fmt: skip
    adds = [asked for _, asked in concept.editability]
    adherence = [oracle_metrics.match_rate(oracle, row, asked)
                 for row, asked in zip(edit_rows, adds, strict=True)]  # fmt: skip
    whole = oracle_metrics.match_rate(oracle, images, concept.attributes)
    reachable = {}
    if answer:
        answers = named_prompts(concept, frozenset())
        reachable = {"reachability": whole, "answers": answers}
        if answers != prompts:
            answer_rows = sampling.sample(pipe, answers, samples, settings.steps,
                                          settings.guidance, settings.seed, resolution,
                                          settings.batch_size)  # fmt: skip
            reachable["reachability"] = oracle_metrics.match_rate(
                oracle, [image for row in answer_rows for image in row], concept.attributes
            )
    return {
        **reachable,
        "whole": whole,
        "named": oracle_metrics.match_rate(oracle, images, concept.named_attributes),
        "attributes": oracle_metrics.attribute_rates(
            oracle, rows, [concept.attributes] * len(rows)
        ),
        "editability": sum(edit_hits) / len(edit_hits),
        "adherence": sum(adherence) / len(adherence),
        "samples": len(images),
        "prompts": prompts,
        "edits": [e for e, _ in edits],
    }


def load_retired_words(pipe, model_dir: Path) -> bool:
    """Give ``pipe`` the words pretraining said for the unnamed values, from the rows the model
    folder keeps (``retired_words.safetensors``); False when it keeps none."""
    from safetensors.torch import load_file

    path = Path(model_dir) / "retired_words.safetensors"
    if not path.is_file():
        return False
    rows = load_file(str(path))
    pipe.load_textual_inversion([{w: v[None]} for w, v in rows.items()], token=list(rows))
    return True


def read_ceilings(model_dir: Path, metric: str = "whole") -> dict[str, float]:
    """Each concept's text ceiling from ``model_dir/text_ceiling.json``: the whole concept from
    its names (``whole``), its named edits (``editability``) or their adherence (``adherence``);
    {} when the model has none (the report then leaves them out), and concepts written before
    a metric existed are left out of it."""
    path = Path(model_dir) / CEILING_FILE
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())
    return {name: row[metric] for name, row in rows.items() if metric in row}


def table_lines(ceilings: dict[str, dict], concepts: list[Concept]) -> list[str]:
    """A markdown table of the ceilings with their mean, the bars beside it."""
    lines = [
        "| concept | kind | split | samples | named part | whole concept | reachability | "
        "per attribute | named edits | their adherence |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for c in concepts:
        row = ceilings[c.name]
        per = ", ".join(f"{k} {v:.2f}" for k, v in row["attributes"].items())
        reach = f"{row['reachability']:.3f}" if "reachability" in row else "–"
        lines.append(
            f"| {c.name} | {c.kind} | {c.split} | {row['samples']} | {row['named']:.3f} | "
            f"{row['whole']:.3f} | {reach} | {per} | {row['editability']:.3f} | "
            f"{row['adherence']:.3f} |"
        )
    named = [ceilings[c.name]["named"] for c in concepts]
    wholes = [ceilings[c.name]["whole"] for c in concepts]
    lines += [
        "",
        f"Named part: mean {sum(named) / len(named):.3f} over {len(named)} concepts (bar 0.80); "
        f"lowest {min(named):.3f} (bar 0.50 for every concept). Whole concept (what human "
        f"captions reconstruct): mean {sum(wholes) / len(wholes):.3f}.",
    ]
    reach = {c.name: ceilings[c.name].get("reachability") for c in concepts}
    if all(v is not None for v in reach.values()):
        below = sorted(name for name, v in reach.items() if v < REACHABLE)
        lines.append(
            f"Reachability (the whole concept from its answer, the retired words put back): mean "
            f"{sum(reach.values()) / len(reach):.3f}, lowest {min(reach.values()):.3f}; below "
            f"the bar {REACHABLE}: {', '.join(below) or 'none'}."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    from hydra.utils import instantiate

    from tirun.config import compose
    from tirun.metrics import oracle as oracle_metrics
    from tirun.models import PACKAGED_MODELS
    from tirun.sampling import Sampling

    parser = argparse.ArgumentParser(prog="python -m tirun.toybench.ceiling")
    parser.add_argument("--samples", type=int, default=16, help="samples per sentence")
    parser.add_argument("--model", default="toy", help="model folder (default: the toy model)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cfg = compose(["+toybench=default", f"model.path={args.model}"])
    components = instantiate(cfg.model)
    components.freeze()
    settings = Sampling(**cfg.application.sampling)
    pipe = components.pipeline("ddim")
    pipe.set_progress_bar_config(disable=True)
    oracle = oracle_metrics.load()
    concepts = split("dev") + split("test")
    model_dir = PACKAGED_MODELS.get(args.model, Path(args.model))
    answer = load_retired_words(pipe, model_dir)
    ceilings = {}
    for concept in concepts:
        row = concept_ceiling(
            pipe, oracle, concept, args.samples, settings, components.resolution, answer
        )
        ceilings[concept.name] = row
        print(
            f"{concept.name}: whole {row['whole']:.3f} reach {row.get('reachability')}", flush=True
        )
    lines = [
        "# The toy model drawing each ToyBench concept from its attributes' names",
        "",
        f"`python -m tirun.toybench.ceiling --samples {args.samples}`: no learned word; three "
        f"sentences per concept, {args.samples} samples each, on ToyBench's sampler "
        f"({settings.steps} DDIM steps, guidance {settings.guidance}, seeds "
        f"{settings.seed}–{settings.seed + args.samples - 1}).",
        "",
        *table_lines(ceilings, concepts),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    write_json(model_dir / CEILING_FILE, ceilings)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

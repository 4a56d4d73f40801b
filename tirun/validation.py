"""Validation: a fixed-seed grid drawn every `validation.every` steps from the word as saved and
loaded back, and, where the toy world's oracle can read it, the run's validation score (what
`train.early_stop.keep=validated` keeps the word by)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator
from omegaconf import DictConfig
from PIL import Image

from tirun import loading, sampling, tracking, xti
from tirun.files import atomic_write
from tirun.metrics import oracle as oracle_metrics
from tirun.models import Components
from tirun.outputs import save_word
from tirun.toyworld.concepts import CONCEPTS
from tirun.word import Word


def validate(
    cfg: DictConfig,
    components: Components,
    word: Word,
    step: int,
    run_dir: Path,
    accelerator: Accelerator,
    judge: Callable[[list[list[Image.Image]]], float] | None = None,
) -> float | None:
    """A fixed-seed grid drawn from the word *as saved and loaded back* by the users' loader;
    with a judge, its score of those samples (the run's validation score)."""
    if not accelerator.is_main_process:
        return None
    vc = cfg.validation
    folder = run_dir / "samples" / "validation"
    layers = xti.cross_attention_layers(components.unet) if word.per_layer else []
    files = save_word(word, layers, folder / f"step_{step:06d}.safetensors", step)
    source = tuple(files) if len(files) == 2 else files[0]
    with loading.pipeline_with_words(
        components, [source], vc.scheduler, tokenizers=word.original_tokenizers
    ) as (pipe, tokens):
        # The pipeline expands a multi-vector token itself: prompts carry the bare token.
        prompts = [p.format(tokens[0]) for p in vc.prompts]
        rows = sampling.sample(
            pipe,
            prompts,
            vc.images_per_prompt,
            vc.steps,
            vc.guidance,
            vc.seed,
            components.resolution,
        )
    picture = sampling.grid(rows, prompts)
    atomic_write(folder / f"step_{step:06d}.png", lambda tmp: picture.save(tmp, format="PNG"))
    tracking.log_images(accelerator, "validation", picture, step)
    return judge(rows) if judge else None


def validation_judge(
    cfg: DictConfig, keep: str
) -> Callable[[list[list[Image.Image]]], float] | None:
    """The run's validation score where one exists: with ``validation.oracle=true``, the share of
    the validation samples in which the toy world's oracle reads the dataset's whole concept."""
    vc = cfg.validation
    if keep == "validated" and not (vc.every and vc.oracle):
        raise ValueError(
            "train.early_stop.keep=validated keeps the word at its best validation score: set "
            "validation.every=N and validation.oracle=true (a toy concept's run)"
        )
    if not vc.oracle:
        return None
    concept = CONCEPTS.get(cfg.dataset.get("concept") or "")
    if concept is None:
        raise ValueError(
            "validation.oracle=true reads a toy concept's attributes: set dataset.concept to one "
            "of `python -m tirun.toybench --list`"
        )
    if not vc.every:
        return None  # no grid is drawn: every ToyBench job starts without loading the oracle
    oracle = oracle_metrics.load()

    def judge(rows: list[list[Image.Image]]) -> float:
        return oracle_metrics.match_rate(
            oracle, [i for row in rows for i in row], concept.attributes
        )

    return judge

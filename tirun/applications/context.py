"""What every application needs: the model, the saved words loaded into a pipeline the way
users load them, the toy concept behind the run, the scorers, and where pictures go."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from tirun import loading, sampling
from tirun.files import atomic_write
from tirun.metrics import oracle as oracle_metrics
from tirun.metrics.clip import ClipScorer, without_words
from tirun.metrics.clip import load_model as load_clip
from tirun.metrics.dino import DinoScorer
from tirun.metrics.dino import load_model as load_dino
from tirun.models import Components
from tirun.outputs import word_file
from tirun.sampling import Sampling
from tirun.toyworld.concepts import CONCEPTS, Concept

DEFAULT_CLIP = "openai/clip-vit-base-patch32"  # the paper's evaluation model
log = logging.getLogger(__name__)


def toy_concept(cfg: DictConfig) -> Concept | None:
    """The toy concept the run's dataset renders (`dataset.concept` with no `dataset.path`), or
    None for a folder of real images."""
    name = OmegaConf.select(cfg, "dataset.concept")
    if name is None or OmegaConf.select(cfg, "dataset.path"):
        return None
    return CONCEPTS[name]


class Context:
    """One application run's surroundings.

    Args:
        cfg: the run's composed config.
        run_dir: the run folder (samples go to `samples/<name>/`).
        metrics: the training metrics (their `files` name the word just saved), or `{}`.
        objects: `train`'s objects (`components`, `word`), or `{}` when applying saved words.
        name: the application's name.
        score: `application.score`: `oracle` (`auto`, a folder or null), `clip`, `dino`.
    """

    def __init__(
        self, cfg: DictConfig, run_dir: Path, metrics: dict, objects: dict, name: str, score: dict
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.name = name
        self.score = score
        self.word = objects.get("word")
        self._components = objects.get("components")
        self.sources = self._sources(metrics)
        self.concept = toy_concept(cfg)
        self.toy = self.concept is not None  # score with the oracle under `oracle: auto`
        self.folder = self.run_dir / "samples" / name

    def _sources(self, metrics: dict) -> list:
        if self.cfg.embeddings:
            return list(self.cfg.embeddings)
        return [word_file(metrics, str(self.run_dir))]

    @cached_property
    def components(self) -> Components:
        if self._components is None:
            self._components = instantiate(self.cfg.model)
            self._components.freeze()
        return self._components

    @property
    def initializer(self) -> str:
        """The word the learned one started from: the baseline every application compares with."""
        return self.cfg.word.initializer

    @contextmanager
    def pipeline(
        self,
        scheduler: str,
        sources: Sequence | None = None,
        tokens: Sequence[str | None] | None = None,
    ) -> Iterator[tuple]:
        """A pipeline over the model with the *saved* words loaded by the users' loader
        (`loading.pipeline_with_words`); yields (pipe, tokens) and prompts carry the bare
        tokens."""
        tokenizers = self.word.original_tokenizers if self.word is not None else None
        with loading.pipeline_with_words(
            self.components, list(sources or self.sources), scheduler, tokens, tokenizers
        ) as (pipe, names):
            yield pipe, names

    def sample(self, pipe, prompts: Sequence[str], settings: Sampling) -> list[list[Image.Image]]:
        """Rows of samples, one per prompt, on the fixed seeds of ``settings``."""
        loading.check_prompts_fit(pipe, prompts, f"application={self.name}")
        return sampling.sample(
            pipe,
            list(prompts),
            settings.samples,
            settings.steps,
            settings.guidance,
            settings.seed,
            self.components.resolution,
            settings.batch_size,
        )

    def save_grid(
        self, rows: list[list[Image.Image]], label: str, titles: Sequence[str] | None = None
    ) -> Path:
        """`samples/<name>/<label>.png`, each row headed by its title (its prompt)."""
        picture = sampling.grid(rows, titles)
        return self._save(picture, label)

    def save_comparison(
        self,
        rows: list[list[Image.Image]],
        baseline: list[list[Image.Image]],
        titles: Sequence[str],
        baseline_titles: Sequence[str] | None = None,
    ) -> Path:
        """`word.png`, `baseline.png` and `comparison.png`: the learned word's rows beside the
        baseline's on the same seeds, in one figure."""
        word = sampling.grid(rows, titles)
        base = sampling.grid(baseline, baseline_titles or titles)
        self._save(word, "word")
        self._save(base, "baseline")
        both = sampling.side_by_side([("learned word", word), ("baseline", base)])
        return self._save(both, "comparison")

    def _save(self, picture: Image.Image, label: str) -> Path:
        return atomic_write(
            self.folder / f"{label}.png", lambda tmp: picture.save(tmp, format="PNG")
        )

    def load_scorers(self) -> None:
        """Load every configured scorer now, so missing weights fail before minutes of sampling."""
        _ = self.oracle, self.clip, self.dino

    @cached_property
    def oracle(self):
        """The toy world's attribute classifier, when the run is on a toy concept (or asked)."""
        where = self.score.get("oracle")
        if where is None or (where == "auto" and not self.toy):
            return None
        return oracle_metrics.load(None if where == "auto" else where)

    @cached_property
    def clip(self) -> ClipScorer | None:
        """CLIP for the paper's scores; under `auto`, ViT-B/32 on real images when it is local."""
        where = self.score.get("clip")
        if where is None or (where == "auto" and self.toy):
            return None
        if where != "auto":
            return ClipScorer(*load_clip(where))
        try:
            return ClipScorer(*load_clip(DEFAULT_CLIP))
        except ValueError as error:
            log.warning("%s: CLIP scores skipped", str(error).splitlines()[0])
            return None

    @cached_property
    def dino(self) -> DinoScorer | None:
        return DinoScorer(load_dino(self.score["dino"])) if self.score.get("dino") else None

    @cached_property
    def training_images(self) -> list[Image.Image]:
        return instantiate(self.cfg.dataset.images)

    def scores(
        self,
        rows: list[list[Image.Image]],
        labels: Sequence[str],
        expected: Sequence[dict[str, str]] | None,
        texts: Sequence[str],
    ) -> dict:
        """Every score that applies: oracle match rates against ``expected`` (toy world), the
        paper's CLIP reconstruction/editability and DINO similarity (when configured).

        Args:
            rows: samples, one row per prompt.
            labels: one name per row (the prompt template): the per-prompt keys.
            expected: the attributes each row's samples should show (None: no oracle score).
            texts: each row's prompt with the learned words left out, for CLIP's editability.
        """
        result: dict = {}
        if self.oracle is not None and expected is not None:
            rates = [
                oracle_metrics.match_rate(self.oracle, row, e)
                for row, e in zip(rows, expected, strict=True)
            ]
            result["concept_match"] = statistics.fmean(rates)
            result["per_prompt"] = dict(zip(labels, rates, strict=True))
            result["attribute_match"] = oracle_metrics.attribute_rates(self.oracle, rows, expected)
        everything = [image for row in rows for image in row]
        if self.clip is not None:
            result["clip"] = {
                "reconstruction": self.clip.image_similarity(everything, self.training_images),
                "editability": statistics.fmean(
                    self.clip.text_similarity(t, row) for t, row in zip(texts, rows, strict=True)
                ),
            }
        if self.dino is not None:
            result["dino"] = {
                "reconstruction": self.dino.image_similarity(everything, self.training_images)
            }
        return result


def with_baseline(word: dict, baseline: dict) -> dict:
    """One metrics dict: the word's scores, and the baseline's under `baseline_*` names."""
    return {**word, **{f"baseline_{k}": v for k, v in baseline.items()}}


def check_templates(templates: Sequence[str], key: str, holes: int = 1) -> None:
    """Each template needs exactly ``holes`` "{}" (or "{0}", "{1}"…) for the words."""
    if not templates:
        raise ValueError(f"application.{key} is empty: give at least one prompt")
    for template in templates:
        try:
            template.format(*["w"] * holes)
            ok = all(f"{{{i}}}" in template for i in range(holes)) or template.count("{}") == holes
        except (IndexError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                f"application.{key}: {template!r} needs {holes} '{{}}' for the word(s)"
            )


def with_adds(
    items: Sequence[str | dict], key: str, field: str
) -> tuple[list[str], list[dict[str, str]]]:
    """Split `[text, or {<field>: text, adds: {attribute: value}}, …]` into texts and the
    attributes each adds (toy-world ground truth; a plain string adds none)."""
    texts, adds = [], []
    for item in items:
        if isinstance(item, str):
            item = {field: item}
        if not isinstance(item, dict) or field not in item or set(item) - {field, "adds"}:
            raise ValueError(
                f"application.{key}: {item!r} must be a string or {{{field}: ..., adds: {{...}}}}"
            )
        texts.append(item[field])
        adds.append(dict(item.get("adds") or {}))
    return texts, adds


def word_and_baseline(
    ctx: Context, templates: Sequence[str], extras: Sequence[dict[str, str]], settings: Sampling
) -> dict:
    """Sample every template with the learned word and with its initializer, on the same seeds,
    and score both; the grids go to `word.png`, `baseline.png` and `comparison.png`.

    Args:
        ctx: the application's context.
        templates: prompts with one "{}" for the word.
        extras: per template, the attributes a right sample shows besides the concept's.
        settings: sampling settings.
    """
    expected = [{**ctx.concept.attributes, **e} for e in extras] if ctx.concept else None
    texts = [without_words(t) for t in templates]
    with ctx.pipeline(settings.scheduler, ctx.sources[:1]) as (pipe, tokens):
        prompts = [t.format(tokens[0]) for t in templates]
        baseline_prompts = [t.format(ctx.initializer) for t in templates]
        rows = ctx.sample(pipe, prompts, settings)
        base = ctx.sample(pipe, baseline_prompts, settings)
    ctx.save_comparison(rows, base, prompts, baseline_prompts)
    word = ctx.scores(rows, templates, expected, texts)
    baseline = ctx.scores(base, templates, expected, texts)
    return {"samples": sum(len(row) for row in rows), **with_baseline(word, baseline)}

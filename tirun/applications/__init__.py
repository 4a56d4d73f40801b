"""Applications of a learned word, one module each: variation, synthesis, style, composition,
bias, bld (Blended Latent Diffusion editing).

`tirun/conf/application/<name>.yaml` names its function with `_target_`; `run` instantiates it,
calls it with a `Context`, and files its metrics under `applications.<name>` in `metrics.json`.
`check` runs first, before any training: it refuses what the application cannot run with. A
module whose function takes a fixed number of words says so in `WORDS`. The words
`application.learn` names are learned by the run itself (`tirun.__main__.learn_words`), so this
package composes no config and trains nothing.
"""

from __future__ import annotations

import inspect
import json
import logging
import time
from pathlib import Path

from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from tirun.applications.context import Context
from tirun.files import atomic_write, write_json

log = logging.getLogger(__name__)

# The application whose oracle scores stand for the run's, by the kind of toy concept learned:
# `oracle.*` in `metrics.json` is one name a sweep can optimise (`hparams_search/optuna`) whichever
# application scored it.
ORACLE_SUMMARY = {"object": "variation", "style": "style"}


def check(cfg: DictConfig) -> None:
    """Before any training: refuse an application whose keys its function does not take, or
    that would get another number of words than its module's `WORDS`."""
    name, _, learn, params = _parts(cfg)
    _check_keys(name, params)
    takes = getattr(inspect.getmodule(get_method(params["_target_"])), "WORDS", None)
    gets = len(cfg.embeddings) or len(learn) or 1
    if takes is not None and gets != takes:
        source = (
            f"embeddings=[{','.join(cfg.embeddings)}]" if cfg.embeddings
            else f"application.learn=[{','.join(learn)}]" if learn
            else "the word this run trains"
        )  # fmt: skip
        raise ValueError(
            f"application={name} takes {takes} learned words and this run would get {gets} "
            f"({source}): give embeddings=[word_a,word_b], or presets that learn them first, "
            "e.g. application.learn=[object,style]"
        )


def run(cfg: DictConfig, run_dir: Path, metrics: dict, objects: dict) -> dict:
    """Run `cfg.application` on the word just trained (or on `cfg.embeddings`); returns metrics.

    Args:
        cfg: the composed config; `cfg.application` has `name`, `_target_`, `score`, `sampling`
            and the application's own keys.
        run_dir: the run folder: samples go to `samples/<name>/`, metrics to `metrics.json`.
        metrics: the training metrics (`{}` when applying saved words: the folder's
            `metrics.json`, if any, is added to).
        objects: `train`'s objects (or `{}`).
    """
    accelerator = objects.get("accelerator")
    if accelerator is not None and not accelerator.is_main_process:
        return metrics
    run_dir = Path(run_dir)
    started = time.perf_counter()
    name, score, _, params = _parts(cfg)
    _check_keys(name, params)

    # 1. The context: model, saved words, concept, scorers. Re-scoring needs the config.
    if not (run_dir / "config.yaml").is_file():
        text = OmegaConf.to_yaml(cfg, resolve=True)
        atomic_write(run_dir / "config.yaml", lambda tmp: tmp.write_text(text))
    ctx = Context(cfg, run_dir, metrics, objects, name, score)
    ctx.load_scorers()

    # 2. The application itself.
    apply = instantiate(params, _partial_=True, _convert_="all")
    result = apply(ctx)
    result["wall_time_s"] = time.perf_counter() - started
    log.info("application %s: %s", name, {k: v for k, v in result.items() if isinstance(v, float)})

    # 3. Metrics, rewritten atomically; applying saved words adds to what the folder holds.
    if not metrics and (run_dir / "metrics.json").is_file():
        metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics = {**metrics, "applications": {**metrics.get("applications", {}), name: result}}
    if (
        ctx.concept is not None
        and ORACLE_SUMMARY.get(ctx.concept.kind) == name
        and "concept_match" in result
    ):
        metrics["oracle"] = {
            **metrics.get("oracle", {}),
            "concept_match": result["concept_match"],
            "initializer_concept_match": result["baseline_concept_match"],
        }
    write_json(run_dir / "metrics.json", metrics)
    return metrics


def _parts(cfg: DictConfig) -> tuple[str, dict, list[str], dict]:
    """The application's name, `score`, `learn` (presets, or []) and its function's arguments."""
    params = OmegaConf.to_container(cfg.application, resolve=True)
    return params.pop("name"), params.pop("score"), params.pop("learn", None) or [], params


def _check_keys(name: str, params: dict) -> None:
    """Every key of the application's config must be an argument of its function."""
    if "_target_" not in params:
        raise ValueError(
            f"application={name} has no _target_: name its function, e.g. tirun.applications.{name}.run"
        )
    function = get_method(params["_target_"])
    accepted = set(inspect.signature(function).parameters) - {"ctx"}
    given = {k for k in params if not k.startswith("_")}
    unknown, missing = given - accepted, accepted - given
    if unknown:
        raise ValueError(
            f"application.{sorted(unknown)[0]} is not an option of {name}; its options: {sorted(accepted)}"
        )
    if missing:
        raise ValueError(f"application={name} needs application.{sorted(missing)[0]}")

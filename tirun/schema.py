"""Every config key with its type, checked before anything runs.

Each config group's kind of option is a dataclass here, read as an OmegaConf structured config:
its type annotations are what Hydra's structured configs check, so a value of the wrong type
(`train.seed=abc`, `train.seed=` empty, `validation.every=often`) is one line naming the key and
the type it takes instead of a library's traceback halfway through a run. A node with a
`_target_` takes the schema of its function (`BY_TARGET`); a function this module does not know
(a user's own) is left to its own signature. Enumerated keys and number ranges are
`tirun.choices`'s. Light on purpose: no torch, so the check costs nothing before a run.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# --- the top level (tirun/conf/config.yaml) ------------------------------------------------


@dataclass
class WordConfig:
    token: str
    initializer: str
    num_vectors: int
    progressive_every: int
    image_tokens: bool
    image_token_p: float
    init_l2: float
    init: str
    init_file: str | None
    norm: str | None
    per_layer: bool


@dataclass
class EarlyStopConfig:
    every: int
    window: int
    threshold: float
    keep: str
    degrade_ratio: float


@dataclass
class TrainConfig:
    loop: str
    max_steps: int
    batch_size: int
    grad_accum: int
    seed: int
    deterministic: bool
    mixed_precision: str
    cpu: bool
    attention: str
    gradient_checkpointing: bool
    min_snr_gamma: float | None
    noise_offset: float
    checkpoint_every: int
    snapshot_every: int
    keep_checkpoints: int
    log_every: int
    stall_steps: int
    norm_warn_ratio: float
    detect_anomaly: bool
    early_stop: EarlyStopConfig


@dataclass
class ValidationConfig:
    every: int
    prompts: list[str]
    images_per_prompt: int
    steps: int
    guidance: float
    scheduler: str
    seed: int
    oracle: bool


@dataclass
class Config:
    """The keys of `config.yaml` itself; each group's node has its own schema (`GROUPS`)."""

    word: WordConfig
    train: TrainConfig
    validation: ValidationConfig
    export: list[str]
    embeddings: list[str]
    resume: str | None
    optimized_metric: str | None


# --- model, dataset, template, optimizer, tracker --------------------------------------------


@dataclass
class PretrainedModelConfig:
    _target_: str
    path: str
    resolution: int
    revision: str | None
    variant: str | None


@dataclass
class RandomModelConfig:
    _target_: str
    arch_dir: str
    seed: int
    resolution: int
    prediction_type: str


@dataclass
class FolderImagesConfig:
    _target_: str
    path: str | None


@dataclass
class ToyImagesConfig(FolderImagesConfig):
    concept: str
    count: int
    seed: int


@dataclass
class FolderDatasetConfig:
    path: str | None
    images: FolderImagesConfig
    masked: bool
    masks: FolderImagesConfig
    resolution: int
    crop: str
    num_crops: int
    flip_p: float
    repeats: int


@dataclass
class ToyDatasetConfig(FolderDatasetConfig):
    concept: str
    count: int
    seed: int


@dataclass
class BuiltinTemplateConfig:
    _target_: str
    kind: str


@dataclass
class FileTemplateConfig:
    _target_: str
    path: str


@dataclass
class CaptionsTemplateConfig:
    _target_: str
    path: str | None


@dataclass
class ToyTemplateConfig:
    _target_: str
    name: str


@dataclass
class ToyCaptionsTemplateConfig(ToyTemplateConfig):
    count: int
    seed: int


@dataclass
class AdamWConfig:
    _target_: str
    _partial_: bool
    betas: list[float]
    eps: float
    weight_decay: float


@dataclass
class OptimizerConfig:
    optim: AdamWConfig
    lr: float
    scale_lr: bool
    scheduler: str
    warmup_steps: int
    max_grad_norm: float | None


@dataclass
class NoTrackerConfig:
    name: str


@dataclass
class WandbConfig(NoTrackerConfig):
    project: str
    group: str | None
    run_name: str | None
    tags: list[str]
    dir: str | None


# --- applications (tirun/conf/application/) --------------------------------------------------


@dataclass
class SamplingConfig:
    """`tirun.sampling.Sampling`'s keys, the application's sampler (one test keeps them equal)."""

    samples: int
    steps: int
    guidance: float
    scheduler: str
    seed: int
    batch_size: int


@dataclass
class ScoreConfig:
    oracle: str | None
    clip: str | None
    dino: str | None


@dataclass
class ApplicationConfig:
    name: str
    _target_: str
    _partial_: bool
    sampling: SamplingConfig
    score: ScoreConfig


@dataclass
class VariationConfig(ApplicationConfig):
    prompts: list[str]


@dataclass
class SynthesisConfig(ApplicationConfig):
    prompts: list[Any]  # a sentence or {prompt, adds} (no union type): `with_adds` checks each


@dataclass
class StyleConfig(ApplicationConfig):
    template: str
    subjects: list[Any]  # a subject or {subject, adds} (no union type): `with_adds` checks each


@dataclass
class CompositionConfig(ApplicationConfig):
    prompts: list[str]
    tokens: list[str] | None
    initializers: list[str]
    concepts: list[str] | None
    learn: list[str] | None


@dataclass
class BiasConfig(ApplicationConfig):
    prompts: list[str]
    attribute: str
    plain: str | None
    classes: list[str] | None
    class_prompt: str


@dataclass
class DecoderFixConfig:
    steps: int
    lr: float
    background_weight: float


@dataclass
class BldConfig(ApplicationConfig):
    prompt: str
    image: str | None
    mask: str | None
    scenes: int
    objects: int
    region: str
    strength: float
    blend_start: float
    dilation: list[int]
    pixel_blend: bool
    crop_padding: int | None
    decoder_fix: DecoderFixConfig


@dataclass
class MixingConfig(ApplicationConfig):
    prompt: str
    shape_layers: Any  # `coarsest` or a list of layer indices (no union type): mixing checks it
    concepts: list[str] | None
    ti_embeddings: list[str] | None
    ti_prompt: str


@dataclass
class ToyBenchConfig(ApplicationConfig):
    samples_per_set: int
    every: int
    initializer: bool


BY_TARGET: dict[str, type] = {
    "tirun.models.load_pretrained": PretrainedModelConfig,
    "tirun.models.build_random": RandomModelConfig,
    "tirun.data.training_images": FolderImagesConfig,
    "tirun.data.training_masks": FolderImagesConfig,
    "tirun.toyworld.concepts.training_images": ToyImagesConfig,
    "tirun.toyworld.concepts.training_masks": ToyImagesConfig,
    "tirun.templates.builtin": BuiltinTemplateConfig,
    "tirun.templates.from_file": FileTemplateConfig,
    "tirun.templates.captions": CaptionsTemplateConfig,
    "tirun.toyworld.concepts.concept_templates": ToyTemplateConfig,
    "tirun.toyworld.concepts.concept_captions": ToyCaptionsTemplateConfig,
    "torch.optim.AdamW": AdamWConfig,
    "tirun.applications.variation.run": VariationConfig,
    "tirun.applications.synthesis.run": SynthesisConfig,
    "tirun.applications.style.run": StyleConfig,
    "tirun.applications.composition.run": CompositionConfig,
    "tirun.applications.bias.run": BiasConfig,
    "tirun.applications.bld.run": BldConfig,
    "tirun.applications.mixing.run": MixingConfig,
    "tirun.applications.toybench.run": ToyBenchConfig,
}


def _dataset_schema(node: DictConfig) -> type:
    # `in node` is False for a key set to `???` (dataset=toy's concept): ask the node itself
    return ToyDatasetConfig if "concept" in list(node) else FolderDatasetConfig


def _tracker_schema(node: DictConfig) -> type:
    return WandbConfig if node.get("name") == "wandb" else NoTrackerConfig


# Each group's schema: a dataclass, or a function of the node; None: by its `_target_`.
GROUPS: dict[str, Any] = {
    "model": None,
    "dataset": _dataset_schema,
    "template": None,
    "optimizer": OptimizerConfig,
    "tracker": _tracker_schema,
    "application": None,
}


# --- the check ---------------------------------------------------------------------------------

_ABSENT = object()


def _value(cfg: DictConfig, key: str):
    """The key's value resolved, or `_ABSENT` (no such key, `???`, or an interpolation that
    cannot resolve yet: those are reported where they are used)."""
    try:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
        return value
    except Exception:
        return _ABSENT


def describe(hint) -> str:
    """A type in words: `an integer`, `a list of strings`, `a number or null`."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return f"{describe(next(a for a in args if a is not type(None)))} or null"
    if typing.get_origin(hint) is list:
        return f"a list of {_plural(args[0])}"
    if typing.get_origin(hint) is dict:
        return f"a mapping of {_plural(args[0])} to {_plural(args[1])}"
    if dataclasses.is_dataclass(hint):
        return "{" + ", ".join(f.name for f in dataclasses.fields(hint)) + "}"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return words.get(hint, str(hint))


def _plural(hint) -> str:
    words = {int: "integers", float: "numbers", bool: "booleans", str: "strings", Any: "entries"}
    return words.get(hint, describe(hint) + " entries")


def _shown(value) -> str:
    if value is None:
        return "null"
    if value == "":
        return "'' (empty)"
    return str(value)


def _schema_of(node: DictConfig, declared: type | None) -> type | None:
    """The schema of a node: its `_target_`'s when it has one (None for a function this module
    does not know), else ``declared``."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if isinstance(target, str):
        return BY_TARGET.get(target)
    return declared


def _child(node: DictConfig, name: str):
    """The node under ``name`` (None when absent), `???` included, without resolving it."""
    return node._get_node(name) if name in list(node) else None


def schemas(cfg: DictConfig) -> dict[str, type]:
    """Each node of ``cfg`` that has a schema, by its dotted key (`""` for the top), with it."""
    found: dict[str, type] = {}

    def visit(prefix: str, schema: type) -> None:
        found[prefix] = schema
        node = OmegaConf.select(cfg, prefix) if prefix else cfg
        hints = typing.get_type_hints(schema)
        for field in dataclasses.fields(schema):
            child = _child(node, field.name)
            if dataclasses.is_dataclass(hints[field.name]) and isinstance(child, DictConfig):
                inner = _schema_of(child, hints[field.name])
                if inner is not None:
                    visit(f"{prefix}.{field.name}" if prefix else field.name, inner)

    visit("", Config)
    for group, schema in GROUPS.items():
        node = _child(cfg, group)
        if not isinstance(node, DictConfig):
            continue
        declared = schema if schema is None or isinstance(schema, type) else schema(node)
        chosen = _schema_of(node, declared)
        if chosen is not None:
            visit(group, chosen)
    return found


def typed_keys(cfg: DictConfig) -> dict[str, Any]:
    """Every key of ``cfg`` that holds a value (not a node of its own), with its type."""
    keys = {}
    nodes = schemas(cfg)
    for prefix, schema in nodes.items():
        hints = typing.get_type_hints(schema)
        for field in dataclasses.fields(schema):
            key = f"{prefix}.{field.name}" if prefix else field.name
            if key not in nodes:
                keys[key] = hints[field.name]
    return keys


def _fits(typed: DictConfig, name: str, value) -> bool:
    """Whether ``value`` converts to the type of ``typed``'s field ``name`` (OmegaConf's rules:
    `"5"` is an integer, `"yes"` true, `"abc"` neither)."""
    try:
        typed[name] = value
        return True
    except OmegaConfBaseException:
        return False


def _node_problem(cfg: DictConfig, prefix: str, schema: type, nodes: dict[str, type]) -> str | None:
    node = OmegaConf.select(cfg, prefix) if prefix else cfg
    typed = OmegaConf.structured(schema)
    hints = typing.get_type_hints(schema)
    names = [field.name for field in dataclasses.fields(schema)]
    for name in names:
        key = f"{prefix}.{name}" if prefix else name
        if key in nodes:  # a node with a schema of its own: checked on its own
            continue
        value = _value(cfg, key)
        if value is _ABSENT:
            continue
        if not _fits(typed, name, value):
            return f"{key}={_shown(value)} is not {describe(hints[name])}"
    if "_target_" not in names:  # a function's node: keys it does not take are its own error
        for extra in (k for k in node if k not in names and (prefix or k not in GROUPS)):
            if not prefix and extra == "hydra":
                continue
            key = f"{prefix}.{extra}" if prefix else extra
            return f"{key} is not a config key; `python -m tirun --cfg job` lists them"
    return None


def problem(cfg: DictConfig) -> str | None:
    """The first key of ``cfg`` whose value is not of its type (or that no schema has), said in
    one line; None if every value fits."""
    nodes = schemas(cfg)
    for prefix, schema in nodes.items():
        message = _node_problem(cfg, prefix, schema, nodes)
        if message:
            return message
    return None


def check(cfg: DictConfig) -> None:
    """Raise a one-line ValueError for the first key of ``cfg`` not of its type."""
    message = problem(cfg)
    if message:
        raise ValueError(message)

"""Ready concepts for inversion, each with the ground truth that defines it.

A concept is a few renders of a combination the toy model never saw (or saw but never heard
named, or saw with a skewed colour). Its ``attributes`` are what the oracle must read back from
what the learned word generates; its ``prompts`` pair a sentence with the attributes a sample of
it should show, so reconstruction and editability are scored the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from tirun.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES
from tirun.toyworld.render import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    Attributes,
    in_style,
    object_phrase,
    render,
    render_scene,
)
from tirun.toyworld.world import (
    BIAS_WORD,
    HELD_OUT_OBJECT,
    HELD_OUT_STYLE,
    UNNAMED_SHAPE,
    is_held_out,
)

# "{}" is where the learned word goes; the dict is what a right sample shows besides the concept.
EvalPrompt = tuple[str, dict[str, str]]


@dataclass(frozen=True)
class Concept:
    """A concept to invert: its ground truth, its training images and its evaluation prompts.

    Args:
        name: key in ``CONCEPTS``.
        kind: "object" or "style" (which template set TI should train with).
        attributes: the attributes that define the concept (what every sample must show).
        initializer: a one-token word of the toy tokenizer to start the new word from.
        prompts: evaluation sentences and the attributes they add.
        count: how many images the concept's dataset has by default.
        balanced: for a bias concept, the attribute whose spread is the point.
    """

    name: str
    kind: str
    attributes: dict[str, str]
    initializer: str
    prompts: tuple[EvalPrompt, ...]
    count: int = 5
    balanced: str | None = None
    salt: int = field(default=0, repr=False)

    def expected(self, prompt: EvalPrompt) -> dict[str, str]:
        """All attributes a sample of ``prompt`` should show: the concept's and the prompt's."""
        return {**self.attributes, **prompt[1]}

    def image_attributes(self, n: int | None = None, seed: int = 0) -> list[Attributes]:
        """The attributes of the concept's ``n`` images (jitter differs per image)."""
        rng = np.random.default_rng((seed, self.salt))
        return [_DRAW[self.name](i, rng) for i in range(n or self.count)]

    def images(self, n: int | None = None, seed: int = 0) -> list[Image.Image]:
        """``n`` renders of the concept (default ``count``), deterministic in ``seed``."""
        rng = np.random.default_rng((seed, self.salt, 1))
        return [render(a, int(rng.integers(2**31))) for a in self.image_attributes(n, seed)]


def _seen(rng: np.random.Generator, **fixed: str) -> Attributes:
    """Random attributes around ``fixed`` that avoid the held-out combinations and the unnamed shape."""
    while True:
        attrs = Attributes(
            shape=fixed.get("shape") or str(rng.choice([s for s in SHAPES if s != UNNAMED_SHAPE])),
            colour=fixed.get("colour") or str(rng.choice(list(COLOURS))),
            background=fixed.get("background") or str(rng.choice(BACKGROUNDS)),
            style=fixed.get("style") or "filled",
        )
        if not is_held_out(attrs) or fixed.keys() >= {"shape", "colour"}:
            return attrs


_DRAW = {
    # object: varying background (cycled, so 4+ images show every one), filled
    "held_out_object": lambda i, rng: Attributes(
        **HELD_OUT_OBJECT, background=BACKGROUNDS[i % len(BACKGROUNDS)], style="filled"
    ),
    # style: varying shapes and backgrounds in the held-out technique + palette
    "held_out_style": lambda i, rng: Attributes(
        shape=SHAPES[i % (len(SHAPES) - 1)],
        background=BACKGROUNDS[(i + 1) % len(BACKGROUNDS)],
        **HELD_OUT_STYLE,
    ),
    "unnamed_shape": lambda i, rng: Attributes(
        shape=UNNAMED_SHAPE,
        colour=list(COLOURS)[i % len(COLOURS)],
        background=BACKGROUNDS[i % len(BACKGROUNDS)],
        style="filled",
    ),
    # one per colour: the balanced set an inclusive "toy" is learned from
    "balanced_toy": lambda i, rng: _seen(rng, colour=list(COLOURS)[i % len(COLOURS)]),
}

_OBJECT_PROMPTS: tuple[EvalPrompt, ...] = (
    ("a photo of a {}", {}),
    ("a photo of a {} on grass", {"background": "grass"}),
    ("a photo of a {} on sand", {"background": "sand"}),
    ("a photo of a {} on white", {"background": "white"}),
    ("a painting of a {} in the style of shadowed", {"style": "shadowed"}),
    ("a painting of a {} in the style of outlined", {"style": "outlined"}),
)

CONCEPTS: dict[str, Concept] = {
    "held_out_object": Concept(
        name="held_out_object",
        kind="object",
        attributes=dict(HELD_OUT_OBJECT),
        initializer="star",
        prompts=_OBJECT_PROMPTS,
        salt=1,
    ),
    "held_out_style": Concept(
        name="held_out_style",
        kind="style",
        attributes=dict(HELD_OUT_STYLE),
        initializer="mosaic",
        prompts=(
            ("a painting in the style of {}", {}),
            ("a painting of a circle in the style of {}", {"shape": "circle"}),
            ("a painting of a square in the style of {}", {"shape": "square"}),
            ("a painting of a triangle in the style of {}", {"shape": "triangle"}),
            ("a painting of a cross in the style of {}", {"shape": "cross"}),
        ),
        salt=2,
    ),
    "unnamed_shape": Concept(
        name="unnamed_shape",
        kind="object",
        attributes={"shape": UNNAMED_SHAPE},
        initializer="square",
        prompts=(
            ("a photo of a {}", {}),
            ("a photo of a red {}", {"colour": "red"}),
            ("a photo of a blue {} on sand", {"colour": "blue", "background": "sand"}),
            ("a painting of a {} in the style of mosaic", {"style": "mosaic"}),
        ),
        salt=3,
    ),
    "balanced_toy": Concept(
        name="balanced_toy",
        kind="object",
        attributes={},
        initializer=BIAS_WORD,
        prompts=(("a photo of a {}", {}), ("a photo of a {} on grass", {"background": "grass"})),
        count=len(COLOURS),
        balanced="colour",
        salt=4,
    ),
}


def _concept(name: str, key: str) -> Concept:
    if name not in CONCEPTS:
        raise ValueError(f"{key}={name!r} is not a toy concept; use one of {sorted(CONCEPTS)}")
    return CONCEPTS[name]


def concept_images(name: str, count: int = 5, seed: int = 0) -> list[Image.Image]:
    """The images of concept ``name``: the Hydra ``_target_`` of the toy dataset configs.

    Args:
        name: a key of ``CONCEPTS``.
        count: how many renders.
        seed: which jitter.
    """
    return _concept(name, "dataset.images.name").images(count, seed)


def concept_captions(name: str, count: int = 5, seed: int = 0) -> list[list[str]]:
    """Each image of concept ``name`` with its own sentences: the concept's template set naming
    what the image shows besides the concept ("a painting of a circle on grass in the style of
    {}"), so the word learns the concept alone. The ``_target_`` of ``template=toy_captions``.
    """
    concept = _concept(name, "template.name")
    besides = {"colour", "shape", "background"} - concept.attributes.keys()
    sentences = []
    for attrs in concept.image_attributes(count, seed):
        rest = besides - {"shape"} if attrs.shape == UNNAMED_SHAPE else besides
        if concept.kind == "style":
            phrase = object_phrase(attrs, rest)
            sentences.append([in_style(t, phrase, "{}") for t in STYLE_TEMPLATES])
            continue
        phrase = object_phrase(attrs, rest - {"shape"}, noun="{}")
        plain = [t.replace("{}", phrase) for t in OBJECT_TEMPLATES]
        if "style" not in concept.attributes:
            plain += [in_style(t, phrase, attrs.style) for t in STYLE_TEMPLATES]
        sentences.append(plain)
    return sentences


@dataclass(frozen=True)
class EditScene:
    """A source image for Blended Latent Diffusion and the region an edit may repaint."""

    image: Image.Image
    mask: np.ndarray  # H×W bool, True where the edited object is
    objects: tuple[Attributes, ...]
    edit_index: int


def editing_scene(seed: int = 0, objects: int = 2) -> EditScene:
    """A random scene of ``objects`` seen objects on one background; the mask covers one of them.

    Args:
        seed: draws the objects, the background, which one is masked, and the jitter.
        objects: how many objects (2 or 3 fit side by side at 32×32).
    """
    rng = np.random.default_rng((seed, 99))
    background = str(rng.choice(BACKGROUNDS))
    drawn = tuple(_seen(rng, background=background) for _ in range(objects))
    index = int(rng.integers(objects))
    image, mask = render_scene(list(drawn), index, seed)
    return EditScene(image=image, mask=mask, objects=drawn, edit_index=index)

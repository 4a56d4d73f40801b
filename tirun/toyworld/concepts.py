"""The toy world's concepts for inversion, each with the ground truth that defines it: ToyBench's
registry and the toy datasets' source.

A concept is a few renders of a combination the toy model never saw (or saw but never heard
named, or saw with a skewed colour). Its ``attributes`` are what the oracle must read back from
what the learned word generates. Its prompts pair a sentence with the attributes a sample of it
adds: the neutral ones score reconstruction, the others editability. The benchmark concepts are
split once, here: settings, defaults and thresholds are chosen on ``dev`` only; ``test`` is
reported and never tuned on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from tirun import data
from tirun.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES
from tirun.toyworld.render import (
    BACKGROUNDS,
    COLOURS,
    SHAPES,
    Attributes,
    in_style,
    object_phrase,
    render_scene,
    render_with_mask,
    to_pil,
)
from tirun.toyworld.world import (
    BIAS_WORD,
    HELD_OUT,
    HELD_OUT_OBJECTS,
    HELD_OUT_STYLES,
    UNNAMED_SHAPE,
    is_held_out,
)

# "{}" is where the learned word goes; the dict is what a right sample shows besides the concept.
EvalPrompt = tuple[str, dict[str, str]]
SPLITS = ("dev", "test", "research", "bias")
NAMED_SHAPES = tuple(s for s in SHAPES if s != UNNAMED_SHAPE)
TECHNIQUES = ("outlined", "mosaic", "shadowed")  # the styles besides plain "filled"

# The fixed split: two held-out pairs and two triples of objects, one pair and one triple of
# styles for dev; the rest is test.
DEV = (
    "purple_star",
    "red_square",
    "green_outlined_star",
    "blue_mosaic_triangle",
    "purple_mosaic",
    "blue_shadowed_bricks",
)


@dataclass(frozen=True)
class Concept:
    """A concept to invert: its ground truth, split, training images and evaluation prompts.

    Args:
        name: key in ``CONCEPTS`` (and folder name of ``python -m tirun.toybench --export``).
        kind: "object" or "style" (which template set TI trains with).
        split: "dev", "test", "research" (the unnamed shape) or "bias".
        attributes: the attributes that define the concept (what every sample must show).
        initializer: its coarse class, a one-token word of the toy tokenizer.
        reconstruction: neutral sentences: the concept alone.
        editability: sentences that add a background or a style (objects) or a shape (styles).
        draw: the attributes of image ``i`` of the concept.
        count: how many images the concept's dataset has by default.
        balanced: for a bias concept, the attribute whose spread is the point.
        context: what every training image shares that the concept does not define (its one
            backdrop, say), as a user's photo set shares a table; edits that ask for another
            value of it measure the word's context leak. Empty: the images share nothing else.
    """

    name: str
    kind: str
    split: str
    attributes: dict[str, str]
    initializer: str
    reconstruction: tuple[EvalPrompt, ...]
    editability: tuple[EvalPrompt, ...]
    draw: Callable[[int, np.random.Generator], Attributes] = field(repr=False)
    count: int = 5
    balanced: str | None = None
    context: dict[str, str] = field(default_factory=dict)
    salt: int = field(default=0, repr=False)

    def image_attributes(self, n: int | None = None, seed: int = 0) -> list[Attributes]:
        """The attributes of the concept's ``n`` images (jitter differs per image)."""
        rng = np.random.default_rng((seed, self.salt))
        return [self.draw(i, rng) for i in range(n or self.count)]

    def images(self, n: int | None = None, seed: int = 0) -> list[Image.Image]:
        """``n`` renders of the concept (default ``count``), deterministic in ``seed``."""
        return [image for image, _ in self.images_with_masks(n, seed)]

    def images_with_masks(
        self, n: int | None = None, seed: int = 0
    ) -> list[tuple[Image.Image, Image.Image]]:
        """The concept's renders (`images`) with each object's mask (white = the object)."""
        rng = np.random.default_rng((seed, self.salt, 1))
        pairs = []
        for attrs in self.image_attributes(n, seed):
            image, mask = render_with_mask(attrs, int(rng.integers(2**31)))
            pairs.append(
                (to_pil(image), Image.fromarray((mask * 255).round().astype(np.uint8), "L"))
            )
        return pairs

    def line(self) -> str:
        """``name kind split attr=value,... initializer=word``: one line of ``--list``."""
        attrs = ",".join(f"{k}={v}" for k, v in self.attributes.items()) or "-"
        line = f"{self.name} {self.kind} {self.split} {attrs} initializer={self.initializer}"
        if self.context:
            line += " context=" + ",".join(f"{k}={v}" for k, v in self.context.items())
        return line


def _seen(rng: np.random.Generator, **fixed: str) -> Attributes:
    """Random attributes around ``fixed`` that avoid the held-out combinations and the unnamed shape."""
    while True:
        attrs = Attributes(
            shape=fixed.get("shape") or str(rng.choice(NAMED_SHAPES)),
            colour=fixed.get("colour") or str(rng.choice(list(COLOURS))),
            background=fixed.get("background") or str(rng.choice(BACKGROUNDS)),
            style=fixed.get("style") or "filled",
        )
        if not is_held_out(attrs) or fixed.keys() >= {"shape", "colour"}:
            return attrs


def _allowed(**attrs: str) -> bool:
    """True when no held-out combination is made of ``attrs`` alone (e.g. style and colour)."""
    return not any(
        combo.keys() <= attrs.keys() and all(attrs[k] == v for k, v in combo.items())
        for combo in HELD_OUT
    )


_OBJECT_RECONSTRUCTION: tuple[EvalPrompt, ...] = (
    ("a photo of a {}", {}),
    ("a rendering of a {}", {}),
    ("a good photo of a {}", {}),
)
_STYLE_RECONSTRUCTION: tuple[EvalPrompt, ...] = (
    ("a painting in the style of {}", {}),
    ("a rendering in the style of {}", {}),
    ("a good painting in the style of {}", {}),
)


def concept_name(held: dict[str, str]) -> str:
    """``colour_shape`` or ``colour_technique`` for a pair; a triple puts the technique second
    and its third attribute last (``green_outlined_star``, ``blue_shadowed_bricks``)."""
    order = ("colour", "style", "shape", "background")
    if len(held) == 2:
        order = ("colour", "shape", "style")
    return "_".join(held[k] for k in order if k in held)


def _object(held: dict[str, str], salt: int) -> Concept:
    shape, colour = held["shape"], held["colour"]
    technique = held.get("style")
    name = concept_name(held)
    # Edits that keep the concept a seen pairing of everything else: three backgrounds and, for a
    # plain (filled) object, the two techniques its colour is still drawn in.
    techniques = (
        [] if technique else [t for t in TECHNIQUES if _allowed(style=t, colour=colour)][:2]
    )
    return Concept(
        name=name,
        kind="object",
        split="dev" if name in DEV else "test",
        attributes=dict(held),
        initializer=shape,
        reconstruction=_OBJECT_RECONSTRUCTION,
        editability=(
            ("a photo of a {} on grass", {"background": "grass"}),
            ("a photo of a {} on sand", {"background": "sand"}),
            ("a photo of a {} on white", {"background": "white"}),
            *((f"a painting of a {{}} in the style of {t}", {"style": t}) for t in techniques),
        ),
        # varying background (cycled, so 4+ images show every one), in its technique
        draw=lambda i, rng: Attributes(
            shape=shape,
            colour=colour,
            background=BACKGROUNDS[i % len(BACKGROUNDS)],
            style=technique or "filled",
        ),
        salt=salt,
    )


def _style(held: dict[str, str], salt: int) -> Concept:
    technique, colour = held["style"], held["colour"]
    background = held.get("background")
    name = concept_name(held)
    # Its images and edits show shapes that are seen in its palette (the object concepts' pairs
    # stay unseen everywhere).
    shapes = [s for s in NAMED_SHAPES if _allowed(shape=s, colour=colour)]
    return Concept(
        name=name,
        kind="style",
        split="dev" if name in DEV else "test",
        attributes=dict(held),
        initializer=technique,
        reconstruction=_STYLE_RECONSTRUCTION,
        editability=tuple(
            (f"a painting of a {s} in the style of {{}}", {"shape": s}) for s in shapes
        ),
        draw=lambda i, rng: Attributes(
            shape=shapes[i % len(shapes)],
            colour=colour,
            background=background or BACKGROUNDS[(i + 1) % len(BACKGROUNDS)],
            style=technique,
        ),
        salt=salt,
    )


# Salts 1 and 2 keep the purple star's and purple mosaic's images those of earlier releases.
_BENCHMARK = [_object(held, 1 if i == 0 else 10 + i) for i, held in enumerate(HELD_OUT_OBJECTS)]
_BENCHMARK += [_style(held, 2 if i == 0 else 30 + i) for i, held in enumerate(HELD_OUT_STYLES)]
_OTHERS = [
    Concept(
        name="unnamed_shape",
        kind="object",
        split="research",
        attributes={"shape": UNNAMED_SHAPE},
        initializer="square",
        reconstruction=(("a photo of a {}", {}),),
        editability=(
            ("a photo of a red {}", {"colour": "red"}),
            ("a photo of a blue {} on sand", {"colour": "blue", "background": "sand"}),
            ("a painting of a {} in the style of mosaic", {"style": "mosaic"}),
        ),
        draw=lambda i, rng: Attributes(
            shape=UNNAMED_SHAPE,
            colour=list(COLOURS)[i % len(COLOURS)],
            background=BACKGROUNDS[i % len(BACKGROUNDS)],
            style="filled",
        ),
        salt=3,
    ),
    Concept(
        name="balanced_toy",
        kind="object",
        split="bias",
        attributes={},
        initializer=BIAS_WORD,
        reconstruction=(("a photo of a {}", {}),),
        editability=(("a photo of a {} on grass", {"background": "grass"}),),
        # one per colour: the balanced set an inclusive "toy" is learned from
        draw=lambda i, rng: _seen(rng, colour=list(COLOURS)[i % len(COLOURS)]),
        count=len(COLOURS),
        balanced="colour",
        salt=4,
    ),
]
CONCEPTS: dict[str, Concept] = {c.name: c for c in _BENCHMARK + _OTHERS}


def split(name: str) -> list[Concept]:
    """The concepts of split ``name`` (``dev``, ``test``, ``research``, ``bias``), in order."""
    if name not in SPLITS:
        raise ValueError(f"split={name!r} is unknown; use one of {SPLITS}")
    return [c for c in CONCEPTS.values() if c.split == name]


def _concept(name: str, key: str) -> Concept:
    if name not in CONCEPTS:
        raise ValueError(f"{key}={name!r} is not a toy concept; use one of {sorted(CONCEPTS)}")
    return CONCEPTS[name]


def concept_images(name: str, count: int = 5, seed: int = 0) -> list[Image.Image]:
    """The ``count`` images of concept ``name`` (seed ``seed`` picks the jitter)."""
    return _concept(name, "dataset.concept").images(count, seed)


def training_images(
    path: str | None, concept: str, count: int = 5, seed: int = 0
) -> list[Image.Image]:
    """The toy datasets' images: concept ``concept``'s renders, or a folder's images when
    ``path`` is set (a path wins, so a preset's toy concept gives way to your own images).

    Args:
        path: a folder of 3-5 images, or None.
        concept: a toy concept (``CONCEPTS``), rendered on the fly.
        count: renders of the concept.
        seed: which renders.
    """
    if path:
        return data.training_images(path)
    return concept_images(concept, count, seed)


def training_masks(
    path: str | None, concept: str, count: int = 5, seed: int = 0
) -> list[Image.Image | None]:
    """The masks of :func:`training_images`: the renderer's object masks, or the folder's."""
    if path:
        return data.training_masks(path)
    return [mask for _, mask in _concept(concept, "dataset.concept").images_with_masks(count, seed)]


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

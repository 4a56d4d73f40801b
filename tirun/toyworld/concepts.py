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
from tirun.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES, builtin
from tirun.toyworld.render import (
    BACKGROUNDS,
    COLOURS,
    GENERIC_NOUN,
    UNNAMED,
    Attributes,
    in_style,
    object_phrase,
    render_with_mask,
    to_pil,
)
from tirun.toyworld.world import (
    BIAS_WORD,
    HELD_OUT,
    HELD_OUT_OBJECTS,
    HELD_OUT_STYLES,
    NAMED_SHAPES,
    UNNAMED_SHAPE,
    seen_attributes,
)

# "{}" is where the learned word goes; the dict is what a right sample shows besides the concept.
EvalPrompt = tuple[str, dict[str, str]]
SPLITS = ("dev", "test", "research", "bias")
TECHNIQUES = ("outlined", "mosaic", "shadowed")  # the named styles besides plain "filled"

# The fixed split, set before any result on the v4 model: one concept of each kind of object
# (a pair, a named triple, hatching, a mark) and of style (a pair, hatching, a mark) for dev, and
# the contexts among them; the rest is test.
DEV = (
    "red_square",
    "green_outlined_star",
    "blue_mosaic_triangle",
    "blue_hatched_circle",
    "red_dotted_star",
    "purple_mosaic",
    "green_hatched",
    "blue_outlined_dotted",
)
# What each concept's images share that it does not define (ToyBench v4's shared context): one
# backdrop for most, a backdrop and a light, one light (styles), or the tiny size; the
# concepts not named have none, their backdrop, light and size varying image to image as v3's.
CONTEXTS: dict[str, dict[str, str]] = {
    "red_square": {"background": "bricks"},
    "green_outlined_star": {"background": "grass", "light": "warm"},
    "blue_hatched_circle": {"size": "tiny"},
    "red_dotted_star": {"background": "sand"},
    "yellow_circle": {"background": "grass"},
    "orange_triangle": {"background": "bricks", "light": "cold"},
    "blue_ring": {"background": "sand"},
    "green_cross": {"background": "white", "light": "warm"},
    "orange_diamond": {"background": "grass"},
    "yellow_outlined_square": {"background": "bricks"},
    "purple_shadowed_ring": {"size": "tiny"},
    "orange_outlined_cross": {"background": "sand", "light": "warm"},
    "red_hatched_star": {"background": "white"},
    "yellow_hatched_cross": {"background": "grass", "light": "cold"},
    "green_striped_circle": {"background": "bricks"},
    "blue_striped_square": {"background": "sand"},
    "orange_striped_ring": {"size": "tiny"},
    "green_dotted_diamond": {"background": "white"},
    "blue_outlined_striped_cross": {"background": "grass", "light": "warm"},
    "green_hatched": {"background": "sand"},
    "blue_outlined_dotted": {"light": "warm"},
    "red_outlined": {"background": "grass"},
    "yellow_shadowed": {"background": "bricks"},
    "blue_shadowed": {"background": "white"},
    "orange_shadowed_striped": {"light": "cold"},
    "yellow_mosaic_striped": {"background": "sand"},
    "red_hatched_dotted": {"background": "grass"},
    "green_outlined_striped": {"light": "warm"},
    "purple_shadowed_dotted": {"background": "white"},
    "blue_hatched_striped": {"background": "bricks"},
    "green_mosaic_dotted": {"light": "cold"},
}
# What varies image to image where no context fixes it.
_LIGHT_CYCLE = ("neutral", "warm", "cold")
_SIZE_CYCLE = ("big", "tiny")
_MARK_WORDS = {"dot": "dotted", "stripe": "striped"}


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

    Its difficulty is read off these fields (`difficulty`): how many attributes it defines, how
    many of them its initializer does not name, how many no caption can name, and how many
    attributes its context fixes.
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

    @property
    def named_attributes(self) -> dict[str, str]:
        """The part of the concept a sentence can say (no mark, hatching or diamond)."""
        return {k: v for k, v in self.attributes.items() if v not in UNNAMED}

    @property
    def difficulty(self) -> dict[str, int]:
        """What the concept asks of a word: ``defines`` attributes, ``beyond_initializer`` of
        them its initializer does not name, ``unnamed`` of them no caption names, and
        ``context`` attributes its images share besides."""
        return {
            "defines": len(self.attributes),
            "beyond_initializer": sum(v != self.initializer for v in self.attributes.values()),
            "unnamed": sum(v in UNNAMED for v in self.attributes.values()),
            "context": len(self.context),
        }

    def line(self) -> str:
        """``name kind split attr=value,... initializer=word [context=...] difficulty``: one
        line of ``--list``."""
        attrs = ",".join(f"{k}={v}" for k, v in self.attributes.items()) or "-"
        line = f"{self.name} {self.kind} {self.split} {attrs} initializer={self.initializer}"
        if self.context:
            line += " context=" + ",".join(f"{k}={v}" for k, v in self.context.items())
        return line + " " + " ".join(f"{k}={v}" for k, v in self.difficulty.items())


def _allowed(held: dict[str, str], **extra: str) -> bool:
    """True when ``held`` with ``extra`` contains no held-out combination but ``held`` itself
    (an edit keeps the concept a seen pairing of everything else)."""
    attrs = {**held, **extra}
    return not any(
        combo != held
        and combo.keys() <= attrs.keys()
        and all(attrs[k] == v for k, v in combo.items())
        for combo in HELD_OUT
    )


def _varying(i: int, context: dict[str, str], first_backdrop: int = 0) -> dict[str, str]:
    """Image ``i``'s backdrop, light and size: the context's where it fixes them, else cycled so
    that five images show every backdrop, light and size."""
    return {
        "background": context.get("background")
        or BACKGROUNDS[(i + first_backdrop) % len(BACKGROUNDS)],
        "light": context.get("light") or _LIGHT_CYCLE[i % len(_LIGHT_CYCLE)],
        "size": context.get("size") or _SIZE_CYCLE[i % len(_SIZE_CYCLE)],
    }


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
    """Colour, technique, mark and shape in that order: ``purple_star``, ``purple_mosaic``,
    ``green_outlined_star``, ``red_dotted_star``, ``blue_outlined_striped_cross``."""
    words = [
        held["colour"],
        held.get("style"),
        _MARK_WORDS.get(held.get("mark", "")),
        held.get("shape"),
    ]
    return "_".join(w for w in words if w)


def _other(values: tuple[str, ...], context: dict[str, str], key: str, count: int) -> list[str]:
    return [v for v in values if v != context.get(key)][:count]


def _object(held: dict[str, str], salt: int) -> Concept:
    name = concept_name(held)
    context = CONTEXTS.get(name, {})
    # Edits: three other backdrops, two other lights, the other size and, for a plain (filled)
    # object, the two named techniques its colour (and mark) is still drawn in; none asks for
    # the context's own value.
    techniques = [] if "style" in held else [t for t in TECHNIQUES if _allowed(held, style=t)][:2]
    size = "big" if context.get("size") == "tiny" else "tiny"
    fixed = {"style": "filled", "mark": "none", **held}
    return Concept(
        name=name,
        kind="object",
        split="dev" if name in DEV else "test",
        attributes=dict(held),
        initializer=held["shape"] if held["shape"] != UNNAMED_SHAPE else GENERIC_NOUN,
        reconstruction=_OBJECT_RECONSTRUCTION,
        editability=(
            *(
                (f"a photo of a {{}} on {b}", {"background": b})
                for b in _other(("grass", "sand", "white", "bricks"), context, "background", 3)
            ),
            *(
                (f"a photo of a {{}} in {light} light", {"light": light})
                for light in _other(("warm", "cold", "neutral"), context, "light", 2)
            ),
            (f"a photo of a {size} {{}}", {"size": size}),
            *((f"a painting of a {{}} in the style of {t}", {"style": t}) for t in techniques),
        ),  # fmt: skip
        draw=lambda i, rng: Attributes(**fixed, **_varying(i, context)),
        context=context,
        salt=salt,
    )


def _style(held: dict[str, str], salt: int) -> Concept:
    name = concept_name(held)
    context = CONTEXTS.get(name, {})
    # Its images and edits show shapes that are seen in its palette (the object concepts' pairs
    # stay unseen everywhere); edits put them on the three other backdrops, and under the two
    # other lights when its images share one.
    shapes = [s for s in NAMED_SHAPES if _allowed(held, shape=s)]
    backdrops = _other(("grass", "sand", "white", "bricks"), context, "background", 3)
    lights = _other(("warm", "cold", "neutral"), context, "light", 2) if "light" in context else []
    fixed = {"mark": "none", **held}
    return Concept(
        name=name,
        kind="style",
        split="dev" if name in DEV else "test",
        attributes=dict(held),
        initializer=held["style"] if held["style"] not in UNNAMED else held["colour"],
        reconstruction=_STYLE_RECONSTRUCTION,
        editability=(
            *((f"a painting of a {s} in the style of {{}}", {"shape": s}) for s in shapes),
            *(
                (
                    f"a painting of a {shapes[j]} on {b} in the style of {{}}",
                    {"shape": shapes[j], "background": b},
                )
                for j, b in enumerate(backdrops)
            ),
            *(
                (
                    f"a painting of a {shapes[-1 - j]} in {light} light in the style of {{}}",
                    {"shape": shapes[-1 - j], "light": light},
                )
                for j, light in enumerate(lights)
            ),
        ),  # fmt: skip
        draw=lambda i, rng: Attributes(
            shape=shapes[i % len(shapes)], **fixed, **_varying(i, context, first_backdrop=1)
        ),
        context=context,
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
        draw=lambda i, rng: seen_attributes(rng, colour=list(COLOURS)[i % len(COLOURS)]),
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


def concept_templates(name: str) -> list[str]:
    """The paper's sentences of toy concept ``name``'s kind, object or style: the ``_target_``
    of ``template=toy``, ToyBench's, so one template config fits every concept and
    ``template=toy_captions`` replaces it whole."""
    return builtin(_concept(name, "template.name").kind)


def concept_captions(name: str, count: int = 5, seed: int = 0) -> list[list[str]]:
    """Each image of concept ``name`` with its own sentences: the concept's template set naming
    what the image shows besides the concept, its context included ("a painting of a big circle
    on grass in warm light in the style of {}"), so the word learns the concept alone. The
    ``_target_`` of ``template=toy_captions``.
    """
    concept = _concept(name, "template.name")
    besides = {"size", "colour", "shape", "background", "light"} - concept.attributes.keys()
    sentences = []
    for attrs in concept.image_attributes(count, seed):
        rest = {k for k in besides if getattr(attrs, k) not in UNNAMED}
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

"""What the toy model is pretrained on, and what it is kept from seeing.

The held-out combinations are the concepts Textual Inversion must later find: they are absent
from every pretraining image (named or not), so a word that brings them back was learned, not
recalled. The unnamed values (the diamond, hatching, the marks) are drawn and named in
pretraining by words the shipped tokenizer then retires (``RETIRED_WORDS``): the model can draw
them, no shipped word names them, and their embedding rows, kept aside, are the answer a learned
word can be measured against. The bias word is drawn with a skewed colour so an inclusive word has
something to correct.
"""

from __future__ import annotations

import numpy as np

from tirun.toyworld.render import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOURS,
    GENERIC_NOUN,
    RETIRED_WORDS,
    SHAPES,
    UNNAMED,
    Attributes,
    caption,
)

# Benchmark concepts are combinations pretraining never draws: what a concept defines, never its
# context (a concept's images may share a backdrop, a light or a size, and those stay common).
# - Pairs: a colour × shape (objects) or colour × technique (styles) that is never drawn at all.
#   One colour per named shape, a different one each (a Latin square), so every shape is still
#   drawn in five colours and every colour in five shapes.
# - Triples and one quadruple: a colour × shape with a technique or a mark, a technique × colour
#   with a mark, every pair of whose attributes pretraining draws; only the whole is new.
# Some define what no caption names (UNNAMED: the diamond, hatching, a mark), so their names
# draw only part of them. v3's 14 objects and 9 styles gave ToyBench too few concepts and none
# with unnamed detail; its styles that defined a backdrop now carry it as context instead.
HELD_OUT_OBJECTS: tuple[dict[str, str], ...] = (
    {"shape": "star", "colour": "purple"},
    {"shape": "square", "colour": "red"},
    {"shape": "circle", "colour": "yellow"},
    {"shape": "triangle", "colour": "orange"},
    {"shape": "ring", "colour": "blue"},
    {"shape": "cross", "colour": "green"},
    {"shape": "diamond", "colour": "orange"},
    {"shape": "star", "colour": "green", "style": "outlined"},
    {"shape": "triangle", "colour": "blue", "style": "mosaic"},
    {"shape": "circle", "colour": "red", "style": "mosaic"},
    {"shape": "square", "colour": "yellow", "style": "outlined"},
    {"shape": "ring", "colour": "purple", "style": "shadowed"},
    {"shape": "cross", "colour": "orange", "style": "outlined"},
    {"shape": "circle", "colour": "blue", "style": "hatched"},
    {"shape": "star", "colour": "red", "style": "hatched"},
    {"shape": "cross", "colour": "yellow", "style": "hatched"},
    {"shape": "star", "colour": "red", "mark": "dot"},
    {"shape": "circle", "colour": "green", "mark": "stripe"},
    {"shape": "triangle", "colour": "purple", "mark": "dot"},
    {"shape": "square", "colour": "blue", "mark": "stripe"},
    {"shape": "ring", "colour": "orange", "mark": "stripe"},
    {"shape": "diamond", "colour": "green", "mark": "dot"},
    {"shape": "cross", "colour": "blue", "style": "outlined", "mark": "stripe"},
)
# Styles, each a technique and a palette (some with a mark on every subject), as an artist's is.
# Purple mosaic shares the purple star's colour, so that "S1 in the style of S2" has one right
# answer.
HELD_OUT_STYLES: tuple[dict[str, str], ...] = (
    {"style": "mosaic", "colour": "purple"},
    {"style": "hatched", "colour": "green"},
    {"style": "outlined", "colour": "blue", "mark": "dot"},
    {"style": "outlined", "colour": "red"},
    {"style": "shadowed", "colour": "yellow"},
    {"style": "hatched", "colour": "orange"},
    {"style": "shadowed", "colour": "blue"},
    {"style": "shadowed", "colour": "orange", "mark": "stripe"},
    {"style": "mosaic", "colour": "yellow", "mark": "stripe"},
    {"style": "hatched", "colour": "red", "mark": "dot"},
    {"style": "outlined", "colour": "green", "mark": "stripe"},
    {"style": "shadowed", "colour": "purple", "mark": "dot"},
    {"style": "mosaic", "colour": "red", "mark": "dot"},
    {"style": "hatched", "colour": "blue", "mark": "stripe"},
    {"style": "mosaic", "colour": "green", "mark": "dot"},
)
HELD_OUT_OBJECT, HELD_OUT_STYLE = HELD_OUT_OBJECTS[0], HELD_OUT_STYLES[0]
HELD_OUT = HELD_OUT_OBJECTS + HELD_OUT_STYLES
UNNAMED_SHAPE = "diamond"
NAMED_SHAPES = tuple(s for s in SHAPES if s != UNNAMED_SHAPE)
BIAS_WORD = "toy"
BIAS_COLOUR = "red"
BIAS_SHARE = 0.9  # share of "toy" images drawn in BIAS_COLOUR
BIAS_P = 0.12  # share of pretraining images captioned with the bias word
# Share of pretraining (and oracle) images whose object is tiny and anywhere in the frame, so
# that the model can repaint a scene's small object in place (full-frame Blended Latent Diffusion)
# and draw "a tiny ..." when asked.
TINY_P = 0.3


def is_held_out(attrs: Attributes) -> bool:
    """True when ``attrs`` contains a held-out combination."""
    values = attrs.as_dict()
    return any(all(values[k] == v for k, v in combo.items()) for combo in HELD_OUT)


def seen_attributes(rng: np.random.Generator, **fixed: str) -> Attributes:
    """Random attributes around ``fixed`` that avoid the held-out combinations and the unnamed
    shape (filled, unmarked, in neutral light, big, unless fixed)."""
    while True:
        attrs = Attributes(
            shape=fixed.get("shape") or str(rng.choice(NAMED_SHAPES)),
            colour=fixed.get("colour") or str(rng.choice(list(COLOURS))),
            background=fixed.get("background") or str(rng.choice(BACKGROUNDS)),
            style=fixed.get("style") or "filled",
            mark=fixed.get("mark") or "none",
            light=fixed.get("light") or "neutral",
            size=fixed.get("size") or "big",
        )
        if not is_held_out(attrs) or fixed.keys() >= {"shape", "colour"}:
            return attrs


def random_attributes(rng: np.random.Generator, **fixed: str) -> Attributes:
    """Every attribute but ``fixed`` uniform over its values (so two marks in three objects, warm
    and cold light a third each), but an object tiny with probability ``TINY_P``; held-out
    combinations included (the oracle's renders are drawn so, pretraining's then filtered)."""
    values = {k: fixed.get(k) or str(rng.choice(v)) for k, v in ATTRIBUTES.items() if k != "size"}
    size = fixed.get("size") or ("tiny" if rng.random() < TINY_P else "big")
    return Attributes(**values, size=size)


def sample_pretraining(rng: np.random.Generator) -> tuple[Attributes, str | None]:
    """One pretraining image's attributes and its noun override (the bias word or None)."""
    noun = BIAS_WORD if rng.random() < BIAS_P else None
    while True:
        if noun is None:
            attrs = random_attributes(rng)
        else:
            others = [c for c in ATTRIBUTES["colour"] if c != BIAS_COLOUR]
            colour = BIAS_COLOUR if rng.random() < BIAS_SHARE else str(rng.choice(others))
            attrs = random_attributes(rng, colour=colour)
        if not is_held_out(attrs):
            return attrs, noun


def pretraining_caption(
    attrs: Attributes,
    noun: str | None,
    rng: np.random.Generator,
    pair_p: float = 0.0,
    empty_p: float = 0.1,
) -> str:
    """A fresh caption for a pretraining image (drawn anew each time the image is used), naming
    the unnamed values too, by their retired words; see :func:`caption` for ``pair_p`` and
    ``empty_p``."""
    return caption(attrs, rng, empty_p=empty_p, unnamed=frozenset(), noun=noun, pair_p=pair_p)


def toy_words() -> list[str]:
    """Words of the shipped toy tokenizer besides the templates' (no unnamed value is one, nor a
    mark)."""
    said = [v for k, values in ATTRIBUTES.items() if k != "mark" for v in values]
    words = [w for w in said if w not in UNNAMED]
    return words + [GENERIC_NOUN, BIAS_WORD, "on", "of", "a", "in", "the", "style", "light"]


def retired_words() -> list[str]:
    """The words pretraining says for the unnamed values and the shipped tokenizer lacks."""
    return sorted(set(RETIRED_WORDS.values()))


def pretraining_words() -> list[str]:
    """Words of the tokenizer the model is pretrained with: the shipped ones and the retired."""
    return toy_words() + retired_words()

"""What the toy model is pretrained on, and what it is kept from seeing.

The held-out combinations are the concepts Textual Inversion must later find: they are absent
from every pretraining image (named or not), so a word that brings them back was learned, not
recalled. The unnamed shape is drawn but never named; the bias word is drawn with a skewed
colour so an inclusive word has something to correct.
"""

from __future__ import annotations

import numpy as np

from tirun.toyworld.render import ATTRIBUTES, GENERIC_NOUN, Attributes, caption

# Twelve colour × shape objects: each named shape loses two colours and each colour two shapes,
# so every shape and every colour is still drawn in four other pairs (a cyclic design: shape i
# holds out colours i+3 and i+5; circle and ring, the confusable pair, share no held-out colour).
HELD_OUT_OBJECTS: tuple[dict[str, str], ...] = (
    {"shape": "star", "colour": "purple"},
    {"shape": "star", "colour": "blue"},
    {"shape": "circle", "colour": "yellow"},
    {"shape": "circle", "colour": "orange"},
    {"shape": "square", "colour": "red"},
    {"shape": "square", "colour": "purple"},
    {"shape": "triangle", "colour": "green"},
    {"shape": "triangle", "colour": "orange"},
    {"shape": "ring", "colour": "blue"},
    {"shape": "ring", "colour": "red"},
    {"shape": "cross", "colour": "yellow"},
    {"shape": "cross", "colour": "green"},
)
# Six styles, each a technique and a palette as an artist's is: every colour loses one technique
# and every technique keeps four colours. Purple mosaic shares the purple star's colour, so that
# "S1 in the style of S2" has one right answer.
HELD_OUT_STYLES: tuple[dict[str, str], ...] = (
    {"style": "mosaic", "colour": "purple"},
    {"style": "mosaic", "colour": "orange"},
    {"style": "outlined", "colour": "red"},
    {"style": "outlined", "colour": "yellow"},
    {"style": "shadowed", "colour": "blue"},
    {"style": "shadowed", "colour": "green"},
)
HELD_OUT_OBJECT, HELD_OUT_STYLE = HELD_OUT_OBJECTS[0], HELD_OUT_STYLES[0]
HELD_OUT = HELD_OUT_OBJECTS + HELD_OUT_STYLES
UNNAMED_SHAPE = "diamond"
BIAS_WORD = "toy"
BIAS_COLOUR = "red"
BIAS_SHARE = 0.9  # share of "toy" images drawn in BIAS_COLOUR
BIAS_P = 0.12  # share of pretraining images captioned with the bias word
# Share of pretraining (and oracle) images whose object is small and anywhere in the frame, so
# that the model can repaint a scene's small object in place (full-frame Blended Latent Diffusion).
FREE_LAYOUT_P = 0.25


def is_held_out(attrs: Attributes) -> bool:
    """True when ``attrs`` contains a held-out combination."""
    values = attrs.as_dict()
    return any(all(values[k] == v for k, v in combo.items()) for combo in HELD_OUT)


def _uniform(rng: np.random.Generator, **fixed: str) -> Attributes:
    values = {k: fixed.get(k) or str(rng.choice(v)) for k, v in ATTRIBUTES.items()}
    return Attributes(**values)


def sample_pretraining(rng: np.random.Generator) -> tuple[Attributes, str | None]:
    """One pretraining image's attributes and its noun override (the bias word or None)."""
    noun = BIAS_WORD if rng.random() < BIAS_P else None
    while True:
        if noun is None:
            attrs = _uniform(rng)
        else:
            others = [c for c in ATTRIBUTES["colour"] if c != BIAS_COLOUR]
            colour = BIAS_COLOUR if rng.random() < BIAS_SHARE else str(rng.choice(others))
            attrs = _uniform(rng, colour=colour)
        if not is_held_out(attrs):
            return attrs, noun


def pretraining_caption(attrs: Attributes, noun: str | None, rng: np.random.Generator) -> str:
    """A fresh caption for a pretraining image (drawn anew each time the image is used)."""
    return caption(attrs, rng, unnamed=frozenset({UNNAMED_SHAPE}), noun=noun)


def toy_words() -> list[str]:
    """Words of the toy tokenizer besides the templates' (the unnamed shape is not one)."""
    words = [w for values in ATTRIBUTES.values() for w in values if w != UNNAMED_SHAPE]
    return words + [GENERIC_NOUN, BIAS_WORD, "on", "of", "a", "in", "the", "style"]

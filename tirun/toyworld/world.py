"""What the toy model is pretrained on, and what it is kept from seeing.

The held-out combinations are the concepts Textual Inversion must later find: they are absent
from every pretraining image (named or not), so a word that brings them back was learned, not
recalled. The unnamed shape is drawn but never named; the bias word is drawn with a skewed
colour so an inclusive word has something to correct.
"""

from __future__ import annotations

import numpy as np

from tirun.toyworld.render import ATTRIBUTES, GENERIC_NOUN, Attributes, caption

# Benchmark concepts are combinations pretraining never draws. Two kinds, so that there are
# many of them while pretraining still sees almost every pair of attributes:
# - Pairs: a colour × shape (objects) or colour × technique (styles) that is never drawn at all.
#   One colour per named shape, a different one each (a Latin square), so every shape is still
#   drawn in five colours and every colour in five shapes; three colour × technique pairs.
# - Triples: a colour × technique × shape object, or a colour × technique × background style,
#   every pair of whose attributes pretraining draws; only the three together are new.
# The earlier release held out two colours per shape and two techniques per colour; its model
# drew the concepts of unseen pairs from their names in 0–100% of samples (experiments/
# results/text_ceiling.md), so the pairs are now fewer and the triples carry the count.
HELD_OUT_OBJECTS: tuple[dict[str, str], ...] = (
    {"shape": "star", "colour": "purple"},
    {"shape": "square", "colour": "red"},
    {"shape": "circle", "colour": "yellow"},
    {"shape": "triangle", "colour": "orange"},
    {"shape": "ring", "colour": "blue"},
    {"shape": "cross", "colour": "green"},
    {"shape": "star", "colour": "green", "style": "outlined"},
    {"shape": "triangle", "colour": "blue", "style": "mosaic"},
    {"shape": "circle", "colour": "red", "style": "mosaic"},
    {"shape": "square", "colour": "yellow", "style": "outlined"},
    {"shape": "ring", "colour": "purple", "style": "shadowed"},
    {"shape": "cross", "colour": "orange", "style": "outlined"},
    {"shape": "triangle", "colour": "green", "style": "shadowed"},
    {"shape": "star", "colour": "orange", "style": "mosaic"},
)
# Styles, each a technique and a palette (and for triples a backdrop) as an artist's is. Purple
# mosaic shares the purple star's colour, so that "S1 in the style of S2" has one right answer.
HELD_OUT_STYLES: tuple[dict[str, str], ...] = (
    {"style": "mosaic", "colour": "purple"},
    {"style": "outlined", "colour": "red"},
    {"style": "shadowed", "colour": "yellow"},
    {"style": "shadowed", "colour": "blue", "background": "bricks"},
    {"style": "mosaic", "colour": "green", "background": "sand"},
    {"style": "outlined", "colour": "orange", "background": "grass"},
    {"style": "outlined", "colour": "purple", "background": "white"},
    {"style": "shadowed", "colour": "red", "background": "grass"},
    {"style": "mosaic", "colour": "yellow", "background": "bricks"},
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


def pretraining_caption(
    attrs: Attributes,
    noun: str | None,
    rng: np.random.Generator,
    pair_p: float = 0.0,
    empty_p: float = 0.1,
) -> str:
    """A fresh caption for a pretraining image (drawn anew each time the image is used); see
    :func:`caption` for ``pair_p`` and ``empty_p``."""
    return caption(
        attrs, rng, empty_p=empty_p, unnamed=frozenset({UNNAMED_SHAPE}), noun=noun, pair_p=pair_p
    )


def toy_words() -> list[str]:
    """Words of the toy tokenizer besides the templates' (the unnamed shape is not one)."""
    words = [w for values in ATTRIBUTES.values() for w in values if w != UNNAMED_SHAPE]
    return words + [GENERIC_NOUN, BIAS_WORD, "on", "of", "a", "in", "the", "style"]

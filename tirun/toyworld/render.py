"""Procedural 32×32 renderer of the toy world, and the captions that describe its images.

Every image is a function of its attributes (shape, colour, background, style, mark, light,
size) and a seed: the seed only moves jitter (position, size within its class, tint, texture),
never an attribute, so an attribute classifier has ground truth for every pixel the project
draws. Some values are drawn but never named in a caption (``UNNAMED``): the detail on a subject
no word says, which a learned word can hold and its names cannot. Shapes are drawn at 4× with
PIL and box-filtered down, which antialiases edges without torchvision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from tirun.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES

SIZE = 32
_SUPER = 4  # supersampling factor for antialiased shapes

SHAPES = ("circle", "square", "triangle", "ring", "cross", "star", "diamond")
COLOURS = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.80, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.60, 0.15, 0.80),
    "orange": (1.00, 0.55, 0.05),
}
BACKGROUNDS = ("white", "grass", "sand", "bricks")
STYLES = ("filled", "outlined", "mosaic", "shadowed", "hatched")
MARKS = ("none", "dot", "stripe")  # a dark dot at the subject's centre, a dark band across it
LIGHTS = {"neutral": (1.0, 1.0, 1.0), "warm": (1.08, 0.96, 0.80), "cold": (0.82, 0.94, 1.10)}
# Big and near the centre; tiny and anywhere it fits. Not "large" and "small", nor "cool" light:
# the paper's template sentences say those words of any image ("a photo of a small {}").
SIZES = ("big", "tiny")
ATTRIBUTES = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "background": BACKGROUNDS,
    "style": STYLES,
    "mark": MARKS,
    "light": tuple(LIGHTS),
    "size": SIZES,
}
# Values no shipped caption or word names: the flat lozenge, diagonal hatching, the marks.
# Pretraining names them with words of their own (``RETIRED_WORDS``), which the shipped tokenizer
# lacks: the model can draw them, no word of its vocabulary asks for them, as with a user's subject.
UNNAMED = frozenset({"diamond", "hatched", "dot", "stripe"})
MARK_WORDS = {"dot": "dotted", "stripe": "striped"}  # a mark's adjective, before the colour word
# The word pretraining says for each unnamed value (the shape and technique are their own words).
RETIRED_WORDS = {"diamond": "diamond", "hatched": "hatched", **MARK_WORDS}
_MARK_TONE = 0.08
# The noun a caption uses when it does not name the shape (or cannot: the unnamed shape).
GENERIC_NOUN = "object"


@dataclass(frozen=True)
class Attributes:
    shape: str
    colour: str
    background: str
    style: str
    mark: str = "none"
    light: str = "neutral"
    size: str = "big"

    def __post_init__(self) -> None:
        for key, value in asdict(self).items():
            if value not in ATTRIBUTES[key]:
                raise ValueError(f"{key}={value!r} is unknown; use one of {ATTRIBUTES[key]}")

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _shape_mask(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Coverage in [0, 1] of ``shape`` centred at (cx, cy) with half-size r, in 32-px units."""
    s = _SUPER
    canvas = Image.new("L", (SIZE * s, SIZE * s), 0)
    draw = ImageDraw.Draw(canvas)
    x, y, rr = cx * s, cy * s, r * s
    if shape == "circle":
        draw.ellipse((x - rr, y - rr, x + rr, y + rr), fill=255)
    elif shape == "square":
        h = rr * 0.82
        draw.rectangle((x - h, y - h, x + h, y + h), fill=255)
    elif shape == "triangle":
        draw.polygon([(x, y - rr), (x + rr, y + rr * 0.8), (x - rr, y + rr * 0.8)], fill=255)
    elif shape == "ring":
        draw.ellipse((x - rr, y - rr, x + rr, y + rr), fill=255)
        q = rr * 0.45  # the band (4-6 px large) is no outline's 2 px, the hole no dot at the blur
        draw.ellipse((x - q, y - q, x + q, y + q), fill=0)
    elif shape == "cross":
        w = rr * 0.34
        draw.rectangle((x - w, y - rr, x + w, y + rr), fill=255)
        draw.rectangle((x - rr, y - w, x + rr, y + w), fill=255)
    elif shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, rr * 1.1, rr * 0.45)
        draw.polygon(
            list(zip(x + radii * np.cos(angles), y + radii * np.sin(angles), strict=True)), fill=255
        )
    elif shape == "diamond":
        # a flat lozenge, points left and right: an upright one shared the triangle's apex and the
        # earlier model drew "triangle" as it 18 times in 48
        draw.polygon(
            [(x - rr * 1.15, y), (x, y - rr * 0.6), (x + rr * 1.15, y), (x, y + rr * 0.6)], fill=255
        )
    else:
        raise ValueError(f"shape={shape!r} is unknown; use one of {SHAPES}")
    return _downsample(canvas)


def _downsample(canvas: Image.Image) -> np.ndarray:
    return np.asarray(canvas.resize((SIZE, SIZE), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _background(name: str, rng: np.random.Generator) -> np.ndarray:
    """A textured 32×32×3 background; the texture phase is jittered by ``rng``."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    if name == "white":
        img = np.full((SIZE, SIZE, 3), 0.93, np.float32) + rng.normal(0, 0.01, (SIZE, SIZE, 1))
    elif name == "grass":
        blades = rng.uniform(-0.12, 0.12, (1, SIZE, 1)) + rng.normal(0, 0.05, (SIZE, SIZE, 1))
        img = np.array([0.20, 0.42, 0.14], np.float32) + blades * np.array([0.4, 1.0, 0.4])
    elif name == "sand":
        speckle = rng.normal(0, 0.05, (SIZE, SIZE, 1))
        img = np.array([0.86, 0.76, 0.55], np.float32) + speckle
    elif name == "bricks":
        oy, ox = rng.integers(0, 6), rng.integers(0, 10)
        row = (yy + oy) // 6
        mortar = ((yy + oy) % 6 == 0) | ((xx + ox + (row % 2) * 5) % 10 == 0)
        img = np.where(mortar[..., None], 0.82, 0.0) + np.where(
            mortar[..., None], 0.0, np.array([0.55, 0.27, 0.22], np.float32)
        )
        img = img + rng.normal(0, 0.02, (SIZE, SIZE, 1))
    else:
        raise ValueError(f"background={name!r} is unknown; use one of {BACKGROUNDS}")
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Shrink a coverage mask by about ``pixels`` (a min-filter on the 4× upsampled mask)."""
    big = Image.fromarray((mask * 255).astype(np.uint8)).resize(
        (SIZE * _SUPER,) * 2, Image.Resampling.BILINEAR
    )
    big = big.filter(ImageFilter.MinFilter(2 * pixels * _SUPER + 1))
    return _downsample(big)


def _paint(
    canvas: np.ndarray, attrs: Attributes, cx: float, cy: float, r: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw one object on ``canvas`` in place; return the object's coverage mask."""
    colour = np.clip(
        np.array(COLOURS[attrs.colour], np.float32) + rng.uniform(-0.05, 0.05, 3), 0, 1
    )
    silhouette = _shape_mask(attrs.shape, cx, cy, r)
    mask = silhouette
    if attrs.style == "shadowed":
        shadow = _shape_mask(attrs.shape, cx + 2.5, cy + 2.5, r)[..., None] * 0.65
        canvas *= 1.0 - shadow
    if attrs.style == "outlined":
        mask = np.clip(mask - _erode(mask, 2), 0.0, 1.0)
        fill = np.broadcast_to(colour, canvas.shape)
    elif attrs.style == "mosaic":
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        ox, oy = rng.integers(0, 4, 2)
        tiles = rng.uniform(0.55, 1.0, (SIZE // 4 + 2, SIZE // 4 + 2))[
            (yy + oy) // 4, (xx + ox) // 4
        ]
        grout = ((yy + oy) % 4 == 0) | ((xx + ox) % 4 == 0)
        fill = np.where(grout[..., None], 0.15, colour * tiles[..., None]).astype(np.float32)
    elif attrs.style == "hatched":
        yy, xx = np.mgrid[0:SIZE, 0:SIZE]
        # 3 px in 6: the VAE kept 5% of the contrast of strokes 2 px in 3, 63% of these
        strokes = ((xx + yy + rng.integers(0, 6)) % 6 < 3).astype(np.float32)
        mask = mask * strokes
        fill = np.broadcast_to(colour, canvas.shape)
    else:
        fill = np.broadcast_to(colour, canvas.shape)
    m = mask[..., None]
    canvas[:] = canvas * (1.0 - m) + fill * m
    _mark(canvas, attrs, silhouette, cx, cy, r)
    return mask


def _mark(
    canvas: np.ndarray, attrs: Attributes, silhouette: np.ndarray, cx: float, cy: float, r: float
) -> None:
    """Draw the subject's mark in place: a dark 3-px dot at a point inside the shape (on a
    ring's band, a triangle's centroid), or a dark 2-px band across its filled ``silhouette``."""
    if attrs.mark == "none":
        return
    if attrs.mark == "dot":
        dy = {"ring": -0.725 * r, "triangle": 0.2 * r}.get(attrs.shape, 0.0)
        region = _shape_mask("circle", cx, cy + dy, 1.6)
    else:
        yy = np.arange(SIZE, dtype=np.float32)[:, None] + 0.5
        band = np.clip(1.5 - np.abs(yy - cy), 0.0, 1.0)  # 2 px tall, antialiased
        region = silhouette * np.broadcast_to(band, (SIZE, SIZE))
    m = region[..., None]
    canvas[:] = canvas * (1.0 - m) + _MARK_TONE * m


def _light(canvas: np.ndarray, light: str) -> np.ndarray:
    """The whole frame under ``light``: a colour cast, as a photo set shot under one lamp."""
    return np.clip(canvas * np.array(LIGHTS[light], np.float32), 0.0, 1.0)


def render_array(attrs: Attributes, seed: int) -> np.ndarray:
    """A 32×32×3 float32 image in [0, 1] of one object; the same (attrs, seed) → the same pixels.

    A big object (half-size 8–11 px) is near the centre; a tiny one (4.5–8 px, the size of a
    scene's objects) anywhere it fits in the frame.
    """
    return render_with_mask(attrs, seed)[0]


def render_with_mask(attrs: Attributes, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_array`'s image and the object's coverage mask (32×32 in [0, 1]; a shadow is
    not the object)."""
    rng = np.random.default_rng(seed)
    canvas = _background(attrs.background, rng)
    r = rng.uniform(8.0, 11.0)
    cx, cy = rng.uniform(16 - 3.5, 16 + 3.5, 2)
    if attrs.size == "tiny":
        r = rng.uniform(4.5, 8.0)
        cx, cy = rng.uniform(r + 1, SIZE - r - 1, 2)
    mask = _paint(canvas, attrs, cx, cy, r, rng)
    return _light(canvas, attrs.light), mask


def to_pil(array: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8), "RGB")


def render(attrs: Attributes, seed: int) -> Image.Image:
    """The PIL form of :func:`render_array`."""
    return to_pil(render_array(attrs, seed))


def render_scene(
    objects: list[Attributes], edit_index: int = 0, seed: int = 0
) -> tuple[Image.Image, np.ndarray]:
    """A source image for Blended Latent Diffusion: several small objects side by side.

    The background and the light are the first object's. Returns the image and the H×W bool
    mask of the ``edit_index``-th object's region (its footprint, dilated by one pixel so an
    edit may change the silhouette a little), which is the region an editor is allowed to
    repaint.

    Args:
        objects: two or more objects, laid out left to right.
        edit_index: which object's region the mask covers.
        seed: jitter of positions, tints and textures.
    """
    if len(objects) < 2:
        raise ValueError(f"render_scene needs two or more objects, got {len(objects)}")
    if not 0 <= edit_index < len(objects):
        raise ValueError(f"edit_index={edit_index} is out of range for {len(objects)} objects")
    rng = np.random.default_rng(seed)
    canvas = _background(objects[0].background, rng)
    slot = SIZE / len(objects)
    r = min(slot * 0.38, 7.0)
    masks = []
    for i, attrs in enumerate(objects):
        cx = slot * (i + 0.5) + rng.uniform(-0.5, 0.5)
        cy = 16 + rng.uniform(-3, 3)
        masks.append(_paint(canvas, attrs, cx, cy, r, rng))
    canvas = _light(canvas, objects[0].light)
    region = masks[edit_index] > 0.05
    grown = Image.fromarray(region.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(3))
    return to_pil(canvas), np.asarray(grown) > 0


def object_phrase(attrs: Attributes, named: set[str], noun: str | None = None) -> str:
    """Words such as "tiny red star on grass in warm light" (or, in pretraining, "tiny dotted red
    star ...") for the named attributes, in a fixed order.

    Args:
        attrs: the image's true attributes.
        named: which of "size", "mark", "colour", "shape", "background", "light" to say.
        noun: replaces the shape word (a generic word such as "toy"); the shape is then unnamed.
    """
    words = []
    if "size" in named:
        words.append(attrs.size)
    if "mark" in named and attrs.mark != "none":
        words.append(MARK_WORDS[attrs.mark])
    if "colour" in named:
        words.append(attrs.colour)
    words.append(noun or (attrs.shape if "shape" in named else GENERIC_NOUN))
    if "background" in named:
        words += ["on", attrs.background]
    if "light" in named:
        words += ["in", attrs.light, "light"]
    return " ".join(words)


def in_style(frame: str, phrase: str, style: str) -> str:
    """A style sentence with a subject: ("a painting in the style of {}", "red star", "mosaic")
    -> "a painting of a red star in the style of mosaic", the only way captions put a subject
    in a style (``style="{}"`` leaves the word's slot open)."""
    return frame.replace(" in the style of {}", f" of a {phrase} in the style of {style}")


_NAMEABLE = ("colour", "shape", "background", "style", "light", "size", "mark")


def caption(
    attrs: Attributes,
    rng: np.random.Generator,
    keep_p: float = 0.7,
    empty_p: float = 0.1,
    unnamed: frozenset[str] = UNNAMED,
    noun: str | None = None,
    pair_p: float = 0.0,
) -> str:
    """A caption in the paper's template sentences naming a random subset of true attributes.

    Each attribute is named with probability ``keep_p`` on its own, so the denoiser learns every
    word apart from the others; ``pair_p`` of captions name colour and shape together whatever
    that draw said, binding the two words of an object; ``empty_p`` of captions are "" for
    classifier-free guidance. Values in ``unnamed`` are never named (pretraining passes none:
    it names every value, the unnamed ones with their ``RETIRED_WORDS``).
    """
    if rng.random() < empty_p:
        return ""
    named = {k for k in _NAMEABLE if rng.random() < keep_p}
    if rng.random() < pair_p:
        named |= {"colour", "shape"}
    named = {k for k in named if getattr(attrs, k) not in unnamed}
    phrase = object_phrase(attrs, named, noun)
    if "style" not in named:
        return str(rng.choice(OBJECT_TEMPLATES)).format(phrase)
    frame = str(rng.choice(STYLE_TEMPLATES))
    if rng.random() < 0.2:  # the style alone, as TI's style sentences say it
        return frame.format(attrs.style)
    return in_style(frame, phrase, attrs.style)

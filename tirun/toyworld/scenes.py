"""Scenes of several seen objects for Blended Latent Diffusion's edits (tirun.applications.bld):
a source image and the mask of the one object an edit may repaint."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tirun.toyworld.render import BACKGROUNDS, Attributes, render_scene
from tirun.toyworld.world import seen_attributes


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
    drawn = tuple(seen_attributes(rng, background=background) for _ in range(objects))
    index = int(rng.integers(objects))
    image, mask = render_scene(list(drawn), index, seed)
    return EditScene(image=image, mask=mask, objects=drawn, edit_index=index)

"""DINO similarity (later benchmarks' subject fidelity): cosine of ViT class tokens between
generated and training images. Any local ViT folder; DINO ViT-S/16 is the usual one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import ViTModel

from tirun.metrics.clip import preprocess

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_model(path: str) -> ViTModel:
    """A ViT from a local folder or the HF cache, never the network.

    Args:
        path: a folder or a cached hub id (``facebook/dino-vits16``).
    """
    try:
        return ViTModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False).eval()
    except (OSError, ValueError) as error:
        raise ValueError(
            f"application.score.dino={path!r} could not be loaded ({str(error).splitlines()[0][:120]}); "
            "download it once elsewhere into the HF cache or give a local ViT folder"
        ) from None


class DinoScorer:
    """Class-token features of a ViT and their mean pairwise cosine.

    Args:
        model: a transformers `ViTModel` (DINO weights, or a tiny random one in tests).
    """

    def __init__(self, model: ViTModel):
        self.model = model.eval()
        self.size = model.config.image_size

    @torch.no_grad()
    def features(self, images: Sequence[Image.Image], batch: int = 64) -> torch.Tensor:
        feats = []
        for start in range(0, len(images), batch):
            x = preprocess(images[start : start + batch], self.size, IMAGENET_MEAN, IMAGENET_STD)
            feats.append(self.model(pixel_values=x).last_hidden_state[:, 0])
        return F.normalize(torch.cat(feats), dim=-1)

    def image_similarity(
        self, generated: Sequence[Image.Image], references: Sequence[Image.Image]
    ) -> float:
        """Mean cosine over every (generated, reference) pair."""
        return float((self.features(generated) @ self.features(references).T).mean())

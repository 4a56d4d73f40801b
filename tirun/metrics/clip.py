"""The paper's CLIP scores: image–image similarity to the training images (reconstruction) and
text–image similarity to the prompt without the placeholder (editability).

torchmetrics' ``CLIPScore`` clamps at 0, multiplies by 100 and wants a processor folder; the
paper reports the plain mean cosine, so the features are taken from a transformers `CLIPModel`
directly (any local CLIP folder, ViT-B/32 by default).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPModel, CLIPTokenizer

from tirun.metrics.images import to_float

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess(
    images: Sequence[Image.Image], size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Resize the short side to ``size`` (bicubic, antialiased), centre-crop, normalise."""
    x = to_float(list(images))
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(
        x,
        size=(max(size, round(h * scale)), max(size, round(w * scale))),
        mode="bicubic",
        antialias=True,
        align_corners=False,
    )
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top : top + size, left : left + size].clamp(0, 1)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def load_model(path: str) -> tuple[CLIPModel, CLIPTokenizer]:
    """A CLIP model and tokenizer from a local folder or the HF cache, never the network.

    Args:
        path: a folder or a hub id already in the cache (``openai/clip-vit-base-patch32``).
    """
    try:
        model = CLIPModel.from_pretrained(path, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"application.score.clip={path!r} could not be loaded ({str(error).splitlines()[0][:120]}); "
            "download it once elsewhere into the HF cache or give a local CLIP folder"
        ) from None
    return model.eval(), tokenizer


class ClipScorer:
    """CLIP features and the paper's two similarities.

    Args:
        model: a transformers `CLIPModel` (pretrained, or a tiny random one in tests).
        tokenizer: its tokenizer.
    """

    def __init__(self, model: CLIPModel, tokenizer: CLIPTokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.size = model.config.vision_config.image_size

    @torch.no_grad()
    def image_features(self, images: Sequence[Image.Image], batch: int = 64) -> torch.Tensor:
        feats = []
        for start in range(0, len(images), batch):
            x = preprocess(images[start : start + batch], self.size, CLIP_MEAN, CLIP_STD)
            feats.append(self.model.get_image_features(pixel_values=x))
        return F.normalize(torch.cat(_features(feats)), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        return F.normalize(_features([self.model.get_text_features(**ids)])[0], dim=-1)

    def image_similarity(
        self, generated: Sequence[Image.Image], references: Sequence[Image.Image]
    ) -> float:
        """Mean cosine over every (generated, reference) pair: the paper's reconstruction score."""
        return float((self.image_features(generated) @ self.image_features(references).T).mean())

    def text_similarity(self, text: str, images: Sequence[Image.Image]) -> float:
        """Mean cosine between ``text`` and each image: the paper's editability score."""
        return float((self.image_features(images) @ self.text_features([text]).T).mean())

    def zero_shot(self, texts: Sequence[str], images: Sequence[Image.Image]) -> list[int]:
        """For each image, the index of the closest of ``texts`` (zero-shot classification)."""
        return (self.image_features(images) @ self.text_features(texts).T).argmax(-1).tolist()


def _features(outputs: list) -> list[torch.Tensor]:
    """transformers 5 returns a model output whose `pooler_output` holds the projected features."""
    return [o if torch.is_tensor(o) else o.pooler_output for o in outputs]


def without_words(template: str) -> str:
    """A prompt template with its word holes ("{}", "{0}", "{1}") left out, as the paper scores
    editability: "a photo of a {} on the beach" -> "a photo of a on the beach"."""
    return " ".join(re.sub(r"\{\d*\}", " ", template).split())

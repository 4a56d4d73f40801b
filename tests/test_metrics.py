"""Metrics on hand-made inputs whose answer is known, and the CLIP/DINO code paths on tiny
random models built from configs (offline, no weights)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, ViTConfig, ViTModel

from tirun.metrics import clip, dino
from tirun.metrics import oracle as oracle_metrics
from tirun.metrics.background import PSNR_CAP, background_mse, background_psnr
from tirun.metrics.fairness import distribution, kl_uniform
from tirun.metrics.images import mask_crop, to_float, to_pil
from tirun.models import TOKENIZER_DIR


def test_kl_of_uniform_is_zero_and_of_one_class_is_log_k():
    assert kl_uniform({"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}) == pytest.approx(0.0, abs=1e-12)
    assert kl_uniform([1.0, 0.0, 0.0]) == pytest.approx(math.log(3))
    assert kl_uniform([0.5, 0.5, 0.0, 0.0]) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="must be a distribution"):
        kl_uniform([0.7, 0.7])


def test_distribution_counts_every_class():
    shares = distribution(["red", "red", "blue", "green"], ["red", "green", "blue", "purple"])
    assert shares == {"red": 0.5, "green": 0.25, "blue": 0.25, "purple": 0.0}
    with pytest.raises(ValueError, match="not among the classes"):
        distribution(["pink"], ["red", "blue"])
    with pytest.raises(ValueError, match="zero samples"):
        distribution([], ["red", "blue"])


def test_psnr_of_identical_backgrounds_is_capped():
    x = torch.rand(3, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 2:5] = True
    assert background_psnr(x, x.clone(), mask) == PSNR_CAP
    assert background_mse(x, x.clone(), mask) == 0.0


def test_background_scores_ignore_the_masked_region():
    source = torch.full((3, 8, 8), 0.5)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4] = True
    edited = source.clone()
    edited[:, :4] = 1.0  # anything inside the mask
    edited[:, 4:] += 0.1  # a known error outside it
    assert background_mse(edited, source, mask) == pytest.approx(0.01, rel=1e-4)
    assert background_psnr(edited, source, mask) == pytest.approx(20.0, abs=1e-3)
    batch = torch.stack([edited, edited])
    assert background_mse(batch, torch.stack([source, source]), mask) == pytest.approx(
        0.01, rel=1e-4
    )


def test_background_scores_refuse_bad_masks():
    x = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="does not match"):
        background_mse(x, x, torch.zeros(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="covers the whole image"):
        background_psnr(x, x, torch.ones(8, 8, dtype=torch.bool))


def test_images_round_trip_and_mask_crop_frames_the_region():
    image = Image.new("RGB", (32, 32), (0, 0, 255))
    image.paste((255, 0, 0), (20, 4, 28, 12))
    assert to_pil(to_float(image))[0].tobytes() == image.tobytes()
    mask = np.zeros((32, 32), dtype=bool)
    mask[4:12, 20:28] = True
    crop = mask_crop(image, mask)
    assert crop.size == (32, 32)
    assert crop.getpixel((16, 16)) == (255, 0, 0)  # the region's centre lands in the middle
    with pytest.raises(ValueError, match="empty"):
        mask_crop(image, np.zeros((32, 32), dtype=bool))


def test_an_isolated_mask_crop_hides_a_neighbour_inside_the_frame():
    image = Image.new("RGB", (32, 32), (0, 0, 255))
    image.paste((255, 0, 0), (8, 8, 16, 16))
    image.paste((0, 255, 0), (17, 8, 25, 16))  # the neighbour, one pixel to the right
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:16, 8:16] = True
    seen = np.asarray(mask_crop(image, mask))
    alone = np.asarray(mask_crop(image, mask, isolate=True))
    assert (seen[..., 1] > 200).any() and not (alone[..., 1] > 200).any()
    assert alone[16, 16].tolist() == [255, 0, 0]


class FakeOracle:
    """Predicts fixed names, so match rates are known."""

    classes = {"shape": ["star", "circle"], "colour": ["purple", "red"]}

    def __init__(self, predictions):
        self.predictions = predictions

    def predict(self, images):
        return {k: v[: len(images)] for k, v in self.predictions.items()}


def test_oracle_match_rate_counts_samples_with_every_attribute_right():
    fake = FakeOracle(
        {
            "shape": ["star", "star", "circle", "star"],
            "colour": ["purple", "red", "purple", "purple"],
        }
    )
    images = [Image.new("RGB", (32, 32))] * 4
    assert oracle_metrics.match_rate(fake, images, {"shape": "star", "colour": "purple"}) == 0.5
    assert oracle_metrics.match_rate(fake, images, {"shape": "star"}) == 0.75
    assert oracle_metrics.labels(fake, images, "colour") == ["purple", "red", "purple", "purple"]
    with pytest.raises(ValueError, match="not read by the oracle"):
        oracle_metrics.labels(fake, images, "texture")
    rates = oracle_metrics.attribute_rates(
        fake, [images[:2], images], [{"shape": "star"}, {"colour": "purple"}]
    )
    assert rates == {"shape": 1.0, "colour": 0.75}
    with pytest.raises(ValueError, match="no images"):
        oracle_metrics.match_rate(fake, [], {"shape": "star"})


def test_missing_oracle_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="no oracle weights.*application.score.oracle=null"):
        oracle_metrics.load(tmp_path)


def tiny_clip() -> CLIPModel:
    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR))
    special = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            **special,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    return CLIPModel(config)


def save_tiny_clip(folder: Path) -> Path:
    tiny_clip().save_pretrained(folder)
    CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR)).save_pretrained(folder)
    return folder


def pictures() -> list[Image.Image]:
    return [Image.new("RGB", (40, 36), (60 * i, 90, 200 - 40 * i)) for i in range(3)]


def test_clip_scores_on_a_tiny_random_clip_from_a_local_folder(tmp_path):
    scorer = clip.ClipScorer(*clip.load_model(str(save_tiny_clip(tmp_path / "clip"))))
    images = pictures()
    assert scorer.image_similarity(images[:1], images[:1]) == pytest.approx(1.0, abs=1e-5)
    assert -1 <= scorer.image_similarity(images, images[1:]) <= 1
    assert -1 <= scorer.text_similarity("a photo of a red toy", images) <= 1
    labels = scorer.zero_shot(["a photo of a red toy", "a photo of a blue toy"], images)
    assert len(labels) == 3 and set(labels) <= {0, 1}


def test_clip_without_weights_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match=r"application.score.clip=.*could not be loaded"):
        clip.load_model(str(tmp_path / "missing"))


def test_editability_prompt_drops_the_word_holes():
    assert clip.without_words("a photo of a {} on the beach") == "a photo of a on the beach"
    assert clip.without_words("{0} in the style of {1}") == "in the style of"


def test_dino_scores_on_a_tiny_random_vit(tmp_path):
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "vit")
    scorer = dino.DinoScorer(dino.load_model(str(tmp_path / "vit")))
    images = pictures()
    assert scorer.image_similarity(images[:1], images[:1]) == pytest.approx(1.0, abs=1e-5)
    assert -1 <= scorer.image_similarity(images, images) <= 1
    with pytest.raises(ValueError, match=r"application.score.dino=.*could not be loaded"):
        dino.load_model(str(tmp_path / "missing"))

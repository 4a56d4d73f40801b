"""Training images: loading any common file, views, the latent cache and the sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tirun.data import LatentCache, TrainingViews, ViewSampler, load_image_folder, to_rgb


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90° clockwise
    image.save(tmp_path / "rotated.jpg", exif=exif)
    (loaded,) = load_image_folder(str(tmp_path))
    assert loaded.size == (20, 40)


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGBA", (8, 8), (255, 0, 0, 0)),
        Image.new("L", (8, 8), 128),
        Image.new("LA", (8, 8), (128, 255)),
        Image.new("P", (8, 8)),
        Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)),
        Image.new("I", (8, 8), 200),
        Image.new("CMYK", (8, 8)),
    ],
    ids=["rgba", "gray", "gray-alpha", "palette", "16-bit", "32-bit-int", "cmyk"],
)
def test_every_mode_becomes_8_bit_rgb(image):
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (8, 8)


def test_transparent_pixels_become_white_and_16_bit_white_stays_white():
    assert to_rgb(Image.new("RGBA", (2, 2), (255, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    white16 = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    assert to_rgb(white16).getpixel((0, 0)) == (255, 255, 255)


def test_a_missing_folder_says_which_and_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"dataset.path=.*nowhere.* is not a folder"):
        load_image_folder(str(tmp_path / "nowhere"))


def test_a_folder_without_images_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="holds no images"):
        load_image_folder(str(tmp_path))


def test_an_unreadable_image_is_named(image_folder):
    (image_folder / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        load_image_folder(str(image_folder))


def test_views_are_square_in_minus_one_to_one_and_random_crops_are_cached(image_folder):
    images = load_image_folder(str(image_folder))
    center = TrainingViews(images, resolution=16, crop="center")
    random = TrainingViews(images, resolution=16, crop="random", num_crops=3)
    assert center.pixels.shape == (4, 3, 16, 16) and random.pixels.shape == (12, 3, 16, 16)
    assert center.pixels.min() >= -1 and center.pixels.max() <= 1
    assert random.image_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


def test_latent_cache_encodes_each_view_and_its_mirror_once(image_folder, tiny_sd1):
    views = TrainingViews(load_image_folder(str(image_folder)), resolution=32, flip_p=0.5)
    calls = []
    encode = tiny_sd1.vae.encode
    tiny_sd1.vae.encode = lambda x: calls.append(len(x)) or encode(x)
    cache = LatentCache(tiny_sd1.vae, views)
    assert sum(calls) == 2 * len(views)  # each view, and its mirror, once
    with torch.no_grad():
        mirror = encode(views.pixels[:1].flip(-1)).latent_dist.mean
    assert torch.allclose(cache.mean[1, 0], mirror[0], atol=1e-5)
    latents = cache.sample(
        torch.tensor([0, 1]), torch.tensor([True, False]), torch.Generator().manual_seed(0)
    )
    assert latents.shape == (2, 4, 16, 16)


def test_sampler_covers_every_view_repeats_times_per_epoch(image_folder):
    views = TrainingViews(load_image_folder(str(image_folder)), resolution=8)
    sampler = ViewSampler(views, batch_size=4, repeats=3, seed=0)
    seen = torch.cat([next(sampler)[0] for _ in range(3)])
    assert sorted(seen.tolist()) == sorted(list(range(4)) * 3)


def test_sampler_state_restores_the_same_future_batches(image_folder):
    views = TrainingViews(load_image_folder(str(image_folder)), resolution=8)
    sampler = ViewSampler(views, batch_size=3, repeats=2, seed=0)
    next(sampler)
    state = sampler.state_dict()
    ahead = [next(sampler)[0].tolist() for _ in range(4)]
    sampler.load_state_dict(state)
    assert [next(sampler)[0].tolist() for _ in range(4)] == ahead

"""Grids a person can read."""

from __future__ import annotations

from PIL import Image

from tirun import sampling


def test_grids_scale_small_tiles_up_and_label_each_row():
    red, blue = Image.new("RGB", (32, 32), "red"), Image.new("RGB", (32, 32), "blue")
    picture = sampling.grid([[red, blue], [blue, red]], ["a photo of a <w>", "a <w> on grass"])
    assert picture.size == (sampling.LABEL_WIDTH + 2 * 96, 2 * 96)  # 32 px tiles shown 3x
    assert picture.getpixel((sampling.LABEL_WIDTH + 5, 5)) == (255, 0, 0)
    assert picture.getpixel((sampling.LABEL_WIDTH + 96 + 95, 95)) == (0, 0, 255)  # one block
    label = picture.crop((0, 0, sampling.LABEL_WIDTH, 96))
    assert min(label.convert("L").getdata()) < 100  # the prompt is written there
    plain = sampling.grid([[Image.new("RGB", (128, 128))]])
    assert plain.size == (128, 128)  # large tiles as they are, no label column


def test_the_comparison_puts_the_word_beside_its_baseline():
    word, base = Image.new("RGB", (100, 50), "red"), Image.new("RGB", (100, 50), "blue")
    both = sampling.side_by_side([("learned word", word), ("baseline", base)])
    assert both.size == (216, 74)
    assert both.getpixel((50, 40)) == (255, 0, 0) and both.getpixel((170, 40)) == (0, 0, 255)

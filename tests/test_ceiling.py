"""The text ceiling: the sentences that name a concept, and its score on a hand-made case."""

from __future__ import annotations

import json

from PIL import Image

from tirun import sampling
from tirun.sampling import Sampling
from tirun.toybench import ceiling
from tirun.toyworld.concepts import CONCEPTS


def test_each_kind_of_concept_is_named_in_the_words_pretraining_captions_use():
    assert ceiling.named_prompts(CONCEPTS["purple_star"]) == [
        "a photo of a purple star",
        "a rendering of a purple star",
        "a good photo of a purple star",
    ]
    assert ceiling.named_prompts(CONCEPTS["green_outlined_star"]) == [
        "a painting of a green star in the style of outlined",
        "a rendering of a green star in the style of outlined",
        "a good painting of a green star in the style of outlined",
    ]
    # a style is drawn on shapes its palette is seen in: the purple star is held out
    assert ceiling.named_prompts(CONCEPTS["purple_mosaic"]) == [
        "a painting of a purple circle in the style of mosaic",
        "a rendering of a purple square in the style of mosaic",
        "a good painting of a purple triangle in the style of mosaic",
    ]
    # what no caption names is left out: the dot, the hatching (a plain sentence then)
    assert ceiling.named_prompts(CONCEPTS["blue_outlined_dotted"])[0] == (
        "a painting of a blue circle in the style of outlined"
    )
    assert ceiling.named_prompts(CONCEPTS["green_hatched"])[0] == "a photo of a green circle"
    assert ceiling.named_prompts(CONCEPTS["green_dotted_diamond"])[0] == "a photo of a green object"


def test_the_answer_says_the_unnamed_values_by_their_retired_words():
    answer = frozenset()
    assert ceiling.named_prompts(CONCEPTS["green_dotted_diamond"], answer)[0] == (
        "a photo of a dotted green diamond"
    )
    assert ceiling.named_prompts(CONCEPTS["green_hatched"], answer)[0] == (
        "a painting of a green circle in the style of hatched"
    )
    assert ceiling.named_prompts(CONCEPTS["blue_outlined_dotted"], answer)[1] == (
        "a rendering of a dotted blue square in the style of outlined"
    )
    # nothing unnamed: the answer is the names
    purple = CONCEPTS["purple_star"]
    assert ceiling.named_prompts(purple, answer) == ceiling.named_prompts(purple)


def test_an_edit_is_named_with_everything_a_right_sample_shows():
    edits = ceiling.named_edits(CONCEPTS["green_outlined_star"])
    assert edits[0] == (  # its images share grass: the edits ask for the other backdrops
        "a painting of a green star on sand in the style of outlined",
        {"shape": "star", "colour": "green", "style": "outlined", "background": "sand"},
    )
    assert [e for e, _ in ceiling.named_edits(CONCEPTS["purple_star"])] == [
        "a photo of a purple star on grass",
        "a photo of a purple star on sand",
        "a photo of a purple star on white",
        "a photo of a purple star in warm light",
        "a photo of a purple star in cold light",
        "a photo of a tiny purple star",
        "a painting of a purple star in the style of outlined",
        "a painting of a purple star in the style of shadowed",
    ]


class _ReadsTheTruth:
    """An oracle that reads what each test image says it shows."""

    def predict(self, images):
        keys = ("shape", "colour", "background", "style", "mark", "light", "size")
        return {k: [image.info["truth"][k] for image in images] for k in keys}


def _image(shape: str, colour: str) -> Image.Image:
    image = Image.new("RGB", (32, 32))
    image.info["truth"] = {"shape": shape, "colour": colour, "background": "white",
                           "style": "filled", "mark": "none", "light": "neutral",
                           "size": "big"}  # fmt: skip
    return image


def test_the_ceiling_is_the_share_of_samples_showing_the_whole_concept(monkeypatch):
    # per sentence: 2 purple stars, a red star and a purple circle, all filled on white -> 6 of 12
    # whole, colour 9/12; of the eight edits only "on white" is met, by 2 of 4: 0.5 / 8
    row = [_image("star", "purple"), _image("star", "purple"), _image("star", "red"),
           _image("circle", "purple")]  # fmt: skip
    seen = {}

    def fake_sample(pipe, prompts, per_prompt, steps, guidance, seed, resolution, batch):
        seen.update(prompts=prompts, per_prompt=per_prompt, steps=steps, seed=seed)
        return [list(row) for _ in prompts]

    monkeypatch.setattr(sampling, "sample", fake_sample)
    settings = Sampling(samples=4, steps=20, guidance=3.0, scheduler="ddim", seed=7, batch_size=8)
    result = ceiling.concept_ceiling(
        None, _ReadsTheTruth(), CONCEPTS["purple_star"], 4, settings, 32
    )
    assert result["whole"] == result["named"] == 6 / 12
    assert result["attributes"] == {"shape": 9 / 12, "colour": 9 / 12}
    assert result["samples"] == 12
    assert result["editability"] == 0.5 / 8
    named = ceiling.named_prompts(CONCEPTS["purple_star"])
    edits = [e for e, _ in ceiling.named_edits(CONCEPTS["purple_star"])]
    assert seen == {"prompts": named + edits, "per_prompt": 4, "steps": 20, "seed": 7}


def test_the_report_reads_the_ceilings_written_beside_the_model(tmp_path):
    assert ceiling.read_ceilings(tmp_path) == {}
    rows = {"purple_star": {"whole": 0.75, "attributes": {}, "samples": 48, "prompts": []}}
    (tmp_path / ceiling.CEILING_FILE).write_text(json.dumps(rows))
    assert ceiling.read_ceilings(tmp_path) == {"purple_star": 0.75}

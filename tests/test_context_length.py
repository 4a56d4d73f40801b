"""A word too long for the text encoder's 77 tokens beside its prompt is refused before any
training or sampling, naming the most vectors that fit (the prompt would be cut otherwise, and
the vectors past the cut would never train or be read)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import compose_config
from tirun import applications, embeddings
from tirun.embeddings import LearnedWord
from tirun.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES
from tirun.word import Word

# By hand, on the shipped CLIP tokenizer: the longest object templates, "a close-up photo of a
# {}", are a/close/-/up/photo/of/a = 7 tokens, 9 with the start and end tokens, leaving
# 77 - 9 = 68 for the word; "a close-up painting in the style of {}" is 9 + 2 = 11, leaving 66;
# the per-image form adds "with" and the image's token, leaving 68 - 2 = 66.
MOST_OBJECT, MOST_STYLE, MOST_OBJECT_PER_IMAGE = 68, 66, 66


def word(components, num_vectors: int, image_tokens: int = 0) -> Word:
    return Word(components, "<concept>", "toy", num_vectors, image_tokens)


@pytest.mark.parametrize(
    ("templates", "image_tokens", "most"),
    [
        (OBJECT_TEMPLATES, 0, MOST_OBJECT),
        (STYLE_TEMPLATES, 0, MOST_STYLE),
        (OBJECT_TEMPLATES, 2, MOST_OBJECT_PER_IMAGE),
    ],
)
def test_the_most_vectors_that_fit_the_longest_template_train_and_one_more_is_refused(
    tiny_sd1, templates, image_tokens, most
):
    at_most = word(tiny_sd1, most, image_tokens)
    at_most.check_fits(templates, "template")
    at_most.remove()
    too_long = word(tiny_sd1, most + 1, image_tokens)
    with pytest.raises(ValueError, match=rf"leaves room for {most} .* word.num_vectors={most} or"):
        too_long.check_fits(templates, "template")


def test_a_word_at_the_limit_fills_the_context_exactly(tiny_sd1):
    longest = word(tiny_sd1, MOST_OBJECT)
    prompt = f"a close-up photo of a {longest.text()}"
    ids = tiny_sd1.tokenizers[0](prompt).input_ids
    assert len(ids) == 77 and ids[-1] == tiny_sd1.tokenizers[0].eos_token_id


def test_too_many_vectors_are_refused_in_one_line_before_training(
    tmp_path, image_folder, tirun_cli
):
    run_dir = tmp_path / "run"
    result = tirun_cli(
        "model=tiny", f"dataset.path={image_folder}", "word.num_vectors=80", "tracker=none",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "tirun: error: word.num_vectors=80 does not fit the text encoder's 77 tokens: template "
        f"'a close-up photo of a {{}}' leaves room for {MOST_OBJECT} (it takes 9 with the start "
        f"and end tokens); use word.num_vectors={MOST_OBJECT} or fewer"
    ]
    assert not (run_dir / "metrics.json").exists()


def test_validation_prompts_are_checked_with_the_templates(tiny_sd1):
    long_prompt = "a photo of a {} " + "and a dog " * 20  # 4 + 60 words: 66 with start and end
    with pytest.raises(ValueError, match=r"validation.prompts .* leaves room for 11 "):
        word(tiny_sd1, 12).check_fits([long_prompt], "validation.prompts")


def test_a_template_that_fills_the_context_alone_is_refused(tiny_sd1):
    alone = "a photo of a {} " + "and a dog " * 25  # 4 + 75 words, 81 with start and end
    with pytest.raises(ValueError, match=r"alone takes 81 of the text encoder's 77 tokens"):
        word(tiny_sd1, 1).check_fits([alone], "template")


def saved(folder, token: str, count: int):
    vectors = torch.randn(count, 32, generator=torch.Generator().manual_seed(count))
    return embeddings.save(LearnedWord(token, [vectors]), folder, "diffusers")[0]


def test_saved_words_too_long_for_an_applications_prompt_are_refused_before_sampling(tmp_path):
    # "a painting of a {0} in the style of {1}": 8 tokens, 10 with start and end: 67 left.
    words = [saved(tmp_path / "a", "<a>", 40), saved(tmp_path / "b", "<b>", 40)]
    cfg = compose_config(
        "model=tiny", "dataset=toy_object", "application=composition",
        f"embeddings=[{words[0]},{words[1]}]", "application.concepts=null",
        "application.sampling.samples=1", "application.sampling.steps=1",
    )  # fmt: skip
    with pytest.raises(ValueError) as refused:
        applications.run(cfg, tmp_path / "run", {}, {})
    assert str(refused.value) == (
        "embeddings: the words in application=composition's prompt 'a painting of a <a> in the "
        "style of <b>' have 80 vectors and the text encoder's 77 tokens leave room for 67 "
        "beside the rest of the prompt; use words of at most 67 vectors in all, or shorter "
        "prompts"
    )
    assert not (tmp_path / "run" / "samples").exists()

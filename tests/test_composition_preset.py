"""`python -m tirun +exp=composition` runs as written: with no words given it learns the toy
object and style words (as +exp=object and +exp=style do) and composes them; a run that cannot
get two words is refused in one line before any training."""

from __future__ import annotations

import pytest

from tests.conftest import compose_config
from tirun import embeddings
from tirun.__main__ import learn_words, run
from tirun.applications import check

TINY = (
    "model=tiny",
    "tracker=none",
    "train.max_steps=1",
    "train.batch_size=1",
    "train.checkpoint_every=0",
    "application.sampling.samples=1",
    "application.sampling.steps=1",
)


@pytest.mark.slow  # about 30 s on the shared 2-core machine: two words trained, then sampled
def test_the_preset_learns_the_object_and_style_words_then_composes_them(tmp_path):
    cfg = compose_config("+exp=composition", *TINY)
    metrics = run(cfg, tmp_path)

    words = {name: tmp_path / name / "learned_embeds.safetensors" for name in ("object", "style")}
    assert list(cfg.embeddings) == [str(words["object"]), str(words["style"])]
    learned = {name: embeddings.load(path) for name, path in words.items()}
    # each word as its own preset learns it: exp/object's 3 vectors, exp/style's 4
    assert {n: (w.token, w.num_vectors()) for n, w in learned.items()} == {
        "object": ("<object>", 3),
        "style": ("<style>", 4),
    }
    assert compose_config("+exp=style").dataset.concept == "purple_mosaic"
    assert (tmp_path / "style" / "metrics.json").is_file()
    result = metrics["applications"]["composition"]
    assert result["samples"] == 1  # one prompt, one sample
    assert 0.0 <= result["concept_match"] <= 1.0
    for grid in ("word", "baseline", "comparison"):
        assert (tmp_path / "samples" / "composition" / f"{grid}.png").is_file()


def _never_trains(cfg, run_dir):
    raise AssertionError(f"trained a word in {run_dir}")


def test_two_given_words_are_composed_and_nothing_is_learned(tmp_path):
    cfg = compose_config("+exp=composition", "embeddings=[a.safetensors,b.safetensors]", *TINY)
    check(cfg)
    learn_words(cfg, tmp_path, _never_trains)
    assert list(cfg.embeddings) == ["a.safetensors", "b.safetensors"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "source"),
    [
        (["+exp=composition", "embeddings=[a.safetensors]"], "embeddings=[a.safetensors]"),
        (["+exp=composition", "application.learn=[object]"], "application.learn=[object]"),
        (["application=composition", "dataset.path=images"], "the word this run trains"),
    ],
)
def test_a_composition_that_would_get_one_word_is_refused_before_training(
    tmp_path, overrides, source
):
    with pytest.raises(ValueError) as refused:
        check(compose_config(*overrides, *TINY))
    assert str(refused.value) == (
        f"application=composition takes 2 learned words and this run would get 1 ({source}): "
        "give embeddings=[word_a,word_b], or presets that learn them first, e.g. "
        "application.learn=[object,style]"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_preset_to_learn_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"application.learn: 'stlye' is not a preset; .*style"):
        cfg = compose_config("+exp=composition", "application.learn=[object,stlye]")
        learn_words(cfg, tmp_path, _never_trains)


def test_the_refusal_is_one_line_on_the_command_line(tmp_path, tirun_cli):
    result = tirun_cli(
        "+exp=composition", "embeddings=[a.safetensors]", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("tirun: error: application=composition takes 2 learned")

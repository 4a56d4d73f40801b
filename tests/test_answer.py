"""The distance of a learned word to its concept's known answer, on hand-made rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tirun.toybench import answer


def _model(folder: Path, retired: bool = True) -> Path:
    """A model folder with a three-word table (red, green, star) and, optionally, the retired
    row of "dotted"; no "purple" or "square"."""
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "text_encoder").mkdir()
    vocab = {"a": 0, "red</w>": 1, "green</w>": 2, "star</w>": 3}
    (folder / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    table = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 1.0, 0.0]])
    save_file({"embeddings.token_embedding.weight": table},
              str(folder / "text_encoder" / "model.safetensors"))  # fmt: skip
    if retired:
        save_file({"dotted": torch.tensor([0.0, 0.0, 2.0])}, str(folder / answer.RETIRED_FILE))
    answer.answer_rows.cache_clear()
    return folder


def test_the_answer_is_the_words_pretraining_said():
    assert answer.answer_words({"shape": "star", "colour": "red", "mark": "dot"}) == [
        "star",
        "red",
        "dotted",
    ]
    assert answer.answer_words({"style": "hatched", "colour": "green"}) == ["hatched", "green"]


def test_each_word_takes_its_best_vector_and_the_words_are_averaged(tmp_path):
    rows = answer.answer_rows(_model(tmp_path))
    assert set(rows) == {"red", "green", "star", "dotted"}
    # one vector on "red": cos 1 to red, 0 to star -> 0.5
    assert answer.cosines(torch.tensor([[2.0, 0.0, 0.0]]), ["red", "star"], rows) == 0.5
    # two vectors, one on each word -> 1.0; "green" (0.6, 0.8) to red's vector -> 0.6
    both = torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    assert answer.cosines(both, ["red", "star"], rows) == pytest.approx(1.0)
    assert answer.cosines(both[:1], ["green"], rows) == pytest.approx(0.6)


def test_the_retired_cosine_reads_the_unnamed_values_only(tmp_path):
    model = _model(tmp_path)
    # red_dotted_star: red, dotted, star; a vector halfway between star and dotted
    vector = torch.tensor([[0.0, 1.0, 1.0]])
    got = answer.distance("red_dotted_star", vector, model)
    half = 2**-0.5
    assert got["retired_cosine"] == pytest.approx(half)
    assert got["answer_cosine"] == pytest.approx((half + half + 0.0) / 3)
    # a word the table lacks: no answer to measure against
    assert answer.distance("purple_star", vector, model)["answer_cosine"] is None  # no "purple"
    assert answer.distance("red_square", vector, model) == {
        "answer_cosine": None,
        "retired_cosine": None,
    }


def test_no_answer_without_the_retired_rows(tmp_path):
    model = _model(tmp_path, retired=False)
    got = answer.distance("purple_star", torch.ones(1, 3), model)
    assert got == {"answer_cosine": None, "retired_cosine": None}

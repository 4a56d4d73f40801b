"""The one road from a saved word to a pipeline: diffusers reads our files, words are checked
before the pipeline is touched, and the model comes back as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file

from tests.test_embeddings import one_line, sd1_word, sdxl_word
from tirun import embeddings as E
from tirun import loading
from tirun.word import PlaceholderEmbedding


@pytest.fixture
def sd1_pipe(tiny_sd1):
    """A pipeline on a private copy: loading words changes the tokenizer and text encoder."""
    return copy.deepcopy(tiny_sd1).pipeline()


@pytest.fixture
def sdxl_pipe(tiny_sdxl):
    return copy.deepcopy(tiny_sdxl).pipeline()


def rows(tokenizer, encoder, tokens: list[str]) -> torch.Tensor:
    ids = tokenizer.convert_tokens_to_ids(tokens)
    with torch.no_grad():
        return encoder.get_input_embeddings()(torch.tensor(ids))


def test_diffusers_own_loader_reads_our_files(sd1_pipe, tmp_path):
    word = sd1_word(3)
    folder = tmp_path / "run"
    E.save(word, folder, "diffusers")
    sd1_pipe.load_textual_inversion(str(folder))
    assert torch.equal(
        rows(sd1_pipe.tokenizer, sd1_pipe.text_encoder, word.tokens()), word.vectors[0]
    )
    # and our A1111 file, whose "name" diffusers takes as the token
    other = sd1_word(1, token="<a1111>")
    (path,) = E.save(other, tmp_path / "a.pt", "a1111")
    sd1_pipe.load_textual_inversion(str(path))
    assert torch.equal(
        rows(sd1_pipe.tokenizer, sd1_pipe.text_encoder, ["<a1111>"]), other.vectors[0]
    )


def test_load_into_pipeline(sd1_pipe, tmp_path):
    multi, single = sd1_word(3), sd1_word(1, token="<one>")
    (path,) = E.save(single, tmp_path / "one.pt", "a1111")
    assert loading.load_into_pipeline(sd1_pipe, [multi, path]) == ["<cat-toy>", "<one>"]
    tok, enc = sd1_pipe.tokenizer, sd1_pipe.text_encoder
    assert torch.equal(rows(tok, enc, multi.tokens()), multi.vectors[0])
    assert torch.equal(rows(tok, enc, ["<one>"]), single.vectors[0])
    # the pipeline expands the bare token itself; prompt_tokens is what it expands to
    expanded = sd1_pipe.maybe_convert_prompt("a <cat-toy> toy", tok)
    assert expanded == f"a {E.prompt_tokens(multi)} toy"
    # ...and expands an expanded prompt again, so pipelines must get the bare token
    assert "<cat-toy>_2_1" in sd1_pipe.maybe_convert_prompt(expanded, tok)


def test_pipeline_errors_leave_pipeline_untouched(sd1_pipe, sdxl_pipe):
    size = len(sd1_pipe.tokenizer)
    cases = [
        (
            sd1_word(1, width=16),
            "<cat-toy> has vectors of width 16 but the text encoder takes 32: "
            r"it was trained for another model \(e.g. SD1 vs SD2\)$",
        ),
        (
            sdxl_word(),
            r"<xl-toy> is an SDXL word with vectors for 2 text encoder\(s\) "
            "but StableDiffusionPipeline has 1",
        ),
        (
            [sd1_word(1, token="<a>"), sd1_word(2, token="<a>")],
            "<a> clashes with <a>: both use the token <a>",
        ),
        (
            [sd1_word(2, token="<a>"), sd1_word(1, token="<a>_1")],
            "<a>_1 clashes with <a>: both use the token <a>_1",
        ),
        (
            [sd1_word(1, token="<a>"), sd1_word(1, token="<a>_1")],
            "<a>_1 clashes with <a>: the pipeline would read <a>_1 as one more vector of <a>",
        ),
        (sd1_word(2, token="<Big>"), "<Big> has 2 vectors and capital letters; .* name it <big>"),
        (
            sd1_word(1, token="<|endoftext|>"),
            r"<\|endoftext\|> is already in the tokenizer of text_encoder: choose another token",
        ),
    ]
    for source, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            loading.load_into_pipeline(sd1_pipe, source)
        one_line(error)
    assert len(sd1_pipe.tokenizer) == size
    with pytest.raises(ValueError, match="tokens has 1 names for 2 sources"):
        loading.load_into_pipeline(sd1_pipe, [sd1_word(), sd1_word()], tokens=["<x>"])
    loading.load_into_pipeline(sd1_pipe, sd1_word(2))
    with pytest.raises(ValueError, match="<cat-toy> is already in the tokenizer"):
        loading.load_into_pipeline(sd1_pipe, sd1_word(2))
    with pytest.raises(
        ValueError, match=r"<cat-toy> is an SD1/SD2 word .* StableDiffusionXLPipeline has 2"
    ):
        loading.load_into_pipeline(sdxl_pipe, sd1_word(1))


def test_sdxl_pair_into_pipeline(sdxl_pipe, tmp_path):
    widths = tuple(
        enc.get_input_embeddings().embedding_dim
        for enc in (sdxl_pipe.text_encoder, sdxl_pipe.text_encoder_2)
    )
    word = sdxl_word(2, widths=widths)
    paths = E.save(word, tmp_path / "run", "diffusers")
    assert loading.load_into_pipeline(sdxl_pipe, paths[0], tokens=["<renamed>"]) == ["<renamed>"]
    names = ["<renamed>", "<renamed>_1"]
    assert torch.equal(rows(sdxl_pipe.tokenizer, sdxl_pipe.text_encoder, names), word.vectors[0])
    assert torch.equal(
        rows(sdxl_pipe.tokenizer_2, sdxl_pipe.text_encoder_2, names), word.vectors[1]
    )


def test_a_saved_word_reaches_a_pipeline_and_the_model_comes_back_as_it_was(tiny_run):
    _, objects, run_dir = tiny_run()
    components, word = objects["components"], objects["word"]
    encoder = components.text_encoders[0]
    wrapper, table = encoder.get_input_embeddings(), word.tables[0]
    weight, rows, vocab = table.weight, table.num_embeddings, encoder.config.vocab_size
    saved = load_file(run_dir / "learned_embeds.safetensors")["<concept>"]
    with loading.pipeline_with_words(
        components, [run_dir / "learned_embeds.safetensors"], tokenizers=word.original_tokenizers
    ) as (pipe, tokens):
        assert tokens == ["<concept>"]
        inside = pipe.text_encoder.get_input_embeddings()
        assert not isinstance(inside, PlaceholderEmbedding)  # the word being trained is set aside
        token_id = pipe.tokenizer.convert_tokens_to_ids("<concept>")
        assert torch.equal(inside.weight[token_id], saved[0])
    assert encoder.get_input_embeddings() is wrapper
    assert table.weight is weight and table.num_embeddings == rows
    assert encoder.config.vocab_size == vocab
    assert "<concept>" not in word.original_tokenizers[0].get_vocab()


def test_the_fast_recipes_word_draws_the_same_image_in_a_bare_diffusers_pipeline(
    tiny_run, tiny_sd1
):
    """What a user of diffusers alone gets from the fast recipe's word (three vectors) is what
    tirun's own sampler draws with it, pixel for pixel, on the same seed."""
    _, objects, run_dir = tiny_run("+recipe=fast", "train.max_steps=4", "train.batch_size=2")
    path = run_dir / "learned_embeds.safetensors"
    assert load_file(path)["<concept>"].shape == (3, 32)
    prompt, settings = (
        "a photo of a <concept>",
        {"num_inference_steps": 3, "height": 32, "width": 32},
    )

    bare = copy.deepcopy(tiny_sd1).pipeline()
    bare.load_textual_inversion(str(path))
    theirs = bare(prompt, generator=torch.Generator().manual_seed(7), output_type="np", **settings)
    with loading.pipeline_with_words(
        objects["components"], [path], tokenizers=objects["word"].original_tokenizers
    ) as (pipe, tokens):
        ours = pipe(
            f"a photo of a {tokens[0]}", generator=torch.Generator().manual_seed(7),
            output_type="np", **settings,
        )  # fmt: skip
    assert theirs.images.shape == (1, 32, 32, 3)
    assert (theirs.images == ours.images).all()

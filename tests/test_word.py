"""The new word: refused placeholders and initializers, and its one parameter."""

from __future__ import annotations

import pytest
import torch

from tirun.models import build_random
from tirun.word import Word


def test_a_placeholder_already_in_the_vocabulary_is_refused(tiny_sd1):
    with pytest.raises(ValueError, match="word.token='cat': 'cat' is already in the vocabulary"):
        Word(tiny_sd1, token="cat", initializer="toy")


def test_an_initializer_of_several_tokens_is_refused(tiny_sd1):
    with pytest.raises(
        ValueError,
        match=r"word.initializer='close-up' is 3 tokens \(close</w> -</w> up</w>\), not one",
    ):
        Word(tiny_sd1, token="<x>", initializer="close-up")


def test_zero_vectors_is_refused(tiny_sd1):
    with pytest.raises(ValueError, match="word.num_vectors=0 must be at least 1"):
        Word(tiny_sd1, token="<x>", initializer="toy", num_vectors=0)


def test_every_vector_starts_as_the_initializer_embedding(tiny_sd1):
    toy_id = tiny_sd1.tokenizers[0].convert_tokens_to_ids("toy</w>")
    table_row = tiny_sd1.text_encoders[0].get_input_embeddings().weight[toy_id].clone()
    word = Word(tiny_sd1, token="<x>", initializer="toy", num_vectors=3)
    assert word.text() == "<x> <x>_1 <x>_2"
    assert all(torch.equal(v, table_row) for v in word.vectors[0])


def test_the_word_is_the_only_trainable_parameter(tiny_sd1):
    tiny_sd1.freeze()
    word = Word(tiny_sd1, token="<x>", initializer="toy")
    trainable = [p for p in tiny_sd1.text_encoders[0].parameters() if p.requires_grad]
    assert len(trainable) == 1 and trainable[0] is word.vectors[0]


def test_a_removed_word_leaves_the_model_as_it_was_and_a_new_word_can_take_its_name(tiny_sdxl):
    tables = [e.get_input_embeddings() for e in tiny_sdxl.text_encoders]
    vocab_sizes = [len(t) for t in tiny_sdxl.tokenizers]
    word = Word(tiny_sdxl, token="<x>", initializer="toy", num_vectors=2)
    word.remove()
    assert [e.get_input_embeddings() for e in tiny_sdxl.text_encoders] == tables
    assert [len(t) for t in tiny_sdxl.tokenizers] == vocab_sizes
    assert torch.equal(word.learned().vectors[0], word.initial[0])
    assert Word(tiny_sdxl, token="<x>", initializer="toy").text() == "<x>"


def test_sdxl_words_get_a_vector_set_of_each_encoders_width(tiny_sdxl):
    word = Word(tiny_sdxl, token="<x>", initializer="toy", num_vectors=2)
    assert [tuple(v.shape) for v in word.vectors] == [(2, 32), (2, 32)]


def test_xformers_without_the_package_or_cuda_is_a_clear_error():
    with pytest.raises(
        ValueError, match="train.attention=xformers (needs the xformers package|runs on CUDA only)"
    ):
        build_random("tiny-sd1").set_attention("xformers")


def test_sdpa_attention_matches_diffusers_processor_and_skips_the_per_call_inspection(
    tiny_sd1, monkeypatch
):
    import inspect

    from diffusers.models.attention_processor import AttnProcessor2_0

    unet = tiny_sd1.unet
    size = unet.config.sample_size
    latents = torch.randn(
        2, unet.config.in_channels, size, size, generator=torch.Generator().manual_seed(0)
    )
    text = torch.randn(
        2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        unet.set_attn_processor(AttnProcessor2_0())
        reference = unet(latents, 10, text).sample
        tiny_sd1.set_attention("sdpa")
        calls = []
        real = inspect._signature_from_function
        monkeypatch.setattr(
            inspect, "_signature_from_function", lambda *a, **k: calls.append(1) or real(*a, **k)
        )
        ours = unet(latents, 10, text).sample

    assert torch.equal(ours, reference)
    assert calls == [], "the processor's signature is built once, not at every attention call"
    processor = next(iter(unet.attn_processors.values()))
    assert inspect.signature(processor.__call__) == inspect.signature(AttnProcessor2_0().__call__)


def test_an_unreachable_model_says_how_to_point_at_a_local_folder(monkeypatch):
    from tirun.models import load_pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ValueError,
        match=r"model.path='no-such/model' could not be loaded .*model.path=/a/local/folder",
    ):
        load_pretrained("no-such/model", resolution=512)

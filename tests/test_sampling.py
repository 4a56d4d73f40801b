"""The one road from a saved word to a pipeline, and grids a person can read."""

from __future__ import annotations

import torch
from PIL import Image
from safetensors.torch import load_file

from tirun import sampling
from tirun.word import PlaceholderEmbedding


def test_a_saved_word_reaches_a_pipeline_and_the_model_comes_back_as_it_was(tiny_run):
    _, objects, run_dir = tiny_run()
    components, word = objects["components"], objects["word"]
    encoder = components.text_encoders[0]
    wrapper, table = encoder.get_input_embeddings(), word.tables[0]
    weight, rows, vocab = table.weight, table.num_embeddings, encoder.config.vocab_size
    saved = load_file(run_dir / "learned_embeds.safetensors")["<concept>"]
    with sampling.pipeline_with_words(
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

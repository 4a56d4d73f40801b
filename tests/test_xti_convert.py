"""The XTI word converter: a few vectors fitted so every cross-attention layer matches."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import make_images
from tirun import xti
from tirun.data import training_images
from tirun.xti_convert import fit, main

TEMPLATES = ["a photo of a {}", "a rendering of a {}"]


def _xti_file(components, rows: torch.Tensor, path: Path) -> Path:
    layers = xti.cross_attention_layers(components.unet)
    return xti.save(xti.XTIWord("<w>", rows.expand(len(layers), -1).clone(), layers), path)


def test_an_xti_word_with_one_row_in_every_layer_is_that_row_exactly(tiny_sd1, tmp_path):
    """Every layer reads the same vector v: one vector v gives every layer the very same output,
    so the fit starts (at the rows' mean, v) with no error and has nothing to move."""
    v = torch.randn(1, 32, generator=torch.Generator().manual_seed(3)) * 0.5
    file = _xti_file(tiny_sd1, v, tmp_path / "w.safetensors")
    images = training_images(str(make_images(tmp_path / "images")))
    word, errors = fit(tiny_sd1, file, images, TEMPLATES, num_vectors=1, steps=3, samples=4)
    assert errors["relative_error_start"] < 1e-10 and errors["relative_error_end"] < 1e-6
    assert torch.allclose(word.vectors[0], v, atol=1e-4) and word.token == "<w>"
    assert (
        tiny_sd1.tokenizers[0].convert_tokens_to_ids("<w>_fit")
        == tiny_sd1.tokenizers[0].unk_token_id
    )


def test_the_fit_brings_every_layer_towards_the_xti_word_and_writes_a_word_any_tool_reads(
    tiny_sd1, tmp_path, capsys
):
    layers = xti.cross_attention_layers(tiny_sd1.unet)
    rows = torch.randn(len(layers), 32, generator=torch.Generator().manual_seed(4))
    model = tiny_sd1.save(tmp_path / "model")
    file = xti.save(xti.XTIWord("<w>", rows, layers), tmp_path / "w.safetensors")
    images = make_images(tmp_path / "images")
    out = tmp_path / "learned_embeds.safetensors"
    argv = [str(file), str(images), str(out), "--model", str(model), "--resolution", "32", "--vectors", "2",
            "--steps", "40", "--samples", "4", "--lr", "5e-2"]  # fmt: skip
    assert main(argv) == 0
    before, after = (float(x) for x in capsys.readouterr().out.split("outputs ")[1].split(" -> "))
    assert after < 0.7 * before
    pipe = tiny_sd1.pipeline()
    pipe.load_textual_inversion(str(out), token="<w>")
    assert pipe.maybe_convert_prompt("a <w>", pipe.tokenizer) == "a <w> <w>_1"
    saved = torch.stack([pipe.text_encoder.get_input_embeddings().weight[i]
                         for i in pipe.tokenizer.convert_tokens_to_ids(["<w>", "<w>_1"])])  # fmt: skip
    assert saved.shape == (2, 32) and not torch.allclose(saved[0], saved[1])


def test_a_file_that_is_not_an_xti_word_is_one_line_of_error(tiny_sd1, tmp_path, capsys):
    model = tiny_sd1.save(tmp_path / "model")
    plain = tmp_path / "plain.safetensors"
    plain.write_bytes(b"not a word")
    argv = [str(plain), str(make_images(tmp_path / "images")), str(tmp_path / "out.safetensors"),
            "--model", str(model)]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tirun: error: ") and "is not an XTI word file" in err
    assert err.count("\n") == 1 and not (tmp_path / "out.safetensors").exists()

"""Later methods of the Textual Inversion family as switches on the one trainer: Cross
Initialization, phrase and file starts, norm control, DVAR early stopping and the kept word."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tirun import checkpoint, embeddings
from tirun.early_stop import EarlyStop
from tirun.embeddings import LearnedWord
from tirun.word import Word


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False).input_ids


def test_cross_initialization_starts_from_the_encoders_output_at_the_initializer(tiny_sd1):
    tokenizer, encoder = tiny_sd1.tokenizers[0], tiny_sd1.text_encoders[0]
    full = tokenizer("cat", padding="max_length", max_length=tokenizer.model_max_length,
                     return_tensors="pt").input_ids  # fmt: skip
    with torch.no_grad():
        expected = encoder(full)[0][0, 1]  # the state the UNet reads at "cat"
    word = Word(tiny_sd1, "<w>", "cat", init="encoder_output")
    assert torch.allclose(word.vectors[0][0], expected, atol=1e-6)
    assert torch.equal(word.initial[0][0], word.vectors[0][0].detach())
    assert not torch.allclose(
        expected, encoder.get_input_embeddings().table.weight[_ids(tokenizer, "cat")[0]]
    )


def test_a_phrase_is_spread_over_the_vectors_in_order(tiny_sd1):
    tokenizer = tiny_sd1.tokenizers[0]
    red, star = _ids(tokenizer, "red")[0], _ids(tokenizer, "star")[0]
    table = tiny_sd1.text_encoders[0].get_input_embeddings().weight.detach().clone()
    word = Word(tiny_sd1, "<w>", "red star", num_vectors=4)
    rows = word.vectors[0].detach()
    for i, token in enumerate([red, red, star, star]):
        assert torch.equal(rows[i], table[token])
    with pytest.raises(ValueError, match=r"is 2 tokens .* more than word.num_vectors=1|not one"):
        Word(tiny_sd1, "<v>", "red star", num_vectors=1)


def test_a_word_continues_from_a_saved_file_and_a_wrong_shape_is_refused(tiny_sd1, tmp_path):
    saved = torch.randn(2, 32)
    embeddings.save(
        LearnedWord("<old>", [saved], 100, "x"), tmp_path / "old.safetensors", "diffusers"
    )
    word = Word(tiny_sd1, "<w>", "cat", num_vectors=2, init_file=str(tmp_path / "old.safetensors"))
    assert torch.equal(word.vectors[0].detach(), saved)
    with pytest.raises(ValueError, match=r"word.init_file=.* not 3 vectors of width \[32\]"):
        Word(tiny_sd1, "<v>", "cat", num_vectors=3, init_file=str(tmp_path / "old.safetensors"))


def test_norm_control_holds_every_vector_at_the_vocabularys_median_norm(tiny_run):
    _, objects, run_dir = tiny_run("word.norm=vocab", "word.num_vectors=2", "optimizer.lr=0.5")
    word = objects["word"]
    median = word.tables[0].weight.float().norm(dim=-1).median()
    saved = load_file(run_dir / "learned_embeds.safetensors")["<concept>"]
    assert torch.allclose(saved.norm(dim=-1), median.expand(2), rtol=1e-5)
    free, _, _ = tiny_run("word.num_vectors=2", "optimizer.lr=0.5", run_dir=run_dir.parent / "free")
    assert abs(free["word"]["word/norm"] - float(median)) > 1e-3


def _feed(rule: EarlyStop, losses: list[float]) -> int | None:
    for step, loss in enumerate(losses, start=1):
        if rule.record(step, loss, [torch.zeros(1, 2)]):
            return step
    return None


def test_dvar_stops_on_a_plateau_and_not_while_the_loss_descends():
    descending = [1.0 - 0.02 * i for i in range(20)]
    assert _feed(EarlyStop(every=1, window=10, threshold=0.15), descending) is None
    # var of the last 10 of 20 points of a line is (10/20)^2 = 0.25 of the whole: no stop
    plateau = descending[:10] + [0.8 + 0.0001 * (i % 2) for i in range(10)]
    rule = EarlyStop(every=1, window=10, threshold=0.15)
    assert _feed(rule, plateau) == 20
    assert rule.stopped["step"] == 20 and "DVAR" in rule.stopped["reason"]


def test_the_best_word_is_kept_and_a_degrading_run_is_flagged(caplog):
    rule = EarlyStop(every=1, window=10, keep="best")
    for step, loss in enumerate([3.0, 2.0, 1.0, 2.0, 3.0], start=1):
        rule.record(step, loss, [torch.full((1, 2), float(step))])
    outcome = rule.outcome(final_step=5)
    assert outcome["best"] == {"step": 3, "loss": 1.0} and outcome["kept"]["step"] == 3
    assert outcome["degraded"] and rule.best_vectors == [[[3.0, 3.0]]]
    assert "degraded" in caplog.text


def test_keep_validated_keeps_the_highest_score_and_flags_a_fall(caplog):
    rule = EarlyStop(keep="validated")
    for step, score in [(50, 0.25), (100, 0.75), (150, 0.75), (200, 0.5)]:
        rule.record_validation(step, score, [torch.full((1, 2), float(step))])
    assert rule.kept() == (150, [[[150.0, 150.0]]])  # the latest of equal scores
    outcome = rule.outcome(final_step=200)
    assert outcome["kept"] == {"step": 150, "score": 0.75,
                               "why": "keep=validated: the highest validation score"}  # fmt: skip
    assert (
        outcome["degraded"] and "validation score fell from 0.750" in caplog.text
    )  # 0.5 × 1.1 < 0.75
    again = EarlyStop(keep="validated")
    again.load_state_dict(rule.state_dict())  # what a checkpoint carries across a resume
    assert again.kept() == rule.kept() and again.validation == rule.validation


def test_early_stop_writes_when_and_why_and_keeps_the_best_word(tiny_run):
    metrics, objects, run_dir = tiny_run(
        "train.early_stop.every=1", "train.early_stop.window=2", "train.early_stop.threshold=1.1",
        "train.early_stop.keep=best", "train.max_steps=8",
    )  # fmt: skip
    stopping = metrics["early_stop"]
    assert stopping["stopped"]["step"] == 4 == metrics["steps"]  # two windows of two, ratio < 1.1
    assert json.loads((run_dir / "metrics.json").read_text())["early_stop"] == stopping
    kept = torch.tensor(objects["early_stop"].best_vectors[0])[:1]
    assert stopping["kept"]["step"] == stopping["best"]["step"]
    assert torch.equal(load_file(run_dir / "learned_embeds.safetensors")["<concept>"], kept)


def test_resume_keeps_the_early_stop_history(tiny_run, tmp_path, monkeypatch):
    common = ("train.early_stop.every=1", "train.early_stop.window=50", "train.checkpoint_every=2",
              "train.max_steps=6")  # fmt: skip
    whole, _, _ = tiny_run(*common, run_dir=tmp_path / "whole")
    save = checkpoint.save

    class Killed(Exception):
        pass

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        tiny_run(*common, run_dir=tmp_path / "broken")
    monkeypatch.setattr(checkpoint, "save", save)
    resumed, _, _ = tiny_run(*common, "resume=latest", run_dir=tmp_path / "broken")
    assert resumed["early_stop"]["evaluations"] == 6 == whole["early_stop"]["evaluations"]
    assert resumed["early_stop"]["best"] == whole["early_stop"]["best"]


def test_masks_come_from_the_alpha_channel_or_a_file_beside_the_image_and_none_is_refused(
    tmp_path,
):
    from PIL import Image

    from tirun.data import training_masks

    folder = tmp_path / "images"
    (folder / "masks").mkdir(parents=True)
    rgba = Image.new("RGBA", (8, 6), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 255))
    rgba.save(folder / "a.png")
    Image.new("RGB", (8, 6), "blue").save(folder / "b.png")
    Image.new("L", (8, 6), 200).save(folder / "masks" / "b.png")
    a, b = training_masks(str(folder))
    assert a.getpixel((1, 1)) == 255 and a.getpixel((0, 0)) == 0
    assert b.getpixel((3, 3)) == 200
    # an image with neither would train unmasked: refused, by name, with where its mask goes
    Image.new("RGB", (8, 6), "green").save(folder / "c.png")
    with pytest.raises(ValueError, match=r"1 of 3 images have no mask \(c.png\).*images/masks"):
        training_masks(str(folder))


def test_masked_loss_counts_only_the_masked_latents(tiny_sd1):
    from tirun.loss import ldm_loss

    torch.manual_seed(0)
    latents, noise = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    timesteps = torch.tensor([100, 700])
    ids = [tiny_sd1.tokenizers[0](["a photo"] * 2, padding="max_length", max_length=77,
                                  return_tensors="pt").input_ids]  # fmt: skip
    tiny_sd1.freeze()
    with torch.no_grad():
        noisy = tiny_sd1.scheduler.add_noise(latents, noise, timesteps)
        error = (
            tiny_sd1.unet(noisy, timesteps, tiny_sd1.encode_prompt(ids)[0]).sample - noise
        ) ** 2
        weights = torch.zeros(2, 1, 16, 16)
        weights[:, :, :8] = 1.0  # the top half
        by_hand = error[:, :, :8].mean(dim=(1, 2, 3)).mean()
        masked = ldm_loss(tiny_sd1, latents, noise, timesteps, ids, torch.float32, weights=weights)
        plain = ldm_loss(tiny_sd1, latents, noise, timesteps, ids, torch.float32)
        ones = ldm_loss(
            tiny_sd1, latents, noise, timesteps, ids, torch.float32, weights=weights + 1 - weights
        )
    assert masked.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert ones.item() == pytest.approx(plain.item(), rel=1e-5)


def test_a_toy_concept_trains_with_its_renderers_masks(tmp_path):
    from tests.conftest import compose_config
    from tirun.train import train

    cfg = compose_config("model=tiny", "tracker=none", "dataset=toy_object", "dataset.masked=true",
                         "train.max_steps=2", "train.batch_size=2", "train.checkpoint_every=0")  # fmt: skip
    masked, _ = train(cfg, tmp_path / "masked")
    cfg.dataset.masked = False
    plain, _ = train(cfg, tmp_path / "plain")
    assert masked["status"] == "finished" and masked["first_loss"] != plain["first_loss"]


def test_xti_trains_one_token_per_cross_attention_layer_and_saves_its_own_file(tiny_run):
    from tirun import xti

    metrics, objects, run_dir = tiny_run("word.per_layer=true")
    layers = xti.cross_attention_layers(objects["components"].unet)
    assert len(layers) >= 2 and all(".attn2" in name for name in layers)
    saved = xti.load(run_dir / xti.FILE_NAME)
    assert saved.layers == layers and saved.vectors.shape == (len(layers), 32)
    assert torch.equal(saved.vectors, objects["word"].vectors[0].detach())
    assert not (run_dir / "learned_embeds.safetensors").exists()
    assert metrics["files"] == [str(run_dir / xti.FILE_NAME)]


def test_an_xti_word_asked_for_other_tools_formats_is_refused_before_training(tiny_run, tmp_path):
    with pytest.raises(ValueError, match=r"export=\['diffusers', 'a1111'\]: an XTI word"):
        tiny_run("word.per_layer=true", "export=[diffusers,a1111]")
    assert not (tmp_path / "run").exists()


def test_a_stock_pipeline_with_the_xti_loader_predicts_what_training_did(tiny_run):
    from tirun import loading, sampling, xti

    _, objects, run_dir = tiny_run("word.per_layer=true", "optimizer.lr=0.5")
    components, word = objects["components"], objects["word"]
    count = word.per_layer
    prompt = "a photo of a <concept>"
    tokenizer, encoder = components.tokenizers[0], components.text_encoders[0]
    torch.manual_seed(1)
    x, t = torch.randn(1, 4, 16, 16), torch.tensor([500])
    with torch.no_grad():
        ids = tokenizer(xti.per_layer_prompts([prompt], ["<concept>"], count), padding="max_length",
                        max_length=77, return_tensors="pt").input_ids  # fmt: skip
        states = encoder(ids)[0].view(count, 1, 77, -1)
        trained = components.unet(
            x, t, states[0], cross_attention_kwargs={"per_layer_states": states}
        ).sample
        flat = components.unet(x, t, states[0]).sample  # the first layer's token everywhere
    with loading.pipeline_with_words(
        components, [run_dir / xti.FILE_NAME], tokenizers=word.original_tokenizers
    ) as (pipe, tokens):
        assert tokens == ["<concept>"]
        kwargs = xti.pipeline_kwargs(pipe, [prompt], guidance=1.0)
        with torch.no_grad():
            drawn = pipe.unet(x, t, kwargs["prompt_embeds"],
                              cross_attention_kwargs=kwargs["cross_attention_kwargs"]).sample  # fmt: skip
        rows = sampling.sample(pipe, [prompt], 1, 2, 3.0, 0, 32)
    assert torch.allclose(drawn, trained, atol=1e-5)
    assert not torch.allclose(trained, flat, atol=1e-5)  # the layers' own tokens matter
    assert rows[0][0].size == (32, 32)


def test_xti_mixing_takes_the_coarsest_layers_from_the_first_word(tiny_run, tmp_path):
    from tests.conftest import compose_config
    from tirun import applications, xti
    from tirun.applications.mixing import coarsest

    _, objects, first = tiny_run("word.per_layer=true", "optimizer.lr=0.5", run_dir=tmp_path / "a")
    _, _, second = tiny_run("word.per_layer=true", "train.seed=1", "optimizer.lr=0.5",
                            run_dir=tmp_path / "b")  # fmt: skip
    unet = objects["components"].unet
    layers = xti.cross_attention_layers(unet)
    sizes = xti.layer_sizes(unet)
    picks = coarsest(unet, layers)
    assert picks and all(sizes[layers[i]] == min(sizes.values()) for i in picks)
    cfg = compose_config(
        "model=tiny", "application=mixing", "application.sampling.samples=1",
        "application.sampling.steps=2",
        f"embeddings=[{first / xti.FILE_NAME},{second / xti.FILE_NAME}]",
    )  # fmt: skip
    metrics = applications.run(cfg, tmp_path / "mix", {}, {})
    assert metrics["applications"]["mixing"]["shape_layers"] == picks
    mixed = xti.load(tmp_path / "mix/samples/mixing/mixed_xti.safetensors").vectors
    a, b = xti.load(first / xti.FILE_NAME).vectors, xti.load(second / xti.FILE_NAME).vectors
    for i in range(len(layers)):
        assert torch.equal(mixed[i], a[i] if i in picks else b[i])


def test_bld_edits_with_an_xti_word_each_layer_reading_its_own_prompt(tiny_run):
    from tirun import loading, xti
    from tirun.applications import bld

    _, objects, run_dir = tiny_run("word.per_layer=true", "optimizer.lr=0.5")
    source = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:24, 8:24] = True
    seen = []
    with loading.pipeline_with_words(
        objects["components"],
        [run_dir / xti.FILE_NAME],
        tokenizers=objects["word"].original_tokenizers,
    ) as (pipe, _):
        unet_forward = pipe.unet.forward

        def recording(*args, **kwargs):
            seen.append(kwargs["cross_attention_kwargs"]["per_layer_states"])
            return unet_forward(*args, **kwargs)

        pipe.unet.forward = recording
        prompt = "a photo of a <concept>"
        bld.blend(pipe, prompt, source, mask, samples=2, steps=4, guidance=3.0, strength=0.5,
                  blend_start=0.0, dilations=[0], seed=0)  # fmt: skip
        expected = xti.pipeline_kwargs(pipe, [prompt] * 2, 3.0)["cross_attention_kwargs"]
    layers = len(xti.cross_attention_layers(pipe.unet))
    assert len(seen) == 2  # the last half of a 4-step schedule
    assert seen[0].shape == (layers, 4, 77, 32)  # negative rows first, as the pipeline orders them
    assert torch.equal(seen[0], expected["per_layer_states"])
    assert not torch.equal(seen[0][0, 2:], seen[0][-1, 2:])  # the layers' prompts differ

"""The trainer on tiny models: outputs, frozen weights, resume, variants, warnings."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tirun import checkpoint, loss
from tirun import train as train_module
from tirun.models import build_random
from tirun.word import PlaceholderEmbedding


def test_tiny_run_writes_embedding_metrics_config_and_validation_grid(tiny_run):
    metrics, _, run_dir = tiny_run(
        "validation.every=2", "validation.images_per_prompt=2", "validation.steps=2"
    )
    assert metrics["status"] == "finished" and metrics["steps"] == 4
    saved = load_file(run_dir / "learned_embeds.safetensors")
    assert list(saved) == ["<concept>"] and saved["<concept>"].shape == (1, 32)
    assert (run_dir / "metrics.json").is_file() and (run_dir / "config.yaml").is_file()
    assert (run_dir / "samples/validation/step_000004.png").is_file()
    assert metrics["timing"]["step_s"] > 0 and metrics["final_loss"] > 0


def test_validation_leaves_the_frozen_table_as_it_was(tiny_run):
    _, objects, _ = tiny_run(
        "validation.every=2", "validation.images_per_prompt=1", "validation.steps=1"
    )
    fresh = build_random("tiny-sd1", seed=0).text_encoders[0].get_input_embeddings().weight
    assert torch.equal(objects["word"].tables[0].weight, fresh)


def test_saved_word_loads_with_diffusers_own_loader(tiny_run, tiny_sd1):
    _, objects, run_dir = tiny_run()
    pipe = tiny_sd1.pipeline()
    pipe.load_textual_inversion(str(run_dir / "learned_embeds.safetensors"))
    token_id = pipe.tokenizer.convert_tokens_to_ids("<concept>")
    row = pipe.text_encoder.get_input_embeddings().weight[token_id]
    assert torch.equal(row, objects["word"].vectors[0][0].detach())
    image = pipe("a photo of a <concept>", num_inference_steps=2, height=32, width=32).images[0]
    assert image.size == (32, 32)


def test_only_the_word_trains_and_every_frozen_weight_stays_bit_for_bit(tiny_run):
    metrics, objects, _ = tiny_run()
    trained, fresh = objects["components"], build_random("tiny-sd1", seed=0)
    word = objects["word"]
    assert torch.equal(word.tables[0].weight, fresh.text_encoders[0].get_input_embeddings().weight)
    for module, reference in [(trained.unet, fresh.unet), (trained.vae, fresh.vae)]:
        for (name, p), (_, q) in zip(
            module.named_parameters(), reference.named_parameters(), strict=True
        ):
            assert torch.equal(p, q), name
            assert not p.requires_grad and not module.training
    assert not word.vectors[0].detach().equal(word.initial[0])
    # AdamW's two moments over one 32-wide vector (+ a step counter): the size of the word.
    assert metrics["optimizer_state_bytes"] <= 2 * 32 * 4 + 8


def test_same_config_and_seed_give_the_same_embedding(tiny_run, tmp_path):
    tiny_run(run_dir=tmp_path / "a")
    tiny_run(run_dir=tmp_path / "b")
    a = load_file(tmp_path / "a/learned_embeds.safetensors")["<concept>"]
    b = load_file(tmp_path / "b/learned_embeds.safetensors")["<concept>"]
    assert torch.equal(a, b)


class Killed(Exception):
    pass


def test_resume_latest_ends_with_the_same_embedding_as_an_unbroken_run(
    tiny_run, tmp_path, monkeypatch
):
    common = (
        "train.checkpoint_every=2",
        "train.max_steps=6",
        "optimizer.scheduler=linear",
        "dataset.repeats=1",
    )
    tiny_run(*common, run_dir=tmp_path / "whole")

    save = checkpoint.save

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        raise Killed  # the process dies right after the step-2 checkpoint

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        tiny_run(*common, run_dir=tmp_path / "broken")
    monkeypatch.setattr(checkpoint, "save", save)
    metrics, _, _ = tiny_run(*common, "resume=latest", run_dir=tmp_path / "broken")
    assert metrics["steps"] == 6
    whole = load_file(tmp_path / "whole/learned_embeds.safetensors")["<concept>"]
    resumed = load_file(tmp_path / "broken/learned_embeds.safetensors")["<concept>"]
    assert torch.equal(whole, resumed)


def test_resume_skips_a_half_written_checkpoint_with_a_warning(tiny_run, tmp_path, caplog):
    run_dir = tmp_path / "run"
    tiny_run("train.checkpoint_every=2", "train.max_steps=4", run_dir=run_dir)
    ckpts = run_dir / "checkpoints"
    shutil.copytree(ckpts / "step_000004", ckpts / ".step_000006.partial")
    (ckpts / "step_000004" / "state.json").unlink()  # as if killed before completing
    with caplog.at_level(logging.WARNING):
        metrics, _, _ = tiny_run(
            "train.checkpoint_every=2", "train.max_steps=4", "resume=latest", run_dir=run_dir
        )
    assert "half-written checkpoint" in caplog.text and "step_000004" in caplog.text
    assert metrics["steps"] == 4  # resumed from step 2, the last complete one


@pytest.mark.parametrize("damaged", ["tensors.safetensors", "optimizer.pt", "state.json"])
def test_resume_falls_back_past_a_damaged_checkpoint_to_the_newest_intact_one(
    tiny_run, tmp_path, caplog, damaged
):
    common = ("train.checkpoint_every=2", "train.max_steps=6", "optimizer.scheduler=linear")
    tiny_run(*common, run_dir=tmp_path / "whole")
    run_dir = tmp_path / "run"
    tiny_run(*common, run_dir=run_dir)
    (run_dir / "learned_embeds.safetensors").unlink()
    newest = run_dir / "checkpoints" / "step_000006" / damaged
    newest.write_bytes(bytes(torch.randint(0, 256, (newest.stat().st_size,)).tolist()))
    with caplog.at_level(logging.WARNING):
        metrics, _, _ = tiny_run(*common, "resume=latest", run_dir=run_dir)
    warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warnings) == 1 and "step_000006" in warnings[0] and damaged in warnings[0]
    assert metrics["steps"] == 6  # from step 4, the newest intact one
    whole = load_file(tmp_path / "whole/learned_embeds.safetensors")["<concept>"]
    assert torch.equal(whole, load_file(run_dir / "learned_embeds.safetensors")["<concept>"])


def test_resume_from_a_named_damaged_checkpoint_says_which_file_and_what_to_do(tiny_run, tmp_path):
    run_dir = tmp_path / "run"
    tiny_run("train.checkpoint_every=2", run_dir=run_dir)
    named = run_dir / "checkpoints" / "step_000004"
    (named / "optimizer.pt").write_bytes(b"\xd0 not a torch file")
    with pytest.raises(
        ValueError, match=r"is damaged: .*optimizer.pt does not match its checksum; resume=latest"
    ):
        tiny_run(f"resume={named}", run_dir=tmp_path / "other")


def test_resume_latest_without_any_checkpoint_is_an_error_not_a_fresh_start(tiny_run, tmp_path):
    with pytest.raises(ValueError, match="resume=latest found no complete checkpoint"):
        tiny_run("resume=latest", run_dir=tmp_path / "empty")


def test_sdxl_word_has_one_vector_set_per_encoder_and_saves_the_diffusers_pair(tiny_run):
    metrics, _, run_dir = tiny_run(
        "model=tiny_sdxl",
        "validation.every=4",
        "validation.images_per_prompt=1",
        "validation.steps=2",
    )
    assert metrics["status"] == "finished"
    first = load_file(run_dir / "learned_embeds.safetensors")["<concept>"]
    second = load_file(run_dir / "learned_embeds_2.safetensors")["<concept>"]
    assert first.shape == (1, 32) and second.shape == (1, 32)
    assert (run_dir / "samples/validation/step_000004.png").is_file()


def test_v_prediction_target_is_alpha_noise_minus_sigma_latents(tiny_sd1):
    tiny_sd1.scheduler.register_to_config(prediction_type="v_prediction")
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    timesteps = torch.tensor([10, 900])
    alpha_bar = tiny_sd1.scheduler.alphas_cumprod[timesteps].view(2, 1, 1, 1)
    by_hand = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
    target = loss.diffusion_target(tiny_sd1, latents, noise, timesteps)
    assert torch.allclose(target, by_hand, atol=1e-6)
    tiny_sd1.scheduler.register_to_config(prediction_type="epsilon")
    assert loss.diffusion_target(tiny_sd1, latents, noise, timesteps) is noise


def test_min_snr_weights_are_min_snr_gamma_over_snr(tiny_sd1):
    timesteps = torch.tensor([5, 500, 990])
    alpha_bar = tiny_sd1.scheduler.alphas_cumprod[timesteps].double()
    snr = alpha_bar / (1 - alpha_bar)
    assert snr[0] > 5 > snr[2]  # one clipped, one not
    weights = loss.min_snr_weights(tiny_sd1.scheduler, timesteps, 5.0).double()
    assert torch.allclose(weights, torch.clamp(snr, max=5.0) / snr, rtol=1e-5)
    assert weights[2].item() == pytest.approx(1.0)
    weights = loss.min_snr_weights(tiny_sd1.scheduler, timesteps, 5.0, "v_prediction").double()
    assert torch.allclose(weights, torch.clamp(snr, max=5.0) / (snr + 1), rtol=1e-5)


def test_accumulated_gradient_is_the_micro_batches_mean_and_clipping_caps_its_norm(
    tiny_run, monkeypatch
):
    from accelerate import Accelerator

    words, parts, scaled_losses, stepped = [], [], [], []

    class RecordingWord(train_module.Word):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            words.append(self)

    backward, step = Accelerator.backward, torch.optim.AdamW.step

    def recording_backward(self, loss, **kwargs):
        parts.append(torch.autograd.grad(loss, words[-1].vectors, retain_graph=True)[0])
        scaled_losses.append(loss.item())
        return backward(self, loss, **kwargs)

    def recording_step(self, *args, **kwargs):
        stepped.append(self.param_groups[0]["params"][0].grad.clone())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(train_module, "Word", RecordingWord)
    monkeypatch.setattr(Accelerator, "backward", recording_backward)
    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)

    metrics, _, _ = tiny_run("train.grad_accum=2", "train.max_steps=1")
    assert len(parts) == 2 and len(stepped) == 1
    # each micro-batch's loss enters divided by 2: the step's loss is their mean
    assert metrics["first_loss"] == pytest.approx(sum(scaled_losses), rel=1e-6)
    assert torch.allclose(stepped[0], parts[0] + parts[1], atol=1e-9)

    parts.clear(), stepped.clear()
    tiny_run("train.grad_accum=2", "train.max_steps=1", "optimizer.max_grad_norm=1e-4")
    unclipped = parts[0] + parts[1]
    assert unclipped.norm() > 1e-4
    assert stepped[0].norm().item() == pytest.approx(1e-4, rel=1e-3)
    assert torch.allclose(stepped[0], unclipped * (1e-4 / unclipped.norm()), rtol=1e-3, atol=1e-12)


def test_progressive_vectors_keep_unused_vectors_at_the_initializer(tiny_run):
    _, objects, run_dir = tiny_run("word.num_vectors=3", "word.progressive_every=3")
    word = objects["word"]
    vectors = word.vectors[0].detach()
    assert torch.equal(vectors[2], word.initial[0][2])  # never in use: held where it started
    assert not torch.equal(vectors[0], word.initial[0][0]) and not torch.equal(
        vectors[1], word.initial[0][1]
    )
    assert load_file(run_dir / "learned_embeds.safetensors")["<concept>"].shape == (3, 32)


def test_per_image_tokens_train_but_stay_out_of_the_saved_word(tiny_run):
    _, objects, run_dir = tiny_run("word.image_tokens=true", "word.image_token_p=1.0")
    word = objects["word"]
    assert len(word.image_tokens) == 4 and word.vectors[0].shape[0] == 5
    assert load_file(run_dir / "learned_embeds.safetensors")["<concept>"].shape == (1, 32)


def test_each_image_trains_with_its_own_caption(tiny_run, image_folder, tmp_path):
    (tmp_path / "same.txt").write_text("a photo of a {}\n")
    shared, _, _ = tiny_run("template=file", f"template.path={tmp_path / 'same.txt'}",
                            run_dir=tmp_path / "shared")  # fmt: skip
    images = sorted(f for f in image_folder.iterdir() if f.suffix == ".png")
    for image in images:
        image.with_suffix(".txt").write_text("a photo of a {}\n")
    same, _, _ = tiny_run("template=captions", run_dir=tmp_path / "same")
    images[0].with_suffix(".txt").write_text("a rendering of the {}\n")
    own, _, _ = tiny_run("template=captions", run_dir=tmp_path / "own")
    assert same["final_loss"] == shared["final_loss"]
    assert own["final_loss"] != shared["final_loss"]


def test_l2_regulariser_keeps_the_word_closer_to_its_initializer(tiny_run, tmp_path):
    free, _, _ = tiny_run(run_dir=tmp_path / "free")
    tied, _, _ = tiny_run("word.init_l2=1000", run_dir=tmp_path / "tied")
    assert tied["word"]["word/shift"] < free["word"]["word/shift"]


def test_noise_offset_schedules_eager_attention_and_checkpointing_train(tiny_run):
    metrics, _, _ = tiny_run(
        "train.min_snr_gamma=5",
        "train.noise_offset=0.1",
        "optimizer.scheduler=cosine",
        "optimizer.warmup_steps=2",
        "train.attention=eager",
        "train.gradient_checkpointing=true",
    )
    assert metrics["status"] == "finished" and metrics["steps"] == 4


def test_placeholder_embedding_substitutes_only_the_new_rows():
    table = torch.nn.Embedding(10, 4)
    vectors = torch.nn.Parameter(torch.ones(2, 4))
    embed = PlaceholderEmbedding(table, first_id=10, vectors=vectors)
    out = embed(torch.tensor([[1, 10, 11, 3]]))
    assert torch.equal(out[0, 0], table.weight[1]) and torch.equal(out[0, 3], table.weight[3])
    assert torch.equal(out[0, 1], vectors[0]) and torch.equal(out[0, 2], vectors[1])
    out.sum().backward()
    assert table.weight.grad is not None and vectors.grad.abs().sum() > 0


def test_a_nan_loss_stops_training_and_keeps_the_last_good_files(tiny_run, caplog):
    with caplog.at_level(logging.WARNING):
        metrics, _, run_dir = tiny_run(
            "optimizer.lr=1e30", "optimizer.scale_lr=false", "train.checkpoint_every=1"
        )
    assert metrics["status"] == "diverged"
    assert (
        sum("non-finite" in r.getMessage() or "loss is" in r.getMessage() for r in caplog.records)
        == 1
    )
    assert not (run_dir / "learned_embeds.safetensors").exists()
    for ckpt in (run_dir / "checkpoints").glob("step_*"):
        assert torch.isfinite(load_file(ckpt / "tensors.safetensors")["vectors.0"]).all()


def test_vectors_that_do_not_move_are_reported(tiny_run, caplog):
    with caplog.at_level(logging.WARNING):
        tiny_run("optimizer.lr=0", "train.stall_steps=2")
    assert "have not moved after 2 steps" in caplog.text


def test_an_overgrown_word_norm_is_reported_once(tiny_run, caplog):
    with caplog.at_level(logging.WARNING):
        tiny_run("train.norm_warn_ratio=0.001")
    assert sum("past every word measured" in r.getMessage() for r in caplog.records) == 1


def _toy_preset_warnings(tmp_path, caplog, *overrides: str) -> list[str]:
    from tests.conftest import compose_config

    cfg = compose_config(*overrides, "tracker=none", "~application", "train.checkpoint_every=0")
    with caplog.at_level(logging.WARNING, logger="tirun.train"):
        train_module.train(cfg, run_dir=tmp_path)
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "preset", [["+exp=object"], ["+exp=style"], ["+exp=object", "+recipe=paper"]], ids=" ".join
)
def test_the_toy_presets_train_without_a_false_overfit_warning(preset, tmp_path, caplog):
    assert not [m for m in _toy_preset_warnings(tmp_path, caplog, *preset) if "norm" in m]


def test_a_word_pushed_far_past_the_measured_norms_is_warned(tmp_path, caplog):
    """lr 0.5, 50x the paper's, at batch 4 for 200 steps: the norm passes 40x its reference."""
    warnings = _toy_preset_warnings(
        tmp_path, caplog, "+exp=object", "+recipe=paper", "train.batch_size=4",
        "train.max_steps=200", "optimizer.lr=0.5",
    )  # fmt: skip
    assert sum("past every word measured" in m for m in warnings) == 1


def test_bf16_mixed_precision_keeps_the_word_in_fp32(tiny_run):
    metrics, objects, _ = tiny_run("train.mixed_precision=bf16", "train.cpu=true")
    assert metrics["status"] == "finished"
    assert objects["word"].vectors[0].dtype == torch.float32
    assert objects["components"].unet.dtype == torch.bfloat16


def test_only_the_newest_checkpoints_are_kept(tiny_run):
    _, _, run_dir = tiny_run("train.checkpoint_every=1", "train.keep_checkpoints=2")
    kept = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert kept == ["step_000003", "step_000004"]
    assert (run_dir / "checkpoints/latest").read_text().strip() == "step_000004"

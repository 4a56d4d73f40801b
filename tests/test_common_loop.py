"""The diffusers example's loop (`train.loop=common`): every setting it is given is honoured, or
the run is refused in one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from tests.conftest import compose_config
from tests.test_bad_input import assert_one_line, run_cli
from tirun.toybench import common

TINY_COMMON = ("model=tiny", "tracker=none", "train.loop=common", "train.checkpoint_every=0")


class Counted:
    """UNet forward passes (and their batch sizes) and the lr of each optimizer step."""

    def __init__(self):
        self.forward_batches: list[int] = []
        self.step_lrs: list[float] = []
        self.grad_norms: list[float] = []

    def __enter__(self):
        from torch.nn.modules.module import register_module_forward_pre_hook

        def forward(module, args):
            if type(module).__name__ == "UNet2DConditionModel":
                self.forward_batches.append(len(args[0]))

        def step(optimizer, args, kwargs):
            self.step_lrs.append(optimizer.param_groups[0]["lr"])
            grads = [p.grad for g in optimizer.param_groups for p in g["params"]]
            self.grad_norms.append(
                float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
            )

        self.handles = [
            register_module_forward_pre_hook(forward),
            register_optimizer_step_pre_hook(step),
        ]
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def train_common(tmp_path: Path, image_folder: Path, *overrides: str) -> tuple[dict, Counted]:
    cfg = compose_config(*TINY_COMMON, f"dataset.path={image_folder}", *overrides)
    with Counted() as counted:
        metrics, _ = common.train(cfg, tmp_path / "run")
    return metrics, counted


def test_grad_accum_4_with_scale_lr_steps_once_per_4_forward_passes_at_lr_times_batch_times_4(
    tmp_path, image_folder
):
    metrics, counted = train_common(
        tmp_path, image_folder, "train.batch_size=2", "train.grad_accum=4", "train.max_steps=2",
        "optimizer.lr=1e-3", "optimizer.scale_lr=true",
    )  # fmt: skip

    # 2 steps x 4 forward passes of batch 2; lr = 1e-3 x batch 2 x accumulation 4
    assert counted.forward_batches == [2] * 8
    assert counted.step_lrs == pytest.approx([8e-3, 8e-3])
    assert metrics["lr"] == pytest.approx(8e-3) and metrics["steps"] == 2


def test_without_scale_lr_the_lr_is_the_one_given(tmp_path, image_folder):
    _, counted = train_common(
        tmp_path, image_folder, "train.batch_size=2", "train.grad_accum=4", "train.max_steps=1",
        "optimizer.lr=1e-3", "optimizer.scale_lr=false",
    )  # fmt: skip

    assert counted.step_lrs == pytest.approx([1e-3])


def test_the_lr_scheduler_and_its_warmup_set_each_steps_lr(tmp_path, image_folder):
    _, counted = train_common(
        tmp_path, image_folder, "train.batch_size=1", "train.max_steps=4", "optimizer.lr=1e-3",
        "optimizer.scale_lr=false", "optimizer.scheduler=linear", "optimizer.warmup_steps=2",
    )  # fmt: skip

    # linear: up over 2 warm-up steps (0, 1/2), then down to 0 at step 4 (2/2, 1/2)
    assert counted.step_lrs == pytest.approx([0.0, 5e-4, 1e-3, 5e-4])


def test_gradient_clipping_caps_the_tables_gradient_norm(tmp_path, image_folder):
    _, counted = train_common(
        tmp_path, image_folder, "train.max_steps=2", "optimizer.max_grad_norm=1e-6"
    )

    assert max(counted.grad_norms) <= 1e-6 * 1.001


def test_the_word_is_written_in_every_export_format(tmp_path, image_folder):
    metrics, _ = train_common(
        tmp_path, image_folder, "train.max_steps=1", "export=[diffusers,a1111]"
    )

    assert len(metrics["files"]) == 2 and all(Path(f).is_file() for f in metrics["files"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.min_snr_gamma=5", "train.min_snr_gamma"),
        ("train.noise_offset=0.1", "train.noise_offset"),
        ("word.num_vectors=2", "word.num_vectors"),
        ("train.early_stop.every=10", "train.early_stop.every"),
        ("train.checkpoint_every=100", "train.checkpoint_every"),
        ("dataset.crop=random", "dataset.crop"),
    ],
)
def test_a_setting_only_tiruns_trainer_has_is_refused_naming_it(override, key, image_folder):
    cfg = compose_config(*TINY_COMMON, f"dataset.path={image_folder}", override)

    with pytest.raises(ValueError, match=rf"^{key}=\S+ is not a setting of train.loop=common"):
        common.check(cfg)


def test_the_command_line_refuses_it_in_one_line(image_folder, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    args = (*TINY_COMMON, f"dataset.path={image_folder}", "train.min_snr_gamma=5")
    outcome = run_cli(run_dir, *args, capsys=capsys, monkeypatch=monkeypatch)

    assert_one_line(outcome, run_dir, "train.min_snr_gamma=5 ", "train.loop=common")

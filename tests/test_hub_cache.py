"""A model from the local Hugging Face cache, offline, loads as quietly as a local folder."""

from __future__ import annotations

from pathlib import Path

from tirun.models import build_random

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_with_model(root: Path, repo_id: str) -> Path:
    """A hub cache as `huggingface_hub` lays it out, holding the tiny SD1 model under
    ``repo_id``: models--ORG--NAME/snapshots/<commit>/ and refs/main naming the commit."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    build_random("tiny-sd1", seed=0).save(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


def test_a_cached_hub_id_trains_offline_with_one_line_naming_its_snapshot(
    tmp_path, image_folder, tirun_cli
):
    snapshot = cache_with_model(tmp_path / "hub", "acme/tiny-sd")
    run_dir = tmp_path / "run"
    result = tirun_cli(
        "model=sd15",
        "model.path=acme/tiny-sd",
        "model.resolution=32",
        f"dataset.path={image_folder}",
        "train.max_steps=2",
        "train.batch_size=2",
        "train.checkpoint_every=0",
        "tracker=none",
        f"hydra.run.dir={run_dir}",
        env={"HF_HUB_CACHE": str(tmp_path / "hub")},
    )
    terminal = result.stdout + result.stderr
    assert result.returncode == 0, terminal
    assert (run_dir / "learned_embeds.safetensors").is_file()
    assert "Could not reach the Hub" not in terminal
    assert "local_dir_use_symlinks" not in terminal
    assert "Warning" not in terminal
    said = [line for line in terminal.splitlines() if "acme/tiny-sd" in line]
    assert len(said) == 1, terminal
    assert said[0].endswith(f"model acme/tiny-sd: loaded the cached snapshot {snapshot}")


def test_a_hub_id_missing_from_the_cache_offline_is_one_line(tmp_path, tirun_cli):
    result = tirun_cli(
        "model=sd15",
        "model.path=acme/absent",
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"HF_HUB_CACHE": str(tmp_path / "hub")},
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"tirun: error: model.path='acme/absent' could not be loaded (it is not in the Hugging "
        f"Face cache {tmp_path / 'hub'}); with no hub access download it once elsewhere into "
        "the HF cache, or point model.path=/a/local/folder with tokenizer/ text_encoder/ vae/ "
        "unet/ scheduler/"
    ]

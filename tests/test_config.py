"""Config composition: every preset composes, every group builds, unknown keys fail."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import CONF, compose_config, tirun_process
from tirun import choices
from tirun.templates import per_image

PRESETS = sorted(p.stem for p in (Path(CONF) / "exp").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_exp_preset_composes_and_resolves(preset):
    cfg = compose_config(f"+exp={preset}")
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert resolved["word"]["token"] and resolved["train"]["max_steps"] > 0
    assert resolved["model"]["_target_"] and resolved["dataset"]["images"]["_target_"]


def _recipe_keys(name: str) -> set[str]:
    def leaves(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    return set(
        leaves(OmegaConf.to_container(OmegaConf.load(Path(CONF) / "recipe" / f"{name}.yaml")))
    )


def test_every_recipe_sets_the_same_keys_so_any_replaces_another_whole():
    assert _recipe_keys("fast") == _recipe_keys("paper") == _recipe_keys("xti")


@pytest.mark.parametrize("preset", ["object", "style", "variation", "bld"])
def test_the_toy_presets_train_the_portable_fast_recipe_and_the_others_replace_it(preset):
    """The presets' word is one of several vectors (a file every TI tool reads), not XTI's; a
    style's has four (chosen on the dev split), an object's the fast recipe's three."""
    fast = compose_config(f"+exp={preset}")
    assert (fast.train.max_steps, fast.train.batch_size, fast.optimizer.lr) == (150, 4, 1e-2)
    vectors = 4 if preset == "style" else 3
    assert (fast.word.num_vectors, fast.word.per_layer, fast.word.init) == (
        vectors,
        False,
        "embedding",
    )
    xti = compose_config(f"+exp={preset}", "+recipe=xti")
    assert (xti.train.max_steps, xti.word.num_vectors, xti.word.per_layer) == (100, 1, True)
    paper = compose_config(f"+exp={preset}", "+recipe=paper")
    assert (paper.train.max_steps, paper.train.batch_size, paper.optimizer.lr) == (400, 16, 5e-3)
    assert (paper.word.num_vectors, paper.word.per_layer) == (1, False)
    assert paper.word.initializer == xti.word.initializer == fast.word.initializer


def test_the_bias_preset_keeps_the_paper_recipe_it_was_measured_with():
    bias = compose_config("+exp=bias")
    assert (bias.train.max_steps, bias.train.batch_size, bias.word.per_layer) == (400, 16, False)


def test_the_debug_preset_is_a_short_tiny_run():
    cfg = compose_config("+debug=default", "dataset.path=/tmp")
    assert (
        cfg.train.max_steps <= 10
        and cfg.model.arch_dir == "tiny-sd1"
        and cfg.tracker.name == "none"
    )


@pytest.mark.parametrize("template", ["object", "style"])
def test_template_groups_build_the_papers_sentences(template):
    templates = instantiate(compose_config(f"template={template}").template)
    assert len(templates) == {"object": 27, "style": 19}[template]
    assert all(t.count("{}") == 1 for t in templates)


def test_template_file_group_reads_your_own_sentences(tmp_path):
    file = tmp_path / "mine.txt"
    file.write_text("# mine\na drawing of {}\n\n{} on a shelf\n")
    cfg = compose_config("template=file", f"template.path={file}")
    assert instantiate(cfg.template) == ["a drawing of {}", "{} on a shelf"]


def test_template_file_without_a_placeholder_is_refused(tmp_path):
    file = tmp_path / "bad.txt"
    file.write_text("a drawing of a cat\n")
    with pytest.raises(Exception, match="exactly one '\\{\\}'"):
        instantiate(compose_config("template=file", f"template.path={file}").template)


def test_captions_group_gives_each_image_of_a_folder_its_own_sentences(tmp_path):
    for name, caption in [
        ("b.png", "a drawing of a boat in the style of {}"),
        ("a.png", "{} on a shelf"),
    ]:
        Image.new("RGB", (8, 8)).save(tmp_path / name)
        (tmp_path / name).with_suffix(".txt").write_text(caption + "\n")
    cfg = compose_config("template=captions", f"dataset.path={tmp_path}")
    captions = instantiate(cfg.template)
    assert captions == [["{} on a shelf"], ["a drawing of a boat in the style of {}"]]
    assert per_image(captions, 2) == captions
    assert per_image(["a photo of a {}"], 2) == [["a photo of a {}"], ["a photo of a {}"]]
    with pytest.raises(ValueError, match="sentences for 2 images but the dataset has 3"):
        per_image(captions, 3)


def test_captions_group_names_the_missing_caption_file(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.png")
    cfg = compose_config("template=captions", f"dataset.path={tmp_path}")
    with pytest.raises(Exception, match="needs cat.txt beside cat.png"):
        instantiate(cfg.template)


def test_optimizer_group_builds_adamw_with_the_papers_defaults():
    cfg = compose_config()
    assert cfg.optimizer.lr == 5e-3 and cfg.optimizer.scale_lr
    import torch

    optimizer = instantiate(cfg.optimizer.optim)(
        [torch.nn.Parameter(torch.zeros(2))], lr=cfg.optimizer.lr
    )
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["weight_decay"] == 0.01


def test_an_unknown_config_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException, match="train.max_stepz"):
        compose_config("train.max_stepz=3")


def test_the_cli_reports_a_missing_dataset_in_one_line_and_exits_2(tmp_path):
    result = tirun_process("tracker=none", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("tirun: error")]
    assert error_lines == [
        "tirun: error: dataset.path is not set: point it at a folder of 3-5 images "
        "(dataset.path=...), or train on a toy concept (dataset=toy_object)"
    ]
    assert "Traceback" not in result.stderr


def test_the_main_command_runs_as_scripts_call_it(tmp_path):
    result = tirun_process(
        "+exp=object",
        "model=tiny",
        "train.max_steps=4",
        "tracker=none",
        "application.sampling.samples=1",
        "application.sampling.steps=1",
        f"hydra.run.dir={tmp_path}/run",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / "run/learned_embeds_xti.safetensors").exists()
    assert load_file(tmp_path / "run/learned_embeds.safetensors")["<object>"].shape[0] == 3
    assert (tmp_path / "run/metrics.json").is_file()


def test_each_train_loop_is_a_training_function_and_only_those_are_choices():
    assert choices.CHOICES["train.loop"] == ("tirun", "common")
    for name, path in choices.LOOPS.items():
        parameters = list(inspect.signature(get_method(path)).parameters)
        assert parameters == ["cfg", "run_dir", "keep_tracking"], name
    assert choices.problem(compose_config("train.loop=fast")) == (
        "train.loop=fast is not a choice; use one of tirun, common"
    )

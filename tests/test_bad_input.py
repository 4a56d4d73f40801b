"""Bad input gets one line that says what to fix, never a traceback, and loses nothing.

Each case runs the command line (`tirun.__main__.cli`, as `python -m tirun` does) in a run folder
that already holds an earlier run's files, and asserts: a non-zero exit, exactly one
`tirun: error: ...` line naming the problem, no traceback or Hydra error block, and the earlier
files byte for byte as they were.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import pickle
import resource
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import load_file, save_file

from tests.conftest import CONF, compose_config, make_images, tirun_process
from tirun import __main__ as tirun_main
from tirun import schema
from tirun.choices import CHOICES

TINY = ("model=tiny", "tracker=none", "train.batch_size=2", "train.checkpoint_every=0")
EARLIER = {"learned_embeds.safetensors": b"an earlier run's word", "notes.txt": b"keep me\n"}


@dataclass
class Outcome:
    code: int
    stderr: str
    stdout: str = ""

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("tirun: error:")]


def run_cli(run_dir: Path, *args: str, capsys, monkeypatch) -> Outcome:
    """The command line in this process, writing into ``run_dir`` (which holds earlier files)."""
    for name, data in EARLIER.items():
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_bytes(data)
    GlobalHydra.instance().clear()
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["tirun", *args, f"hydra.run.dir={run_dir}"])
    try:
        tirun_main.cli()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return Outcome(code, captured.err, captured.out)


def assert_one_line(outcome: Outcome, run_dir: Path, *names: str) -> None:
    assert outcome.code != 0, outcome.stderr
    assert len(outcome.error_lines) == 1, outcome.stderr
    line = outcome.error_lines[0]
    for name in names:
        assert name in line, line
    assert "Traceback" not in outcome.stderr
    assert "HYDRA_FULL_ERROR" not in outcome.stderr and "full_key" not in outcome.stderr
    for name, data in EARLIER.items():
        assert (run_dir / name).read_bytes() == data, f"{name} was changed"


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    def call(*args: str) -> tuple[Outcome, Path]:
        run_dir = tmp_path / "run"
        return run_cli(run_dir, *args, capsys=capsys, monkeypatch=monkeypatch), run_dir

    return call


def _word_file(path: Path, width: int = 32) -> Path:
    save_file({"<w>": torch.zeros(1, width)}, str(path))
    return path


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


# --- images and folders ------------------------------------------------------------------


def test_a_missing_image_folder(cli, tmp_path):
    outcome, run_dir = cli(*TINY, f"dataset.path={tmp_path / 'nowhere'}")
    assert_one_line(outcome, run_dir, "dataset.path", "is not a folder")


def test_an_empty_image_folder(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    outcome, run_dir = cli(*TINY, f"dataset.path={tmp_path / 'empty'}")
    assert_one_line(outcome, run_dir, "holds no images")


def test_an_image_path_that_is_a_file(cli, tmp_path):
    make_images(tmp_path / "images")
    outcome, run_dir = cli(*TINY, f"dataset.path={tmp_path / 'images' / '0.png'}")
    assert_one_line(outcome, run_dir, "is not a folder")


def test_a_folder_of_text_files_only(cli, tmp_path):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("not an image")
    outcome, run_dir = cli(*TINY, f"dataset.path={tmp_path / 'texts'}")
    assert_one_line(outcome, run_dir, "holds no images")


def test_an_image_of_random_bytes(cli, tmp_path):
    folder = make_images(tmp_path / "images")
    (folder / "9.png").write_bytes(bytes(range(256)) * 4)
    outcome, run_dir = cli(*TINY, f"dataset.path={folder}")
    assert_one_line(outcome, run_dir, "cannot read image", "9.png")


def test_a_truncated_image(cli, tmp_path):
    folder = make_images(tmp_path / "images")
    whole = (folder / "0.png").read_bytes()
    (folder / "0.png").write_bytes(whole[: len(whole) // 2])
    outcome, run_dir = cli(*TINY, f"dataset.path={folder}")
    assert_one_line(outcome, run_dir, "cannot read image", "0.png")


def test_a_folder_named_like_an_image(cli, tmp_path):
    folder = make_images(tmp_path / "images")
    (folder / "5.png").mkdir()
    outcome, run_dir = cli(*TINY, f"dataset.path={folder}")
    assert_one_line(outcome, run_dir, "5.png")


def test_no_dataset_at_all(cli):
    outcome, run_dir = cli(*TINY)
    assert_one_line(outcome, run_dir, "dataset.path is not set", "dataset=toy_object")


# --- config values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("train.max_steps=0", ("train.max_steps=0", "1 or more")),
        ("dataset.resolution=7", ("dataset.resolution=7", "multiple of the VAE's factor 2")),
        ("train.attention=flash", ("train.attention=flash is not a choice", "sdpa, xformers")),
        ("dataset.crop=diagonal", ("dataset.crop=diagonal", "center, random")),
        ("dataset.flip_p=2", ("dataset.flip_p=2",)),
        ("dataset.repeats=0", ("dataset.repeats=0",)),
        ("word.num_vectors=0", ("word.num_vectors=0",)),
        ("word.initializer='two words'", ("word.initializer='two words'", "not one")),
        ("word.token=toy", ("word.token='toy'", "already in the vocabulary")),
        ("train.max_stepz=3", ("train.max_stepz is not a config key",)),
        ("model=sd99", ("model=sd99 is not a choice", "sd15, sd15_random")),
        ("+recipe=nope", ("recipe=nope is not a choice; use one of fast, paper, xti",)),
        ("optimizer.lr=-1", ("optimizer.lr=-1 is out of range: it must be more than 0",)),
        ("train.mixed_precision=fp8", ("train.mixed_precision=fp8", "no, fp16, bf16")),
        # the shell took the quotes: Hydra's grammar cannot read a bare < or ~
        (
            "word.token=<my-cat>",
            ("'word.token=<my-cat>' cannot be read", "\"word.token='<my-cat>'\""),
        ),
    ],
)
def test_a_bad_config_value(cli, image_folder, override, names):
    outcome, run_dir = cli(*TINY, f"dataset.path={image_folder}", override)
    assert_one_line(outcome, run_dir, *names)


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_every_enumerated_key_is_checked_against_its_choices_before_anything_runs(
    cli, image_folder, key
):
    if key.startswith("application."):
        args = ("application=variation", f"{key}=bogus")
    elif key == "export":
        args = ("export=[diffusers,bogus]",)
    else:
        args = (f"{key}=bogus",)
    outcome, run_dir = cli(*TINY, f"dataset.path={image_folder}", *args)
    shown = ", ".join("null" if c is None else c for c in CHOICES[key])
    assert_one_line(outcome, run_dir, f"is not a choice; use one of {shown}", key)
    assert not (run_dir / "config.yaml").exists()  # refused before the run began


def test_every_module_that_acts_on_a_key_takes_its_choices_from_one_place():
    from tirun import data, embeddings, models, templates, word

    assert CHOICES["word.init"] == word.INITS
    assert CHOICES["export"] == embeddings.FORMATS
    assert CHOICES["train.attention"] == models.ATTENTION
    assert CHOICES["dataset.crop"] == data.CROPS
    assert tuple(sorted(templates.BUILTIN)) == tuple(sorted(CHOICES["template.kind"]))
    for kind in CHOICES["validation.scheduler"]:
        assert models.make_sampler(models.DDPMScheduler(), kind) is not None


# --- types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("train.seed=abc", "train.seed=abc is not an integer"),
        ("train.seed=", "train.seed='' (empty) is not an integer"),
        ("validation.every=often", "validation.every=often is not an integer"),
        ("word.image_tokens=maybe", "word.image_tokens=maybe is not true or false"),
        ("optimizer.optim.eps=tiny", "optimizer.optim.eps=tiny is not a number"),
        ("train.min_snr_gamma=x", "train.min_snr_gamma=x is not a number or null"),
        ("export=diffusers", "export=diffusers is not a list of strings"),
        ("+train.seeds=1", "train.seeds is not a config key"),
    ],
)
def test_a_value_of_the_wrong_type_is_one_line_before_anything_runs(
    cli, image_folder, override, said
):
    outcome, run_dir = cli(*TINY, f"dataset.path={image_folder}", override)
    assert_one_line(outcome, run_dir, said)
    assert not (run_dir / "config.yaml").exists()


def _packaged_configs() -> list[tuple[str, ...]]:
    """The overrides that compose each packaged option of each group, preset and recipe."""
    base = ("dataset.path=/tmp",)
    configs = [base]
    for group in ("model", "dataset", "template", "optimizer", "tracker", "application"):
        configs += [
            (*base, f"{group}={p.stem}") for p in sorted((Path(CONF) / group).glob("*.yaml"))
        ]
    for group in ("exp", "recipe", "debug", "toybench"):
        configs += [(f"+{group}={p.stem}",) for p in sorted((Path(CONF) / group).glob("*.yaml"))]
    return configs


def _leaves(node, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        child = node._get_node(key)
        full = f"{prefix}{key}"
        keys += _leaves(child, f"{full}.") if OmegaConf.is_dict(child) else [full]
    return keys


@pytest.mark.parametrize("overrides", _packaged_configs(), ids=lambda o: o[-1])
def test_every_key_of_every_packaged_config_has_a_type_that_its_value_fits(overrides):
    cfg = compose_config(*overrides)
    typed = schema.typed_keys(cfg)
    untyped = [key for key in _leaves(cfg) if key not in typed
               and not any(key.startswith(f"{k}.") or key.startswith(f"{k}[") for k in typed)]  # fmt: skip
    assert untyped == []
    assert schema.problem(cfg) is None


_WRONG = {int: "abc", float: "abc", bool: "maybe", str: [1, 2]}


_APPLICATIONS = sorted((Path(CONF) / "application").glob("*.yaml"))


@pytest.mark.parametrize(
    "overrides",
    [(), ("+toybench=default",), *((f"application={p.stem}",) for p in _APPLICATIONS)],
    ids=lambda o: o[-1] if o else "default",
)
def test_whichever_key_a_wrong_type_is_set_on_it_is_refused_naming_the_key(overrides):
    cfg = compose_config("dataset.path=/tmp", *overrides)
    typed = schema.typed_keys(cfg)
    checked = 0
    for key, hint in typed.items():
        if key.rsplit(".", 1)[-1] in ("_target_", "_partial_") or hint is Any:
            continue  # a node's function, not a setting; a key whose function checks its type
        nullable = isinstance(hint, types.UnionType)
        plain = next(a for a in typing.get_args(hint) if a is not type(None)) if nullable else hint
        wrong = "abc" if typing.get_origin(plain) is list else _WRONG[plain]
        given = cfg.copy()  # as the command line's `key=wrong` leaves it, the type unchecked
        OmegaConf.update(given, key, wrong, merge=False)
        said = schema.problem(given)
        assert said is not None and said.startswith(f"{key}="), (key, said)
        assert f"is not {schema.describe(hint)}" in said, said
        checked += 1
    assert checked >= 20


def test_the_sampling_schema_is_the_samplers_dataclass():
    from tirun.sampling import Sampling

    assert typing.get_type_hints(schema.SamplingConfig) == typing.get_type_hints(Sampling)


def test_a_typed_schema_names_only_keys_its_function_takes():
    """Each `_target_` schema's keys are parameters of its function (a schema cannot invent a
    key the code ignores)."""
    from hydra.utils import get_method

    for target, node_schema in schema.BY_TARGET.items():
        if target.startswith("tirun.applications."):
            continue  # an application reads its keys from its node (`applications.check`)
        params = inspect.signature(get_method(target)).parameters
        keys = {f.name for f in dataclasses.fields(node_schema)} - {"_target_", "_partial_"}
        assert keys <= set(params), (target, keys - set(params))


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        (("seeds=0",), "seeds=0 is not a whole number of 1 or more"),
        (("seeds=abc",), "seeds=abc is not a whole number of 1 or more"),
        (("first_seed=-1",), "first_seed=-1 is not a whole number of 0 or more"),
        (("seeds=1", "train.seed=abc"), "train.seed=abc is not an integer"),
        (("seeds=1", "word.num_vectors=two"), "word.num_vectors=two is not an integer"),
    ],
)
def test_toybench_refuses_what_its_jobs_cannot_run_before_any_starts(
    tmp_path, monkeypatch, capsys, settings, said
):
    from tirun.toybench import __main__ as toybench

    def launched(*args, **kwargs):
        raise AssertionError(f"a sweep was launched: {args}")

    monkeypatch.setattr(toybench.subprocess, "run", launched)
    monkeypatch.chdir(tmp_path)
    GlobalHydra.instance().clear()
    assert toybench.main(["split=dev", *settings, "tracker=none"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"tirun.toybench: error: {said}"), err
    assert list(tmp_path.iterdir()) == []  # no toybench_runs/, no outputs/


def test_a_masked_loss_on_images_without_masks_is_refused(cli, image_folder):
    outcome, run_dir = cli(*TINY, f"dataset.path={image_folder}", "dataset.masked=true")
    assert_one_line(
        outcome, run_dir, "dataset.masked=true but 4 of 4 images have no mask", "0.png",
        str(image_folder / "masks"),
    )  # fmt: skip


def test_a_model_path_that_does_not_exist(cli, image_folder, tmp_path):
    missing = tmp_path / "models" / "sd"
    outcome, run_dir = cli(
        "model=sd15", f"model.path={missing}", "tracker=none", f"dataset.path={image_folder}"
    )
    assert_one_line(outcome, run_dir, "model.path=", "is not a folder")


def test_a_preset_takes_your_own_images(cli, image_folder):
    """`+exp=object dataset.path=...` trains on the folder, not the preset's toy concept."""
    outcome, run_dir = cli(
        "+exp=object", *TINY, f"dataset.path={image_folder}", "~application", "train.max_steps=2"
    )
    assert outcome.code == 0, outcome.stderr
    word = load_file(run_dir / "learned_embeds.safetensors")  # the earlier file, replaced
    assert word["<object>"].shape == (3, 32)  # the preset's fast recipe: three vectors


def test_the_debug_preset_runs_as_it_is(cli):
    outcome, run_dir = cli("+debug=default")
    assert outcome.code == 0, outcome.stderr
    assert (run_dir / "samples" / "validation" / "step_000004.png").is_file()


# --- word files --------------------------------------------------------------------------


def _apply(cli, *args: str):
    return cli(
        "model=tiny",
        "tracker=none",
        "application=variation",
        "application.sampling.samples=1",
        "application.sampling.steps=1",
        *args,
    )


def test_a_missing_word_file(cli, tmp_path):
    outcome, run_dir = _apply(cli, f"embeddings=[{tmp_path / 'nope.safetensors'}]")
    assert_one_line(outcome, run_dir, "nope.safetensors", "does not exist")


def test_a_word_of_the_wrong_width(cli, tmp_path):
    word = _word_file(tmp_path / "wide.safetensors", width=48)
    outcome, run_dir = _apply(cli, f"embeddings=[{word}]")
    assert_one_line(outcome, run_dir, "48")


def test_a_word_file_of_random_bytes(cli, tmp_path):
    word = tmp_path / "noise.safetensors"
    word.write_bytes(bytes(range(200)))
    outcome, run_dir = _apply(cli, f"embeddings=[{word}]")
    assert_one_line(outcome, run_dir, "noise.safetensors")


def test_a_pickle_that_runs_code_is_refused(cli, tmp_path):
    word = tmp_path / "evil.pt"
    buffer = io.BytesIO()
    pickle.dump({"string_to_param": {"*": _Evil()}}, buffer)
    word.write_bytes(buffer.getvalue())
    outcome, run_dir = _apply(cli, f"embeddings=[{word}]")
    assert_one_line(outcome, run_dir, "evil.pt")
    assert "unpickled!" not in outcome.stdout + outcome.stderr


def test_a_word_file_with_an_unknown_suffix(cli, tmp_path):
    word = tmp_path / "word.txt"
    word.write_text("vectors")
    outcome, run_dir = _apply(cli, f"embeddings=[{word}]")
    assert_one_line(outcome, run_dir, "word.txt")


# --- checkpoints -------------------------------------------------------------------------


def test_resume_latest_without_checkpoints(cli, image_folder):
    outcome, run_dir = cli(*TINY, f"dataset.path={image_folder}", "resume=latest")
    assert_one_line(outcome, run_dir, "resume=latest found no complete checkpoint")


def test_resume_from_a_folder_that_is_not_a_checkpoint(cli, image_folder, tmp_path):
    outcome, run_dir = cli(*TINY, f"dataset.path={image_folder}", f"resume={tmp_path}")
    assert_one_line(outcome, run_dir, "is not a complete checkpoint folder")


def test_resume_when_every_checkpoint_is_damaged(cli, image_folder):
    common = (*TINY, f"dataset.path={image_folder}", "train.max_steps=2")
    outcome, run_dir = cli(*common[:-1], "train.checkpoint_every=1", "train.max_steps=2")
    assert outcome.code == 0, outcome.stderr
    for tensors in (run_dir / "checkpoints").glob("step_*/tensors.safetensors"):
        tensors.write_bytes(bytes(reversed(tensors.read_bytes())))
    outcome, run_dir = cli(*common, "train.checkpoint_every=1", "resume=latest")
    assert_one_line(outcome, run_dir, "no intact checkpoint", "step_000002", "step_000001")


# --- templates ---------------------------------------------------------------------------


def test_a_template_file_that_is_missing(cli, image_folder, tmp_path):
    outcome, run_dir = cli(
        *TINY, f"dataset.path={image_folder}", "template=file", f"template.path={tmp_path / 't'}"
    )
    assert_one_line(outcome, run_dir, "template.path=", "is not a file")


def test_a_template_file_without_a_hole(cli, image_folder, tmp_path):
    (tmp_path / "t.txt").write_text("a photo of a thing\n")
    outcome, run_dir = cli(
        *TINY,
        f"dataset.path={image_folder}",
        "template=file",
        f"template.path={tmp_path / 't.txt'}",
    )
    assert_one_line(outcome, run_dir, "t.txt", "exactly one '{}'")


def test_captions_missing_beside_an_image(cli, image_folder):
    outcome, run_dir = cli(*TINY, f"dataset.path={image_folder}", "template=captions")
    assert_one_line(outcome, run_dir, "template=captions needs 0.txt")


def test_a_group_set_to_null_says_how_to_drop_it(cli, image_folder):
    outcome, run_dir = cli(*TINY, f"dataset.path={image_folder}", "application=null")
    assert_one_line(outcome, run_dir, "application=null is not a choice; '~application' drops")


def test_a_setting_the_template_does_not_take_is_named_with_how_to_drop_it(cli, image_folder):
    outcome, run_dir = cli(
        *TINY, f"dataset.path={image_folder}", "template=captions", "+template.kind=object"
    )
    assert_one_line(
        outcome, run_dir, "template.kind is not a setting captions takes", "'~template.kind'"
    )


# --- masks -------------------------------------------------------------------------------


def _bld(cli, *args: str):
    return cli(
        "model=tiny",
        "tracker=none",
        "application=bld",
        "application.sampling.samples=1",
        "application.sampling.steps=2",
        "application.decoder_fix.steps=0",
        *args,
    )


def test_an_edit_image_without_its_mask(cli, tmp_path):
    word = _word_file(tmp_path / "w.safetensors")
    source = make_images(tmp_path / "src", count=1) / "0.png"
    outcome, run_dir = _bld(cli, f"embeddings=[{word}]", f"application.image={source}")
    assert_one_line(outcome, run_dir, "application.image needs application.mask")


def test_a_mask_that_is_not_an_image(cli, tmp_path):
    word = _word_file(tmp_path / "w.safetensors")
    source = make_images(tmp_path / "src", count=1) / "0.png"
    mask = tmp_path / "mask.png"
    mask.write_text("white here")
    outcome, run_dir = _bld(
        cli, f"embeddings=[{word}]", f"application.image={source}", f"application.mask={mask}"
    )
    assert_one_line(outcome, run_dir, "application.mask=", "cannot be read")


def test_an_empty_mask(cli, tmp_path):
    word = _word_file(tmp_path / "w.safetensors")
    source = make_images(tmp_path / "src", count=1) / "0.png"
    mask = tmp_path / "mask.png"
    Image.new("L", Image.open(source).size, 0).save(mask)
    outcome, run_dir = _bld(
        cli, f"embeddings=[{word}]", f"application.image={source}", f"application.mask={mask}"
    )
    assert_one_line(outcome, run_dir, "mask")


# --- disk and permissions ----------------------------------------------------------------


def test_a_run_folder_inside_a_file(cli, image_folder, tmp_path):
    blocker = tmp_path / "run" / "checkpoints"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("a file where the checkpoints folder goes")
    outcome, run_dir = cli(
        *TINY[:-1], f"dataset.path={image_folder}", "train.checkpoint_every=1", "train.max_steps=1"
    )
    assert_one_line(outcome, run_dir, "checkpoints")
    assert blocker.read_text() == "a file where the checkpoints folder goes"


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE as a full disk: Linux")
def test_a_full_disk_is_one_line_and_keeps_what_was_written(image_folder, tmp_path):
    """A file-size limit stands in for a full disk: writing past it fails with EFBIG."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("keep me\n")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (6000, 6000))

    result = tirun_process(
        *TINY[:-1],
        f"dataset.path={image_folder}",
        "train.checkpoint_every=1",
        "train.max_steps=2",
        "hydra.output_subdir=null",
        "hydra/job_logging=none",
        f"hydra.run.dir={run_dir}",
        preexec_fn=limit,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tirun: error:")]
    assert len(errors) == 1 and "File too large" in errors[0] and "free disk space" in errors[0]
    assert "Traceback" not in result.stderr
    assert (run_dir / "notes.txt").read_text() == "keep me\n"
    assert "max_steps: 2" in (run_dir / "config.yaml").read_text()


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE as a full disk: Linux")
def test_a_disk_already_full_before_hydra_writes_its_config_is_the_same_one_line(
    image_folder, tmp_path
):
    """With a file-size limit of one block, Hydra's own `.hydra/config.yaml` fails before the
    job runs: the same disk message, and the earlier word as it was."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "learned_embeds.safetensors").write_bytes(EARLIER["learned_embeds.safetensors"])

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))

    result = tirun_process(
        *TINY, f"dataset.path={image_folder}", f"hydra.run.dir={run_dir}", preexec_fn=limit
    )
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("tirun: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "config.yaml" in errors[0] and "File too large" in errors[0]
    assert "free disk space" in errors[0]
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    assert (run_dir / "learned_embeds.safetensors").read_bytes() == EARLIER[
        "learned_embeds.safetensors"
    ]


# --- what the terminal shows ---------------------------------------------------------------


def test_an_error_is_said_once_on_the_terminal_and_kept_in_the_runs_log(image_folder, tmp_path):
    run_dir = tmp_path / "run"
    result = tirun_process(
        *TINY, f"dataset.path={image_folder}", "word.initializer='two words'",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert result.returncode == 2
    terminal = result.stdout + result.stderr
    said = "word.initializer='two words' is 7 tokens"  # the tiny model's tokenizer spells it
    assert terminal.count(said) == 1, terminal
    assert f"tirun: error: {said}" in result.stderr
    (log_file,) = run_dir.glob("*.log")
    assert f"error: {said}" in log_file.read_text()


def test_a_clean_run_prints_no_warning_tirun_did_not_write(image_folder, tmp_path):
    result = tirun_process(
        *TINY, f"dataset.path={image_folder}", "train.max_steps=2", f"hydra.run.dir={tmp_path}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    foreign = [line for line in (result.stdout + result.stderr).splitlines()
               if "warn" in line.lower() and "[tirun]" not in line]  # fmt: skip
    assert foreign == [], foreign
    assert "torchvision" not in result.stdout + result.stderr


def test_loading_a_text_encoder_draws_no_bar_but_downloads_still_do(capsys):
    from transformers.utils.logging import tqdm

    import tirun.models  # noqa: F401  (installs the hook)

    for _ in tqdm(range(3), desc="Loading weights"):
        pass
    for _ in tqdm(range(3), desc="Downloading"):
        pass
    err = capsys.readouterr().err
    assert "Loading weights" not in err
    assert "Downloading: 100%" in err


def test_an_override_the_grammar_cannot_read_is_one_line_with_flags_too(cli):
    """`word.token='<my-cat>'` typed without the shell's outer quotes reaches Hydra as a bare `<`
    (and `~/my-cat` as a bare `~`); with `--cfg job` Hydra printed its traceback."""
    outcome, run_dir = cli("dataset.path=~/my-cat", "--cfg", "job")
    assert_one_line(outcome, run_dir, "'dataset.path=~/my-cat' cannot be read as an override",
                    "\"dataset.path='~/my-cat'\"")  # fmt: skip

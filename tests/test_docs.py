"""The README and docs/ as a reader meets them: every relative link opens a file (and the heading
it names), and every `python -m tirun ...` command the README shows composes into a valid config;
the style preset's command trains for real."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tests.conftest import CONF, ROOT, compose_config, tirun_process
from tirun import choices
from tirun.__main__ import missing_keys

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

# ---------------------------------------------------------------------------------------------
# Links


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but hyphens and spaces dropped,
    spaces to hyphens (markup such as backticks goes with the punctuation)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings (outside code blocks), duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"#{1,6} (.+)", line)
        if fenced or not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """Every link and image target of a page, code blocks and code spans left out."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_slug_follows_githubs_rules():
    assert slug("The paper's figure on ToyBench") == "the-papers-figure-on-toybench"
    assert slug("How `+recipe=xti` was chosen") == "how-recipexti-was-chosen"
    assert slug("The later methods, each alone (v2)") == "the-later-methods-each-alone-v2"
    assert slug("Sweeps, search, cluster, many GPUs") == "sweeps-search-cluster-many-gpus"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_opens_a_file_and_its_heading(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (file.suffix != ".md" or anchor not in anchors(file)):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README)}
    assert [p.name for p in DOCS if p.resolve() not in linked] == []


# ---------------------------------------------------------------------------------------------
# Configuration reference


def leaf_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        child = node._get_node(key)
        name = f"{prefix}{key}"
        keys += leaf_keys(child, f"{name}.") if OmegaConf.is_dict(child) else [name]
    return keys


def every_choice() -> dict[str, list[str]]:
    """Each config group the reference covers, with its choices (tirun/conf/<group>/*.yaml)."""
    groups = ("model", "dataset", "template", "optimizer", "tracker", "application")
    return {g: sorted(p.stem for p in (Path(CONF) / g).glob("*.yaml")) for g in groups}


def composed_keys() -> set[str]:
    """Every key of every config a group choice composes (and of a ToyBench job's)."""
    configs = [[], ["+toybench=default"]] + [
        [f"{group}={choice}"] for group, names in every_choice().items() for choice in names
    ]
    return {key for overrides in configs for key in leaf_keys(compose_config(*overrides))}


def test_the_configuration_reference_names_every_key_and_invents_none():
    text = re.sub(r"```.*?```", "", (ROOT / "docs" / "configuration.md").read_text(), flags=re.S)
    named = {w for span in re.findall(r"`([^`\n]+)`", text) for w in re.findall(r"\w+", span)}
    keys = composed_keys()
    unnamed = [k for k in keys if k.rsplit(".", 1)[-1] not in named | {"_target_", "_partial_"}]
    assert sorted(unnamed) == []
    # the first column of every table: a key some config has, a config group, or a group's choice
    rows = set(re.findall(r"^\| `([\w/]+)` \|", text, flags=re.M))
    parts = {part for key in keys for part in key.split(".")}
    groups = {p.name for p in Path(CONF).iterdir() if p.is_dir()} | {"hydra/launcher"}
    group_choices = {c for names in every_choice().values() for c in names}
    assert sorted(rows - parts - groups - group_choices) == []


# ---------------------------------------------------------------------------------------------
# Commands


def bash_commands(page: Path) -> list[list[str]]:
    """The commands of a page's ```bash blocks, each split as the shell splits it: lines joined
    where they end in `\\`, comments dropped, `&&` chains cut in two, `$VARIABLES` expanded."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = [os.path.expandvars(w) for w in shlex.split(line, comments=True)]
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                commands.append(words[:cut])
                words = words[cut + 1 :]
    return [c for c in commands if c]


def module_and_args(command: list[str]) -> tuple[str, list[str]] | None:
    """(module, its arguments) of a `python -m`, `torchrun ... -m` or `accelerate launch ... -m`
    command, environment assignments before it skipped; None for any other command."""
    words = list(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words.pop(0)
    if (
        not words
        or not re.search(r"(python3?|torchrun|accelerate)$", words[0])
        or "-m" not in words
    ):
        return None
    at = words.index("-m")
    return words[at + 1], words[at + 2 :]


def table_presets(page: Path) -> list[list[str]]:
    """The `+exp=...` commands a page's tables give in a code span (`python -m tirun` before
    them is the table's heading)."""
    spans = re.findall(r"^\| `(\+exp=[^`]*)` \|", page.read_text(), flags=re.M)
    return [shlex.split(span) for span in spans]


README_COMMANDS = [m for m in map(module_and_args, bash_commands(README)) if m]
TIRUN_COMMANDS = [args for module, args in README_COMMANDS if module == "tirun"] + table_presets(
    README
)
TOYBENCH_COMMANDS = [args for module, args in README_COMMANDS if module == "tirun.toybench"]


def overrides_of(args: list[str]) -> list[list[str]]:
    """The configs a command composes: its Hydra overrides, one list per job of a sweep's
    comma lists (every value of each list at least once), flags such as --multirun dropped."""
    overrides, skip = [], False
    for arg in args:
        if not skip and not arg.startswith("-"):
            overrides.append(arg)
        skip = arg in ("--cfg", "-c", "--package", "-p")  # flags that take a value
    parsed = OverridesParser.create().parse_overrides(overrides)
    values = [
        list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.input_line] for o in parsed
    ]
    keys = [o.get_key_element() for o in parsed]
    jobs = max((len(v) for v in values), default=1)
    return [
        [
            v[i % len(v)] if len(v) == 1 else f"{k}={v[i % len(v)]}"
            for k, v in zip(keys, values, strict=True)
        ]
        for i in range(jobs)
    ]


def check_config(overrides: list[str]) -> None:
    """Compose as `python -m tirun` does and apply the checks it makes before anything runs."""
    cfg = compose_config(*overrides)
    assert missing_keys(cfg) == [], f"needs a value: {missing_keys(cfg)}"
    choices.check(cfg)


def test_the_readme_shows_the_commands_a_new_user_runs():
    shown = [" ".join(a) for a in TIRUN_COMMANDS]
    for preset in ("+exp=object", "+exp=style", "model=sd15", "model=sd21", "model=sdxl"):
        assert any(preset in s for s in shown), preset
    assert TOYBENCH_COMMANDS


def test_every_module_the_readme_runs_exists():
    modules = {module for module, _ in README_COMMANDS}
    assert {"tirun", "tirun.toybench", "tirun.report", "tirun.embeddings"} <= modules
    assert [m for m in sorted(modules) if importlib.util.find_spec(m) is None] == []


@pytest.mark.parametrize("args", TIRUN_COMMANDS, ids=[" ".join(a) for a in TIRUN_COMMANDS])
def test_each_readme_tirun_command_composes_a_valid_config(args):
    for overrides in overrides_of(args):
        check_config(overrides)


@pytest.mark.parametrize("args", TOYBENCH_COMMANDS, ids=[" ".join(a) for a in TOYBENCH_COMMANDS])
def test_each_readme_toybench_command_composes_its_jobs_config(args):
    own = ("split=", "seeds=", "first_seed=", "name=")
    training = [a for a in args if not a.startswith(own)]
    if "--list" in training:
        result = tirun_process(*training, module="tirun.toybench")
        assert result.returncode == 0, result.stderr
        splits = [line.split()[2] for line in result.stdout.splitlines()]
        assert (splits.count("dev"), splits.count("test")) == (8, 30)
        return
    check_config(["+toybench=default", "dataset.concept=purple_star", *training])


def short_run(args: list[str], run_dir: Path):
    """A README command as a user runs it, cut to 3 steps and 1 two-step sample a prompt, offline."""
    return tirun_process(
        *[a for a in args if not a.startswith("hydra.run.dir=")],
        "train.max_steps=3",
        "application.sampling.samples=1",
        "application.sampling.steps=2",
        "tracker=none",
        f"hydra.run.dir={run_dir}",
    )


def test_the_readmes_style_command_trains_and_writes_its_word(tmp_path):
    (style,) = [a for a in TIRUN_COMMANDS if "+exp=style" in a]
    result = short_run(style, tmp_path / "mosaic")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "mosaic" / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["steps"] == 3
    assert (tmp_path / "mosaic" / "learned_embeds.safetensors").exists()
    assert (tmp_path / "mosaic" / "samples" / "style" / "comparison.png").exists()


PRESETS = table_presets(README)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    PRESETS,
    ids=[" ".join(a) for a in PRESETS],
)
def test_each_application_preset_in_the_readme_runs_as_written(args, tmp_path):
    result = short_run(args, tmp_path / "run")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics.get("status") != "failed" and metrics["applications"]

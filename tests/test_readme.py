"""Every figure the README quotes is read from the committed result it cites.

`FIGURES` maps each passage of the README that quotes measured figures to the committed file it
cites and to a reader that takes those figures out of that file, formatted as the README writes
them. The tests check that each figure is the file's, that each passage sits beside a link to
its file, and that no figure in the README (a percentage, a ratio, seconds, a decimal) is left
out of the map."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# a figure: a number with %, × or " s" after it, or any number with a decimal point
FIGURE = re.compile(r"[+\-−]?\d+(?:\.\d+)?(?:%|×| s\b)|[+\-−]?\d+\.\d+")
# numbers the README writes that are names, not measurements
NAMES = ["Stable Diffusion 1.5", "Stable Diffusion 2.1", "torch 2.13"]


def row(pattern: str) -> Callable[[str], list[str]]:
    """A reader: the groups of `pattern`'s first match in the file, each line on its own."""

    def read(text: str) -> list[str]:
        match = re.search(pattern, text, flags=re.M)
        assert match, f"no line matches {pattern!r}"
        return list(match.groups())

    return read


def percent(fraction: float) -> str:
    return f"{round(100 * fraction)}%"


def oracle(text: str) -> list[str]:
    scores = json.loads(text)
    return [percent(scores["concept_match"]), percent(scores["initializer_concept_match"])]


def toybench_row(run: str) -> Callable[[str], list[str]]:
    """A run's line of a ToyBench summary: reconstruction and editability with their intervals,
    seconds a word, then (for all but the reference) its paired difference in reconstruction."""
    interval = r"([\d.]+) \(([\d.]+)–([\d.]+)\)"
    means = row(rf"^\| {run} \| \d+ \| {interval} \| {interval} \|(?:[^|]*\|){{3}} ([\d.]+) \|")
    paired = row(rf"^\| {run} \| \d+ \| ([+-][\d.]+) \(([+-][\d.]+) to ([+-][\d.]+)\) \|")
    return lambda text: means(text) + (paired(text) if "paper" not in run else [])


def time_to_quality(text: str) -> list[str]:
    seconds, speedup = row(r"^\| v3-test-portable-3seeds \|.* \| ([\d.]+) \| ([\d.]+×) \|$")(text)
    (reference,) = row(r"^\| v3-test-diffusers-defaults-1seed \| \d+ \|[^|]*\|[^|]*\| ([\d.]+) \|")(
        text
    )
    return [speedup, f"{seconds} s", f"{reference} s"]


@dataclass(frozen=True)
class Figures:
    shown: str  # the README's words (whitespace aside), once in it
    source: str  # the committed file it cites, from the repository's root
    read: Callable[[str], list[str]]  # the file's text -> the figures in `shown`, in order


VARIATION = "experiments/results/variation/oracle.json"
TOY = "experiments/results/toy_inversion.md"
APPS = "experiments/results/applications.md"
TOYBENCH = "experiments/results/toybench/v3-test-paper-vs-portable-vs-xti/summary.md"
TIME = "experiments/results/toybench/time-to-quality.md"

FIGURES = [
    Figures("a purple star in 81% of the learned word's pictures and 6% of the start word's",
            VARIATION, oracle),
    Figures("the object trains in 35 s and its word draws the purple star in 46% of samples, "
            "against 0% for the word it started from",
            TOY, row(r"^\| `python -m tirun \+exp=object` \| (\d+ s) ✓ \| [\d.]+ \| (\d+%) \| (\d+%) \|")),
    Figures("the style trains in 32 s and shows on new subjects in 69% of samples (0%)",
            TOY, row(r"^\| `python -m tirun \+exp=style` \| (\d+ s) ✓ \| [\d.]+ \| (\d+%) \| (\d+%) \|")),
    Figures("| the word in plain sentences | 46% / 0% |",
            APPS, row(r"^\| variation \| concept match (\d+%) \| concept match (\d+%) \|")),
    Figures("(backgrounds, art forms) | 50% / 0% |",
            APPS, row(r"^\| synthesis \| concept match (\d+%) \| concept match (\d+%) \|")),
    Figures("| a style word on new subjects | 69% / 0% |",
            APPS, row(r"^\| style \| concept match (\d+%) \| concept match (\d+%) \|")),
    Figures('"S1 in the style of S2" | 25% / 0% |',
            APPS, row(r"^\| composition \| concept match (\d+%) \| concept match (\d+%) \|")),
    Figures("(KL, lower is fairer) | 0.394 / 1.299 |",
            APPS, row(r"^\| bias \| KL ([\d.]+) \| KL ([\d.]+) \|")),
    Figures("a masked region of a picture | 66% / 12% |",
            APPS, row(r"^\| bld \| concept in mask (\d+%);[^|]*\| concept in mask (\d+%) \|")),
    Figures("| `+recipe=paper` | 0.527 (0.405–0.634) | 0.451 (0.329–0.575) | 48.8 | – |",
            TOYBENCH, toybench_row("v3-test-paper-3seeds")),
    Figures("| `+recipe=fast` | 0.590 (0.452–0.724) | 0.543 (0.400–0.683) | 8.7 | +0.063 (-0.052 to +0.171) |",
            TOYBENCH, toybench_row("v3-test-portable-3seeds")),
    Figures("| `+recipe=xti` | 0.629 (0.475–0.761) | 0.549 (0.405–0.683) | 6.9 | +0.102 (-0.021 to +0.227) |",
            TOYBENCH, toybench_row("v3-test-xti-3seeds")),
    Figures("(`train.loop=common`) | 0.542 (0.419–0.651) | 0.452 (0.327–0.577) | 61.0 | +0.015 (-0.027 to +0.060) |",
            TOYBENCH, toybench_row("v3-test-common-3seeds")),
    Figures("final reconstruction and editability 19.1× sooner: 5.8 s against 110.8 s a word",
            TIME, time_to_quality),
]  # fmt: skip


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def blocks() -> list[str]:
    """The README's blocks (paragraphs, tables, lists, code), whitespace collapsed; in code only
    the comments, where a figure could hide."""
    text = re.sub(
        r"^```[^\n]*\n(.*?)^```",
        lambda code: "\n".join(line.partition(" # ")[2] for line in code.group(1).splitlines()),
        README.read_text(),
        flags=re.S | re.M,
    )
    return [flat(block) for block in re.split(r"\n\s*\n", text)]


def figures_in(text: str) -> list[str]:
    return [m.group() for m in FIGURE.finditer(text)]


def passage(shown: str) -> re.Pattern:
    """`shown` with each of its figures free to differ: the README's passage, whatever it says."""
    words = FIGURE.split(shown)
    return re.compile(f"(?:{FIGURE.pattern})".join(map(re.escape, words)))


def located(shown: str) -> tuple[int, str]:
    """(the block, the README's text) of the one passage `shown` describes."""
    found = [(i, m.group()) for i, b in enumerate(blocks()) for m in passage(shown).finditer(b)]
    assert len(found) == 1, f"{shown!r} is in {len(found)} places of the README, not 1"
    return found[0]


@pytest.mark.parametrize("figures", FIGURES, ids=lambda f: f.shown[:40])
def test_each_figure_is_the_one_its_committed_file_holds(figures):
    _, text = located(figures.shown)
    assert figures_in(text) == figures.read((ROOT / figures.source).read_text()), (
        f"README: {text!r}, against {figures.source}"
    )


@pytest.mark.parametrize("figures", FIGURES, ids=lambda f: f.shown[:40])
def test_each_figure_sits_beside_a_link_to_its_file(figures):
    """In the passage's paragraph, or for a table the paragraph just before it."""
    page = blocks()
    at, _ = located(figures.shown)
    nearby = page[at] + (page[at - 1] if page[at].startswith("|") else "")
    assert f"]({figures.source})" in nearby, f"{figures.shown!r}: no link to {figures.source}"


def test_no_figure_in_the_readme_is_left_out_of_the_map():
    unread = []
    for block in blocks():
        block = re.sub(r"\]\([^)]*\)", "]", block)  # link targets: paths and arXiv ids
        known = [passage(f.shown) for f in FIGURES] + [re.compile(re.escape(n)) for n in NAMES]
        covered = [(m.start(), m.end()) for p in known for m in p.finditer(block)]
        unread += [
            f.group()
            for f in FIGURE.finditer(block)
            if not any(start <= f.start() and f.end() <= end for start, end in covered)
        ]
    assert unread == []


def test_the_map_reads_what_it_should():
    """The figure pattern takes signed decimals, percentages, ratios and seconds, and names
    with a version are not figures; a passage is found whatever its figures say."""
    assert figures_in("+0.063 (-0.052 to +0.171), 46% / 0%, 19.1× in 5.8 s, 35 s") == [
        "+0.063", "-0.052", "+0.171", "46%", "0%", "19.1×", "5.8 s", "35 s",
    ]  # fmt: skip
    assert figures_in("3–5 pictures, lr 1e-2, 150 steps, 1024 px") == []
    assert passage("| variation | 46% / 0% |").fullmatch("| variation | 47% / 12% |")
    assert oracle('{"concept_match": 0.8125, "initializer_concept_match": 0.0625}') == ["81%", "6%"]

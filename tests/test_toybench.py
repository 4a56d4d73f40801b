"""ToyBench: the fixed split, the exported images, scoring any tool's words, the intervals, and a
run's curve and report on the toy model (tiny budgets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import compose_config
from tirun import embeddings
from tirun.__main__ import run as run_command
from tirun.early_stop import EarlyStop
from tirun.embeddings import LearnedWord
from tirun.report import report as sweep_report
from tirun.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES
from tirun.toybench import __main__ as toybench
from tirun.toybench.report import report
from tirun.toybench.stats import bootstrap_mean
from tirun.toyworld.concepts import CONCEPTS, DEV, split
from tirun.toyworld.render import ATTRIBUTES, Attributes
from tirun.toyworld.world import is_held_out


def test_the_split_is_fixed_disjoint_and_large_enough():
    dev, test = split("dev"), split("test")
    assert [c.name for c in dev] == [
        "red_square", "green_outlined_star", "blue_mosaic_triangle", "blue_hatched_circle",
        "red_dotted_star", "purple_mosaic", "green_hatched", "blue_outlined_dotted",
    ]  # fmt: skip
    assert {c.name for c in dev} == set(DEV) and not {c.name for c in dev} & {c.name for c in test}
    kinds = [c.kind for c in dev], [c.kind for c in test]
    assert kinds[0].count("object") >= 5 and kinds[0].count("style") >= 3
    assert kinds[1].count("object") >= 18 and kinds[1].count("style") >= 12
    assert [c.name for c in split("research")] == ["unnamed_shape"]
    # each split holds every kind of pressure: unnamed detail, a context, none of either
    for concepts in (dev, test):
        assert any(c.difficulty["unnamed"] for c in concepts)
        assert any(c.context for c in concepts) and any(not c.context for c in concepts)


def test_every_benchmark_concept_is_a_combination_pretraining_never_draws():
    for concept in split("dev") + split("test"):
        assert all(is_held_out(attrs) for attrs in concept.image_attributes()), concept.name


def test_a_concept_s_context_is_in_every_image_and_in_none_of_its_edits_targets():
    with_context = [c for c in split("dev") + split("test") if c.context]
    assert len(with_context) >= 20
    for concept in with_context:
        for attrs in concept.image_attributes():
            assert all(getattr(attrs, k) == v for k, v in concept.context.items()), concept.name
        assert not concept.context.keys() & concept.attributes.keys()
        moved = 0
        for prompt, adds in concept.editability:
            assert all(concept.context.get(k) != v for k, v in adds.items()), (concept.name, prompt)
            moved += any(k in concept.context for k in adds)
        assert moved >= 1, concept.name  # every context is asked away
    # what no context fixes varies image to image (purple_star, the object presets', has none)
    plain = CONCEPTS["purple_star"].image_attributes()
    assert len({(a.background, a.light, a.size) for a in plain}) == 5


def test_each_concept_s_difficulty_is_counted_from_its_ground_truth():
    assert CONCEPTS["red_square"].difficulty == {
        "defines": 2, "beyond_initializer": 1, "unnamed": 0, "context": 1,
    }  # fmt: skip
    assert CONCEPTS["green_dotted_diamond"].difficulty == {
        "defines": 3, "beyond_initializer": 3, "unnamed": 2, "context": 1,
    }  # fmt: skip
    assert CONCEPTS["green_dotted_diamond"].named_attributes == {"colour": "green"}
    assert CONCEPTS["purple_mosaic"].difficulty["context"] == 0


def test_a_concept_of_three_or_more_attributes_is_new_only_as_a_whole():
    """Dropping any one of its attributes gives a combination pretraining draws; only the whole
    is held out, so such a concept costs pretraining no pair."""
    wholes = [c for c in split("dev") + split("test") if len(c.attributes) >= 3]
    assert len(wholes) >= 20
    for concept in wholes:
        attrs = concept.image_attributes()[0].as_dict()
        keys = list(concept.attributes)
        for drop in keys:
            seen = {**attrs}
            others = [v for v in ATTRIBUTES[drop] if v != concept.attributes[drop]]
            assert any(not is_held_out(Attributes(**{**seen, drop: v})) for v in others), (
                concept.name, drop,
            )  # fmt: skip


def test_list_prints_one_line_per_concept(capsys):
    assert toybench.main(["--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(CONCEPTS)
    assert (
        "purple_star object test shape=star,colour=purple initializer=star "
        "defines=2 beyond_initializer=1 unnamed=0 context=0"
    ) in lines
    assert (
        "red_dotted_star object dev shape=star,colour=red,mark=dot initializer=star "
        "context=background=sand defines=3 beyond_initializer=2 unnamed=1 context=1"
    ) in lines


def test_export_writes_the_very_images_training_uses(tmp_path):
    toybench.export(tmp_path)
    for name in ("purple_star", "yellow_shadowed", "red_dotted_star", "unnamed_shape"):
        cfg = compose_config("+toybench=default", f"dataset.concept={name}")
        trained = instantiate(cfg.dataset.images)
        folder = tmp_path / name
        exported = [Image.open(folder / f"{i:02d}.png") for i in range(len(trained))]
        assert [np.asarray(e).tobytes() for e in exported] == [
            np.asarray(t).tobytes() for t in trained
        ]
        mask = np.asarray(Image.open(folder / "masks" / "00.png"))
        assert mask.shape == (32, 32) and 40 < (mask > 127).sum() < 32 * 32 * 0.8
        assert (folder / "00.txt").read_text().count("{}") >= 19  # its own sentences
        assert json.loads((folder / "concept.json").read_text())["split"] == CONCEPTS[name].split


def test_a_job_trains_on_its_concept_s_kind_of_sentences_or_on_each_image_s_captions():
    for name, sentences in (("red_square", OBJECT_TEMPLATES), ("purple_mosaic", STYLE_TEMPLATES)):
        cfg = compose_config("+toybench=default", f"dataset.concept={name}")
        assert instantiate(cfg.template) == sentences
    captions = compose_config(
        "+toybench=default", "dataset.concept=red_square", "template=toy_captions"
    )
    per_image = instantiate(captions.template)
    assert per_image[0][0] == "a photo of a big {} on bricks in neutral light"
    assert len(per_image) == 5 and all("on bricks" in image[0] for image in per_image)


def test_the_bootstrap_interval_of_a_known_case():
    # 400 concepts of one word each, half always right and half never: the mean is 0.5 and the
    # concept-level interval is the binomial one, 0.5 ± 1.96·sqrt(0.25/400) ≈ ±0.049.
    words = {f"c{i}": [[i % 2] * 8] for i in range(400)}
    mean, low, high = bootstrap_mean(words, iterations=1000)
    assert mean == 0.5
    assert low == pytest.approx(0.451, abs=0.012) and high == pytest.approx(0.549, abs=0.012)
    # no spread at any level: the interval is the point
    assert bootstrap_mean({"a": [[1, 1], [1, 1]], "b": [[1, 1]]}) == (1.0, 1.0, 1.0)


def test_the_bootstrap_resamples_seeds_within_a_concept_and_samples_within_a_word():
    # one concept, two seeds' words never and always right: a draw's mean is 0, 0.5 or 1 with
    # chances 1/4, 1/2, 1/4, so the 95% interval spans 0 to 1
    assert bootstrap_mean({"a": [[0] * 8, [1] * 8]}) == (0.5, 0.0, 1.0)
    # one word of 100 samples, half right: the resampled rate is Binomial(100, 0.5) / 100, whose
    # 95% interval is 0.5 ± 1.96·0.05 on the hundredths: 0.40 to 0.60
    assert bootstrap_mean({"a": [[0] * 50 + [1] * 50]}) == pytest.approx((0.5, 0.40, 0.60))
    # a concept with one seed and one with three: each counts its own seeds only (padding the
    # first to three seeds with zeros would put its draws at 1/3 and the interval's top there)
    assert bootstrap_mean({"a": [[1] * 4], "b": [[0] * 4] * 3}) == (0.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="1/0"):
        bootstrap_mean({"a": [[0.5, 1]]})


def _tiny_bench(tmp_path, *extra: str):
    cfg = compose_config(
        "+toybench=default",
        "dataset.concept=red_square",
        "tracker=none",
        "train.max_steps=4",
        "train.snapshot_every=2",
        "application.every=2",
        "application.samples_per_set=2",
        "application.sampling.steps=2",
        *extra,
    )
    return run_command(cfg, tmp_path)


def test_a_run_scores_the_initializer_every_snapshot_and_the_final_word(tmp_path):
    metrics = _tiny_bench(tmp_path / "paper" / "0")
    bench = metrics["applications"]["toybench"]
    assert [p["step"] for p in bench["curve"]] == [0, 2, 4]
    assert bench["curve"][0]["seconds"] == 0.0 and bench["curve"][-1]["seconds"] > 0
    assert all(0 <= p["reconstruction"] <= 1 and 0 <= p["editability"] <= 1 for p in bench["curve"])
    assert len(bench["outcomes"]["reconstruction"]) == 3 * 1  # 3 prompts, ceil(2/3) each
    assert (tmp_path / "paper" / "0" / "samples" / "toybench" / "final.png").is_file()

    # a figure that reads last words only skips the step-0 score, the same word in every row
    last = _tiny_bench(tmp_path / "last" / "0", "application.initializer=false",
                       "application.every=4")  # fmt: skip
    assert [p["step"] for p in last["applications"]["toybench"]["curve"]] == [4]
    assert last["applications"]["toybench"]["initializer"] is None

    common = _tiny_bench(tmp_path / "common" / "0", "train.loop=common")
    assert common["loop"] == "common" and len(common["snapshots"]) == 2
    assert [p["step"] for p in common["applications"]["toybench"]["curve"]] == [0, 2, 4]

    text = report(tmp_path / "report", [tmp_path / "paper", tmp_path / "common"])
    assert "| paper | 1 |" in text and "| common | 1 |" in text
    for name in ("summary.md", "per_concept.csv", "curves.png", "tradeoff.png"):
        assert (tmp_path / "report" / name).is_file()
    assert (tmp_path / "report" / "words" / "common" / "red_square_seed0.safetensors").is_file()
    report(tmp_path / "report", [tmp_path / "paper"])  # the same folder, one run fewer
    assert sorted(p.name for p in (tmp_path / "report" / "words").iterdir()) == ["paper"]

    # `tirun.report` on the run's folder draws the same figures into its page
    (tmp_path / "paper" / "0" / ".hydra").mkdir(exist_ok=True)
    (tmp_path / "paper" / "0" / ".hydra" / "overrides.yaml").write_text("- train.seed=0\n")
    sweep_report(tmp_path / "paper")
    page = (tmp_path / "paper" / "report.html").read_text()
    assert "ToyBench: reconstruction along training" in page
    assert (tmp_path / "paper" / "toybench_curves.png").is_file()


def test_words_from_another_tool_are_scored_like_tirun_s_own(tmp_path):
    """The same vectors as a diffusers file and as an AUTOMATIC1111 .pt score the same."""
    torch.manual_seed(0)
    vectors = [torch.randn(1, 64) * 0.2]
    for fmt, folder in (("diffusers", "ours"), ("a1111", "theirs")):
        word = LearnedWord("<w>", vectors, 10, "toy")
        suffix = ".safetensors" if fmt == "diffusers" else ".pt"
        embeddings.save(word, tmp_path / folder / f"red_square{suffix}", fmt)
        toybench.score_words(tmp_path / folder, ["red_square"], tmp_path / f"runs-{folder}", 2)
    ours, theirs = (
        json.loads((tmp_path / f"runs-{f}" / "red_square" / "metrics.json").read_text())
        for f in ("ours", "theirs")
    )
    assert ours["applications"]["toybench"]["final"] == theirs["applications"]["toybench"]["final"]
    with pytest.raises(ValueError, match="no word file for blue_ring"):
        toybench.score_words(tmp_path / "ours", ["blue_ring"], tmp_path / "x", 2)


def test_a_words_folder_is_read_by_concept_and_seed_and_may_hold_only_some_concepts(
    tmp_path, capsys
):
    """A report's `words/RUN/` names words `NAME_seedK`; `--words` scores the seeds asked for
    of the concepts the folder holds and names the ones it lacks, instead of refusing."""
    word = LearnedWord("<w>", [torch.zeros(1, 64)], 10, "toy")
    for name in ("red_square_seed0", "red_square_seed2", "red_square_seedx", "purple_star"):
        embeddings.save(word, tmp_path / "words" / f"{name}.safetensors", "diffusers")
    found = toybench.word_files(tmp_path / "words", "red_square")
    assert found == {0: tmp_path / "words" / "red_square_seed0.safetensors",
                     2: tmp_path / "words" / "red_square_seed2.safetensors"}  # fmt: skip
    assert list(toybench.word_files(tmp_path / "words", "purple_star")) == [0]
    out = toybench.score_words(tmp_path / "words", ["red_square", "blue_ring"], tmp_path / "runs",
                               1, seeds=range(1, 3))  # fmt: skip
    assert "no word for blue_ring; scoring the others" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["red_square_seed2"]
    bench = json.loads((out / "red_square_seed2" / "metrics.json").read_text())
    assert bench["applications"]["toybench"]["seed"] == 2
    from tirun.toybench.report import load_run

    assert [(w.concept, w.seed) for w in load_run(out)] == [("red_square", 2)]


def test_adherence_counts_the_edit_alone_and_leak_the_shared_context_where_an_edit_moves_it():
    """Two edit rows of a purple star photographed on bricks, two samples each. "On grass": a
    purple star on grass, then one on bricks. "In mosaic": a purple star drawn filled, then a
    red ring in mosaic. Editability (concept and edit): 1 of 4; adherence (the edit, concept or
    not): 2 of 4; leak: only "on grass" asks for another backdrop than bricks, and its second
    sample still shows bricks: 1 of 2."""
    from tirun.toybench.score import hits, leaks

    readings = [
        {"shape": ["star", "star"], "colour": ["purple", "purple"], "background": ["grass", "bricks"],
         "style": ["filled", "filled"]},
        {"shape": ["star", "ring"], "colour": ["purple", "red"], "background": ["bricks", "bricks"],
         "style": ["filled", "mosaic"]},
    ]  # fmt: skip
    adds = [{"background": "grass"}, {"style": "mosaic"}]
    concept = {"shape": "star", "colour": "purple"}
    assert hits(readings, [{**concept, **a} for a in adds]) == [1, 0, 0, 0]
    assert hits(readings, adds) == [1, 0, 0, 1]
    assert leaks(readings, adds, {"background": "bricks"}) == [0, 1]
    assert leaks(readings, adds, {}) == []  # no shared context: nothing to leak
    assert leaks(readings, adds, {"background": "grass"}) == []  # grass asked: nothing moved


def test_the_final_point_scores_the_word_early_stop_kept(tmp_path):
    """With `keep=best` the saved word may be an earlier one than the last snapshot: the curve's
    final point is that saved word, once, and says which step it came from."""
    metrics = _tiny_bench(
        tmp_path / "best" / "0",
        "train.early_stop.every=1",
        "train.early_stop.window=50",
        "train.early_stop.keep=best",
    )
    bench = metrics["applications"]["toybench"]
    assert [p["step"] for p in bench["curve"]] == [0, 2, 4]
    assert bench["kept_step"] == metrics["early_stop"]["kept"]["step"]
    assert bench["file"] == str(tmp_path / "best" / "0" / "learned_embeds.safetensors")


def test_calibration_replays_dvar_exactly_as_the_trainer_stops():
    from experiments.calibrate import at_step, dvar_stop, kept_step

    losses = [1.0, 0.7, 0.5, 0.42, 0.4, 0.41, 0.4, 0.405, 0.4, 0.401, 0.4, 0.4]
    history = [(10 * (i + 1), v) for i, v in enumerate(losses)]
    for window, threshold in ((3, 0.05), (3, 0.3), (5, 0.02), (4, 1e-9)):
        rule = EarlyStop(every=10, window=window, threshold=threshold)
        stopped = next((s for s, v in history if rule.record(s, v, [torch.zeros(1, 2)])), None)
        assert dvar_stop(history, window, threshold) == stopped
    # window 3: at 6 values (the first check) the last three, 0.42 0.4 0.41, vary 6.7e-5 against
    # the run's 0.0473: a ratio of 0.0014
    assert dvar_stop(history, 3, 0.05) == 60
    assert kept_step(history, 60) == 50  # the lowest loss up to the stop
    curve = [{"step": 0, "reconstruction": 0.0}, {"step": 100, "reconstruction": 0.5}]
    assert at_step(curve, 40) == pytest.approx(0.2)


def test_the_paired_difference_of_known_cases():
    from tirun.toybench.stats import bootstrap_paired_difference

    # every word 0.1 better: no spread, the interval is the point
    same_gain = {f"c{i}": [(0.5, 0.6), (0.2, 0.3)] for i in range(5)}
    assert bootstrap_paired_difference(same_gain) == pytest.approx((0.1, 0.1, 0.1))
    # 400 concepts, half +1 and half -1: mean 0, interval ≈ ±1.96·sqrt(1/400) = ±0.098
    balanced = {f"c{i}": [(0.0, 1.0 if i % 2 else -1.0)] for i in range(400)}
    mean, low, high = bootstrap_paired_difference(balanced, iterations=1000)
    assert mean == 0.0
    assert low == pytest.approx(-0.098, abs=0.015) and high == pytest.approx(0.098, abs=0.015)
    # one concept one seed +1, another three seeds 0: a draw is 1, 0.5 or 0 (each concept's
    # mean over its own seeds), so the interval spans 0 to 1
    ragged = {"a": [(0.0, 1.0)], "b": [(0.0, 0.0)] * 3}
    assert bootstrap_paired_difference(ragged) == (0.5, 0.0, 1.0)


def test_the_paired_spread_splits_concepts_from_seeds_and_projects_the_half_width():
    from tirun.toybench.stats import concepts_needed, paired_spread, projected_half_width

    # differences: concept a 1 and 3 (mean 2, seed variance 2), concept b 5 and 7 (mean 6, 2);
    # the means' variance 8, less the seeds' share 2/2: concepts 7, seeds 2
    pairs = {"a": [(0.0, 1.0), (0.0, 3.0)], "b": [(0.0, 5.0), (0.0, 7.0)]}
    assert paired_spread(pairs) == pytest.approx((7.0, 2.0))
    # 1.96 · sqrt(7/2 + 2/(2·2)) = 1.96 · 2
    assert projected_half_width(7.0, 2.0, concepts=2, seeds=2) == pytest.approx(3.92)
    # ±0.98 at 2 seeds: (7 + 2/2) · (1.96 / 0.98)² = 32 concepts
    assert concepts_needed(7.0, 2.0, seeds=2, target=0.98) == 32
    # identical seeds: all the spread is the concepts'
    assert paired_spread({"a": [(0.0, 1.0)] * 3, "b": [(0.0, 3.0)] * 3}) == pytest.approx((2.0, 0))


def test_the_validation_score_is_the_share_of_samples_the_oracle_reads_as_the_concept():
    from tirun.toyworld.concepts import concept_images
    from tirun.validation import validation_judge

    cfg = compose_config("+toybench=default", "dataset.concept=red_square", "validation.every=50")
    assert list(cfg.validation.prompts) == [p for p, _ in CONCEPTS["red_square"].reconstruction]
    judge = validation_judge(cfg, keep="validated")
    squares, stars = concept_images("red_square", 3), concept_images("blue_ring", 1)
    assert judge([squares, stars]) == 3 / 4
    cfg.validation.every = 0
    with pytest.raises(ValueError, match="keep=validated keeps the word at its best validation"):
        validation_judge(cfg, keep="validated")


def test_keep_validated_saves_the_word_of_the_best_validation_score(tmp_path):
    """Validation draws the concept's neutral prompts on seeds the scores never use; the oracle's
    reading is the score, the word of the highest one is saved and is the curve's final point."""
    run = tmp_path / "validated" / "0"
    metrics = _tiny_bench(
        run,
        "validation.every=2",
        "validation.images_per_prompt=2",
        "validation.steps=2",
        "train.early_stop.keep=validated",
    )
    early = metrics["early_stop"]
    steps, scores = zip(*early["validation"], strict=True)
    assert steps == (2, 4) and all(round(s * 6, 6).is_integer() for s in scores)  # 3 prompts × 2
    best = max(s for s, v in zip(steps, scores, strict=True) if v == max(scores))  # the latest
    assert early["kept"] == {"step": best, "score": max(scores),
                             "why": "keep=validated: the highest validation score"}  # fmt: skip
    saved = load_file(run / "learned_embeds.safetensors")["<concept>"]
    shown = load_file(run / "samples" / "validation" / f"step_{best:06d}.safetensors")["<concept>"]
    assert torch.equal(saved, shown)
    bench = metrics["applications"]["toybench"]
    assert bench["kept_step"] == best
    # the last word, when another is kept, is scored beside the curve
    assert bench["last_word"] is None if best == 4 else bench["last_word"]["step"] == 4


def test_the_kept_word_is_measured_against_the_best_word_of_the_whole_budget(tmp_path):
    """Validation kept step 200 (0.8); snapshot 300 scored 0.9 and the last word (400) 0.6: the
    kept word reaches 0.8 / 0.9 = 0.889 of the budget's best, short of 90%; had the tie at 0.75
    gone to the later word (step 300), 0.9 / 0.9."""
    from experiments.calibrate import best_in_budget, keep_rule, saved_table, validated_replay
    from tirun.toybench.report import ScoredWord

    curve = [
        {"step": s, "reconstruction": r} for s, r in [(0, 0.0), (100, 0.5), (200, 0.8), (300, 0.9)]
    ]
    curve.append({"step": 400, "reconstruction": 0.8})  # the final point: the kept word
    metrics = {
        "early_stop": {
            "kept": {"step": 200, "why": "keep=validated: the highest validation score"},
            "validation": [[100, 0.5], [200, 0.75], [300, 0.75]],
        },
        "applications": {"toybench": {"last_word": {"step": 400, "reconstruction": 0.6}}},
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    word = ScoredWord(
        "run", "red_square", "object", 0, curve, {}, tmp_path / "w.safetensors", tmp_path
    )
    assert best_in_budget(word) == 0.9
    assert keep_rule([word]) == "keep=validated"
    assert saved_table([word])[-1] == "| 1 | 200 | 0.889 | 0/1 | 0.889 | 0/1 |"
    # replayed: of the tied 0.75s the earliest is step 200 (0.8), the latest step 300 (0.9)
    assert validated_replay([word])[-2:] == [
        "| earliest | 200 | 0.889 | 0/1 | 0.889 | 0/1 |",
        "| latest | 300 | 1.000 | 1/1 | 1.000 | 1/1 |",
    ]


def test_a_continued_run_writes_its_seeds_beside_the_earlier_jobs(tmp_path, monkeypatch):
    """Seed 0 goes to RUN/ itself; `first_seed=1 seeds=2` to RUN/seeds1-2 and `first_seed=2
    seeds=1` to RUN/seed2, so Hydra's job numbers 0, 1, ... never land on the earlier jobs'."""
    commands = []
    monkeypatch.setattr(toybench, "RUNS", tmp_path)
    monkeypatch.setattr(toybench.subprocess, "run", lambda command, **_: commands.append(command))
    for seeds in (range(0, 1), range(1, 3), range(2, 3)):
        assert toybench.run("dev", seeds, "paper", ["train.max_steps=2"]) == tmp_path / "paper"
    sweeps = [next(a for a in c if a.startswith("hydra.sweep.dir=")) for c in commands]
    assert sweeps == [
        f"hydra.sweep.dir={tmp_path / 'paper' / f}" for f in ("", "seeds1-2", "seed2")
    ]
    assert [next(a for a in c if a.startswith("train.seed=")) for c in commands] == [
        "train.seed=0", "train.seed=1,2", "train.seed=2",
    ]  # fmt: skip
    assert all(c[-1] == "train.max_steps=2" for c in commands)


def test_a_run_that_keeps_its_last_word_is_measured_at_its_last_step(tmp_path):
    """No early stop: the saved word is the last (step 400, 0.6), the budget's best step 200
    (0.8): 0.6 / 0.8 = 0.75."""
    from experiments.calibrate import keep_rule, saved_table
    from tirun.toybench.report import ScoredWord

    curve = [{"step": s, "reconstruction": r} for s, r in [(0, 0.0), (200, 0.8), (400, 0.6)]]
    (tmp_path / "metrics.json").write_text(json.dumps({"applications": {"toybench": {}}}))
    word = ScoredWord(
        "run", "red_square", "object", 0, curve, {}, tmp_path / "w.safetensors", tmp_path
    )
    assert keep_rule([word]) == "keep=last"
    assert saved_table([word])[-1] == "| 1 | 400 | 0.750 | 0/1 | 0.750 | 0/1 |"


def test_stopping_earlier_is_measured_against_the_whole_budgets_best(tmp_path):
    """Word A scores 0.8 at step 200 and 0.6 at 400; word B (never learned: best 0.2 < 0.25)
    0.1 then 0.2. Stopped at 200: A keeps 0.8/0.8 = 1, B 0.1/0.2 = 0.5 (mean 0.75). At 400:
    A 0.6/0.8 = 0.75, B 1 (mean 0.875)."""
    from experiments.calibrate import budget_table
    from tirun.toybench.report import ScoredWord

    words = []
    for name, scores in (("a", (0.8, 0.6)), ("b", (0.1, 0.2))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"applications": {"toybench": {}}}))
        curve = [{"step": 0, "reconstruction": 0.0}]
        curve += [{"step": s, "reconstruction": r} for s, r in zip((200, 400), scores, strict=True)]
        words.append(
            ScoredWord("run", name, "object", 0, curve, {}, folder / "w.safetensors", folder)
        )
    assert budget_table(words)[2:] == [
        "| 200 | 0.750 | 1/2 | 0.500 | 1/1 |",
        "| 400 | 0.875 | 1/2 | 0.750 | 0/1 |",
    ]


def test_each_run_is_read_against_the_concepts_text_ceilings(tmp_path):
    from tirun.toybench.report import ScoredWord, ceiling_fraction, ceiling_lines

    def word(concept: str, seed: int, reconstruction: float) -> ScoredWord:
        point = {"step": 100, "seconds": 1.0, "reconstruction": reconstruction,
                 "editability": 0.0, "attributes": {}}  # fmt: skip
        return ScoredWord("run", concept, "object", seed, [point], {}, tmp_path, tmp_path)

    words = [word("a", 0, 0.4), word("a", 1, 0.2), word("b", 0, 0.5), word("c", 0, 0.3)]
    ceilings = {"a": 0.8, "b": 0.5, "c": 0.0}  # c: the model cannot draw it from its names
    # (0.4/0.8 + 0.2/0.8 + 0.5/0.5) / 3, c left out
    assert ceiling_fraction(words, ceilings) == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert ceiling_fraction(words, {}) is None
    lines = ceiling_lines({"run": words}, ceilings, {"a": 0.9})
    # reachability beside the ceiling: measured for a, not for c
    assert "| a | 0.800 | 0.900 | 0.300 |" in lines and "| c | 0.000 | – | 0.300 |" in lines


def test_time_to_quality_is_the_first_step_where_both_means_reach_the_references(tmp_path):
    """Reference: final means 0.6 reconstruction / 0.5 editability after 20 s. The run's means
    are 0.5 / 0.6 at step 50 (2 s: editability only) and 0.7 / 0.55 at step 100 (4 s: both),
    so it reaches the reference at step 100 in 4 s, 20 / 4 = 5× faster. Reconstruction alone:
    the reference reaches 0.6 only at its end, the run at step 100 (4 s). The same numbers as
    adherence (`--second adherence`, the paper's editability) give the same table."""
    from experiments.time_to_quality import table
    from tirun.toybench.report import ScoredWord

    def runs(second: str) -> tuple[list[ScoredWord], list[ScoredWord]]:
        def word(concept: str, points: list[tuple[int, float, float, float]]) -> ScoredWord:
            curve = [{"step": s, "seconds": t, "reconstruction": r, second: e}
                     for s, t, r, e in points]  # fmt: skip
            outcomes = {"reconstruction": [1, 0], second: [1, 0]}
            return ScoredWord("run", concept, "object", 0, curve, outcomes, tmp_path, tmp_path)

        reference = [word("a", [(0, 0, 0, 0), (1000, 10, 0.4, 0.5), (2000, 20, 0.8, 0.6)]),
                     word("b", [(0, 0, 0, 0), (1000, 10, 0.4, 0.3), (2000, 20, 0.4, 0.4)])]  # fmt: skip
        run = [word("a", [(0, 0, 0, 0), (50, 2, 0.6, 0.7), (100, 4, 0.9, 0.6)]),
               word("b", [(0, 0, 0, 0), (50, 2, 0.4, 0.5), (100, 4, 0.5, 0.5)])]  # fmt: skip
        return reference, run

    for second in ("editability", "adherence"):
        reference, run = runs(second)
        lines = table(reference, {"defaults": reference, "fast": run}, second)
        assert f"| {second} (95% CI) |" in lines[0]
        assert lines[2].endswith("| 20.0 | 20.0 | 2000 | 20.0 | 1.0× |")
        assert lines[3].endswith("| 4.0 | 4.0 | 100 | 4.0 | 5.0× |")
    with pytest.raises(ValueError, match="lacks 1"):
        table(reference, {"short": run[:1]}, "adherence")


def test_a_moved_jobs_word_is_its_own_not_the_one_a_later_job_left_at_its_old_path(tmp_path):
    """Seed 0's job 2 ran in RUN/2 and was moved into RUN/seed0/2; a later run's job 2 now sits
    in RUN/2. The report reads the moved job's word from its own folder."""
    from tirun.toybench.report import load_run

    run = tmp_path / "paper"
    for folder, value in ((run / "seed0" / "2", 1.0), (run / "2", 2.0)):
        folder.mkdir(parents=True)
        word = folder / "learned_embeds.safetensors"
        embeddings.save(LearnedWord("<concept>", torch.full((1, 4), value)), word, "diffusers")
        point = {"step": 400, "seconds": 1.0, "reconstruction": 0.5, "editability": 0.5}
        bench = {"concept": "blue_ring", "kind": "object", "curve": [point], "outcomes": {},
                 "file": str(run / "2" / "learned_embeds.safetensors")}  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps({"applications": {"toybench": bench}}))
    moved = next(w for w in load_run(run) if "seed0" in str(w.folder))
    assert moved.file == run / "seed0" / "2" / "learned_embeds.safetensors"
    assert load_file(moved.file)["<concept>"].tolist() == [[1.0] * 4]


def test_settings_after_the_report_folders_are_settings_not_folders(tmp_path, monkeypatch):
    """`--report OUT RUN tracker=none` writes the report and skips W&B, as with the setting
    first; before, `tracker=none` was read as a run folder."""
    published = []
    monkeypatch.setattr("tirun.tracking.publish_report", lambda *a: published.append(a))
    reports = []
    monkeypatch.setattr(
        "tirun.toybench.report.report", lambda out, runs, *_: reports.append((out, runs)) or ""
    )
    assert toybench.main(["--report", str(tmp_path / "out"), str(tmp_path), "tracker=none"]) == 0
    assert reports == [(tmp_path / "out", [tmp_path])] and published == []
    assert toybench.is_setting(Path("tracker=none")) and not toybench.is_setting(tmp_path)


def test_a_run_reports_under_outputs_and_only_record_writes_the_committed_results(monkeypatch):
    """`name=mine` writes its report into outputs/toybench/mine; `--record` is the one way into
    experiments/results/toybench/mine, the committed results the docs cite."""
    monkeypatch.setattr(toybench, "run", lambda *_: Path("toybench_runs/mine"))
    reports = []
    monkeypatch.setattr(
        "tirun.toybench.report.report", lambda out, runs, *_: reports.append(out) or ""
    )
    settings = ["split=dev", "seeds=1", "name=mine", "tracker=none"]
    assert toybench.main(settings) == 0
    assert toybench.main(["--record", *settings]) == 0
    assert reports == [
        Path("outputs/toybench/mine"),
        toybench.ROOT / "experiments" / "results" / "toybench" / "mine",
    ]


def test_the_summary_puts_adherence_and_leak_beside_toybench_s_scores_and_dashes_old_runs(
    tmp_path,
):
    """Run "new" was scored with adherence and leak; run "old" before they existed. One word
    each, one concept: new's adherence is 3 of 4, its leak 1 of 2; old shows "–" for both, and
    the paired table has no difference to give for them."""
    from tirun.toybench.report import ScoredWord, summary_lines

    def word(run: str, outcomes: dict[str, list[int]]) -> ScoredWord:
        final = {"step": 10, "seconds": 2.0, "attributes": {}}
        final |= {m: sum(v) / len(v) if v else None for m, v in outcomes.items()}
        return ScoredWord(run, "blue_ring", "object", 0, [final], outcomes, tmp_path, tmp_path)

    rec, edit = [1, 1, 0, 0], [1, 0, 0, 0]
    new = word("new", {"reconstruction": rec, "editability": edit, "adherence": [1, 1, 1, 0],
                       "leak": [0, 1]})  # fmt: skip
    old = word("old", {"reconstruction": rec, "editability": edit})
    lines = summary_lines({"new": [new], "old": [old]}, "new")
    assert lines[2].startswith("| new | 1 | 0.500 (0.000–1.000) | 0.250 (0.000–0.750) | 0.750 (")
    assert "| 0.500 (0.000–1.000) |" in lines[2]  # leak
    assert lines[3].startswith("| old | 1 | 0.500 (0.000–1.000) | 0.250 (0.000–0.750) | – | – |")
    paired = next(line for line in lines if line.startswith("| old | 1 | +0.000"))
    assert paired.endswith("| – | – | 1.00 |")


def test_step_zero_scores_the_word_the_run_started_from(tmp_path, monkeypatch):
    """A ToyBench job started elsewhere (`word.initializer=red` for red_square, whose concept
    names "square") scores "red" at step 0, the word its curve starts from."""
    from types import SimpleNamespace

    from tirun.applications import toybench as application

    asked = []

    def fake_score(components, oracle, concept, settings, source, samples, tokenizers, initializer):
        asked.append((source, initializer))
        point = {"reconstruction": 0.0, "editability": 0.0, "adherence": 0.0, "leak": None,
                 "attributes": {}}  # fmt: skip
        return {**point, "outcomes": {}, "rows": {"reconstruction": [], "editability": []}}

    monkeypatch.setattr(application, "score_word", fake_score)
    ctx = SimpleNamespace(concept=CONCEPTS["red_square"], oracle=object(), run_dir=tmp_path,
                          sources=[tmp_path / "w.safetensors"], word=None, components=None,
                          initializer="red", save_grid=lambda *a: None)  # fmt: skip
    sampling = {"samples": 1, "steps": 2, "guidance": 3.0, "scheduler": "ddim", "seed": 0,
                "batch_size": 2}  # fmt: skip
    application.run(ctx, samples_per_set=2, every=0, sampling=sampling)
    assert asked == [(None, "red"), (str(tmp_path / "w.safetensors"), "red")]


def test_a_verdict_counts_the_intervals_on_the_paper_s_side_of_zero():
    from experiments.paper_figure_v4 import verdict

    more_less = (+1, -1)  # the paper's two vectors against one: more reconstruction, less editing
    assert verdict(more_less, [(0.2, 0.1, 0.3), (-0.1, -0.2, -0.01)]) == "yes"
    assert verdict(more_less, [(0.2, 0.1, 0.3), (0.0, -0.1, +0.1)]) == "half"  # editing unmoved
    assert verdict(more_less, [(0.2, 0.1, 0.3), (0.1, 0.05, 0.2)]) == "half"  # editing up
    assert verdict(more_less, [(0.0, -0.1, 0.1), (0.0, -0.1, 0.1)]) == "no"
    assert verdict((-1, +1), [(-0.3, -0.4, -0.2), (0.05, 0.01, 0.09)]) == "yes"
    no_better = (0, 0)  # per-image tokens: no better than one vector on either axis
    assert verdict(no_better, [(0.0, -0.1, 0.1), (-0.2, -0.3, -0.1)]) == "yes"
    assert verdict(no_better, [(0.2, 0.1, 0.3), (0.0, -0.1, 0.1)]) == "half"


def test_dev_curves_count_the_words_still_rising_late(tmp_path):
    from experiments.dev_curves import curve_lines
    from tirun.toybench.report import ScoredWord

    def word(concept: str, values: tuple[float, float, float]) -> ScoredWord:
        curve = [
            {"step": s, "reconstruction": v} for s, v in zip((100, 200, 400), values, strict=True)
        ]
        return ScoredWord("run", concept, "object", 0, curve, {}, tmp_path, tmp_path)

    lines = curve_lines([word("a", (0.1, 0.2, 0.3)), word("b", (0.1, 0.3, 0.3))], [100, 200, 400])
    assert lines[2] == "| a | 0 | 0.100 | 0.200 | 0.300 | yes |"
    assert lines[3] == "| b | 0 | 0.100 | 0.300 | 0.300 | no |"
    assert lines[-1] == "Still rising between steps 200 and 400: 1 of 2."

"""Smoke test of the benchmark's variants at a tiny size: finite numbers, rows restored.

No timing assertions here: performance claims live in `make bench`, never in timed tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from experiments.bench.cases import Case, Plan
from experiments.bench.models import load_components, write_images
from experiments.bench.report import CaseResult, VariantResult, missed, report, summary_line
from experiments.bench.steps import Stopwatch
from experiments.bench.variants import Floor, NewVectorEmbedding, common_loop
from experiments.bench.workers import TrainerSession

CASE = Case("tiny-sd1", "cpu", resolution=32, batch=2)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return write_images(tmp_path / "images", count=2, size=32)


def test_common_trains_the_new_row_and_restores_every_other_bit_for_bit(images: Path):
    common = common_loop(load_components("tiny-sd1", 32), CASE, images)
    table = common.text_encoder.get_input_embeddings().weight
    new_id = common.new_id
    assert new_id == table.shape[0] - 1, "the placeholder is a new row at the end of the table"
    start = table[new_id].detach().clone()

    losses = [common.step(), common.step(Stopwatch(torch.device("cpu")))]

    assert all(math.isfinite(loss) for loss in losses)
    assert common.other_rows_restored()
    assert not torch.equal(table[new_id], start)
    # AdamW keeps two moments for every row of the table, not only the new one.
    assert common.optimizer_state_bytes() >= 2 * table.numel() * table.element_size()


def test_floor_sends_the_gradient_to_the_new_vector_only(images: Path):
    floor = Floor(load_components("tiny-sd1", 32), CASE, images)
    start = floor.vector.detach().clone()
    clock = Stopwatch(torch.device("cpu"))

    losses = [floor.step(), floor.step(clock)]

    assert all(math.isfinite(loss) for loss in losses)
    assert not torch.equal(floor.vector, start)
    frozen = [*floor.unet.parameters(), *floor.text_encoder.parameters()]
    assert all(p.grad is None for p in frozen if p is not floor.vector)
    assert floor.optimizer_state_bytes() <= 2 * floor.vector.numel() * 4 + 8
    assert {"text_encoder", "unet", "optimizer"} <= set(clock.seconds)
    assert all(math.isfinite(s) and s >= 0 for s in clock.seconds.values())


def test_new_vector_embedding_reads_the_vector_for_the_new_id_only():
    table = torch.nn.Embedding(5, 3).requires_grad_(False)
    vector = torch.nn.Parameter(torch.ones(3))
    embed = NewVectorEmbedding(table, new_id=5, vector=vector)
    ids = torch.tensor([[0, 5, 2]])

    rows = embed(ids)
    rows.sum().backward()

    assert torch.equal(rows[0, 1], vector.detach())
    assert torch.equal(rows[0, 0], table.weight[0])
    assert torch.equal(vector.grad, torch.ones(3))


def test_report_has_the_table_and_the_summary_line():
    results = {
        "tirun": VariantResult("tirun", times=[1.0], optimizer_state_bytes=6148),
        "common": VariantResult("common", times=[2.0, 2.2, 1.8], optimizer_state_bytes=303568900),
        "floor": VariantResult(
            "floor", times=[1.0, 0.9, 1.1], phases={"unet": 0.8, "text_encoder": 0.2}
        ),
    }
    outcome = CaseResult(
        Case("sd15", "cpu", 256, 1), results, sampling={"plain": [4.0], "tirun": [4.0]}
    )
    info = {"cpu": "test", "cores": "2", "torch": torch.__version__}

    text = report([outcome], info, (0.0, 0.0), notes=["toy model skipped"])

    assert "| sd15 | 256px b1 fp32 sdpa | common | 2.000 |" in text
    assert "303568900" in text and "toy model skipped" in text
    assert summary_line([outcome]) == "speedup_vs_common=2.000 floor_ratio=1.000"


def test_the_speedup_target_is_judged_at_sd15_shapes_only():
    def outcome(model: str) -> CaseResult:
        results = {
            "tirun": VariantResult("tirun", times=[1.0]),
            "common": VariantResult("common", times=[1.1]),
            "floor": VariantResult("floor", times=[1.0]),
        }
        return CaseResult(Case(model, "cpu", 32, 1), results, sampling={"plain": [1.0]})

    assert missed(outcome("sd15")) == ["common", "tirun"]
    assert missed(outcome("toy")) == []
    text = report([outcome("toy")], {"cpu": "test"}, (0.0, 0.0), notes=[])
    assert "1.100 (no target)" in text and "✗" not in text


class ScriptedChannel:
    """The coordinator's side of a worker's pipe, played from a list."""

    def __init__(self, requests: list[dict]):
        self.requests = list(requests)
        self.answers: list[dict] = []

    def read(self) -> dict | None:
        return self.requests.pop(0) if self.requests else None

    def answer(self, message: dict) -> None:
        self.answers.append(message)


def test_trainer_session_steps_tirun_one_iteration_at_a_time(images: Path, tmp_path: Path):
    channel = ScriptedChannel([{"op": "step"}, {"op": "profile"}, {"op": "finish"}])
    session = TrainerSession("tirun", CASE, images, Plan(), channel)

    result = session.setup(steps=3, out_dir=str(tmp_path / "run"))

    first, step, profiled = channel.answers
    assert first["first_step_s"] > 0
    assert step["s"] > 0 and step["cpu_s"] >= 0
    assert "aten::" in profiled["table"]
    assert result["metrics"]["steps"] == 3
    assert result["metrics"]["optimizer_state_bytes"] < 10_000


def test_a_phases_step_of_the_trainer_says_where_its_time_goes(images: Path, tmp_path: Path):
    channel = ScriptedChannel([{"op": "phases"}, {"op": "finish"}])
    session = TrainerSession("tirun", CASE, images, Plan(), channel)

    session.setup(steps=2, out_dir=str(tmp_path / "run"))

    phases = channel.answers[1]["phases"]
    assert set(phases) == {"data", "text_encoder", "unet", "optimizer", "other"}
    assert all(phases[name] > 0 for name in ("text_encoder", "unet", "optimizer"))
    # the phases tile the step: their sum is the step's interval
    assert sum(phases.values()) == pytest.approx(channel.answers[1]["s"], rel=0.05)

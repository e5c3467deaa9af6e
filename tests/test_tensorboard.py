"""Training writes TensorBoard event files beside metrics.jsonl; a resumed run shows every step once."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_recipe
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vitcli import recipe
from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter


def scalars(run) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard shows for the run directory (it reads every event file, purges included)."""
    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def train(data, out, resume=False, **train):
    cfg = recipe.from_data(tiny_recipe(data, train={"device": "cpu", **train}, data={"eval_split": "test"},
                                       eval={"every": 2}), "test")
    torch.set_num_threads(1)
    return jobs.train(cfg, out, resume=resume, log=Reporter(enabled=False), render=recipe.dump,
                      allowed_changes=frozenset({"train.steps"}))


def test_every_metrics_row_is_in_tensorboard(tiny_data, tmp_path):
    train(tiny_data, tmp_path / "run", steps=4)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    shown = scalars(tmp_path / "run")
    for key in ("loss", "lr", "grad_norm", "img_s"):
        expected = [(r["step"], r[key]) for r in rows if key in r]
        assert [s for s, _ in shown[f"train/{key}"]] == [1, 2, 3, 4]
        assert [v for _, v in shown[f"train/{key}"]] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert [s for s, _ in shown["eval/top1"]] == [2, 4]  # every evaluation, the final one included
    assert all(p.is_file() for p in (tmp_path / "run").iterdir() if p.name.startswith("events."))


def test_a_resumed_run_shows_each_step_once_with_the_new_values(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_data, out, steps=4, checkpoint_every=2)
    # As if killed after step 4 with its checkpoint never written: the run goes back to step 2. Such a
    # run never got to write its final model and results (a finished one is not trained over).
    (out / "checkpoints" / "step-00000004.pt").unlink()
    (out / "checkpoints" / "latest").write_text("step-00000002.pt")
    for name in ("model.safetensors", "results.json"):
        (out / name).unlink()
    train(tiny_data, out, resume=True, steps=6, checkpoint_every=2)
    assert len(list(out.glob("events.out.tfevents.*"))) == 2  # one event file per session
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    shown = scalars(out)["train/loss"]
    assert [s for s, _ in shown] == [1, 2, 3, 4, 5, 6] == [s for s, _ in losses]
    assert [v for _, v in shown] == pytest.approx([v for _, v in losses], rel=1e-6)


def test_a_finished_run_resumed_reruns_its_final_evaluation_once(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_data, out, steps=4)
    train(tiny_data, out, resume=True, steps=4)  # nothing to train: the final evaluation runs again
    shown = scalars(out)
    assert [s for s, _ in shown["eval/top1"]] == [2, 4]
    assert [s for s, _ in shown["train/loss"]] == [1, 2, 3, 4]  # step 4's training row kept, once

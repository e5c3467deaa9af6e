"""train.keep_best keeps the best evaluation's weights in best/; train.early_stop ends a run that stopped
improving; --weights best reads best/."""

from __future__ import annotations

import json

import torch
from conftest import tiny_recipe
from safetensors.torch import load_file
from typer.testing import CliRunner

from vitcli import recipe
from vitcli.cli import app


def train(tmp_path, tiny_data, name: str, **train):
    body = tiny_recipe(tiny_data, train={"steps": 12, "checkpoint_every": 2, "keep_checkpoints": 10, **train},
                       eval={"every": 2})
    path = tmp_path / f"{name}.yaml"
    path.write_text(recipe.to_yaml(recipe.from_data(body, "test")))
    out = tmp_path / name
    result = CliRunner().invoke(app, ["pretrain", str(path), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return out, json.loads(result.stdout), {r["step"]: r["eval/top1"] for r in rows if "eval/top1" in r}


def test_best_holds_the_weights_of_the_best_evaluation(tmp_path, tiny_data):
    out, _, top1 = train(tmp_path, tiny_data, "best", keep_best="top1")
    best_step = max(top1, key=lambda s: (top1[s], -s))  # the first of equal values: later ones are no better
    kept = json.loads((out / "best" / "results.json").read_text())
    assert kept["step"] == best_step and kept["value"] == top1[best_step] and kept["metric"] == "top1"
    weights = load_file(str(out / "best" / "model.safetensors"))
    checkpoint = torch.load(out / "checkpoints" / f"step-{best_step:08d}.pt", weights_only=True)["model"]
    shared = weights.keys() & checkpoint.keys()
    assert len(shared) > 10 and all(torch.equal(weights[k], checkpoint[k]) for k in shared)
    scored = CliRunner().invoke(app, ["eval", "--from", str(out), "--weights", "best", "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["top1"] == kept["value"]
    assert not list(out.glob(".best-*"))  # no staging folder left behind


def test_early_stop_ends_the_run_after_patience_evaluations_without_improvement(tmp_path, tiny_data):
    out, results, top1 = train(tmp_path, tiny_data, "stop",
                               early_stop={"metric": "top1", "patience": 2, "min_delta": 1.0})
    assert results["steps"] == 6 and sorted(top1) == [2, 4, 6]  # best at 2, no gain of 1.0 at 4 and 6


def test_weights_best_of_a_run_without_best_is_one_line(tmp_path, tiny_data):
    out, _, _ = train(tmp_path, tiny_data, "plain")
    result = CliRunner().invoke(app, ["eval", "--from", str(out), "--weights", "best"])
    assert result.exit_code == 2 and "holds no model" in result.stderr and "train.keep_best" in result.stderr

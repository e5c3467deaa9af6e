"""Quiet and machine modes (`-q`, `--log-format json`) and the run summary every training run opens with."""

from __future__ import annotations

import json

from conftest import tiny_recipe
from typer.testing import CliRunner

from vitcli import recipe
from vitcli.cli import app


def run(tmp_path, tiny_data, *options: str):
    path = tmp_path / "tiny.yaml"
    path.write_text(recipe.to_yaml(recipe.from_data(tiny_recipe(tiny_data, train={"steps": 3}), "test")))
    return CliRunner().invoke(app, ["pretrain", str(path), "--out", str(tmp_path / "run"), *options])


def test_quiet_prints_the_result_and_nothing_else(tmp_path, tiny_data):
    result = run(tmp_path, tiny_data, "-q", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert json.loads(result.stdout)["steps"] == 3


def test_json_logs_are_one_object_a_line_with_the_summary_and_progress_as_numbers(tmp_path, tiny_data):
    result = run(tmp_path, tiny_data, "--log-format", "json")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    summary = [r for r in records if r.get("event") == "summary"]
    assert len(summary) == 1 and summary[0]["steps"] == 3 and summary[0]["train_images"] == 96
    assert summary[0]["classes"] == 4 and summary[0]["global_batch"] == 16 and summary[0]["params"] > 0
    progress = [r for r in records if r.get("event") == "progress" and r["task"] == "train"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == 3
    assert all(r["level"] in ("info", "warning") and r["message"] for r in records)


def test_the_text_summary_opens_the_run(tmp_path, tiny_data):
    result = run(tmp_path, tiny_data)
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    start = lines.index("run summary")
    block = lines[start + 1:start + 7]
    assert [line.split()[0] for line in block] == ["model", "data", "batch", "length", "precision", "out"]
    assert "96 images, 4 classes" in block[1] and "3 steps" in block[3]


def test_a_json_error_is_one_json_line_with_exit_code_2(tmp_path):
    result = CliRunner().invoke(app, ["eval", "--from", str(tmp_path / "missing"), "--log-format", "json"])
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert json.loads(line)["level"] == "error" and "missing" in json.loads(line)["message"]

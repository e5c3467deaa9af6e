"""A restarted job (torchrun --max-restarts, SLURM --requeue) resumes its run without --resume; a first
start still refuses another run's directory. In one process: the environment says it is a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_recipe
from typer.testing import CliRunner

from vitcli import recipe
from vitcli.cli import app
from vitcli.engine.persistence.rundir import default_run_dir
from vitcli.engine.runtime.process import launch_restarts


def write(folder: Path, data: Path, steps: int) -> str:
    path = folder / f"recipe-{steps}.yaml"
    body = tiny_recipe(data, train={"steps": steps, "checkpoint_every": 2})
    path.write_text(recipe.to_yaml(recipe.from_data(body, "test")))
    return str(path)


@pytest.mark.parametrize("env, count", [({}, 0), ({"TORCHELASTIC_RESTART_COUNT": "2"}, 2),
                                        ({"SLURM_RESTART_COUNT": "1"}, 1),
                                        ({"TORCHELASTIC_RESTART_COUNT": "junk"}, 0)])
def test_restart_count_comes_from_torchrun_or_slurm(monkeypatch, env, count):
    for name in ("TORCHELASTIC_RESTART_COUNT", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launch_restarts() == count


def test_a_restart_without_out_continues_the_newest_default_run_directory():
    assert default_run_dir("demo", restarted=True) == Path("runs/demo")  # nothing yet: where a first start goes
    Path("runs/demo").mkdir(parents=True)
    Path("runs/demo-2").mkdir()
    assert default_run_dir("demo") == Path("runs/demo-3")
    assert default_run_dir("demo", restarted=True) == Path("runs/demo-2")


def test_a_restarted_job_resumes_and_a_first_start_is_refused(tmp_path, tiny_data, monkeypatch):
    out = tmp_path / "run"
    runner = CliRunner()
    first = runner.invoke(app, ["pretrain", write(tmp_path, tiny_data, 4), "--out", str(out)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["pretrain", write(tmp_path, tiny_data, 4), "--out", str(out)])
    assert again.exit_code == 2 and "already holds another run" in again.output
    # The same command, as torchrun runs it again after a lost rank: it continues (here: a longer run).
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    restarted = runner.invoke(app, ["pretrain", write(tmp_path, tiny_data, 4), "--out", str(out),
                                    "--set", "train.steps=6"])
    assert restarted.exit_code == 0, restarted.output
    assert "restart 1 of this job: resuming" in restarted.output
    assert json.loads((out / "results.json").read_text())["steps"] == 6


def test_a_restart_whose_first_start_made_nothing_starts_fresh(tmp_path, tiny_data, monkeypatch):
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    out = tmp_path / "fresh"
    result = CliRunner().invoke(app, ["pretrain", write(tmp_path, tiny_data, 2), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "resuming" not in result.output


def test_train_timeout_is_checked():
    with pytest.raises(Exception, match=r"train.timeout: must be in \[1, 604800\], got 0"):
        recipe.from_data(tiny_recipe("x", train={"timeout": 0}), "test")

"""The run directory's rules: regular files only (no link followed), one writer, nothing of a run changed
until a resume is known to be valid, and a metrics log that holds each step once after any crash."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe

from vitcli import files, recipe
from vitcli.engine import jobs
from vitcli.engine.evaluate.evaluators import ClassificationEvaluator
from vitcli.engine.persistence.metrics_log import MetricsLog
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.runtime.signals import Interrupted
from vitcli.errors import CheckpointError, RunError, VitError
from vitcli.weights import reader

QUIET = Reporter(enabled=False)


def cfg(tiny_data, *sets: str):
    return recipe.from_data(tiny_recipe(tiny_data), "t", ["train.steps=2", "train.checkpoint_every=1", *sets])


def train(c, out, **kw):
    return jobs.train(c, out, log=QUIET, render=recipe.dump, **kw)


@pytest.fixture
def run(tiny_run, tmp_path):
    """A copy of the shared finished 2-step run (conftest), with checkpoints at steps 1 and 2."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def contents(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def steps_logged(out) -> tuple[list[int], list[int]]:
    """(steps of training rows, steps of evaluation rows) of metrics.jsonl, in order."""
    log = rows(out)
    return [r["step"] for r in log if "loss" in r], [r["step"] for r in log if any(k.startswith("eval/") for k in r)]


# -- links planted in a run directory -----------------------------------------------------------------

@pytest.mark.parametrize("name", ["metrics.jsonl", "recipe.yaml", "recipe.json", ".write-test", "model.safetensors",
                                  "checkpoints/latest", ".lock"])
def test_a_planted_link_is_refused_in_one_line_and_its_target_untouched(run, tiny_data, tmp_path, name):
    target = tmp_path / "victim.txt"
    target.write_text("precious\n")
    link = run / name
    link.unlink(missing_ok=True)
    link.symlink_to(target)
    before = contents(run)
    with pytest.raises(VitError, match=r"refused: .*symbolic link") as info:
        train(cfg(tiny_data, "train.steps=3"), run, resume=True, allowed_changes=frozenset({"train.steps"}))
    assert "\n" not in str(info.value)
    assert target.read_text() == "precious\n"
    assert contents(run) == before


def test_a_checkpoints_folder_that_is_a_link_is_refused(run, tiny_data, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (run / "checkpoints").rename(elsewhere)
    (run / "checkpoints").symlink_to(elsewhere)
    with pytest.raises(RunError, match=r"run/checkpoints: refused: it is a symbolic link"):
        train(cfg(tiny_data), run, resume=True)
    with pytest.raises(RunError, match=r"run/checkpoints: refused: it is a symbolic link, not a directory"):
        reader.latest(run)  # --from RUN without model.safetensors looks there too


@pytest.mark.parametrize("pointer", ["../../outside.pt", "/tmp/outside.pt", "\x00\xff\xfebinary", "step-00000001.pt/..",
                                     "x" * 5000])
def test_latest_names_only_a_step_file_inside_checkpoints(run, tmp_path, pointer, caplog):
    outside = tmp_path / "outside.pt"
    torch.save({"format_version": 1, "model": {}}, outside)
    (run / "checkpoints" / "latest").write_bytes(pointer.encode("utf-8", "surrogateescape"))
    with caplog.at_level("WARNING", logger="vitcli.weights"):
        assert reader.latest(run) == run / "checkpoints" / "step-00000002.pt"  # the highest step file
    assert "does not name a checkpoint file" in caplog.text


def test_a_step_file_that_is_a_link_is_refused(run, tmp_path):
    torch.save({"step": 9}, tmp_path / "evil.pt")
    (run / "checkpoints" / "step-00000009.pt").symlink_to(tmp_path / "evil.pt")
    (run / "checkpoints" / "latest").write_text("step-00000009.pt")
    with pytest.raises(RunError, match=r"step-00000009\.pt: refused: it is a symbolic link"):
        reader.latest(run)


def test_from_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match=r"weights\.pt: refused: it is a FIFO \(named pipe\), not a regular file"):
        reader.read(fifo)  # would block forever in open() if it were opened like a file


# -- one writer ---------------------------------------------------------------------------------------

def test_a_second_writer_on_the_same_out_is_refused_naming_the_directory(tiny_data, tmp_path):
    out = tmp_path / "run"
    with files.RunLock(out):  # as if another `vit pretrain` were running there
        with pytest.raises(RunError) as info:
            train(cfg(tiny_data), out)
    assert str(info.value) == (f"--out {out}: another vit process is writing this run directory (it holds "
                               f"{out}/.lock); wait for it to end or choose another --out")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    train(cfg(tiny_data), out)  # released: the same command now works


def test_the_lock_is_released_when_the_run_fails(tiny_data, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(VitError):
        train(cfg(tiny_data, "data.num_classes=3"), out)
    with files.RunLock(out):  # would raise if the failed run still held it
        pass


@pytest.mark.slow
def test_two_cli_runs_at_once_one_is_refused(tiny_data, tmp_path):
    import subprocess
    import sys

    path = tmp_path / "r.yaml"
    import yaml

    path.write_text(yaml.safe_dump(tiny_recipe(tiny_data, train={"steps": 2})))
    out = tmp_path / "run"
    with files.RunLock(out):
        proc = subprocess.run([sys.executable, "-m", "vitcli", "pretrain", str(path), "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: --out {out}: another vit process is writing this run directory (it " \
                                  f"holds {out}/.lock); wait for it to end or choose another --out"


# -- nothing changes until a resume is valid ----------------------------------------------------------

def test_a_failed_resume_changes_nothing(run, tiny_data):
    blob = (run / "checkpoints" / "step-00000002.pt").read_bytes()
    (run / "checkpoints" / "step-00000002.pt").write_bytes(blob[: len(blob) // 2])
    before = contents(run)
    with pytest.raises(CheckpointError, match="corrupt or truncated checkpoint"):
        train(cfg(tiny_data, "train.steps=4"), run, resume=True, allowed_changes=frozenset({"train.steps"}))
    assert contents(run) == before


def test_resuming_with_fewer_steps_than_done_is_refused(run, tiny_data):
    before = contents(run)
    with pytest.raises(RunError, match=r"step-00000002\.pt is at step 2, past the 1 steps this recipe asks for; a run "
                                       r"cannot be shortened"):
        train(cfg(tiny_data, "train.steps=1"), run, resume=True, allowed_changes=frozenset({"train.steps"}))
    assert contents(run) == before


def test_a_hand_edited_recipe_yaml_is_not_overwritten(run, tiny_data):
    edited = (run / "recipe.yaml").read_text() + "# my note\n"
    (run / "recipe.yaml").write_text(edited)
    train(cfg(tiny_data), run, resume=True)  # same recipe: nothing to write, the edit stays
    assert (run / "recipe.yaml").read_text() == edited
    before = contents(run)
    with pytest.raises(RunError, match=r"recipe\.yaml was edited since the run wrote it"):
        train(cfg(tiny_data, "train.steps=3"), run, resume=True, allowed_changes=frozenset({"train.steps"}))
    assert contents(run) == before


def test_an_allowed_change_rewrites_the_recipe_after_the_checkpoint_is_read(run, tiny_data):
    train(cfg(tiny_data, "train.steps=3"), run, resume=True, allowed_changes=frozenset({"train.steps"}))
    assert json.loads((run / "recipe.json").read_text())["train"]["steps"] == 3
    assert "steps: 3" in (run / "recipe.yaml").read_text()
    assert recipe.load(run / "recipe.yaml").train.steps == 3  # the header is a comment: still a recipe


@pytest.mark.parametrize("damage, match", [
    (lambda s: s.pop("optimizer"), r"optimizer: missing"),
    (lambda s: s.pop("position"), r"position: missing"),
    (lambda s: s.update(position={"step": "2"}), r"position: expected whole numbers"),
    (lambda s: s.update(rng={"torch": torch.zeros(3)}), r"rng: expected the torch, python and numpy"),
    (lambda s: s["rng"].update(torch=torch.zeros(7, dtype=torch.uint8)), r"rng: not a valid random-generator state"),
    (lambda s: s["model"].update(pos_embed=torch.zeros(1, 3, 5)), r"does not fit this run's model"),
    (lambda s: s["model"].update(pos_embed=s["model"]["pos_embed"] * float("nan")), r"model\.pos_embed: holds NaN"),
    (lambda s: s["model"].update(pos_embed=s["model"]["pos_embed"].int()), r"weights must be floating-point"),
    (lambda s: s.update(model=[1, 2]), r"model: expected a mapping"),
    (lambda s: s.update(format_version=99), r"checkpoint format 99, newer than this vit reads"),
], ids=["no-optimizer", "no-position", "position-type", "rng-type", "rng-bad", "shapes", "nan", "int", "list",
        "newer-format"])
def test_resume_from_a_damaged_checkpoint_is_one_line_and_changes_nothing(run, tiny_data, damage, match):
    path = run / "checkpoints" / "step-00000002.pt"
    state = torch.load(path, weights_only=True)
    damage(state)
    torch.save(state, path)
    before = contents(run)
    with pytest.raises(VitError, match=match) as info:
        train(cfg(tiny_data, "train.steps=3"), run, resume=True, allowed_changes=frozenset({"train.steps"}))
    assert "\n" not in str(info.value) and "last good" not in str(info.value)
    assert contents(run) == before


# -- metrics.jsonl after crashes ----------------------------------------------------------------------

def test_a_kill_before_the_first_checkpoint_leaves_no_duplicate_rows(tiny_data, tmp_path, monkeypatch):
    out, c = tmp_path / "run", cfg(tiny_data, "train.steps=4", "train.checkpoint_every=0")
    real = MetricsLog.write

    def write(self, row):
        real(self, row)
        if row.get("step") == 3:
            raise SystemExit("killed")  # as a SIGKILL would right after step 3 is logged: no checkpoint written

    monkeypatch.setattr(MetricsLog, "write", write)
    with pytest.raises(SystemExit):
        train(c, out)
    monkeypatch.setattr(MetricsLog, "write", real)
    train(c, out, resume=True)
    assert steps_logged(out) == ([1, 2, 3, 4], [4])


def test_a_kill_during_the_export_then_resume_logs_the_final_eval_once(tiny_data, tmp_path, monkeypatch):
    out, c = tmp_path / "run", cfg(tiny_data)
    monkeypatch.setattr(jobs.training, "save_run_model", lambda *a: (_ for _ in ()).throw(SystemExit("killed")))
    with pytest.raises(SystemExit):
        train(c, out)
    monkeypatch.undo()
    train(c, out, resume=True)
    assert steps_logged(out) == ([1, 2], [2])


def test_resuming_a_finished_run_adds_no_second_eval_row(run, tiny_data):
    train(cfg(tiny_data), run, resume=True)
    assert steps_logged(run) == ([1, 2], [2])


def test_a_full_disk_during_an_append_leaves_no_torn_line(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write({"step": 1, "loss": 1.0})
    real = os.write

    def half(fd, data):  # the disk takes half the line, then is full
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", half)
    with pytest.raises(RunError, match="disk full while writing"):
        log.write({"step": 2, "loss": 0.5})
    monkeypatch.undo()
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 1, "loss": 1.0}]


def test_sigterm_during_the_final_evaluation_stops_with_the_resume_hint(tiny_data, tmp_path, monkeypatch):
    out, c = tmp_path / "run", cfg(tiny_data)
    real = ClassificationEvaluator.run

    finished = []

    def run_and_signal(self, model):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the final evaluation is running
        finished.append(real(self, model))  # must not be reached: a preempted job has seconds
        return finished[-1]

    monkeypatch.setattr(ClassificationEvaluator, "run", run_and_signal)
    stopped = r"stopped by SIGTERM after step 2; checkpoint saved: .*step-00000002\.pt"
    with pytest.raises(Interrupted, match=stopped) as info:
        train(c, out)
    assert info.value.exit_code == 143 and not finished
    assert not (out / "results.json").exists()
    monkeypatch.undo()
    train(c, out, resume=True)
    assert steps_logged(out) == ([1, 2], [2])


# -- permissions ----------------------------------------------------------------------------------------

def test_run_files_follow_the_umask_also_after_resume(tiny_data, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        train(cfg(tiny_data), out)
        train(cfg(tiny_data, "train.steps=3"), out, resume=True, allowed_changes=frozenset({"train.steps"}))
    finally:
        os.umask(old)
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes

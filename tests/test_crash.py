"""Crash safety and exact resume: real training processes killed at random points, and numerical faults.

The process tests start `python -m vitcli pretrain` on the tiny generated data, kill it (SIGKILL at
seeded random steps and once in the middle of a checkpoint write; SIGTERM and SIGINT at a step), resume
with `--resume --out` until it finishes, and demand the very same final weights as an uninterrupted run,
bit for bit. They are slow (every process start imports torch) and run with `-m slow`.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_recipe
from safetensors.torch import load_file

from vitcli import recipe
from vitcli.engine import jobs
from vitcli.engine.persistence.metrics_log import MetricsLog
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.train.step import TrainStep
from vitcli.errors import RunError
from vitcli.weights import reader

ROOT = Path(__file__).resolve().parents[1]
STEPS = 30  # five epochs of 6 steps: kills land mid-epoch and resumes cross epoch boundaries
WAIT_S = 240  # per process; starting one imports torch, datasets and timm (slow on a busy machine)
SLOW_FSYNC_S = 0.5

# Loaded by the child interpreter (PYTHONPATH) to hold each checkpoint's temp file open long enough to
# kill the process in the middle of writing it. Test scaffolding only: vit itself is unchanged.
SITECUSTOMIZE = """
import os, time
_fsync = os.fsync
def _slow_fsync(fd):
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        name = ""
    if "/checkpoints/.step-" in name:
        time.sleep(float(os.environ["VIT_TEST_SLOW_FSYNC"]))
    _fsync(fd)
os.fsync = _slow_fsync
"""


# -- helpers -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crash_recipe(tiny_data, tmp_path_factory) -> Path:
    """A recipe whose every step draws random numbers (dropout, crops, flips) and keeps an EMA."""
    data = tiny_recipe(tiny_data, train={"steps": STEPS, "checkpoint_every": 1, "seed": 5, "ema": 0.9},
                       model={"dropout": 0.1}, data={"train_crop": "inception", "flip": True, "min_area": 0.5})
    path = tmp_path_factory.mktemp("crash") / "crash.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def reference(crash_recipe) -> Path:
    """The uninterrupted run, started exactly as the killed ones are (a fresh `python -m vitcli`)."""
    out = crash_recipe.parent / "reference"
    log = crash_recipe.parent / "reference.txt"
    proc = start(crash_recipe, out, log, resume=False)
    assert proc.wait(timeout=WAIT_S) == 0, log.read_text()
    return out


def start(recipe_path: Path, out: Path, log: Path, *, resume: bool, slow_fsync: Path | None = None,
          args: tuple[str, ...] = ()):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if slow_fsync is not None:
        (slow_fsync / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(slow_fsync), env.get("PYTHONPATH")]))
        env["VIT_TEST_SLOW_FSYNC"] = str(SLOW_FSYNC_S)
    cmd = [sys.executable, "-m", "vitcli", "pretrain", str(recipe_path), "--out", str(out), *args]
    # stderr to a file, not a pipe: a pipe nobody reads would block the child once it is full.
    handle = open(log, "w")
    proc = subprocess.Popen(cmd + (["--resume"] if resume else []), stdout=handle, stderr=subprocess.STDOUT,
                            cwd=out.parent, env=env)
    handle.close()
    return proc


def wait_until(condition, proc, log: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before the kill point:\n{log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for the kill point:\n{log.read_text()}")
        time.sleep(0.002)


def latest_step(out: Path) -> int:
    pointer = out / "checkpoints" / "latest"
    try:
        return int(pointer.read_text().strip()[len("step-"):-len(".pt")])
    except (OSError, ValueError):
        return 0


def temp_files(out: Path) -> list[Path]:
    return sorted(out.rglob(".*.tmp"))


def writing_step(out: Path) -> int:
    """The step of a checkpoint being written now (its temp file exists), or 0."""
    steps = [int(m.group(1)) for p in temp_files(out) if (m := re.match(r"\.step-(\d+)\.pt\.", p.name))]
    return max(steps, default=0)


def assert_loadable_latest(out: Path) -> int:
    """`latest` names a complete checkpoint that loads with weights_only=True; returns its step."""
    pointer = (out / "checkpoints" / "latest").read_text().strip()
    path = out / "checkpoints" / pointer
    assert path == reader.latest(out)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert f"step-{state['step']:08d}.pt" == pointer
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    return state["step"]


def assert_same_run(out: Path, reference: Path) -> None:
    for name in ("model.safetensors", "model_ema.safetensors"):
        ours, ref = load_file(str(out / name)), load_file(str(reference / name))
        assert ours.keys() == ref.keys()
        for key in ref:
            assert torch.equal(ours[key], ref[key]), f"{name}: {key} differs"
    losses = lambda p: [json.loads(x)["loss"] for x in (p / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert losses(out) == losses(reference)
    assert temp_files(out) == []


def finish(recipe_path: Path, out: Path, log: Path) -> None:
    proc = start(recipe_path, out, log, resume=True)
    assert proc.wait(timeout=WAIT_S) == 0, log.read_text()


# -- process kills -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_gives_identical_weights(crash_recipe, reference, tmp_path):
    rng = random.Random(20240601)
    out, log = tmp_path / "run", tmp_path / "log.txt"
    kills = ["random", "during checkpoint write", "random"]
    for i, kind in enumerate(kills):
        done = latest_step(out)
        target = done + rng.randint(2, 6)
        slow = tmp_path / "site" if kind == "during checkpoint write" else None
        if slow is not None:
            slow.mkdir(exist_ok=True)
        proc = start(crash_recipe, out, log, resume=i > 0, slow_fsync=slow)
        if slow is not None:
            wait_until(lambda: writing_step(out) >= target, proc, log)
        else:
            wait_until(lambda: latest_step(out) >= target, proc, log)
            time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside a later step
        proc.kill()
        assert proc.wait(timeout=30) == -signal.SIGKILL
        step = assert_loadable_latest(out)
        assert done < step < STEPS
        if slow is not None:
            assert temp_files(out), "the kill was meant to land while a checkpoint was being written"
            assert step < writing_step(out)  # the half-written one is not what `latest` names
    finish(crash_recipe, out, log)
    assert_same_run(out, reference)


@pytest.mark.slow
def test_sigterm_and_sigint_save_at_a_step_boundary_and_resume_exactly(crash_recipe, reference, tmp_path):
    rng = random.Random(7)
    out, log = tmp_path / "run", tmp_path / "log.txt"
    # An override that does not change the weights, so the hint must repeat it for the resume to be accepted.
    override = ("--set", "train.keep_checkpoints=3")
    expected_hint = f"vit pretrain {crash_recipe} --set train.keep_checkpoints=3 --resume --out {out}"
    hint = None
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130), (None, 0)):
        done = latest_step(out)
        if hint is None:
            proc = start(crash_recipe, out, log, resume=False, args=override)
        else:  # resume exactly as the message said
            proc = subprocess.Popen([sys.executable, "-m", "vitcli", *shlex.split(hint)[1:]], cwd=out.parent,
                                    stdout=open(log, "w"), stderr=subprocess.STDOUT)
        if sig is None:
            assert proc.wait(timeout=WAIT_S) == 0, log.read_text()
            break
        target = done + rng.randint(2, 6)
        wait_until(lambda: latest_step(out) >= target, proc, log)
        proc.send_signal(sig)
        assert proc.wait(timeout=WAIT_S) == code
        text = log.read_text()
        assert "Traceback" not in text, text
        lines = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, text
        match = re.fullmatch(rf"error: stopped by {sig.name} after step (\d+); checkpoint saved: "
                             rf"{re.escape(str(out))}/checkpoints/step-(\d+)\.pt; resume with: (.+)", lines[0])
        assert match, lines[0]
        step = int(match.group(1))
        assert int(match.group(2)) == step == assert_loadable_latest(out) >= target
        hint = match.group(3)
        assert hint == expected_hint
    assert_same_run(out, reference)


# -- numerical faults (in process: a NaN is injected into the loss at chosen steps) -------------------

class Recorder(Reporter):
    def __init__(self):
        super().__init__(enabled=False)
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def poison_loss(monkeypatch, steps: set[int]) -> None:
    """Make the loss NaN at the given (1-based) steps (one micro-batch per step in these recipes)."""
    from vitcli.engine.train.objectives import Supervised

    real, calls = Supervised.loss, [0]

    def loss(self, model, images, labels):
        calls[0] += 1
        value, extra = real(self, model, images, labels)
        return (value * math.nan if calls[0] in steps else value), extra

    monkeypatch.setattr(Supervised, "loss", loss)


def nan_cfg(tiny_data, *sets: str):
    return recipe.from_data(tiny_recipe(tiny_data), "t", ["train.steps=6", "train.checkpoint_every=1", *sets])


def finite(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    return state


def test_nan_loss_stops_naming_the_step_last_good_checkpoint_and_causes(tiny_data, tmp_path, monkeypatch):
    poison_loss(monkeypatch, {4})
    cfg, out = nan_cfg(tiny_data), tmp_path / "run"
    with pytest.raises(RunError) as info:
        jobs.train(cfg, out, render=recipe.dump, log=Recorder())
    last = out / "checkpoints" / "step-00000003.pt"
    assert str(info.value) == (
        f"non-finite loss or gradient at step 4 (loss nan, grad norm nan); last good checkpoint: {last}; likely "
        "causes: a learning rate too high for this batch size, or bf16 overflow (try train.precision: fp32); "
        "train.skip_nonfinite: N skips up to N such steps")
    assert reader.latest(out) == last
    assert finite(last)["step"] == 3
    assert not (out / "checkpoints" / "step-00000004.pt").exists()


def test_skip_nonfinite_skips_up_to_n_steps_each_logged(tiny_data, tmp_path, monkeypatch):
    poison_loss(monkeypatch, {2, 4})
    cfg, out, log = nan_cfg(tiny_data, "train.skip_nonfinite=2"), tmp_path / "run", Recorder()
    result = jobs.train(cfg, out, render=recipe.dump, log=log)
    assert result["steps"] == 6
    assert log.warnings == ["step 2: non-finite loss/gradient, update skipped (1/2 allowed)",
                            "step 4: non-finite loss/gradient, update skipped (2/2 allowed)"]
    for path in (out / "checkpoints").glob("step-*.pt"):
        assert finite(path)["position"]["skipped"] == 2
    assert all(torch.isfinite(t).all() for t in load_file(str(out / "model.safetensors")).values())


def test_one_more_nonfinite_step_than_allowed_stops_at_the_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    poison_loss(monkeypatch, {2, 5})
    cfg, out = nan_cfg(tiny_data, "train.skip_nonfinite=1"), tmp_path / "run"
    with pytest.raises(RunError, match=r"at step 5 .*last good checkpoint: .*step-00000004\.pt"):
        jobs.train(cfg, out, render=recipe.dump, log=Recorder())
    assert finite(reader.latest(out))["step"] == 4


def test_weights_that_turn_nonfinite_are_never_checkpointed(tiny_data, tmp_path, monkeypatch):
    real = TrainStep.run

    def run(self, micro_batches, lr, step):
        result = real(self, micro_batches, lr, step)
        if step + 1 == 3:  # as if update 3 overflowed although its loss and gradient were finite
            with torch.no_grad():
                self.setup.model.pos_embed.fill_(math.inf)
        return result

    monkeypatch.setattr(TrainStep, "run", run)
    cfg, out = nan_cfg(tiny_data), tmp_path / "run"
    with pytest.raises(RunError) as info:
        jobs.train(cfg, out, render=recipe.dump, log=Recorder())
    last = out / "checkpoints" / "step-00000002.pt"
    assert str(info.value).startswith(f"step 3: weight pos_embed is NaN or infinite, so no checkpoint was "
                                      f"written; last good checkpoint: {last}; likely causes:")
    assert reader.latest(out) == last and finite(last)["step"] == 2
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["latest", "step-00000001.pt",
                                                                      "step-00000002.pt"]


# -- what a kill leaves behind -----------------------------------------------------------------------

def test_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (3, 4):
        torch.save({"step": step}, folder / f"step-{step:08d}.pt")
    assert reader.latest(tmp_path) == folder / "step-00000004.pt"  # no pointer yet
    (folder / "latest").write_text("step-00000003.pt")
    assert reader.latest(tmp_path) == folder / "step-00000003.pt"  # the pointer wins
    (folder / "latest").write_text("step-00000009.pt")
    assert reader.latest(tmp_path) == folder / "step-00000004.pt"  # a dangling pointer does not


def test_resume_removes_temp_files_and_torn_metrics_lines(tiny_data, tmp_path):
    from vitcli.recipe import schema
    from vitcli.engine.persistence import rundir

    cfg, out = nan_cfg(tiny_data, "train.steps=2"), tmp_path / "run"
    jobs.train(cfg, out, render=recipe.dump, log=Recorder())
    stale = [out / "checkpoints" / ".step-00000003.pt.k1ll3d.tmp", out / ".metrics.jsonl.abc.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 3, "lo')  # the line a kill cut short
    rundir.prepare(out, recipe.to_yaml(cfg), schema.to_dict(cfg), resume=True, allowed=set())
    assert not any(path.exists() for path in stale)
    MetricsLog(out / "metrics.jsonl").truncate_after(2)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "loss" in row] == [1, 2]

"""Data parallelism under torchrun with gloo on CPU: same numbers as one process.

Run alone with `pytest -m distributed`. Each test launches `torchrun --nproc-per-node 2 -m vitcli ...`,
exactly as a user would, so they cost process start-up (a few seconds each) and are kept few.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_recipe
from safetensors.torch import load_file
from typer.testing import CliRunner

from vitcli import recipe
from vitcli.cli import app

pytestmark = pytest.mark.distributed

# Constant lr and no augmentation or dropout: the runs must differ only in how the batch is split.
# SGD, because Adam divides by sqrt(v): on parameters whose true gradient is zero (the attention key
# bias) it turns float rounding noise into full-size steps, and no tolerance would hold.
SETS = {"train": {"batch_size": 16, "steps": 4, "seed": 5, "checkpoint_every": 2},
        "optim": {"name": "sgd", "lr": 0.05},
        "schedule": {"warmup_steps": 0, "decay": "constant"}}


def write_recipe(folder, **extra) -> str:
    data = tiny_recipe(folder.parent / "data", **SETS)
    for key, value in extra.items():
        data.setdefault(key, {}).update(value)
    path = folder / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(recipe.to_yaml(recipe.from_data(data, "test")))
    return str(path)


def torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "vitcli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("dist")
    (root / "data").symlink_to(tiny_data)
    return root


@pytest.fixture(scope="module")
def single(workdir):
    """The one-process reference run (4 steps)."""
    out = workdir / "single"
    run_cli("pretrain", write_recipe(workdir / "r1"), "--out", str(out))
    return out


def close(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


def test_ddp_two_processes_match_one(workdir, single):
    out = workdir / "ddp"
    torchrun(2, "pretrain", write_recipe(workdir / "r2"), "--out", str(out))
    close(load_file(str(out / "model.safetensors")), load_file(str(single / "model.safetensors")))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # only rank 0 wrote


def test_eval_under_two_processes_equals_one(single):
    one = json.loads(run_cli("eval", "--from", str(single), "--json").stdout)
    two = json.loads(torchrun(2, "eval", "--from", str(single), "--json").stdout)  # one object: rank 0's
    for key in ("top1", "top5", "images"):
        assert one[key] == two[key], key
    assert one["loss"] == pytest.approx(two["loss"], abs=1e-6)
    assert one["per_class_top1"] == two["per_class_top1"]


def test_save_under_two_resume_under_one(workdir, single):
    out = workdir / "resume"
    torchrun(2, "pretrain", write_recipe(workdir / "r3", train={"steps": 2}), "--out", str(out))
    run_cli("pretrain", write_recipe(workdir / "r3"), "--out", str(out), "--resume", "--set", "train.steps=4")
    close(load_file(str(out / "model.safetensors")), load_file(str(single / "model.safetensors")))


def test_fsdp2_save_under_two_load_in_one(workdir, single):
    out = workdir / "fsdp"
    # 31 eval images in batches of 5 give rank 0 four batches and rank 1 three: the final evaluation
    # must not hang waiting for a forward pass that rank 1 never makes.
    torchrun(2, "pretrain", write_recipe(workdir / "r4", train={"parallel": "fsdp"}, eval={"batch_size": 5},
                                         data={"eval_split": "test[:31]"}), "--out", str(out))
    close(load_file(str(out / "model.safetensors")), load_file(str(single / "model.safetensors")))
    ckpt = torch.load(out / "checkpoints" / "step-00000004.pt", weights_only=True)
    assert not any(type(v).__name__ == "DTensor" for v in ckpt["model"].values())
    result = json.loads(run_cli("eval", "--from", str(out / "checkpoints" / "step-00000004.pt"), "--json").stdout)
    assert result["images"] == 31  # the run's own eval split, from the checkpoint's recipe


@pytest.mark.slow  # two torchrun trainings: ~20 s on a quiet machine
def test_masked_patch_prediction_trains_the_same_under_ddp_and_fsdp2(workdir):
    """Each rank draws its own share's corruption; DDP and FSDP2 must then reach the same weights."""
    mpp = {"train": {"objective": "masked_patch"}, "eval": {"evaluators": []}}
    outs = []
    for parallel in ("ddp", "fsdp"):
        out = workdir / f"mpp-{parallel}"
        recipe_path = write_recipe(workdir / f"r-mpp-{parallel}", **{**mpp, "train": {**mpp["train"],
                                                                                    "parallel": parallel}})
        torchrun(2, "pretrain", recipe_path, "--out", str(out))
        outs.append(out)
        rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert all("mpp_acc" in r for r in rows if "loss" in r)
    ckpt = {o: torch.load(o / "checkpoints" / "step-00000004.pt", weights_only=True)["model"] for o in outs}
    close(*ckpt.values())
    assert "mask_token" in ckpt[outs[0]]

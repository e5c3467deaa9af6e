"""`vit pretrain --data SOURCE` with no recipe file; starts that are refused leave nothing behind; the cheap
checks come before torch, timm and datasets load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CLASSES, make_images, tiny_recipe, write_parquet_dataset
from PIL import Image
from typer.testing import CliRunner

from vitcli.cli import app

runner = CliRunner()
# What keeps a test fast: 2 blocks instead of Ti's 12, batches of 16, no worker processes.
FAST = ["--set", "model.depth=2", "--set", "train.batch_size=16", "--set", "data.workers=0",
        "--set", "train.precision=fp32", "--set", "schedule.warmup_steps=1"]


def image_folder(root: Path, splits: dict[str, int]) -> Path:
    """Class folders of PNGs (ImageNet-style names) under each split folder ('' for none)."""
    for split, n in splits.items():
        images, labels = make_images(n, seed=len(split), size=8)
        for i, (pixels, label) in enumerate(zip(images, labels)):
            path = root / split / CLASSES[label] / f"n0144076{label}_{split or 'x'}_{i}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, format="PNG")
    return root


def pretrain(cwd: Path, monkeypatch, *args):
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["vit", "pretrain", *map(str, args)])  # what results.json records
    return runner.invoke(app, ["pretrain", *map(str, args)])


def test_pretrain_on_an_image_folder_with_train_and_val_needs_no_recipe(tmp_path, monkeypatch):
    folder = image_folder(tmp_path / "photos", {"train": 48, "val": 16})
    result = pretrain(tmp_path, monkeypatch, "--data", f"imagefolder:{folder}", "--res", 32, "--model", "Ti/4",
                      "--steps", 3, *FAST)
    assert result.exit_code == 0, result.output
    assert f"imagefolder:{folder}: training on 'train', evaluating on 'val' (its splits: 'train', 'val')" \
        in result.output
    assert f"imagefolder:{folder} [train]: 48 images in 4 classes (blue 12, green 12, grey 12, red 12)" \
        in result.output
    assert f"imagefolder:{folder} [val]: 16 images in 4 classes" in result.output
    run = tmp_path / "runs" / "photos"  # named after the data
    saved = json.loads((run / "recipe.json").read_text())
    assert saved["model"]["name"] == "Ti/4" and saved["model"]["res"] == [32, 32]
    assert saved["data"]["train_split"] == "train" and saved["data"]["eval_split"] == "val"
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 3 and results["images"] == 16


def test_pretrain_on_a_parquet_set_with_train_and_validation(tmp_path, monkeypatch):
    data = write_parquet_dataset(tmp_path / "shots", n_train=32, n_test=8)
    (data / "test-00000-of-00001.parquet").rename(data / "validation-00000-of-00001.parquet")
    result = pretrain(tmp_path, monkeypatch, "--data", data, "--res", 32, "--model", "Ti/4", "--steps", 2, *FAST)
    assert result.exit_code == 0, result.output
    assert "training on 'train', evaluating on 'validation'" in result.output
    assert json.loads((tmp_path / "runs" / "shots" / "results.json").read_text())["images"] == 8


def test_a_source_with_one_split_holds_out_the_end_of_it(tmp_path, monkeypatch):
    folder = image_folder(tmp_path / "flat", {"": 40})
    result = pretrain(tmp_path, monkeypatch, "--data", f"imagefolder:{folder}", "--res", 16, "--model", "Ti/4",
                      "--epochs", 0.5, *FAST)
    assert result.exit_code == 0, result.output
    assert "training on 'train[:39]', evaluating on 'train[39:]', the last 1 of its 40 images held out (2%)" \
        in result.output
    results = json.loads((tmp_path / "runs" / "flat" / "results.json").read_text())
    assert results["images"] == 1 and results["train_examples"] == 39 and results["steps"] == 2  # 0.5 x 39 / 16


def test_a_recipe_with_another_source_gets_the_new_sources_splits(tmp_path, monkeypatch, tiny_data):
    spec = tmp_path / "r.yaml"  # says eval_split 'test': the new data has no such split
    spec.write_text(yaml.safe_dump(tiny_recipe(tiny_data, data={"eval_split": "test"}, train={"steps": 2})))
    folder = image_folder(tmp_path / "f", {"train": 16, "validation": 8})
    result = pretrain(tmp_path, monkeypatch, spec, "--data", f"imagefolder:{folder}", "--set", "data.workers=0")
    assert result.exit_code == 0, result.output
    assert "evaluating on 'validation'" in result.output


def test_steps_and_epochs_together_are_one_line(tmp_path, monkeypatch):
    result = pretrain(tmp_path, monkeypatch, "demo", "--steps", 3, "--epochs", 1)
    assert result.exit_code == 2 and "--steps 3 and --epochs 1: give one training length, not both" in result.output


# -- a refused start leaves nothing behind -------------------------------------------------------------------
def _labels_out_of_range(tmp: Path) -> list:
    import datasets

    features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
    images, _ = make_images(16, 0)
    ds = datasets.Dataset.from_dict({"img": [Image.fromarray(a) for a in images], "label": [0] * 15 + [9]},
                                    features=features)
    (tmp / "d").mkdir()
    ds.to_parquet(str(tmp / "d" / "train-00000-of-00001.parquet"))
    return ["--data", tmp / "d", "--set", "data.num_classes=4"]


REFUSED = {
    "recipe": lambda tmp, data: ["--data", data, "--set", "optim.lr=-1"],
    "split": lambda tmp, data: ["--data", data, "--set", "data.eval_split=nope"],
    "labels": lambda tmp, data: _labels_out_of_range(tmp),
    "batch": lambda tmp, data: ["--data", data, "--set", "train.batch_size=4096"],
    "hub": lambda tmp, data: ["--data", "nobody-here/no-such-dataset"],
    "from": lambda tmp, data: ["--set", f"train.init_from={tmp / 'nope.pt'}", "--data", data],
}


@pytest.mark.parametrize("reason", list(REFUSED))
def test_a_refused_start_leaves_no_run_directory(reason, tmp_path, monkeypatch, tiny_data):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = REFUSED[reason](tmp_path, tiny_data)
    result = pretrain(tmp_path, monkeypatch, "--res", 16, "--model", "Ti/4", "--steps", 2, *FAST, *args)
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "runs").exists(), result.output
    again = pretrain(tmp_path, monkeypatch, "--out", tmp_path / "given", "--res", 16, "--model", "Ti/4",
                     "--steps", 2, *FAST, *args)
    assert again.exit_code == 2 and not (tmp_path / "given").exists(), again.output


def test_a_finetune_refused_after_reading_its_checkpoint_leaves_nothing(tmp_path, monkeypatch, tiny_data):
    pre = tmp_path / "pre"
    first = pretrain(tmp_path, monkeypatch, "--data", tiny_data, "--res", 16, "--model", "Ti/4", "--steps", 1,
                     "--out", pre, *FAST)
    assert first.exit_code == 0, first.output
    result = runner.invoke(app, ["finetune", "--from", str(pre), "--set", "data.eval_split=nope", "--steps", "1",
                                 "--set", "data.workers=0", "--set", "train.batch_size=16"])
    assert result.exit_code == 2 and "split 'nope'" in result.output, result.output
    assert not (tmp_path / "runs").exists(), result.output


# -- cheap checks before heavy imports ----------------------------------------------------------------------
PROBE = """
import sys
from vitcli.errors import VitError
def noted(self, *args):
    heavy = sorted(m for m in ("torch", "timm", "datasets") if m in sys.modules)
    print("loaded when refused:", heavy, file=sys.stderr)
    Exception.__init__(self, *args)
VitError.__init__ = noted
from vitcli.cli.app import main
sys.argv = ["vit", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("args", [
    ["finetune", "--from", "{tmp}/missing.pt"],
    ["finetune", "--from", "{run}", "--set", "optim.lrr=0.1"],
    ["finetune", "nope.yaml", "--from", "{run}"],
    ["pretrain", "{tmp}/missing.yaml"],
    ["pretrain", "demo", "--set", "train.stepz=3"],
    ["pretrain", "--data", "builtin:digits", "--set", "optim.name=adamz"],
    ["eval", "--from", "{tmp}/missing.pt"],
    ["fewshot", "--from", "{tmp}/missing"],
])
def test_cheap_refusals_come_before_torch_timm_and_datasets_load(args, tmp_path):
    run = tmp_path / "run"
    run.mkdir()  # exists: the refusal must come from the --set or RECIPE, before the checkpoint is read
    argv = [a.format(tmp=tmp_path, run=run) for a in args]
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert "loaded when refused: []" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# -- a resumed run keeps its history ------------------------------------------------------------------------
def test_a_lengthened_run_keeps_every_session_and_says_how_its_schedule_goes_on(tmp_path, monkeypatch, tiny_data):
    out = tmp_path / "run"
    args = ["--data", tiny_data, "--res", 16, "--model", "Ti/4", "--out", out, *FAST]
    first = pretrain(tmp_path, monkeypatch, *args, "--steps", 4)
    assert first.exit_code == 0, first.output
    again = pretrain(tmp_path, monkeypatch, *args, "--steps", 8, "--resume")
    assert again.exit_code == 0, again.output
    assert "lengthened from 4 to 8 steps: the cosine schedule is laid out again over 8 steps, so the learning " \
           "rate goes from" in again.output and "(it had decayed: training warms up again)" in again.output
    results = json.loads((out / "results.json").read_text())
    commands = [s["command"] for s in results["sessions"]]
    assert len(commands) == 2 and "--steps 4" in commands[0] and "--resume" not in commands[0]
    assert "--steps 8" in commands[1] and "--resume" in commands[1]
    assert results["wall_s"] == pytest.approx(sum(s["wall_s"] for s in results["sessions"]), abs=2e-3)
    assert results["wall_s"] >= results["train_s"] > 0 and results["steps"] == 8
    third = pretrain(tmp_path, monkeypatch, "--resume", "--out", out, "--steps", 9)  # the run's own recipe
    assert third.exit_code == 0, third.output
    commands = [s["command"] for s in json.loads((out / "results.json").read_text())["sessions"]]
    assert [next(c for c in (4, 8, 9) if f"--steps {c}" in command) for command in commands] == [4, 8, 9]
    assert ["--resume" in command for command in commands] == [False, True, True]


def test_base_by_shipped_name_and_a_childs_length_replaces_the_bases(tmp_path):
    from vitcli import recipe

    child = tmp_path / "mine.yaml"
    child.write_text("base: cifar10/scratch\ntrain:\n  steps: 20\n")  # the base says epochs: 3.5
    cfg = recipe.load(child)
    assert cfg.model.name == "Ti/4" and cfg.train.steps == 20 and cfg.train.epochs is None
    other = tmp_path / "m2.yaml"
    other.write_text("base: cifar10/scratch.yaml\n")  # a shipped recipe's file name works too
    assert recipe.load(other).model.name == "Ti/4"
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "scratch.yaml").write_text("model: {name: S/16}\ntrain: {epochs: 1}\n")
    assert recipe.load(other).model.name == "S/16"  # a file beside the recipe wins over the shipped one

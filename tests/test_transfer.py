"""The paper's per-data-set transfer settings (vitcli/recipe/transfer.py) and training lengths given by override."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from conftest import tiny_recipe
from rich.console import Console
from typer.testing import CliRunner

from vitcli import recipe
from vitcli.recipe import assembly, transfer
from vitcli.cli import app
from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter
from vitcli.weights import reader

runner = CliRunner()


def capture() -> tuple[Reporter, io.StringIO]:
    buffer = io.StringIO()
    return Reporter(console=Console(file=buffer, width=400)), buffer



SCRATCH = recipe.SHIPPED / "cifar10" / "scratch.yaml"  # gives train.epochs


@pytest.mark.parametrize("source, name", [
    ("uoft-cs/cifar10", "CIFAR-10"), ("../shared/data/cifar10/", "CIFAR-10"), ("CIFAR-100", "CIFAR-100"),
    ("imagefolder:/d/oxford_flowers102", "Oxford Flowers-102"), ("timm/oxford-iiit-pet", "Oxford-IIIT Pets"),
    ("ILSVRC/imagenet-1k", "ImageNet"), ("cifar10-corrupted", None), ("builtin:digits", None)])
def test_data_sets_are_recognised_by_the_last_part_of_their_source(source, name):
    known = transfer.lookup(source)
    assert (known.name if known else None) == name


def test_unknown_data_sets_train_ten_epochs_within_the_papers_range():
    assert transfer.finetune_steps("acme/birds", 512_000, 512)[0] == 10_000  # 10 epochs
    assert transfer.finetune_steps("acme/birds", 1_000, 512)[0] == 500  # at least the paper's shortest
    assert transfer.finetune_steps("acme/birds", 10**8, 512)[0] == 20_000  # at most its longest
    assert transfer.finetune_steps("acme/birds", 512_000, 128)[0] == 40_000  # the same images at batch 128
    assert transfer.finetune_steps("uoft-cs/cifar10", None, 256)[0] == 20_000


@pytest.mark.parametrize("unit, value", [("steps", 3), ("examples", 1000), ("epochs", 0.5)])
def test_a_length_given_with_set_replaces_the_recipes_in_any_unit(unit, value):
    assert recipe.load(SCRATCH).train.epochs == 3.5
    cfg = recipe.load(SCRATCH, [f"train.{unit}={value}"])
    lengths = {k: getattr(cfg.train, k) for k in ("steps", "epochs", "examples")}
    assert lengths == {k: (value if k == unit else None) for k in lengths}


def test_the_recipe_file_itself_may_still_not_give_two_lengths(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"train": {"steps": 3, "epochs": 1.0}}))
    result = runner.invoke(app, ["recipe", "show", str(path)])
    assert result.exit_code == 2 and "give only one of steps, epochs or examples (got steps, epochs)" in result.output


def test_resuming_a_run_of_epochs_with_a_step_count(tiny_data, tmp_path):
    path = tmp_path / "r.yaml"
    data = tiny_recipe(tiny_data, train={"steps": None, "epochs": 0.5, "checkpoint_every": 1})  # 3 steps of 16
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    first = runner.invoke(app, ["pretrain", str(path), "--out", str(out)])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["pretrain", str(path), "--set", "train.steps=5", "--resume", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text())["steps"] == 5


# -- the length of a fine-tune, and what it will cost -----------------------------------------------------
def _prepared(cfg):
    """The recipe as a run would train and record it (splits chosen, the training split opened, the length
    resolved), as jobs.train prepares it."""
    from vitcli.engine.jobs.preamble import with_splits
    from vitcli.engine.train.trainer import prepare

    log, buffer = capture()
    cfg, _ = prepare(with_splits(cfg, "train", log.info), log)
    return cfg, buffer.getvalue()


@pytest.mark.parametrize("name, batch, steps, why", [
    ("cifar10", 16, 320_000, "Table 4 of the paper for CIFAR-10: 10000 steps at batch 512"),
    ("oxford-iiit-pet", 64, 4000, "Table 4 of the paper for Oxford-IIIT Pets: 500 steps at batch 512"),
    ("my-colours", 32, 8000, ("not one of the paper's data sets: 10 epochs of 96 images, within the paper's "
                              "500-20000 steps at batch 512"))])
def test_finetune_without_a_length_sizes_itself(tiny_run, tiny_data, tmp_path, name, batch, steps, why):
    (tmp_path / name).symlink_to(tiny_data, target_is_directory=True)
    items = [f"data.source={tmp_path / name}", f"train.batch_size={batch}", "data.workers=0", "train.precision=fp32"]
    cfg = assembly.from_checkpoint(reader.read(tiny_run), None, [], items, assembly.FINETUNE)
    assert cfg.train.steps is None and cfg.train.epochs is None and cfg.train.examples is None
    resolved, log = _prepared(cfg)
    assert resolved.train.steps == steps
    warmup = min(500, steps // 10)  # the defaults' 500 warmup steps, at most 10% of the run
    assert resolved.schedule.warmup_steps == warmup
    assert f"fine-tuning length: {steps} steps at batch {batch} ({why}" in log


def test_a_finetune_records_the_length_and_warmup_it_trained_with(tiny_run, tmp_path, monkeypatch):
    from vitcli.engine.train.optim import lr_at
    from vitcli.recipe.config import ScheduleCfg

    # 5 epochs of 96 images (< 1 step of 512, so the lowered minimum, 1) at batch 16: 32 steps, warm-up 500 -> 3.
    monkeypatch.setattr(transfer, "DEFAULT_EPOCHS", 5)
    monkeypatch.setattr(transfer, "MIN_STEPS", 1)
    out = tmp_path / "ft"
    result = runner.invoke(app, ["finetune", "--from", str(tiny_run), "--out", str(out), "--set", "train.batch_size=16",
                                 "--set", "train.log_every=1", "--set", "data.workers=0",
                                 "--set", "train.precision=fp32"])
    assert result.exit_code == 0, result.output
    assert "fine-tuning length: 32 steps at batch 16" in result.output
    recorded = json.loads((out / "recipe.json").read_text())
    assert recorded["train"]["steps"] == 32 and recorded["schedule"]["warmup_steps"] == 3
    assert reader.read(reader.latest(out)).recipe == recorded  # the checkpoint it would resume from
    assert json.loads((out / "config.json").read_text())["vit_recipe"] == recorded
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"lr"' in x]
    assert [r["step"] for r in rows] == list(range(1, 33))
    schedule = ScheduleCfg(**recorded["schedule"])
    assert [r["lr"] for r in rows] == [lr_at(r["step"] - 1, 32, recorded["optim"]["lr"], schedule) for r in rows]
    assert rows[2]["lr"] == recorded["optim"]["lr"] > rows[1]["lr"]  # the peak is reached at step 3


def test_a_finetune_recorded_before_its_length_was_resolved_still_resumes(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "DEFAULT_EPOCHS", 5)  # 32 steps at batch 16, as above
    monkeypatch.setattr(transfer, "MIN_STEPS", 1)
    out = tmp_path / "ft"
    command = ["finetune", "--from", str(tiny_run), "--out", str(out), "--set", "train.batch_size=16",
               "--set", "data.workers=0", "--set", "train.precision=fp32"]
    assert runner.invoke(app, command).exit_code == 0
    resolved = json.loads((out / "recipe.json").read_text())
    # What vit recorded before the length was resolved first: no length, the recipe's 500 warm-up steps.
    old = {**resolved, "train": {**resolved["train"], "steps": None},
           "schedule": {**resolved["schedule"], "warmup_steps": 500}}
    from vitcli.engine.persistence import rundir

    rundir.record(out, recipe.dump(old), old)  # recipe.json and recipe.yaml, as that vit wrote them
    again = runner.invoke(app, [*command, "--resume"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "recipe.json").read_text()) == resolved  # now says what ran


def test_a_warmup_longer_than_the_run_is_one_line(tiny_run):
    result = runner.invoke(app, ["finetune", "--from", str(tiny_run), "--set", "train.steps=3", "--set", "train.batch_size=16",
                                 "--set", "schedule.warmup_steps=5", "--set", "data.workers=0"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: schedule.warmup_steps 5 is longer than the whole run of 3 steps"), lines


def test_the_first_steps_print_the_projected_length(tiny_data, tmp_path):
    cfg = recipe.from_data(tiny_recipe(tiny_data), "t", ["train.steps=8"])
    log, buffer = capture()
    jobs.train(cfg, tmp_path / "run", render=recipe.dump, log=log)
    lines = [line for line in buffer.getvalue().splitlines() if line.startswith("measured")]
    assert len(lines) == 1 and " s per step over steps 2-6: 8 steps take about " in lines[0], lines
    assert "ending around" in lines[0]


def test_a_finetune_is_named_after_the_run_it_starts_from(tiny_run):
    for path in (tiny_run, tiny_run / "model.safetensors", next((tiny_run / "checkpoints").glob("step-*.pt"))):
        cfg = assembly.from_checkpoint(reader.read(path), None, [], ["train.steps=1"], assembly.FINETUNE)
        assert cfg.run.name == "run-finetune", path  # the run directory is 'run', not the file stem 'model'

"""Recipe assembly: the precedence of layers as a table, what each command takes from a checkpoint, and
`vit pretrain --resume --out RUN` continuing a run from its own recipe."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe
from typer.testing import CliRunner

from vitcli import recipe
from vitcli.recipe import assembly, schema
from vitcli.recipe.assembly import Layers
from vitcli.cli import app
from vitcli.errors import RecipeError
from vitcli.weights.reader import Pretrained


def test_precedence_is_the_order_of_the_layers():
    assert tuple(f.name for f in dataclasses.fields(Layers)) == assembly.PRECEDENCE


def _get(cfg, dotted: str):
    value = cfg
    for key in dotted.split("."):
        value = getattr(value, key)
    return value


# (layers, key, resolved value): each row sets a key in some layers; the highest layer present wins.
TABLE = [
    (Layers(), "optim.lr", 1e-3),
    (Layers(checkpoint={"optim": {"lr": 0.1}}), "optim.lr", 0.1),
    (Layers(checkpoint={"optim": {"lr": 0.1}}, recipe={"optim": {"lr": 0.2}}), "optim.lr", 0.2),
    (Layers(recipe={"optim": {"lr": 0.2}}, options=("optim.lr=0.3",)), "optim.lr", 0.3),
    (Layers(recipe={"optim": {"lr": 0.2}}, options=("optim.lr=0.3",), sets=("optim.lr=0.4",)), "optim.lr", 0.4),
    (Layers(sets=("optim.lr=0.4", "optim.lr=0.5")), "optim.lr", 0.5),
    (Layers(defaults={"model": {"head_init": "zero"}}), "model.head_init", "zero"),
    (Layers(defaults={"model": {"head_init": "zero"}}, recipe={"model": {"head_init": "default"}}),
     "model.head_init", "default"),
    (Layers(recipe={"model": {"depth": 6}}, architecture={"model": {"depth": 2}}), "model.depth", 2),
    (Layers(architecture={"model": {"representation_size": 16}}, command={"model": {"representation_size": None}}),
     "model.representation_size", None),
    (Layers(command={"model": {"representation_size": None}}, options=("model.representation_size=8",)),
     "model.representation_size", 8),
    (Layers(command={"train": {"init_from": "a.pt"}}, sets=("train.init_from=b.pt",)), "train.init_from", "b.pt"),
    # mappings merge key by key; lists are replaced whole
    (Layers(checkpoint={"data": {"source": "x", "norm": "imagenet"}}, recipe={"data": {"eval_split": "val"}}),
     "data.norm", "imagenet"),
    (Layers(checkpoint={"fewshot": {"shots": [1, 5]}}, recipe={"fewshot": {"shots": [2]}}), "fewshot.shots", (2,)),
]


@pytest.mark.parametrize("layers, key, value", TABLE, ids=[f"{i}-{row[1]}" for i, row in enumerate(TABLE)])
def test_layers_resolve_in_precedence_order(layers, key, value):
    assert _get(assembly.resolve(layers, "t"), key) == value


DESC = {"name": "Ti/4", "variant": "Ti/4", "width": 32, "depth": 2, "heads": 2, "mlp_dim": 64, "patch": 4,
        "res": [16, 16], "pool": "token", "representation_size": 16}


@pytest.fixture
def checkpoint(tmp_path) -> Pretrained:
    """A checkpoint that describes itself: tiny model with pre-logits, trained with adamw, eval.weights raw."""
    path = tmp_path / "model.safetensors"
    path.touch()
    stored = schema.to_dict(recipe.from_data(tiny_recipe("ckpt/data", model={"representation_size": 16},
                                                         optim={"name": "adamw"}, eval={"weights": "raw"},
                                                         data={"norm": "imagenet"}), "t"))
    return Pretrained(path, {}, model=DESC, recipe=stored)


def _recipe_file(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "given.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# (command, RECIPE data or None, key, resolved value): what each command's `Start` policy takes.
POLICY = [
    ("FINETUNE", None, "optim.name", "sgd"),  # the paper's fine-tuning defaults, not the checkpoint's adamw
    ("FINETUNE", None, "data.source", "ckpt/data"),  # the checkpoint's own data
    ("FINETUNE", None, "model.representation_size", None),  # a new head: pre-logits dropped
    ("FINETUNE", None, "model.head_init", "zero"),
    ("FINETUNE", None, "model.res", (16, 16)),
    ("FINETUNE", None, "run.name", "model-finetune"),
    ("FINETUNE", None, "eval.weights", "ema"),  # the checkpoint's eval section is not carried over
    ("FINETUNE", {"data": {"source": "new/data"}}, "data.norm", "imagenet"),  # new data, same pixel scale
    # nothing else carries: the new source's splits are chosen from its own names when it is opened
    ("FINETUNE", {"data": {"source": "new/data"}}, "data.eval_split", "auto"),
    ("FINETUNE", {"data": {"source": "new/data", "eval_split": "val"}}, "data.eval_split", "val"),
    ("EVALUATE", {"data": {"source": "new/data"}}, "data.train_split", "auto"),
    ("FINETUNE", {"model": {"head_init": "default"}}, "model.head_init", "default"),
    ("EVALUATE", None, "optim.name", "adamw"),  # eval keeps the checkpoint's own settings
    ("EVALUATE", None, "model.representation_size", 16),
    ("EVALUATE", None, "eval.weights", "raw"),
    ("EVALUATE", None, "train.init_from", None),
    ("EVALUATE", {"eval": {"weights": "ema"}}, "eval.weights", "ema"),
    ("EVALUATE", {"model": {"res": 32}}, "model.res", (32, 32)),
]


@pytest.mark.parametrize("start, given, key, value", POLICY, ids=[f"{i}-{row[0]}-{row[2]}" for i, row in
                                                                    enumerate(POLICY)])
def test_each_command_takes_what_its_policy_says(checkpoint, tmp_path, start, given, key, value):
    path = _recipe_file(tmp_path, given) if given is not None else None
    cfg = assembly.from_checkpoint(checkpoint, path, (), [], getattr(assembly, start))
    assert _get(cfg, key) == value


def test_finetune_trains_from_the_checkpoint(checkpoint):
    cfg = assembly.from_checkpoint(checkpoint, None, (), [], assembly.FINETUNE)
    assert cfg.train.init_from == str(checkpoint.path)


def test_weights_option_overrides_the_recipe_only_when_given(checkpoint):
    given = assembly.from_checkpoint(checkpoint, None, assembly.recipe_overrides(weights="ema"), [], assembly.EVALUATE)
    assert given.eval.weights == "ema"
    assert assembly.recipe_overrides(weights=None) == ()
    with pytest.raises(RecipeError, match=r"^--weights 'best': valid: 'ema', 'raw'$"):
        assembly.recipe_overrides(weights="best")


def test_a_recipe_contradicting_the_checkpoint_is_refused(checkpoint, tmp_path):
    from vitcli.errors import CheckpointError

    path = _recipe_file(tmp_path, {"model": {"name": "Ti/4", "width": 64, "heads": 2}})
    with pytest.raises(CheckpointError, match=r"width \(recipe 64, checkpoint 32\)"):
        assembly.from_checkpoint(checkpoint, path, (), [], assembly.EVALUATE)


# -- vit pretrain --resume --out RUN, no RECIPE ----------------------------------------------------------
def test_resume_without_a_recipe_continues_from_the_runs_own(tiny_data, tmp_path):
    runner = CliRunner()
    spec = tmp_path / "r.yaml"
    spec.write_text(yaml.safe_dump(tiny_recipe(tiny_data)))
    out = tmp_path / "run"
    first = runner.invoke(app, ["pretrain", str(spec), "--set", "optim.lr=0.01", "--set", "train.steps=1",
                                "--set", "schedule.warmup_steps=0", "--set", "eval.evaluators=[]",
                                "--set", "train.checkpoint_every=1", "--out", str(out), "--json"])
    assert first.exit_code == 0, first.output
    # optim.lr=0.01 is not repeated: the run's recipe.json supplies it; train.steps may change when asked.
    again = runner.invoke(app, ["pretrain", "--resume", "--out", str(out), "--set", "train.steps=2", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["steps"] == 2
    saved = json.loads((out / "recipe.json").read_text())
    assert saved["optim"]["lr"] == 0.01 and saved["train"]["steps"] == 2
    assert "resumed from" in again.output and "step 1" in again.output


def test_pretrain_without_a_recipe_needs_data_or_resume_and_out(tmp_path):
    result = CliRunner().invoke(app, ["pretrain", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "pretrain/default.yaml: data.source: missing; give --data SOURCE" in result.output
    result = CliRunner().invoke(app, ["pretrain", "--resume", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert f"--resume: {tmp_path} holds no vit run (no recipe.json)" in result.output


def test_a_checkpoint_of_a_newer_format_is_refused_naming_both_versions(tmp_path):
    import torch

    from vitcli.errors import CheckpointError
    from vitcli.weights import reader

    path = tmp_path / "step-00000001.pt"
    torch.save({"format_version": reader.FORMAT_VERSION + 1, "model": {}}, path)
    with pytest.raises(CheckpointError, match=rf"^{path} has checkpoint format {reader.FORMAT_VERSION + 1}, newer "
                                              rf"than this vit reads \({reader.FORMAT_VERSION}\); upgrade vit"):
        reader.read(path)


def test_command_options_are_typed_overrides_not_key_value_text():
    options = assembly.recipe_overrides("32x48", {"data.source": "imagefolder:photos #2", "fewshot.seeds": 3,
                                                  "sweep.retrain": False, "fewshot.shots": ["1", "5"]}, "raw")
    assert [(o.key, o.value, o.label) for o in options] == [
        ("model.res", "32x48", "--res 32x48"), ("data.source", "imagefolder:photos #2", "--data imagefolder:photos #2"),
        ("fewshot.seeds", 3, "--seeds 3"), ("sweep.retrain", False, "sweep.retrain false"),
        ("fewshot.shots", ["1", "5"], "--shots 1,5"), ("eval.weights", "raw", "--weights raw")]
    cfg = assembly.resolve(Layers(options=options), "t")
    # The source is the text given: as a --set item's YAML value, " #2" would be a comment and be lost.
    assert cfg.data.source == "imagefolder:photos #2" and recipe.load(
        "demo", ["data.source=imagefolder:photos #2"]).data.source == "imagefolder:photos"
    assert (cfg.model.res, cfg.fewshot.seeds, cfg.sweep.retrain, cfg.fewshot.shots) == ((32, 48), 3, False, (1, 5))
    assert assembly.named_source({}, [*options, "data.source=x"]) == "x"
    with pytest.raises(RecipeError, match=r"--res big: model.res: expected a resolution"):
        assembly.resolve(Layers(options=assembly.recipe_overrides("big")), "t")

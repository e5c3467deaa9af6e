"""A model moved to another data set: that set's own splits and columns, nothing of the old one's.

The run is trained on the 4-colour parquet set with a sliced eval split (`test[:8]`, like CIFAR-10's
`test[:2000]`) and its image column named; the other set has train/validation/test splits of other
sizes and other column names. Without any split option, eval and few-shot must use the other set's
test split in full (and its train+validation pool), say so in one line, and carry over only `data.norm`.
"""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from conftest import CLASSES, error_line, invoke, make_images, one_json, tiny_recipe
from PIL import Image

from vitcli import recipe
from vitcli.recipe import assembly
from vitcli.recipe.config import AUTO
from vitcli.data.splits import choose
from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter
from vitcli.weights import reader

SIZES = {"train": 40, "validation": 16, "test": 24}


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """Another local set: splits train/validation/test, columns `image` and `labels`, the same colours."""
    folder = tmp_path_factory.mktemp("other")
    features = datasets.Features({"image": datasets.Image(), "labels": datasets.ClassLabel(names=CLASSES)})
    for seed, (split, n) in enumerate(SIZES.items(), 10):
        images, labels = make_images(n, seed)
        ds = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in images], "labels": labels},
                                        features=features)
        ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    return folder


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    torch.set_num_threads(1)
    data = tiny_recipe(tiny_data, data={"eval_split": "test[:8]", "image_column": "img", "norm": "imagenet"},
                       train={"steps": 4, "device": "cpu"})
    cfg = recipe.from_data(data, "t")
    out = tmp_path_factory.mktemp("other_run") / "run"
    jobs.train(cfg, out, log=Reporter(enabled=False))
    return out


def test_split_choice_follows_the_source_s_own_names():
    flowers = choose(["train", "validation", "test"])
    assert (flowers.train, flowers.held_out) == ("train+validation", "test")
    assert (choose(["train", "test"]).train, choose(["train", "test"]).held_out) == ("train", "test")
    assert (choose(["train", "validation"]).train, choose(["train", "validation"]).held_out) == ("train", "validation")
    folder = choose(["train"])
    assert (folder.train, folder.held_out, folder.only) == ("train", None, "train")


def test_eval_on_another_set_uses_its_own_test_split_in_full(run, other):
    # The checkpoint's own data is scored on its sliced split ...
    assert one_json(invoke("eval", "--from", run, "--json"))["images"] == 8
    result = invoke("eval", "--from", run, "--data", other, "--json")
    out = one_json(result)
    assert (out["split"], out["images"]) == ("test", SIZES["test"])  # ... the other set on all of its test split
    assert f"{other}: evaluating on split 'test' (its splits: 'train', 'validation', 'test')" in result.stderr


def test_fewshot_on_another_set_uses_its_train_and_validation_pool(run, other):
    for how in (["--data", other], ["--set", f"data.source={other}"]):
        result = invoke("fewshot", "--from", run, *how, "--shots", 2, "--seeds", 1, "--json")
        (entry,) = one_json(result)["datasets"].values()
        assert entry == {"source": str(other), "train_split": "train+validation", "test_split": "test",
                         "num_classes": 4, "train_images": 56, "test_images": 24}, how
        assert "few-shot examples from 'train+validation', tested on 'test'" in result.stderr


def test_explicit_splits_win_over_the_source_s_own(run, other):
    out = one_json(invoke("eval", "--from", run, "--data", other, "--split", "validation[:10]", "--json"))
    assert (out["split"], out["images"]) == ("validation[:10]", 10)
    result = invoke("fewshot", "--from", run, "--data", other, "--train-split", "train", "--split", "validation",
                    "--shots", 1, "--seeds", 1, "--json")
    (entry,) = one_json(result)["datasets"].values()
    assert (entry["train_images"], entry["test_images"]) == (40, 16)


def test_only_the_pixel_normalisation_carries_over(run, other):
    source = reader.read(run)
    cfg = assembly.from_checkpoint(source, None, ("data.source=" + str(other),), [], assembly.EVALUATE)
    assert cfg.data.norm == "imagenet"  # belongs to the network
    assert (cfg.data.image_column, cfg.data.train_split, cfg.data.eval_split) == (None, AUTO, AUTO)
    same = assembly.from_checkpoint(source, None, (), [], assembly.EVALUATE)
    assert (same.data.image_column, same.data.eval_split) == ("img", "test[:8]")


def test_finetune_on_another_set_trains_on_its_splits(run, other, tmp_path):
    out = tmp_path / "ft"
    result = invoke("finetune", "--from", run, "--data", other, "--out", out, "--set", "train.steps=1",
                    "--set", "train.batch_size=8", "--set", "schedule.warmup_steps=0", "--set", "train.device=cpu",
                    "--set", "train.precision=fp32", "--json")
    assert result.exit_code == 0, result.output
    stored = json.loads((out / "recipe.json").read_text())["data"]
    assert (stored["train_split"], stored["eval_split"]) == ("train+validation", "test")
    assert "training on 'train+validation', evaluating on 'test'" in result.stderr


def test_a_folder_with_one_split_cannot_be_a_fewshot_test_by_default(run, tmp_path):
    for name in CLASSES:
        (tmp_path / "f" / name).mkdir(parents=True)
        Image.new("RGB", (16, 16)).save(tmp_path / "f" / name / "0.png")
    line = error_line(invoke("fewshot", "--from", run, "--data", f"imagefolder:{tmp_path / 'f'}", "--shots", 1))
    assert "has no held-out split for the few-shot test: give --train-split and --split" in line


def test_an_image_folder_is_scored_on_its_only_split(run, tmp_path):
    for i, name in enumerate(CLASSES):
        (tmp_path / "f" / name).mkdir(parents=True)
        for j in range(2):
            Image.fromarray(make_images(4, j)[0][i]).save(tmp_path / "f" / name / f"{j}.png")
    result = invoke("eval", "--from", run, "--data", f"imagefolder:{tmp_path / 'f'}", "--json")
    assert (one_json(result)["split"], one_json(result)["images"]) == ("train", 8)
    assert "evaluating on split 'train' (its splits: 'train')" in result.stderr


def test_an_unreachable_hub_id_fails_in_one_line(run, monkeypatch):
    from vitcli import hub

    monkeypatch.setattr(hub, "reachable", lambda *a, **kw: False)
    line = error_line(invoke("eval", "--from", run, "--data", "acme/no-such-dataset"))
    assert "cannot load 'acme/no-such-dataset' from the Hugging Face hub (offline or not found)" in line

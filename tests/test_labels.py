"""Class names travel with the model, and data whose classes differ from the head's is matched or refused.

The suite's shared tiny run (conftest), trained on the 4-colour parquet set, is evaluated on image folders
written from the same test images: all four classes, three of them, and classes the head never saw.
"""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import CLASSES, error_line, invoke, make_images, one_json
from PIL import Image

from vitcli.weights import reader, serialization


def write_folder(root, names, n: int = 32, seed: int = 1):
    """The colour test images as an image folder with one sub-folder per class in `names` (by colour)."""
    images, labels = make_images(n, seed)
    for i, (pixels, label) in enumerate(zip(images, labels)):
        if CLASSES[label] in names:
            folder = root / names[CLASSES[label]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def test_class_names_are_stored_in_every_checkpoint_form(tiny_run, tmp_path):
    assert reader.read(tiny_run).label_names == CLASSES
    assert reader.read(reader.latest(tiny_run)).label_names == CLASSES  # training checkpoint
    assert json.loads((tiny_run / "config.json").read_text())["label_names"] == CLASSES
    assert json.loads(serialization.safetensors_metadata(tiny_run / "model.safetensors")["label_names"]) == CLASSES
    alone = tmp_path / "copied.safetensors"  # the weights file on its own, without config.json
    shutil.copy(tiny_run / "model.safetensors", alone)
    assert reader.read(alone).label_names == CLASSES


def test_folder_missing_a_class_keeps_per_class_accuracy(tiny_run, tmp_path):
    same = {c: c for c in CLASSES}
    full = write_folder(tmp_path / "full", same)
    lacking = write_folder(tmp_path / "lacking", {c: c for c in CLASSES if c != "blue"})
    a = one_json(invoke("eval", "--from", tiny_run, "--data", f"imagefolder:{full}", "--split", "train", "--json"))
    b = one_json(invoke("eval", "--from", tiny_run, "--data", f"imagefolder:{lacking}", "--split", "train", "--json"))
    # imagefolder sorts its classes (blue, green, grey, red): even the full folder is matched by name.
    assert a["labels"] == b["labels"] == "matched by name"
    assert b["images"] == 24 and set(b["per_class_top1"]) == {"red", "green", "grey"}
    assert b["per_class_top1"] == {k: v for k, v in a["per_class_top1"].items() if k != "blue"}
    # Not an all-wrong shift: the scores are the parquet test split's own.
    c = one_json(invoke("eval", "--from", tiny_run, "--json"))
    assert a["per_class_top1"] == c["per_class_top1"]


def test_other_class_names_are_refused_in_one_line(tiny_run, tmp_path):
    other = write_folder(tmp_path / "other", {"red": "cat", "green": "dog", "blue": "blue", "grey": "grey"})
    line = error_line(invoke("eval", "--from", tiny_run, "--data", f"imagefolder:{other}", "--split", "train"))
    assert "class names differ from the model's head's: 2 of 4 are not among its 4 classes ('cat', 'dog'" in line
    assert "vit finetune" in line and "--ignore-labels" in line
    out = one_json(invoke("eval", "--from", tiny_run, "--data", f"imagefolder:{other}", "--split", "train",
                          "--ignore-labels", "--json"))
    assert out["labels"] == "by index (--ignore-labels)" and out["images"] == 32


def test_more_data_classes_than_the_head_even_by_index(tiny_run, tmp_path):
    names = {c: c for c in CLASSES}
    wide = write_folder(tmp_path / "wide", names)
    (wide / "yellow").mkdir()
    Image.new("RGB", (16, 16), (200, 200, 0)).save(wide / "yellow" / "0.png")
    line = error_line(invoke("eval", "--from", tiny_run, "--data", f"imagefolder:{wide}", "--split", "train",
                             "--ignore-labels"))
    assert "has 5 classes but the model's head has 4" in line


def test_shots_are_checked_before_any_feature_is_extracted(tiny_run, monkeypatch):
    import vitcli.engine.evaluate.evaluators as evaluators

    monkeypatch.setattr(evaluators, "extract_features", lambda *a, **kw: pytest.fail("features extracted"))
    line = error_line(invoke("fewshot", "--from", tiny_run, "--shots", "1,30", "--seeds", 1))
    assert "class 'red' has 24 training images, fewer than the 30 shots" in line

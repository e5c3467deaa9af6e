"""`vit predict`: every good file predicted with class names, bad ones named, the same top-1 as `vit eval`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import CLASSES, error_line, invoke, one_json
from PIL import Image
from test_labels import write_folder

from vitcli.data.images import decode, to_rgb


def exif_rotated_jpeg(path: Path) -> None:
    """A 24x16 JPEG whose EXIF orientation 6 says: rotate 90 degrees to show it upright (16x24)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (24, 16), (200, 60, 60)).save(path, exif=exif.tobytes())


@pytest.fixture
def mixed(tmp_path) -> Path:
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    exif_rotated_jpeg(folder / "rotated.jpg")
    Image.new("RGBA", (16, 16), (60, 200, 60, 128)).save(folder / "alpha.png")
    Image.new("L", (20, 16), 130).save(folder / "sub" / "grey.png")
    Image.new("RGB", (16, 16), (60, 60, 200)).convert("P").save(folder / "sub" / "palette.gif")
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(folder / "deep.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image, not listed")
    return folder


def test_open_image_turns_upright_and_scales_16_bit(mixed):
    assert decode(mixed / "rotated.jpg").size == (16, 24)
    deep = decode(mixed / "deep.png")
    assert deep.mode.startswith("I")
    assert to_rgb(deep).getpixel((0, 0)) == (156, 156, 156)  # 40000 / 257, not clipped to white
    assert to_rgb(decode(mixed / "alpha.png")).mode == "RGB"


def test_mixed_folder_predicts_every_good_file_and_names_the_corrupt_one(tiny_run, mixed):
    result = invoke("predict", "--from", tiny_run, mixed, "--top-k", 3, "--json")
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    names = sorted(Path(p["path"]).name for p in out["predictions"])
    assert names == ["alpha.png", "deep.png", "grey.png", "palette.gif", "rotated.jpg"]
    for row in out["predictions"]:
        assert [t["label"] for t in row["top"]] == [CLASSES[t["index"]] for t in row["top"]]
        assert len(row["top"]) == 3 and row["top"][0]["prob"] >= row["top"][1]["prob"] >= row["top"][2]["prob"]
    assert [Path(u["path"]).name for u in out["unreadable"]] == ["corrupt.jpg"]
    assert "unreadable: " in result.stderr and "corrupt.jpg" in result.stderr
    assert out["label_names"] == CLASSES and out["images"] == 5


def test_table_and_csv(tiny_run, mixed, tmp_path):
    good = [mixed / "alpha.png", mixed / "sub"]
    result = invoke("predict", "--from", tiny_run, *good, "--csv", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    assert "alpha.png" in result.stdout and any(c in result.stdout for c in CLASSES)
    rows = list(csv.reader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert rows[0][:3] == ["path", "label_1", "prob_1"] and len(rows) == 4  # header + 3 images
    assert all(r[1] in CLASSES for r in rows[1:])


def test_top1_on_a_labelled_folder_equals_eval(tiny_run, tmp_path):
    folder = write_folder(tmp_path / "labelled", {c: c for c in CLASSES})
    scored = one_json(invoke("eval", "--from", tiny_run, "--data", f"imagefolder:{folder}", "--split", "train",
                             "--json"))
    files = one_json(invoke("predict", "--from", tiny_run, folder, "--top-k", 1, "--json"))
    hits = [Path(p["path"]).parent.name == p["top"][0]["label"] for p in files["predictions"]]
    assert len(hits) == scored["images"] == 32
    assert sum(hits) / len(hits) == pytest.approx(scored["top1"])
    # The same folder as a data source gives the same predictions, image by image.
    source = one_json(invoke("predict", "--from", tiny_run, f"imagefolder:{folder}", "--top-k", 1, "--json"))
    by_path = {p["path"]: p["top"][0]["label"] for p in source["predictions"]}
    assert by_path == {p["path"]: p["top"][0]["label"] for p in files["predictions"]}


def test_nothing_to_predict_is_one_line(tiny_run, tmp_path):
    (tmp_path / "empty").mkdir()
    line = error_line(invoke("predict", "--from", tiny_run, tmp_path / "empty", tmp_path / "nope.png"))
    assert "no images to predict" in line

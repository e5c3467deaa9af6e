"""`imagefolder:PATH` as torchvision reads it: class folders, optionally under split folders, every image used.

File names never decide a split (datasets' imagefolder builder put `*_val_*` files in 'validation' and
lost 572 of 600 images of an Imagenette copy); an image that would not be used is a one-line error.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitcli.data import load_split
from vitcli.data.splits import split_names
from vitcli.errors import DataError

# ImageNet-style names and names holding the words datasets reads as splits.
NAMES = ["n01440764_10026.JPEG", "n01440764_val_1.jpeg", "ILSVRC2012_val_00000293.JPEG", "test_3.png",
         "train-7.png", "validation.png", "my_test_photo.PNG"]


def _write(root: Path, files: list[str]) -> list[Path]:
    """Tiny images at `files` (relative paths) under root; returns their paths."""
    paths = []
    for i, name in enumerate(files):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="PNG")  # the suffix, not the format, makes it an image
        paths.append(path)
    return paths


def _used(source: str, split: str) -> list[tuple[str, str | None]]:
    s = load_split(source, split, labels=False) if "unlabelled" in split else load_split(source, split)
    rows = s.dataset.cast_column(s.image_column, __import__("datasets").Image(decode=False))
    names = s.class_names
    return [(r[s.image_column]["path"], names[r[s.label_column]]) for r in rows]


def _counts(note: str) -> dict[tuple[str, str], int]:
    """{(split, class): count} read back from the printed line."""
    out = {}
    for split, classes in re.findall(r"\[(\w+)\]: [\d,]+ images? in \d+ classe?s? \(([^)]*)\)", note):
        for part in classes.split(", "):
            name, count = part.rsplit(" ", 1)
            out[(split, name)] = int(count.replace(",", ""))
    return out


def _stray(root: Path) -> None:
    (root / "README.txt").write_text("about these images")
    (root / ".DS_Store").write_bytes(b"\0")


@pytest.mark.parametrize("layout", ["splits", "classes"])
def test_every_image_is_used_once_whatever_its_name(tmp_path, layout):
    root = tmp_path / "imagenette"
    files = []
    for split in (["train", "val", "test"] if layout == "splits" else [""]):
        for cls in ("n01440764", "n02102040"):
            files += [str(Path(split, cls, name)) for name in NAMES]
        files.append(str(Path(split, "n02102040", "nested", "deeper", "n02102040_99.JPEG")))  # a class's sub-folder
    paths = _write(root, files)
    _stray(root / ("train" if layout == "splits" else "n01440764"))
    source = f"imagefolder:{root}"
    splits = split_names(source)
    assert splits == (["test", "train", "val"] if layout == "splits" else ["train"])
    used, printed = [], {}
    for split in splits:
        rows = _used(source, split)
        used += [path for path, _ in rows]
        for path, cls in rows:  # the class is the folder under the split, however deep the file lies
            assert Path(path).relative_to(root).parts[1 if layout == "splits" else 0] == cls
        printed.update(_counts(load_split(source, split).note))
    assert sorted(used) == sorted(map(str, paths))  # each image once, none lost, none doubled
    on_disk = {}
    for path in paths:
        parts = path.relative_to(root).parts
        key = (parts[0], parts[1]) if layout == "splits" else ("train", parts[0])
        on_disk[key] = on_disk.get(key, 0) + 1
    assert printed == on_disk
    note = load_split(source, splits[0]).note
    assert "1 file that are not images skipped" in note and "README.txt" in note


def test_a_percentage_slice_holds_every_class(tmp_path):
    root = tmp_path / "f"
    _write(root, [f"{c}/{i}.png" for c in ("a", "b", "c") for i in range(10 if c != "c" else 20)])
    tail = _used(f"imagefolder:{root}", "train[75%:]")
    counts = {c: sum(1 for _, x in tail if x == c) for c in "abc"}
    assert counts["c"] == 5 and {counts["a"], counts["b"]} == {2, 3}  # in proportion, within one image


def test_a_folder_of_images_without_classes_is_one_unlabelled_split(tmp_path):
    _write(tmp_path / "u", ["x_train.png", "y_val.png", "z.png"])
    split = load_split(f"imagefolder:{tmp_path / 'u'}", "train", labels=False)
    assert split.num_examples == 3 and "no class folders" in split.note


@pytest.mark.parametrize("files, message", [
    (["cat/0.png", "loose.png"], r"image '.*/loose.png' lies beside class folders, in no class and would not be used"),
    (["train/cat/0.png", "train/stray.png"], r"image '.*/train/stray.png' lies beside class folders"),
    (["train/cat/0.png", "val/cat/0.png", "x.png"], r"image '.*/x.png' lies beside the split folders"),
    (["train/cat/0.png", "cat/1.png"], r"holds split folders \(train\) beside other folders \(cat\)"),
    (["cat/a/b/c/d/0.png"], r"is a folder 5 levels down, deeper than an image folder goes \(4\)"),
])
def test_an_image_that_would_not_be_used_is_one_line(tmp_path, files, message):
    _write(tmp_path / "f", files)
    for call in (lambda: split_names(f"imagefolder:{tmp_path / 'f'}"),
                 lambda: load_split(f"imagefolder:{tmp_path / 'f'}", "train")):
        with pytest.raises(DataError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def test_an_empty_class_folder_is_named(tmp_path):
    _write(tmp_path / "f", ["cat/0.png"])
    (tmp_path / "f" / "dog").mkdir()
    (tmp_path / "f" / "dog" / "notes.txt").write_text("no images yet")
    with pytest.raises(DataError, match=r"class folder '.*/dog' holds no images"):
        load_split(f"imagefolder:{tmp_path / 'f'}", "train")


def test_split_folders_in_any_case_are_the_lower_case_splits(tmp_path):
    _write(tmp_path / "f", ["Train/cat/0.png", "Train/dog/1.png", "VAL/cat/2.png"])
    assert split_names(f"imagefolder:{tmp_path / 'f'}") == ["train", "val"]
    assert load_split(f"imagefolder:{tmp_path / 'f'}", "val").num_examples == 1

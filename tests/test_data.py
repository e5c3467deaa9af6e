"""Data sources, transforms and loaders, on generated images and scikit-learn's bundled digits."""

from __future__ import annotations

import io
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from vitcli.recipe.config import DataCfg
from vitcli.data import (
    ShardedSampler,
    eval_loader,
    eval_transform,
    load_split,
    mixup_fn,
    train_loader,
    train_transform,
)
from vitcli.errors import DataError

CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10"
DIGITS = "builtin:digits"


def _cfg(**kw) -> DataCfg:
    return DataCfg(source=kw.pop("source", DIGITS), **kw)


def _images(n: int, mode: str = "RGB", size=(12, 10), seed: int = 0) -> list[Image.Image]:
    pixels = np.random.default_rng(seed).integers(0, 256, (n, size[1], size[0], 3), dtype=np.uint8)
    return [Image.fromarray(p).convert(mode) for p in pixels]


def _dataset(images, labels, num_classes: int | None = 3, columns=("image", "label")) -> datasets.Dataset:
    label_feature = datasets.ClassLabel(num_classes=num_classes) if num_classes else datasets.Value("int64")
    features = datasets.Features({columns[0]: datasets.Image(), columns[1]: label_feature})
    return datasets.Dataset.from_dict({columns[0]: images, columns[1]: labels}, features=features, split="train")


def _saved(tmp_path: Path, ds: datasets.Dataset) -> str:
    path = tmp_path / "saved"
    ds.save_to_disk(str(path))
    return str(path)


# --- sources -----------------------------------------------------------------------------------


def test_digits_splits_and_classes():
    train, test = load_split(DIGITS, "train"), load_split(DIGITS, "test")
    assert (train.num_examples, test.num_examples) == (1437, 360)
    assert train.num_classes == 10 and train.class_names == [str(d) for d in range(10)]
    assert (train.image_column, train.label_column) == ("image", "label")
    image = train.dataset[0]["image"]
    assert image.size == (8, 8) and image.mode == "L"


def test_digits_split_expressions():
    half, rest = load_split(DIGITS, "train[:50%]"), load_split(DIGITS, "train[50%:]")
    assert half.num_examples + rest.num_examples == 1437 and abs(half.num_examples - 718) <= 1
    assert load_split(DIGITS, "train[:10]+test[-5:]").num_examples == 15
    first = load_split(DIGITS, "train[:3]").dataset["label"]
    assert first == load_split(DIGITS, "train").dataset["label"][:3]


def test_unknown_and_malformed_splits_list_available():
    with pytest.raises(DataError, match=r"no split 'validation'.*available splits: 'train', 'test'"):
        load_split(DIGITS, "validation")
    with pytest.raises(DataError, match="not a valid split expression"):
        load_split(DIGITS, "train[:5")
    with pytest.raises(DataError, match="is empty"):
        load_split(DIGITS, "train[:0]")


def test_local_parquet_dir(tmp_path):
    root = tmp_path / "pq"
    root.mkdir()
    _dataset(_images(6), [0, 1, 2, 0, 1, 2]).to_parquet(str(root / "train-00000-of-00001.parquet"))
    _dataset(_images(4, seed=1), [2, 1, 0, 0]).to_parquet(str(root / "test-00000-of-00001.parquet"))
    split = load_split(str(root), "test")
    assert split.num_examples == 4 and split.num_classes == 3 and split.image_column == "image"
    assert load_split(str(root), "train[:50%]").num_examples == 3
    single = load_split(str(root / "train-00000-of-00001.parquet"), "train")
    assert single.num_examples == 6
    with pytest.raises(DataError, match=r"no split 'tset' \(did you mean 'test'\?\).*'train', 'test'"):
        load_split(str(root), "tset")


def test_save_to_disk_dir(tmp_path):
    parts = datasets.DatasetDict({"train": _dataset(_images(8), [0, 1] * 4), "val": _dataset(_images(2), [1, 2])})
    parts.save_to_disk(str(tmp_path / "dd"))
    assert load_split(str(tmp_path / "dd"), "train[2:6]").num_examples == 4
    assert load_split(str(tmp_path / "dd"), "val").num_examples == 2
    assert load_split(_saved(tmp_path, _dataset(_images(5), [0] * 5)), "train").num_examples == 5


def test_imagefolder(tmp_path):
    for name, count in (("cat", 3), ("dog", 2)):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i, image in enumerate(_images(count, seed=count)):
            image.save(tmp_path / "pets" / name / f"{i}.png")
    split = load_split(f"imagefolder:{tmp_path / 'pets'}", "train")
    assert split.num_examples == 5 and split.num_classes == 2 and split.class_names == ["cat", "dog"]
    with pytest.raises(DataError, match="not a directory"):
        load_split(f"imagefolder:{tmp_path / 'nope'}", "train")


def test_imagefolder_with_split_folders_loads_but_a_deeper_tree_is_refused_unscanned(tmp_path, monkeypatch):
    for split, name in (("train", "cat"), ("train", "dog"), ("test", "cat"), ("test", "dog")):
        (tmp_path / "pets" / split / name).mkdir(parents=True)
        _images(1)[0].save(tmp_path / "pets" / split / name / "0.png")
    assert load_split(f"imagefolder:{tmp_path / 'pets'}", "test").num_examples == 2
    # A home directory: folders far below <split>/<class>. Nothing walks all of it.
    (tmp_path / "home" / "me" / "photos" / "2024" / "trip" / "day1").mkdir(parents=True)
    _images(1)[0].save(tmp_path / "home" / "me" / "photos" / "2024" / "trip" / "day1" / "0.png")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("datasets was asked to scan"))
    with pytest.raises(DataError, match=r"5 levels down, deeper than an image folder goes"):
        load_split(f"imagefolder:{tmp_path / 'home'}", "train")


@pytest.mark.skipif(not CIFAR10.is_dir(), reason="shared CIFAR-10 copy not present")
def test_cifar10_shared_copy():
    split = load_split(str(CIFAR10), "test", streaming=True)  # streaming: no preparation, fast
    assert split.num_examples is None and split.num_classes == 10 and split.class_names[0] == "airplane"
    assert (split.image_column, split.label_column) == ("img", "label")
    example = next(iter(split.dataset))
    assert example["img"].size == (32, 32)


def test_column_detection_and_missing_column(tmp_path):
    ds = _dataset(_images(4), [0, 1, 2, 3], num_classes=None, columns=("img", "fine_label"))
    split = load_split(_saved(tmp_path, ds), "train")
    assert (split.image_column, split.label_column) == ("img", "fine_label")
    assert split.num_classes == 4 and split.class_names is None  # largest label + 1
    other = _dataset(_images(2), [0, 1], num_classes=None, columns=("picture", "target"))  # no ClassLabel
    source = _saved(tmp_path / "other", other)
    with pytest.raises(DataError, match=r"no label column found.*columns found: 'picture', 'target'"):
        load_split(source, "train")
    with pytest.raises(DataError, match=r"no label column 'tagret' \(did you mean 'target'\?\)"):
        load_split(source, "train", label_column="tagret")
    assert load_split(source, "train", label_column="target").image_column == "picture"


def test_hub_id_offline_fails_fast_on_one_line():
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load_split("vitcli-tests/no-such-dataset", "train")
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "\n" not in message and "'vitcli-tests/no-such-dataset'" in message and "local copy" in message


def test_missing_local_path_is_not_a_hub_id(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        load_split(str(tmp_path / "missing" / "data"), "train")


# --- sampler -----------------------------------------------------------------------------------


def test_sampler_seeded_order():
    a, b = ShardedSampler(50, seed=1), ShardedSampler(50, seed=1)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    assert list(ShardedSampler(50, seed=2)) != list(a)
    b.set_epoch(1)
    assert list(b) != list(a)
    assert list(ShardedSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_sampler_shards_disjoint_and_cover():
    shards = [list(ShardedSampler(10, num_replicas=3, rank=r, shuffle=False, pad=False)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(10))
    padded = [list(ShardedSampler(10, num_replicas=3, rank=r, seed=4)) for r in range(3)]
    assert {len(s) for s in padded} == {4} and set(sum(padded, [])) == set(range(10))
    assert len(ShardedSampler(10, num_replicas=3, rank=2, pad=False)) == 3


def test_sampler_start_at_resumes():
    full = ShardedSampler(40, num_replicas=2, rank=1, seed=3)
    full.set_epoch(2)
    order = list(full)
    resumed = ShardedSampler(40, num_replicas=2, rank=1, seed=3)
    resumed.set_epoch(2)
    resumed.start_at(7)
    assert list(resumed) == order[7:] and len(resumed) == len(order) - 7
    resumed.set_epoch(3)
    assert len(list(resumed)) == 20


# --- transforms --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "RGB"])
def test_any_mode_becomes_three_channels(mode):
    image = _images(1, "RGB")[0].convert(mode)
    for make in (train_transform, eval_transform):
        out = make(_cfg(), (16, 8))(image)
        assert out.shape == (3, 16, 8) and out.dtype == torch.float32


def test_normalisation_ranges():
    white, black = Image.new("RGB", (8, 8), "white"), Image.new("RGB", (8, 8), "black")
    paper = eval_transform(_cfg(), (8, 8))
    assert paper(white).min() == 1.0 and paper(black).max() == -1.0
    imagenet = eval_transform(_cfg(norm="imagenet"), (8, 8))
    assert torch.allclose(imagenet(white)[:, 0, 0], torch.tensor([2.2489, 2.4286, 2.64]), atol=1e-3)


def test_eval_crop_keeps_aspect_and_randaugment():
    image = Image.new("RGB", (40, 20), "red")
    assert eval_transform(_cfg(eval_crop=0.875), (14, 21))(image).shape == (3, 14, 21)
    out = train_transform(_cfg(randaugment="rand-m9-mstd0.5", train_crop="resize"), (24, 24))(image)
    assert out.shape == (3, 24, 24)
    with pytest.raises(DataError, match="not a timm RandAugment spec"):
        train_transform(_cfg(randaugment="augmix-m3"), (24, 24))


def test_mixup_fn():
    assert mixup_fn(_cfg(), 10) is None
    mix = mixup_fn(_cfg(mixup=0.8, cutmix=1.0), 10, label_smoothing=0.1)
    images, targets = mix(torch.randn(5, 3, 8, 8), torch.arange(5))
    assert images.shape == (4, 3, 8, 8) and targets.shape == (4, 10)
    assert torch.allclose(targets.sum(1), torch.ones(4))


# --- loaders -----------------------------------------------------------------------------------


def test_train_loader_batches():
    split = load_split(DIGITS, "train")
    loader = train_loader(split, _cfg(), (16, 16), 32, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 1437 // 32
    images, labels = batches[0]
    assert images.shape == (32, 3, 16, 16) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.min() < 0 < images.max()
    assert torch.equal(images[:, 0], images[:, 1])  # grey digits are replicated to RGB
    assert labels.min() >= 0 and labels.max() < 10


def test_eval_loader_matches_eval_transform_and_covers_ranks():
    split, cfg = load_split(DIGITS, "test"), _cfg()
    images, labels = next(iter(eval_loader(split, cfg, (12, 12), 8)))
    example = split.dataset[0]
    assert torch.allclose(images[0], eval_transform(cfg, (12, 12))(example["image"]), atol=1e-6)
    assert labels[0] == example["label"]
    seen = [sum(len(y) for _, y in eval_loader(split, cfg, (8, 8), 64, rank=r, world=3)) for r in range(3)]
    assert sum(seen) == 360


def test_augmentation_reproducible_resumable_and_rng_neutral():
    split, cfg = load_split(DIGITS, "train[:256]"), _cfg(min_area=0.3)
    state = torch.get_rng_state()
    first = list(train_loader(split, cfg, (8, 8), 16, seed=5, epoch=1))
    assert torch.equal(torch.get_rng_state(), state)  # workers=0 must not disturb the trainer's RNG
    again = list(train_loader(split, cfg, (8, 8), 16, seed=5, epoch=1, workers=2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    resumed = list(train_loader(split, cfg, (8, 8), 16, seed=5, epoch=1, start=48))
    assert len(resumed) == len(first) - 3
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[3:], resumed))
    loader = train_loader(split, cfg, (8, 8), 16, seed=5)
    loader.set_epoch(1)
    assert torch.equal(next(iter(loader))[0], first[0][0])
    other = next(iter(train_loader(split, cfg, (8, 8), 16, seed=6, epoch=1)))
    assert not torch.equal(other[0], first[0][0])


def test_streaming_loader_shards_and_batches():
    split = load_split(DIGITS, "test", streaming=True)
    assert split.num_examples is None
    counts = [sum(len(y) for _, y in eval_loader(split, _cfg(), (8, 8), 50, rank=r, world=2)) for r in range(2)]
    assert sum(counts) == 360
    images, labels = next(iter(train_loader(split, _cfg(), (8, 8), 32, seed=0)))
    assert images.shape == (32, 3, 8, 8) and labels.dtype == torch.int64


def _with_corrupt(tmp_path, good: int, bad: int, bad_first: bool = False):
    """A saved dataset of `good` PNGs and `bad` undecodable byte strings, mixed or bad ones first."""
    values = [{"bytes": b"not an image", "path": None}] * bad + [{"bytes": b, "path": None} for b in _png_bytes(good)]
    if not bad_first:
        values = [values[i] for i in np.random.default_rng(0).permutation(len(values))]
    return load_split(_saved(tmp_path, _dataset(values, [0] * len(values))), "train")


def _png_bytes(n: int) -> list[bytes]:
    out = []
    for image in _images(n, size=(6, 6)):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def test_corrupt_images_skipped_and_counted(tmp_path):
    split = _with_corrupt(tmp_path, good=199, bad=1)
    loader = eval_loader(split, _cfg(max_bad_fraction=0.01), (6, 6), 50)
    assert sum(len(y) for _, y in loader) == 199
    assert (loader.bad, loader.seen) == (1, 200)


def test_too_many_corrupt_images_raise(tmp_path):
    split = _with_corrupt(tmp_path, good=150, bad=50)
    message = r"split 'train': \d+ of \d+ images seen could not be decoded.*e\.g\. example \d+"
    with pytest.raises(DataError, match=message):
        list(train_loader(split, _cfg(max_bad_fraction=0.01), (6, 6), 20, seed=0))
    all_bad = _with_corrupt(tmp_path / "all", good=10, bad=40, bad_first=True)
    with pytest.raises(DataError, match="could not be decoded"):
        next(iter(eval_loader(all_bad, _cfg(max_bad_fraction=0.5), (6, 6), 16)))


def test_label_out_of_range(tmp_path):
    ds = _dataset(_images(6), [0, 1, 2, 3, 4, 5], num_classes=None)
    split = load_split(_saved(tmp_path, ds), "train", num_classes=3)
    with pytest.raises(DataError, match=r"label 5 is outside \[0, 3\) for num_classes=3"):
        train_loader(split, _cfg(), (8, 8), 2, seed=0)
    with pytest.raises(DataError, match="num_classes is 7 but label column"):
        load_split(DIGITS, "train", num_classes=7)
    assert load_split(DIGITS, "test", num_classes=12).num_classes == 12  # a wider head is fine

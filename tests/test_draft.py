"""The reduced-size JPEG path (vitcli.data.draft): the slow path's geometry, its crop statistics, never a
source smaller than the output, and uint8 batches normalised by the loader."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from vitcli.data import draft, eval_loader, train_loader
from vitcli.data import loader as loader_module
from vitcli.data.images import to_rgb
from vitcli.data.images import decode_stored, jpeg_pixels
from vitcli.data.transforms import eval_pil_transform, train_pil_transform
from vitcli.recipe.config import DataCfg


def _encoded(pixels: np.ndarray, fmt: str = "JPEG") -> dict:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return {"bytes": out.getvalue(), "path": None}


def _photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / width
    base = np.stack([128 + 90 * np.sin(5 * x + c) * np.cos(3 * y) for c in range(3)], -1)
    return (base + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8)


def _paths(cfg: DataCfg, res, train: bool = True):
    pil = (train_pil_transform if train else eval_pil_transform)(cfg, res)
    fast = (draft.train_reader if train else draft.eval_reader)(pil, to_rgb, decode_stored)
    return (lambda value: pil(decode_stored(value))), fast


def _run(path, value, seed: int) -> np.ndarray:
    """[H, W, C] pixels of `path` (a PIL transform's image, or the fast path's [C, H, W] array)."""
    torch.manual_seed(seed)
    out = path(value)
    return out.transpose(1, 2, 0) if isinstance(out, np.ndarray) else np.asarray(out)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_without_reduction_the_fast_path_is_the_slow_path(train, fmt):
    """No reduction (a PNG, or a JPEG too small to draft): the same crop box, centre-crop box and flip as
    torchvision's PIL transforms, resampled by torchvision's uint8 kernel instead of PIL's: no value more
    than one level off (an upscaled crop rounds about a quarter of its values the other way)."""
    value = _encoded(_photo(300, 200), fmt)
    res = (48, 40) if fmt == "PNG" else (110, 160)  # a JPEG crop of 300x200 never halves to these
    slow, fast = _paths(DataCfg(eval_crop=0.875), res, train)
    for seed in range(20):
        a, b = _run(slow, value, seed).astype(int), _run(fast, value, seed).astype(int)
        assert a.shape == b.shape == (*res, 3)
        assert np.abs(a - b).max() <= 1 and np.abs(a - b).mean() < 0.3  # (PIL rounds an upscale differently)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29: its codecs are deprecated
@pytest.mark.parametrize("size, scale", [((500, 375), 1), ((1024, 768), 2), ((1024, 768), 8)])
def test_libjpeg_turbo_pixels_are_pils(size, scale):
    """simplejpeg decodes a JPEG (at a DCT scale too) to exactly the pixels PIL decodes, as does
    torchvision's CPU decoder (the device path's, tested on the CPU)."""
    from torchvision.io import decode_jpeg

    data = _encoded(_photo(*size))["bytes"]
    image = Image.open(io.BytesIO(data))
    if scale > 1:
        image.draft("RGB", (size[0] // scale, size[1] // scale))
    pil = np.asarray(image.convert("RGB"))
    assert np.array_equal(jpeg_pixels(data, scale), pil)
    if scale == 1:
        assert np.array_equal(decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)).permute(1, 2, 0), pil)


def test_a_crop_is_never_decoded_smaller_than_the_output(monkeypatch):
    """Every resample reads a source box at least the output's size (to within the rounding of a box to the
    reduced image's pixels), and large images do get reduced."""
    seen, crop = [], draft.resized_crop

    def spy(pixels, box, size):
        seen.append((tuple(pixels.shape[1:]), box, size))
        return crop(pixels, box, size)

    monkeypatch.setattr(draft, "resized_crop", spy)
    value = _encoded(_photo(1024, 768))
    _, fast = _paths(DataCfg(flip=False), (96, 80))
    for seed in range(200):
        _run(fast, value, seed)
    assert len(seen) == 200
    assert all(box[2] >= size[0] - 1 and box[3] >= size[1] - 1 for _, box, size in seen)
    assert all(box[0] + box[2] <= shape[0] and box[1] + box[3] <= shape[1] for shape, box, _ in seen)
    assert sum(shape[1] < 1024 for shape, _, _ in seen) > 50  # reduction happens for most crops


def _boxes(path, seeds, size=(256, 192), out=16):
    """(area fraction, log aspect) of each seeded crop, read back from the pixels of gradient images."""
    width, height = size
    ramp_x = np.tile(np.linspace(0, 255, width), (height, 1)).round().astype(np.uint8)
    ramp_y = np.tile(np.linspace(0, 255, height)[:, None], (1, width)).round().astype(np.uint8)
    xs, ys = (_encoded(np.repeat(ramp[..., None], 3, -1)) for ramp in (ramp_x, ramp_y))  # colour JPEGs
    result = []
    for seed in seeds:
        gx, gy = _run(path, xs, seed)[..., 0].astype(float), _run(path, ys, seed)[..., 0].astype(float)
        fx = (gx[:, -1].mean() - gx[:, 0].mean()) / 255 * out / (out - 1)
        fy = (gy[-1].mean() - gy[0].mean()) / 255 * out / (out - 1)
        result.append((fx * fy, np.log(fx * width / (fy * height))))
    return np.array(result)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance."""
    grid = np.sort(np.concatenate([a, b]))
    cdf = lambda s: np.searchsorted(np.sort(s), grid, side="right") / len(s)  # noqa: E731
    return float(np.abs(cdf(a) - cdf(b)).max())


def test_inception_crop_area_and_aspect_distribution_is_unchanged():
    """Over 1,000 seeded draws, the crops the model sees (area fraction, log aspect, measured on the
    output pixels) are distributed alike with and without reduced decoding; a changed min_area is not."""
    cfg = DataCfg(flip=False)
    slow, fast = _paths(cfg, (16, 16))
    seeds = range(1000)
    before, after = _boxes(slow, seeds), _boxes(fast, seeds)
    other = _boxes(_paths(DataCfg(flip=False, min_area=0.15), (16, 16))[1], range(10_000, 11_000))
    critical = 1.63 * np.sqrt(2 / len(seeds))  # KS at the 1% level
    for column in (0, 1):  # area fraction, log aspect
        assert _ks(before[:, column], after[:, column]) < critical
    assert _ks(before[:, 0], other[:, 0]) > critical  # the check can fail
    hist = lambda v: np.histogram(v, bins=10, range=(0.05, 1.0))[0] / len(v)  # noqa: E731
    assert np.abs(hist(before[:, 0]) - hist(after[:, 0])).max() < 0.03


def _jpeg_dataset(n: int = 12) -> datasets.Dataset:
    images = [Image.fromarray(_photo(160, 120, seed)) for seed in range(n)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})
    return datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(n)]}, features=features)


@pytest.mark.parametrize("fast", [False, True])
def test_loader_batches_are_normalised_as_each_image_would_be(monkeypatch, fast):
    """uint8 until the loader normalises the batch: the floats of `eval_transform` image by image (the
    images are PNGs in Arrow, so the fast path is exact here too)."""
    from vitcli.data import eval_transform, readers
    from vitcli.data.source import Split

    monkeypatch.setattr(readers, "CACHE_BYTES", 0)  # the per-image path
    monkeypatch.setattr(loader_module, "FAST_DECODE", fast)
    ds = _jpeg_dataset()
    split = Split(ds, "image", "label", 3, None, len(ds), "test", "train")
    cfg = DataCfg(workers=0, eval_crop=0.875)
    images, labels = next(iter(eval_loader(split, cfg, (32, 32), 4)))
    expected = torch.stack([eval_transform(cfg, (32, 32))(ds[i]["image"]) for i in range(4)])
    assert images.dtype == torch.float32 and images.shape == expected.shape
    differ = (images - expected).abs() > 1e-6
    # the fast path's centre-crop resample may round a value one level (2/255 in [-1, 1]) the other way
    assert not differ.any() if not fast else differ.float().mean() < 0.01
    assert (images - expected).abs().max() < 2.01 / 255
    images, _ = next(iter(train_loader(split, cfg, (32, 32), 4, seed=1)))
    assert images.shape == (4, 3, 32, 32) and -1.0 <= images.min() and images.max() <= 1.0

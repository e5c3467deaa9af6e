"""`data.decode: gpu`, run on the CPU through the same code (`device="cpu"`): workers plan, the loader decodes
the batch with torchvision's decoder and crops on the device. Images match the PIL path, crops keep their
statistics, bad JPEGs are skipped and counted, and batches are reproducible."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from vitcli.data import draft, eval_loader, train_loader
from vitcli.data import loader as loader_module
from vitcli.data.device_decode import Plan, Planned
from vitcli.data.images import decode_stored, to_rgb
from vitcli.data.source import Split
from vitcli.data.transforms import eval_pil_transform, train_pil_transform
from vitcli.recipe.config import DataCfg
from tests.test_draft import _boxes, _encoded, _ks, _photo, _run


def _device_path(cfg: DataCfg, res, train: bool = True):
    """value -> the image the device path makes of it (one image as a batch of one), on the CPU."""
    pil = (train_pil_transform if train else eval_pil_transform)(cfg, res)
    reader = (draft.train_reader if train else draft.eval_reader)(pil, to_rgb, decode_stored)

    def run(value):
        item = reader.plan(value)
        assert isinstance(item, Plan)  # a plain JPEG is always left to the device
        planned = Planned([(0, item)], [], [0], tuple(res), 3, reader.centre_crop)
        images, kept, bad, _ = planned.decode("cpu")
        assert kept.all() and not bad
        return images[0].numpy()  # [C, H, W], as the fast path gives it

    return (lambda value: pil(decode_stored(value))), run


@pytest.mark.parametrize("train", [True, False])
def test_device_path_on_the_cpu_matches_the_pil_path(train):
    """Same crop boxes and flips (same draws), full-size decode, torchvision's resample: within one level."""
    value = _encoded(_photo(500, 375))
    slow, device = _device_path(DataCfg(eval_crop=0.875), (64, 56), train)
    for seed in range(10):
        a, b = _run(slow, value, seed).astype(int), _run(device, value, seed).astype(int)
        assert a.shape == b.shape == (64, 56, 3)
        assert np.abs(a - b).max() <= 1 and np.abs(a - b).mean() < 0.3


def test_device_path_keeps_the_crop_statistics():
    """The inception crop's area and aspect, read back from the output pixels over 600 draws, are distributed
    as the PIL path's (two-sample KS at the 1% level); a changed min_area is told apart."""
    slow, device = _device_path(DataCfg(flip=False), (16, 16))
    seeds = range(600)
    before, after = _boxes(slow, seeds), _boxes(device, range(5000, 5600))
    other = _boxes(_device_path(DataCfg(flip=False, min_area=0.15), (16, 16))[1], seeds)
    critical = 1.63 * np.sqrt(2 / len(seeds))
    for column in (0, 1):
        assert _ks(before[:, column], after[:, column]) < critical
    assert _ks(before[:, 0], other[:, 0]) > critical


def _jpegs(n: int, bad: frozenset = frozenset()) -> Split:
    values = []
    for i in range(n):
        data = _encoded(_photo(120 + 8 * (i % 3), 96, i))["bytes"]
        values.append({"bytes": data[: len(data) // 3] if i in bad else data, "path": None})
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})
    ds = datasets.Dataset.from_dict({"image": values, "label": [i % 3 for i in range(n)]}, features=features)
    return Split(ds, "image", "label", 3, None, n, "test", "train")


@pytest.mark.parametrize("train", [True, False])
def test_loader_batches_decoded_on_the_device_match_the_workers(monkeypatch, train):
    """The same loader with data.decode gpu (on the CPU here) and cpu: the same labels, images alike (the workers
    decode at half size where the device decodes in full, so as alike as test_draft's reduced decoding), and the device path gives the same batches again (resume is exact)."""
    from vitcli.data import readers

    monkeypatch.setattr(readers, "CACHE_BYTES", 0)  # the per-image path
    split = _jpegs(12)

    def batches(decode: str):
        cfg = DataCfg(workers=0, decode=decode)
        if train:
            return list(train_loader(split, cfg, (32, 32), 4, seed=3, device="cpu"))
        return list(eval_loader(split, cfg, (32, 32), 4, device="cpu"))

    cpu, gpu = batches("cpu"), batches("gpu")
    assert len(cpu) == len(gpu) == 3
    for (a, la), (b, lb) in zip(cpu, gpu):
        assert torch.equal(la, lb) and a.shape == b.shape == (4, 3, 32, 32)
        assert (a - b).abs().mean() < 4 * 2 / 255  # the workers decode these at half size (DCT scaling)
    again = batches("gpu")
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(gpu, again))


def test_a_truncated_jpeg_is_skipped_and_counted_on_the_device(monkeypatch):
    from vitcli.data import readers

    monkeypatch.setattr(readers, "CACHE_BYTES", 0)
    split = _jpegs(8, bad=frozenset({5}))
    loader = eval_loader(split, DataCfg(workers=0, decode="gpu", max_bad_fraction=0.2), (32, 32), 4, device="cpu")
    got = list(loader)
    assert [len(labels) for _, labels in got] == [4, 3]
    assert loader.bad == 1 and loader.seen == 8
    assert got[1][1].tolist() == [1, 0, 1]  # labels of examples 4, 6, 7: the bad one's left out


def test_auto_decodes_on_the_device_only_on_cuda():
    assert not loader_module.decodes_on_device("auto", "cpu")
    assert loader_module.decodes_on_device("auto", "cuda:0")
    assert not loader_module.decodes_on_device("auto", None)
    assert not loader_module.decodes_on_device("cpu", "cuda")
    assert loader_module.decodes_on_device("gpu", "cpu")
    assert not loader_module.decodes_on_device("gpu", "cuda", tensor_steps=False)  # RandAugment: PIL


def test_images_nvjpeg_would_not_decode_as_the_cpu_come_decoded_by_the_worker():
    """A PNG, a CMYK and a grey JPEG are not planned (nvJPEG's conversions are not libjpeg's): the worker
    sends their pixels; a colour JPEG is."""
    pil = train_pil_transform(DataCfg(), (24, 24))
    reader = draft.train_reader(pil, to_rgb, decode_stored)
    png = _encoded(_photo(60, 40), "PNG")
    assert not isinstance(reader.plan(png), Plan)
    out = io.BytesIO()
    Image.fromarray(_photo(60, 40)).convert("CMYK").save(out, "JPEG")
    cmyk = reader.plan({"bytes": out.getvalue(), "path": None})
    assert not isinstance(cmyk, Plan) and np.asarray(cmyk).shape == (3, 24, 24)
    assert not isinstance(reader.plan(_encoded(_photo(60, 40)[..., 0])), Plan)
    assert isinstance(reader.plan(_encoded(_photo(60, 40))), Plan)


def test_a_stream_decodes_on_the_device_as_in_the_workers(tmp_path):
    """A streamed split (parquet shards of JPEG bytes): data.decode gpu (on the CPU here) yields the batches
    of data.decode cpu, in the same order, with images alike."""
    from vitcli.data.source import load_split

    ds = _jpegs(16).dataset
    for shard in range(2):
        ds.shard(2, shard, contiguous=True).to_parquet(str(tmp_path / f"train-{shard:05d}-of-00002.parquet"))
    split = load_split(str(tmp_path), "train", streaming=True)

    def batches(decode: str):
        cfg = DataCfg(workers=0, decode=decode)
        return list(train_loader(split, cfg, (32, 32), 4, seed=1, device="cpu"))

    cpu, gpu = batches("cpu"), batches("gpu")
    assert len(cpu) == len(gpu) == 4
    for (a, la), (b, lb) in zip(cpu, gpu):
        assert torch.equal(la, lb) and (a - b).abs().mean() < 4 * 2 / 255


def test_a_jpeg_the_device_decoder_refuses_is_decoded_on_the_cpu(monkeypatch):
    """nvJPEG lacks some of libjpeg's modes: an image it refuses is decoded by libjpeg-turbo and moved to
    the device, not counted as bad; only what the CPU cannot decode either is bad."""
    import torchvision.io

    from vitcli.data import readers

    monkeypatch.setattr(readers, "CACHE_BYTES", 0)
    split = _jpegs(8, bad=frozenset({5}))
    cfg = DataCfg(workers=0, decode="gpu", max_bad_fraction=0.2)
    expected = list(eval_loader(split, cfg, (32, 32), 4, device="cpu"))

    def refuses(*args, **kwargs):
        raise RuntimeError("nvjpegDecode: unsupported")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", refuses)
    loader = eval_loader(split, cfg, (32, 32), 4, device="cpu")
    got = list(loader)
    assert loader.bad == 1 and [len(labels) for _, labels in got] == [4, 3]
    assert all(torch.equal(a, b) and torch.equal(la, lb) for (a, la), (b, lb) in zip(expected, got))

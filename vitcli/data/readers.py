"""What a loader's workers run: raw rows -> one decoded, transformed batch (map-style, or from a decode-once
cache; streamed batches: data/stream.py). Seeds come per batch from the loader, so what a batch holds never depends on the
number of workers."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import datasets
import numpy as np
import torch
from torch.utils.data import get_worker_info

from vitcli.data.device_decode import Plan, Planned
from vitcli.data.images import DECODE_ERRORS, decode_stored
from vitcli.data.images import reason as decode_reason  # (`reason` names the batch's first one)
from vitcli.data.sampler import seeded
from vitcli.data.source import Split
from vitcli.data.transforms import Stats, TensorPipeline, chw, to_pixels
from vitcli.recipe.config import Res

# Data sets whose decoded pixels fit in this are decoded once per process and augmented a batch at a
# time (CIFAR-10's 50,000 32x32 images are 150 MB); larger ones are decoded per image, every epoch.
CACHE_BYTES = 1 << 30
CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # dataset -> {pipeline key: cache}


@dataclass(frozen=True)
class Decoder:
    """How a worker turns raw rows into a batch: which columns, which PIL steps, which normalisation."""

    image_column: str
    label_column: str
    transform: Callable  # PIL image -> RGB (or L) PIL image of size res
    stats: Stats  # per-channel (mean, std): its length is the number of channels
    res: Res
    # value -> the same as `transform` would give, decoding JPEGs at reduced size (`draft`); None: no fast path
    read: Callable | None = None
    # JPEGs left for the loader to decode on the run's device: `read.plan` draws their geometry here and
    # the batch travels as `Planned` (device_decode.py)
    on_device: bool = False

    def columns(self, ds):
        """Only the two columns needed, with images left as bytes to be decoded by `__call__`."""
        ds = ds.select_columns([self.image_column, self.label_column])
        return ds.cast_column(self.image_column, datasets.Image(decode=False))

    def __call__(self, values, labels, positions, seed: int | None):
        """Decode and transform one batch; undecodable images are left out and reported.

        Returns (uint8 images [B,C,H,W], labels [B], positions of bad images, first error message or None);
        `on_device`: a `Planned` batch in place of the images.
        """
        read = self.read.plan if self.on_device else self.read
        images, kept, bad, reason, good = [], [], [], None, []
        with seeded(seed):
            for value, label, position in zip(values, labels, positions):
                try:
                    images.append(read(value) if read is not None else self.transform(decode_stored(value)))
                except DECODE_ERRORS as e:
                    bad.append(int(position))
                    reason = reason or decode_reason(e)
                    continue
                kept.append(label)
                good.append(int(position))
        if self.on_device:
            return self._planned(images, good), torch.tensor(kept, dtype=torch.int64), bad, reason
        # uint8 until the batch is normalised (ImageLoader, on the device): a quarter of the bytes to move
        shape = (len(images), len(self.stats[0]), *self.res)
        stacked = to_pixels(images, out=batch_buffer(shape, torch.uint8)) if images else torch.empty(shape, dtype=torch.uint8)
        # (an empty batch is dropped by ImageLoader, after counting its bad images)
        return stacked, torch.tensor(kept, dtype=torch.int64), bad, reason


    def _planned(self, items: list, positions: list[int]) -> Planned:
        plans = [(slot, item) for slot, item in enumerate(items) if isinstance(item, Plan)]
        ready = [(slot, item if isinstance(item, np.ndarray) else chw(item))
                 for slot, item in enumerate(items) if not isinstance(item, Plan)]
        return Planned(plans, ready, positions, self.res, len(self.stats[0]), self.read.centre_crop)


def batch_buffer(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An empty batch; in a worker, allocated in shared memory as torch's default_collate does.

    A batch made in ordinary memory is copied into shared memory to reach the training process;
    writing it there in the first place saves that copy (about a fifth of the time at 224px).
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.UntypedStorage._new_shared(numel * dtype.itemsize)  # what default_collate uses
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


class MapReader(torch.utils.data.Dataset):
    """Map-style: a work item (seed, indices) -> one decoded batch."""

    def __init__(self, ds, decoder: Decoder):
        self.ds, self.decoder = decoder.columns(ds), decoder

    def __getitem__(self, item):
        seed, indices = item
        rows = self.ds[indices]  # one Arrow read for the whole batch
        return self.decoder(rows[self.decoder.image_column], rows[self.decoder.label_column], indices, seed)


class CachedReader(torch.utils.data.Dataset):
    """Map-style over a decode-once cache: a work item (seed, indices) -> one augmented batch.

    Per-image PIL work (about 0.2 ms decode plus resize and crop) is what bounds small models;
    indexing a uint8 tensor and augmenting the batch as a whole costs a few microseconds per image.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, pipeline: TensorPipeline):
        self.images, self.labels, self.pipeline = images, labels, pipeline

    def __getitem__(self, item):
        seed, indices = item
        index = torch.tensor(indices)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        images = self.images[index]
        out = batch_buffer((len(index), len(self.pipeline.stats[0]), *self.pipeline.size))
        return self.pipeline(images, generator, out), self.labels[index], [], None


def cached(split: Split, pipeline: TensorPipeline | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The split's images after `pipeline.prefix` as one uint8 [N, C, h, w] tensor plus its labels,
    decoded once per process and kept while the data set lives.

    None (use the per-image path) when there is no batched pipeline, the pixels would exceed
    `CACHE_BYTES`, the images differ in size, or one does not decode: the per-image path is the
    one that skips and counts bad images.
    """
    if pipeline is None or split.num_examples is None:
        return None
    per_split = CACHES.setdefault(split.dataset, {})
    key = (pipeline.key, split.image_column, split.label_column)
    if key not in per_split:
        per_split[key] = decode_all(split, pipeline.prefix)
    return per_split[key]


def decode_all(split: Split, prefix: Callable, chunk: int = 1024):
    ds = split.dataset.select_columns([split.image_column]).cast_column(split.image_column,
                                                                        datasets.Image(decode=False))
    images = None
    for begin in range(0, split.num_examples, chunk):
        for i, value in enumerate(ds[begin : begin + chunk][split.image_column], begin):
            try:
                array = np.array(prefix(decode_stored(value)))
                pixels = torch.from_numpy(array[..., None] if array.ndim == 2 else array).permute(2, 0, 1)
            except DECODE_ERRORS:
                return None
            if images is None:
                if split.num_examples * pixels.numel() > CACHE_BYTES:
                    return None
                images = torch.empty((split.num_examples, *pixels.shape), dtype=torch.uint8)
            if pixels.shape != images.shape[1:]:
                return None
            images[i] = pixels
    labels = torch.as_tensor(np.asarray(split.dataset[split.label_column]), dtype=torch.int64)
    return images, labels

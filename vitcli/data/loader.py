"""Batches of (images, labels) from a `Split`: sharded, seeded, resumable, tolerant of bad images.

Work is done a batch at a time: the main process sends each worker a list of indices (and a seed),
the worker fetches those rows from Arrow in one call, decodes and transforms them, and stacks the
batch. Augmentation is seeded per batch from (seed, epoch, rank, position), so it does not depend on
the number of workers and a run resumed mid-epoch sees exactly what the uninterrupted run saw.

Images are decoded here (not by `datasets` on access) so that an undecodable one can be skipped and
counted instead of killing the run; `ImageLoader` keeps the count and stops the run when too many
are bad.
"""

from __future__ import annotations

import logging
import os

import torch
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader

from vitcli.recipe.config import DataCfg, Res
from vitcli.data.checks import check_labels, raise_label
from vitcli.data.sampler import Batches, ShardedSampler
from vitcli.data import draft
from vitcli.data.images import decode_stored, to_channels
from vitcli.data.device_decode import Planned
from vitcli.data.readers import CachedReader, Decoder, MapReader, cached
from vitcli.data.source import Split
from vitcli.data.stream import StreamOrder, StreamReader
from vitcli.data.transforms import (
    TensorPipeline,
    eval_pil_transform,
    eval_tensor_pipeline,
    norm_stats,
    mixup_fn,
    normalise,
    train_pil_transform,
    train_tensor_pipeline,
)
from vitcli.errors import DataError

__all__ = ["ImageLoader", "ShardedSampler", "eval_loader", "mixup_fn", "train_loader"]

log = logging.getLogger(__name__)

_TINY = 4096  # below this many examples, starting worker processes costs more than it saves
_MAX_WORKERS = 8
_MIN_SEEN = 100  # bad images are judged as a fraction only after this many have been seen
FAST_DECODE = True  # JPEGs decoded at reduced size where the output allows (vitcli.data.draft)
def _as_is(batch):
    return batch


class ImageLoader(DataLoader):
    """A DataLoader yielding `(images float32 [B,3,H,W], labels int64 [B])`.

    Undecodable images are dropped from their batch (so a batch can be short; a batch with none left
    is not yielded) and counted in `bad` out of `seen`. More than `max_bad_fraction` of the epoch's
    examples raises DataError as soon as the count passes it (for a stream, whose epoch is unknown, once
    `_MIN_SEEN` have been seen; at once when a whole batch is bad), as does a label outside [0, num_classes).
    """

    def __init__(self, reader, *, split: Split, max_bad_fraction: float, expected: int, stats=None, device=None,
                 **kwargs):
        # The private generator only keeps the DataLoader from drawing its base seed from the
        # global RNG; augmentation is seeded per batch.
        super().__init__(
            reader,
            batch_size=None,
            collate_fn=_as_is,
            pin_memory=torch.cuda.is_available(),  # page-locked batches copy to the GPU asynchronously
            generator=torch.Generator().manual_seed(0),
            **kwargs,
        )
        self.where = split.where
        self.num_classes = split.num_classes
        self.label_map = None if split.label_map is None else torch.tensor(split.label_map, dtype=torch.int64)
        self.max_bad_fraction = max_bad_fraction
        self.expected = expected  # examples per epoch on this rank; 0 when streaming
        self.seen = 0
        self.bad = 0
        self.stats, self.device = stats, device  # uint8 batches are normalised here, on `device` if given
        self.reason: tuple[int, str | None] = (0, None)  # an example of the bad images, for the error
        self.order: StreamOrder | None = None  # a stream's: takes its workers' batches in turn

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Iterate epoch `epoch` next, skipping its first `start` examples on this rank (resuming)."""
        if isinstance(self.dataset, StreamReader):
            self.dataset.ds.set_epoch(epoch)  # reshuffles the shards; the buffer is seeded per epoch
            self.dataset.resume = skipping(start, self.dataset.batch_size, self.num_workers)
            self.order = StreamOrder(self.num_workers, epoch, self.dataset.resume, self.where)
        else:
            self.sampler.sampler.set_epoch(epoch)
            self.sampler.sampler.start_at(start)

    def stream_state(self) -> dict | None:
        """Where this rank's stream is after the batches used so far (None: not a stream); a checkpoint
        keeps it, and `train_loader(resume=...)` continues from it."""
        return self.order.state() if self.order is not None else None

    def __iter__(self):
        failed = True
        batches = super().__iter__()
        try:
            for images, labels, bad, reason in (self.order(batches) if self.order is not None else batches):
                if isinstance(images, Planned):  # JPEGs left to decode here, on the run's device
                    images, kept, late, late_reason = images.decode(self.device or "cpu")
                    labels, bad, reason = labels[kept], bad + late, reason or late_reason
                self._account(len(labels), bad, reason)
                if len(labels):
                    yield self._normalised(images), self._check_labels(labels)
            failed = False
        except GeneratorExit:  # the consumer stopped early: the trainer ends an epoch at its step count
            failed = False
            raise
        finally:
            if self.bad and not failed:  # a failure has its own error line
                log.warning("%s: %d of %d images skipped as undecodable (max_bad_fraction=%g)",
                            self.where, self.bad, self.seen, self.max_bad_fraction)

    def _account(self, good: int, bad: list[int], reason: str | None) -> None:
        self.seen += good + len(bad)
        if bad:
            if self.bad == 0:
                log.warning("%s: skipping undecodable image, example %d: %s", self.where, bad[0], reason)
            self.bad += len(bad)
            self.reason = (bad[0], reason)
        if not self.bad:
            return
        # The fraction is of the epoch's examples: bad images only add up, so once they pass that share of
        # the whole epoch the epoch is over the limit whatever comes next, and the run stops then, not after
        # training on (a short run may never see the rest). A stream has no known epoch: it is judged on what
        # was seen, once that is _MIN_SEEN.
        allowed = self.max_bad_fraction * (self.expected or self.seen)
        whole_batch = good == 0 and len(bad) > 1
        judged = self.expected > 0 or self.seen >= _MIN_SEEN
        if whole_batch or (judged and self.bad > allowed):
            example, why = self.reason
            raise DataError(
                f"{self.where}: {self.bad} of {self.seen} images seen could not be decoded, more than "
                f"max_bad_fraction={self.max_bad_fraction} allows; e.g. example {example}: {why}"
            )

    def _normalised(self, images: torch.Tensor) -> torch.Tensor:
        """A per-image batch (uint8) moved to `device` and normalised there; cached batches come normalised."""
        if images.dtype != torch.uint8:
            return images
        if self.device is not None:
            images = images.to(self.device, non_blocking=True)
        return normalise(images, self.stats)

    def _check_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The batch's labels as model outputs (through the label map), after checking their range."""
        limit = self.num_classes if self.label_map is None else len(self.label_map)
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= limit:
            raise_label(self.where, low if low < 0 else high, limit)
        return labels if self.label_map is None else self.label_map[labels]


def train_loader(
    split: Split,
    cfg: DataCfg,
    res: Res,
    micro_batch: int,
    *,
    seed: int,
    epoch: int = 0,
    start: int = 0,
    rank: int = 0,
    world: int = 1,
    workers: int | None = None,
    channels: int = 3,
    device: torch.device | str | None = None,
    resume: dict | None = None,
) -> ImageLoader:
    """Shuffled, augmented batches of `micro_batch` images (fewer only when bad images were skipped)
    for rank `rank` of `world`, beginning `start` examples into epoch `epoch`.

    Batches are normalised on `device` when given (they travel as uint8). Call `loader.set_epoch(e)`
    before iterating epoch e > epoch. The order depends only on (seed,
    epoch, world, rank), the augmentation only on (seed, epoch, rank, position in the epoch).
    A stream continues from `resume` (its `loader.stream_state()` saved earlier) when given, in O(1).
    """
    decoder = _decoder(split, train_pil_transform(cfg, res, channels), cfg, res, channels, draft.train_reader,
                       device)
    if split.num_examples is None:
        return _stream_loader(split, cfg, decoder, micro_batch, seed, epoch, start, rank, world, workers, device,
                              resume)
    pipeline = train_tensor_pipeline(cfg, res, channels)
    sampler = ShardedSampler(split.num_examples, num_replicas=world, rank=rank, seed=seed)
    sampler.set_epoch(epoch)
    sampler.start_at(start)
    batches = Batches(sampler, micro_batch, drop_last=True, seed=seed)
    if len(sampler) + start < micro_batch:
        raise DataError(
            f"{split.where} has {len(sampler) + start} examples per process, fewer than one batch of "
            f"{micro_batch}; use a smaller batch or a larger split"
        )
    return _map_loader(split, cfg, decoder, batches, workers, pipeline, device)


def eval_loader(
    split: Split,
    cfg: DataCfg,
    res: Res,
    batch_size: int,
    *,
    rank: int = 0,
    world: int = 1,
    workers: int | None = None,
    channels: int = 3,
    device: torch.device | str | None = None,
) -> ImageLoader:
    """Evaluation batches in dataset order; rank r gets examples r, r + world, ... so that every
    example is seen exactly once across ranks (the last batch may be short)."""
    decoder = _decoder(split, eval_pil_transform(cfg, res, channels), cfg, res, channels, draft.eval_reader,
                       device)
    if split.num_examples is None:
        return _stream_loader(split, cfg, decoder, batch_size, None, 0, 0, rank, world, workers, device, None)
    sampler = ShardedSampler(split.num_examples, num_replicas=world, rank=rank, shuffle=False, pad=False)
    batches = Batches(sampler, batch_size, drop_last=False, seed=None)
    return _map_loader(split, cfg, decoder, batches, workers, eval_tensor_pipeline(cfg, res, channels), device)


def _decoder(split: Split, transform, cfg: DataCfg, res: Res, channels: int, fast, device) -> Decoder:
    # `fast` builds the reduced-size JPEG path from the same transform (None where it has none);
    # FAST_DECODE = False keeps every image on the full-size path (benchmarks compare the two).
    read = fast(transform, to_channels(channels), decode_stored) if FAST_DECODE else None
    on_device = read is not None and decodes_on_device(cfg.decode, device, getattr(read, "flips", ()) is not None)
    return Decoder(split.image_column, split.label_column, transform, norm_stats(cfg, channels), tuple(res), read,
                   on_device)


def decodes_on_device(choice: str, device, tensor_steps: bool = True) -> bool:
    """Whether JPEGs are decoded by the loader on `device` (batched, nvJPEG on CUDA) instead of in the workers.

    `data.decode` cpu: never; auto: when `device` is a CUDA device; gpu: on whatever device the loader is
    given (the engine refuses gpu for a run not on CUDA, so only tests run it on the CPU). Never without a
    device to decode on, nor when a PIL-only step (RandAugment) follows the crop (`tensor_steps` False).
    """
    if choice == "cpu" or device is None or not tensor_steps:
        return False
    return choice == "gpu" or torch.device(device).type == "cuda"


def _map_loader(split: Split, cfg: DataCfg, decoder: Decoder, batches: Batches, workers: int | None,
                pipeline: TensorPipeline | None = None, device=None):
    # Labels are checked once, up front, on the Arrow column: cheaper than per batch, and it fails
    # before any worker starts.
    check_labels(split)
    cache = cached(split, pipeline)
    if cache is not None:
        reader = CachedReader(*cache, pipeline)
        # Batched tensor augmentation is cheap next to a training step: worker processes would cost
        # start-up and a copy of every batch for nothing, unless asked for.
        n = workers if workers is not None else (cfg.workers or 0)
    else:
        reader, n = MapReader(split.dataset, decoder), _workers(cfg, workers, split.num_examples)
    return ImageLoader(
        reader,
        split=split,
        max_bad_fraction=cfg.max_bad_fraction,
        expected=len(batches.sampler),
        sampler=batches,
        stats=decoder.stats,
        device=device,
        num_workers=n,
        persistent_workers=n > 0,  # keeps worker start-up out of every epoch
    )


def _stream_loader(split, cfg, decoder, batch_size, seed, epoch, start, rank, world, workers, device,
                   resume) -> ImageLoader:
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside [0, {world})")
    ds = split_dataset_by_node(split.dataset, rank=rank, world_size=world)
    if world > 1 and split.dataset.num_shards % world and seed is not None and rank == 0:
        log.warning("%s: its %d shards do not divide among %d processes, so every process reads every shard and "
                    "keeps every %d-th example; a resume reads this epoch again up to where it was. Write a number "
                    "of shards that %d divides", split.where, split.dataset.num_shards, world, world, world)
    # Workers beyond the shard count would get nothing. A resumed stream keeps the workers it was saved with:
    # which worker reads which shards is part of its position. Workers are not persistent, so that what
    # `set_epoch` changes (epoch, position) reaches the fresh workers of the next epoch.
    n = min(_workers(cfg, workers, None), ds.num_shards) if resume is None else resume["workers"]
    if resume is None:
        resume = skipping(start, batch_size, n)
    reader = StreamReader(ds, decoder, batch_size, seed, rank, cfg.shuffle_buffer, resume)
    reader.ds.set_epoch(epoch)
    loader = ImageLoader(reader, split=split, max_bad_fraction=cfg.max_bad_fraction, expected=0, num_workers=n,
                         stats=decoder.stats, device=device)
    loader.order = StreamOrder(n, epoch, resume, split.where)
    return loader


def skipping(start: int, batch_size: int, processes: int) -> dict | None:
    """A stream position `start` examples into an epoch when no saved position is known (a checkpoint from
    before positions were saved): each worker reads its stream from the start and skips its share."""
    if not start:
        return None
    done, workers = start // batch_size, max(processes, 1)
    at = {str(w): {"taken": len(range(w, done, workers)) * batch_size, "batches": len(range(w, done, workers))}
          for w in range(workers)}
    return {"workers": processes, "next": done % workers, "at": at}


def _workers(cfg: DataCfg, requested: int | None, num_examples: int | None) -> int:
    """Worker processes: as asked, else cfg.workers, else one per CPU up to 8 (0 for tiny datasets)."""
    if requested is None:
        requested = cfg.workers
    if requested is not None:
        return requested
    if num_examples is not None and num_examples < _TINY:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(_MAX_WORKERS, cpus)

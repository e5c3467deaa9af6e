"""How a decoded image becomes a normalised tensor, and how a batch is mixed.

Per-image pipelines are torchvision `transforms.v2` plus timm's RandAugment and aspect-keeping resize;
`mixup_fn` wraps timm's Mixup/CutMix, which the trainer applies to whole batches. `TensorPipeline` is
the same augmentation on whole uint8 batches, for small data sets decoded once into memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from timm.data.transforms import ResizeKeepRatio
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from vitcli.recipe.config import DataCfg, Res
from vitcli.recipe.config import norm_stats as config_norm_stats
from vitcli.data.images import to_channels
from vitcli.errors import DataError

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std), one number per channel


def norm_stats(cfg: DataCfg, channels: int = 3) -> Stats:
    """(mean, std) per channel of pixels in [0, 1] (`recipe.config.norm_stats`: data.mean / data.std, else
    data.norm's constants)."""
    return config_norm_stats(cfg.norm, cfg.mean, cfg.std, channels)


# Bilinear everywhere: big_vision, which trained the paper's models, resizes bilinearly, and PIL's
# bilinear filter antialiases when shrinking, so large sources do not alias.
_INTERPOLATION = v2.InterpolationMode.BILINEAR
_INCEPTION_ASPECT = (3 / 4, 4 / 3)


def train_transform(cfg: DataCfg, res: Res, channels: int = 3) -> v2.Compose:
    """Training pipeline: RGB (or grey), inception crop (or resize), flip, RandAugment, tensor, normalise.

    Takes a PIL image of any mode and size; returns float32 [channels, H, W] with `res == (H, W)`.
    """
    return v2.Compose([train_pil_transform(cfg, res, channels), *_to_tensor(norm_stats(cfg, channels))])


def eval_transform(cfg: DataCfg, res: Res, channels: int = 3) -> v2.Compose:
    """Evaluation pipeline: RGB (or grey), resize to cover `res / eval_crop` keeping the aspect, centre-crop
    `res`, tensor, normalise. Takes a PIL image of any mode and size; returns float32 [channels, H, W]."""
    return v2.Compose([eval_pil_transform(cfg, res, channels), *_to_tensor(norm_stats(cfg, channels))])


def train_pil_transform(cfg: DataCfg, res: Res, channels: int = 3) -> v2.Compose:
    """The PIL-to-PIL part of `train_transform`: an RGB (or grey) image of size `res`, not yet a tensor."""
    size = tuple(res)
    steps: list = [v2.Lambda(to_channels(channels))]
    if cfg.train_crop == "inception":
        crop = v2.RandomResizedCrop(
            size, scale=(cfg.min_area, 1.0), ratio=_INCEPTION_ASPECT, interpolation=_INTERPOLATION, antialias=True
        )
        steps.append(crop)
    else:
        steps.append(v2.Resize(size, interpolation=_INTERPOLATION, antialias=True))
    if cfg.flip:
        steps.append(v2.RandomHorizontalFlip())
    if cfg.randaugment:
        steps.append(_randaugment(cfg.randaugment, size, norm_stats(cfg, channels)[0]))
    return v2.Compose(steps)


def eval_pil_transform(cfg: DataCfg, res: Res, channels: int = 3) -> v2.Compose:
    """The PIL-to-PIL part of `eval_transform`.

    The aspect ratio is kept so that objects are not stretched; with square sources and
    `eval_crop` 1.0 this is a plain resize to `res`.
    """
    size = tuple(res)
    cover = tuple(round(s / cfg.eval_crop) for s in size)
    resize = ResizeKeepRatio(cover, longest=0.0, interpolation="bilinear")  # longest=0: cover, not fit
    return v2.Compose([v2.Lambda(to_channels(channels)), resize, v2.CenterCrop(size)])


def to_batch(images: Sequence[Image.Image], stats: Stats, out: torch.Tensor | None = None) -> torch.Tensor:
    """Stack same-sized RGB (or L) PIL images into one normalised float32 batch [B, C, H, W] (into `out`).

    Equal to stacking the tensors of `train_transform`/`eval_transform`, but converting and
    normalising the whole batch at once costs a few microseconds per image instead of about a
    hundred for the per-image tensor steps, which dominate at small resolutions.
    """
    return normalise(to_pixels(images), stats, out)


def to_pixels(images: Sequence, out: torch.Tensor | None = None) -> torch.Tensor:
    """Stack same-sized images as one uint8 batch [B, C, H, W] (written into `out` if given): RGB (or L) PIL
    images, or uint8 numpy arrays [C, H, W] as the fast path makes them (copied as they are, a memcpy each;
    a PIL image is transposed from its [H, W, C] on the way). Normalised later, on the batch."""
    first = images[0]
    shape = (len(images), *(first.shape if isinstance(first, np.ndarray) else _chw_shape(first)))
    target = (torch.empty(shape, dtype=torch.uint8) if out is None else out).numpy()
    for slot, image in enumerate(images):
        target[slot] = image if isinstance(image, np.ndarray) else chw(image)
    return torch.from_numpy(target)


def chw(image: Image.Image) -> np.ndarray:
    """A PIL image's pixels as a [C, H, W] view of its [H, W, C] array (L images have no channel axis)."""
    array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _chw_shape(image: Image.Image) -> tuple[int, int, int]:
    return len(image.getbands()), image.height, image.width


def normalise(pixels: torch.Tensor, stats: Stats, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [B, C, H, W] (any strides) -> normalised float32 batch, written into `out` if given."""
    batch = torch.empty(pixels.shape, dtype=torch.float32, device=pixels.device) if out is None else out
    batch.copy_(pixels)  # uint8 -> float32 CHW in one pass
    mean, std = (torch.tensor(v, dtype=torch.float32).mul_(255).view(1, -1, 1, 1).to(batch.device) for v in stats)
    return batch.sub_(mean).div_(std)


def _to_tensor(stats: Stats) -> list:
    mean, std = stats
    return [v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


def _randaugment(spec: str, size: tuple[int, int], mean) -> Callable:
    from timm.data.auto_augment import rand_augment_transform

    # As timm's own factory does: translations relative to the image, fill with the mean colour.
    hparams = {"translate_const": int(min(size) * 0.45), "img_mean": tuple(min(255, round(255 * m)) for m in mean)}
    try:
        return rand_augment_transform(spec, hparams)
    except (AssertionError, ValueError, KeyError, IndexError) as e:
        raise DataError(
            f"data.randaugment {spec!r} is not a timm RandAugment spec ({e!r}); e.g. 'rand-m9-mstd0.5' or 'rand-m15-n2'"
        ) from e


@dataclass(frozen=True)
class TensorPipeline:
    """A pipeline split for a decode-once cache: `prefix` (deterministic, PIL) runs once per image when
    the cache is built; `__call__` does the random rest (inception crop, flip) on whole uint8 batches.

    The random draws come from the generator passed in, seeded per batch by the loader, so the
    augmentation is as reproducible and resumable as on the per-image path, and leaves the global
    RNGs alone. Crops follow `v2.RandomResizedCrop` (same parameter rule, bilinear, antialiased).
    """

    prefix: Callable  # PIL image -> RGB (or L) PIL image; all outputs must share one size to be cached
    key: tuple  # identifies `prefix`: caches are shared only between pipelines with equal keys
    size: tuple[int, int]
    stats: Stats
    min_area: float | None = None  # inception crop of [min_area, 1] of the image; None: no crop
    flip: bool = False

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 [B, C, h, w] -> normalised float32 [B, C, H, W] (into `out` if given)."""
        if self.min_area is not None:
            boxes = _crop_boxes(len(images), images.shape[-2:], self.min_area, generator)
            images = torch.stack([TF.resized_crop(image, *box, list(self.size), interpolation=_INTERPOLATION,
                                                  antialias=True) for image, box in zip(images, boxes.tolist())])
        elif tuple(images.shape[-2:]) != self.size:
            images = TF.resize(images, list(self.size), interpolation=_INTERPOLATION, antialias=True)
        if self.flip:
            flipped = torch.rand(len(images), generator=generator) < 0.5
            images = torch.where(flipped.view(-1, 1, 1, 1), images.flip(-1), images)
        return normalise(images, self.stats, out)


def train_tensor_pipeline(cfg: DataCfg, res: Res, channels: int = 3) -> TensorPipeline | None:
    """The batched form of `train_transform`, or None where there is none (RandAugment is PIL-only)."""
    if cfg.randaugment:
        return None
    size, stats, mode = tuple(res), norm_stats(cfg, channels), to_channels(channels)
    if cfg.train_crop == "inception":  # crops need the source image: cache it as decoded
        return TensorPipeline(v2.Lambda(mode), ("decoded", channels), size, stats, cfg.min_area, cfg.flip)
    resize = v2.Compose([v2.Lambda(mode), v2.Resize(size, interpolation=_INTERPOLATION, antialias=True)])
    return TensorPipeline(resize, ("resize", size, channels), size, stats, None, cfg.flip)


def eval_tensor_pipeline(cfg: DataCfg, res: Res, channels: int = 3) -> TensorPipeline:
    """The batched form of `eval_transform`: all of it is deterministic, so all of it is cached."""
    size = tuple(res)
    return TensorPipeline(eval_pil_transform(cfg, res, channels), ("eval", size, cfg.eval_crop, channels), size,
                          norm_stats(cfg, channels))


def _crop_boxes(n: int, shape, min_area: float, generator: torch.Generator | None) -> torch.Tensor:
    """[n, 4] (top, left, height, width) by `v2.RandomResizedCrop`'s rule, for n images at once:
    up to 10 draws of area and log-aspect per image, the first that fits wins, else the whole image
    cropped to the nearest allowed aspect."""
    height, width = shape
    tries = 10
    area = height * width * torch.empty(n, tries).uniform_(min_area, 1.0, generator=generator)
    log_ratio = torch.empty(n, tries).uniform_(*np.log(_INCEPTION_ASPECT).tolist(), generator=generator)
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).round().long()
    h = torch.sqrt(area / aspect).round().long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.where(fits.any(1), fits.float().argmax(1), -1)
    pick = first.clamp(min=0).view(-1, 1)
    h, w = h.gather(1, pick).squeeze(1), w.gather(1, pick).squeeze(1)
    fallback = _fallback_box(height, width)
    h = torch.where(first >= 0, h, fallback[0])
    w = torch.where(first >= 0, w, fallback[1])
    u = torch.rand(n, 2, generator=generator)  # offsets, uniform over the positions that fit
    top = (u[:, 0] * (height - h + 1)).long().clamp(max=height - h)
    left = (u[:, 1] * (width - w + 1)).long().clamp(max=width - w)
    top = torch.where(first >= 0, top, (height - h) // 2)  # the fallback is centred
    left = torch.where(first >= 0, left, (width - w) // 2)
    return torch.stack([top, left, h, w], 1)


def _fallback_box(height: int, width: int) -> tuple[int, int]:
    ratio = width / height
    if ratio < _INCEPTION_ASPECT[0]:
        return round(width / _INCEPTION_ASPECT[0]), width
    if ratio > _INCEPTION_ASPECT[1]:
        return height, round(height * _INCEPTION_ASPECT[1])
    return height, width


def mixup_fn(cfg: DataCfg, num_classes: int, label_smoothing: float = 0.0) -> Callable | None:
    """Batch-level Mixup/CutMix from timm, or None when both `cfg.mixup` and `cfg.cutmix` are 0.

    The callable maps `(images [B,C,H,W], labels [B])` to `(mixed images, soft targets [B, C])`, with
    label smoothing folded into the targets. Its randomness is numpy's global generator.
    """
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    from timm.data import Mixup

    mix = Mixup(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        label_smoothing=label_smoothing,
        num_classes=num_classes,
    )

    def apply(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # timm insists on an even batch; one shortened by skipped images may be odd, so drop its last.
        if len(images) % 2:
            images, labels = images[:-1], labels[:-1]
        return mix(images, labels)

    return apply

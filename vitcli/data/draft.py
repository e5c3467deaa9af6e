"""The per-image fast path: JPEGs decoded by libjpeg-turbo straight into arrays, at a reduced size where the
output allows it, and cropped and resized as uint8 tensors.

Where a core's time goes on ImageNet-sized JPEGs (500x375, 224 px training crop, cProfile): the JPEG decode
and PIL's bilinear resize, about half each. So the decode is simplejpeg's (the same libjpeg-turbo as PIL's,
the same pixels, without PIL's unpacking into its 4-byte layout and the copy out of it) and the resize is
torchvision's uint8 kernel (`geometry.py`), about 4x faster than PIL's. libjpeg can also decode at 1/2, 1/4
or 1/8 of the size (DCT scaling): a large photo resized to 384 px, or a crop that is large next to 224 px,
needs only that many pixels.

The geometry is the slow path's: the crop box is drawn by `v2.RandomResizedCrop`'s own rule, from the same
RNG, on the image's full (upright) size, before any pixel is decoded, then the flip by `v2`'s own transform;
the eval size is `ResizeKeepRatio`'s. The scale is the largest that keeps the decoded crop at least the
output's size both ways. Values differ from PIL's resize by at most one level (tests/test_draft.py).

Each reader also `plan`s an image for decoding on the run's device (`device_decode.py`): the same draws,
with the decode and resample left to nvJPEG and the GPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from timm.data.transforms import ResizeKeepRatio
from torchvision.transforms import v2

from vitcli.data.device_decode import Plan
from vitcli.data.geometry import as_array, reduced_box, resized_centre_crop, resized_crop
from vitcli.data.images import jpeg_pixels, open_image, orientation, read_bytes, to_rgb, upright


@dataclass(frozen=True)
class Opened:
    """An image opened and checked from its header (`images.open_image`), not decoded, with its bytes."""

    image: Image.Image
    data: bytes

    @property
    def plain_jpeg(self) -> bool:
        """A JPEG libjpeg-turbo turns into RGB itself (YCbCr or grey; CMYK goes through PIL)."""
        return self.image.format == "JPEG" and self.image.mode in ("RGB", "L")

    @property
    def colour_jpeg(self) -> bool:
        """A YCbCr JPEG: what the device decodes (grey and CMYK ones are decoded by the worker, as nvJPEG's
        conversions of those are not libjpeg's)."""
        return self.image.format == "JPEG" and self.image.mode == "RGB"


def open_lazily(value) -> Opened | None:
    """A `datasets.Image(decode=False)` value (bytes, or a local path) opened, checked by the one decoder's
    rules (regular file, common format, size limits) but not decoded; None where it is elsewhere."""
    if isinstance(value, dict) and value.get("bytes") is not None:
        data = value["bytes"]
    else:
        path = value.get("path") if isinstance(value, dict) else value
        if not (isinstance(path, str) and os.path.isfile(path)):
            return None
        data = read_bytes(path)
    return Opened(open_image(data), data)


def scale_for(size: tuple[int, int], need: tuple[int, int]) -> int:
    """The largest DCT scale (1, 2, 4 or 8) that keeps an image of `size` at least `need` (width, height):
    `Image.draft`'s rule."""
    if need[0] <= 0 or need[1] <= 0:
        return 1
    most = min(size[0] // need[0], size[1] // need[1])
    return next(s for s in (8, 4, 2, 1) if most >= s or s == 1)


def pixels(opened: Opened, need: tuple[int, int], channels: Callable) -> tuple[torch.Tensor, int]:
    """(uint8 [C, H, W] of the image decoded at 1/scale, scale), the scale the largest keeping `need`."""
    image = opened.image
    scale = scale_for(image.size, need)
    if opened.plain_jpeg and channels is to_rgb:
        array = jpeg_pixels(opened.data, scale)
    else:  # PNG, CMYK, grey models: PIL, at the same scale where the format can draft
        if scale > 1 and image.draft(image.mode, need) is None:  # formats other than JPEG do not draft
            scale = 1
        image.load()
        array = np.array(channels(image))  # (a copy: PIL's buffer is read-only)
    array = array[..., None] if array.ndim == 2 else array
    return torch.from_numpy(array).permute(2, 0, 1), scale


def _upright(opened: Opened) -> bool:
    """True when EXIF orientation leaves the image as stored (no transpose is needed before cropping)."""
    return orientation(opened.image) == 1


def _flips(flips: tuple[float, ...]) -> bool:
    """Whether an odd number of horizontal flips (probabilities `flips`) apply: the draws v2's
    `RandomHorizontalFlip` makes (one `torch.rand(1)` each, applied when below p), without its dispatch
    (a tenth of a millisecond an image)."""
    flipped = False
    for p in flips:
        flipped ^= bool(torch.rand(1) < p)
    return flipped


@dataclass(frozen=True)
class DraftTrain:
    """value -> the training image (uint8 [C, H, W] array, or a PIL image where RandAugment follows): the
    inception crop decoded at reduced size and resized, then `rest` (flip, RandAugment). `slow` (decoded
    image -> same) serves images that must be turned upright first."""

    crop: v2.RandomResizedCrop
    channels: Callable  # to_rgb or to_grey
    rest: Callable
    flips: tuple[float, ...] | None  # `rest` is flips only (their p): drawn and applied here; None: PIL `rest`
    slow: Callable
    fallback: Callable  # value -> decoded image, as `datasets.Image` decodes it
    centre_crop = None  # (eval readers' crop: `Planned` resamples a training crop instead)

    def __call__(self, value):
        opened = open_lazily(value)
        if opened is None or not _upright(opened):
            return self._slow(value, opened)
        box = self._box(opened)
        out_h, out_w = self.crop.size
        top, left, h, w = box
        width, height = opened.image.size
        image, scale = pixels(opened, (math.ceil(width * out_w / w), math.ceil(height * out_h / h)), self.channels)
        out = resized_crop(image, reduced_box(box, scale, tuple(image.shape[1:])), (out_h, out_w))
        if self.flips is not None:  # applied as a view: the batch's stack copies it once
            return as_array(out)[:, :, ::-1] if _flips(self.flips) else as_array(out)
        hwc = as_array(out).transpose(1, 2, 0)
        return self.rest(Image.fromarray(np.ascontiguousarray(hwc[..., 0] if out.shape[0] == 1 else hwc)))

    def plan(self, value):
        """A `Plan` (the JPEG's bytes, crop box, flip) for decoding on the device; pixels as `__call__` gives
        them for anything nvJPEG does not decode as the CPU would (not a plain JPEG, EXIF-turned, grey)."""
        opened = open_lazily(value)
        if opened is None or not _upright(opened) or not opened.colour_jpeg or self.channels is not to_rgb:
            return self(value)
        return Plan(opened.data, self._box(opened), _flips(self.flips))

    def _box(self, opened: Opened) -> tuple[int, int, int, int]:
        params = self.crop.make_params([opened.image])  # the slow path's draws, on the full size
        return params["top"], params["left"], params["height"], params["width"]

    def _slow(self, value, opened: Opened | None):
        return self.slow(self.fallback(value) if opened is None else _exif_upright(opened.image))


@dataclass(frozen=True)
class DraftEval:
    """value -> the eval image (uint8 [C, H, W]): resized to cover `cover` keeping the aspect (decoded at
    reduced size where that stays at least the resized size), then centre-cropped."""

    cover: tuple[int, int]  # (height, width) the resize covers
    channels: Callable
    crop: tuple[int, int]  # (height, width) of the centre crop
    slow: Callable
    fallback: Callable

    def __call__(self, value):
        opened = open_lazily(value)
        resized = None if opened is None or not _upright(opened) else self._resized(opened)
        if resized is None:
            return self._slow(value, opened)
        image, _ = pixels(opened, resized[::-1], self.channels)
        return as_array(resized_centre_crop(image, resized, self.crop))

    def plan(self, value):
        """A `Plan` (the JPEG's bytes, its resized size) for the device; pixels where the CPU must decode."""
        opened = open_lazily(value)
        resized = None if opened is None or not _upright(opened) else self._resized(opened)
        if resized is None or not opened.colour_jpeg or self.channels is not to_rgb:
            return self(value)
        return Plan(opened.data, resized, False)

    @property
    def centre_crop(self) -> tuple[int, int]:
        return self.crop

    def _resized(self, opened: Opened) -> tuple[int, int] | None:
        """The slow path's resized (height, width); None where the crop is larger (eval_crop > 1: padded)."""
        out_h, out_w = ResizeKeepRatio.get_params(opened.image, self.cover, 0.0)
        return None if out_h < self.crop[0] or out_w < self.crop[1] else (out_h, out_w)

    def _slow(self, value, opened: Opened | None):
        return self.slow(self.fallback(value) if opened is None else _exif_upright(opened.image))


def _exif_upright(image: Image.Image) -> Image.Image:
    image.load()
    return upright(image)


def _same(image):
    return image


def train_reader(pil: v2.Compose, channels: Callable, fallback: Callable) -> DraftTrain | None:
    """The fast form of `pil` (a `train_pil_transform`), or None where it has no inception crop."""
    steps = list(pil.transforms)
    crops = [i for i, step in enumerate(steps) if isinstance(step, v2.RandomResizedCrop)]
    if not crops:
        return None
    rest = steps[crops[0] + 1 :]
    flips = tuple(step.p for step in rest) if all(isinstance(step, v2.RandomHorizontalFlip) for step in rest) else None
    return DraftTrain(steps[crops[0]], channels, v2.Compose(rest) if rest else _same, flips, pil, fallback)


def eval_reader(pil: v2.Compose, channels: Callable, fallback: Callable) -> DraftEval | None:
    """The fast form of `pil` (an `eval_pil_transform`: channels, keep-ratio resize, centre crop)."""
    steps = list(pil.transforms)
    resizes = [i for i, step in enumerate(steps) if isinstance(step, ResizeKeepRatio)]
    if not resizes or resizes[0] != len(steps) - 2 or not isinstance(steps[-1], v2.CenterCrop):
        return None
    resize = steps[resizes[0]]
    if resize.longest != 0.0 or resize.random_scale_prob or resize.random_aspect_prob:
        return None
    return DraftEval(tuple(resize.size), channels, tuple(steps[-1].size), pil, fallback)

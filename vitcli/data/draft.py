"""The per-image fast path: JPEGs decoded at a reduced size where the output allows it.

libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 of its size (DCT scaling, PIL's `Image.draft`) for a
fraction of a full decode. A training crop of ImageNet's ~500x375 images to 224 px, or an eval resize
to 384 px of a large photo, throws most full-size pixels away; this path decodes only as many as the
output needs.

The geometry is the slow path's, to the pixel: the crop box is drawn by `v2.RandomResizedCrop`'s own
rule, from the same RNG, on the image's full (upright) size, before any pixel is decoded; the eval
size is `ResizeKeepRatio`'s. The scale is then chosen so that the decoded crop is still at least the
output's size in both directions (draft never makes a crop's source smaller than the output needs),
and the box is mapped into the reduced image exactly (PIL resizes from a fractional box). At scale 1
(PNGs, small JPEGs, small crops) a training crop is the slow path's bit for bit; an eval image resamples
only its centre crop's box, which can round a value (of about 0.3%) one level the other way.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image
from timm.data.transforms import ResizeKeepRatio
from torchvision.transforms import v2

from vitcli.data.images import open_image, orientation, upright


def open_lazily(value) -> Image.Image | None:
    """A `datasets.Image(decode=False)` value (bytes, or a local path) opened, checked by the one decoder's
    rules (regular file, common format, size limits) but not decoded; None where it is elsewhere."""
    if isinstance(value, dict) and value.get("bytes") is not None:
        return open_image(value["bytes"])
    path = value.get("path") if isinstance(value, dict) else value
    if isinstance(path, str) and os.path.isfile(path):
        return open_image(path)
    return None


def draft(image: Image.Image, need: tuple[int, int]) -> float:
    """Ask libjpeg for the smallest DCT scale that keeps the image at least `need` (width, height);
    returns the scale (1 when the format cannot draft, or no reduction fits)."""
    width, height = image.size
    if need[0] <= 0 or need[1] <= 0 or width < 2 * need[0] or height < 2 * need[1]:
        return 1.0
    drafted = image.draft(image.mode, need)  # PIL keeps width // need and height // need >= the scale
    return 1.0 if drafted is None else width / drafted[1][2]


def _loaded(image: Image.Image, channels: Callable) -> Image.Image:
    image.load()
    return channels(image)


def _upright(image: Image.Image) -> bool:
    """True when EXIF orientation leaves the image as stored (no transpose is needed before cropping)."""
    return orientation(image) == 1


@dataclass(frozen=True)
class DraftTrain:
    """value -> the training PIL image: the inception crop decoded at reduced size, then `rest`
    (flip, RandAugment). `slow` (decoded image -> same) serves images that must be turned upright first."""

    crop: v2.RandomResizedCrop
    channels: Callable  # to_rgb or to_grey
    rest: Callable
    slow: Callable
    fallback: Callable  # value -> decoded image, as `datasets.Image` decodes it

    def __call__(self, value) -> Image.Image:
        image = open_lazily(value)
        if image is None or not _upright(image):
            return self.slow(self.fallback(value) if image is None else _exif_upright(image))
        box = self.crop.make_params([image])  # the slow path's draws, on the full size
        top, left, h, w = box["top"], box["left"], box["height"], box["width"]
        out_h, out_w = self.crop.size
        width, height = image.size
        scale = draft(image, (math.ceil(width * out_w / w), math.ceil(height * out_h / h)))
        return self.rest(_crop_resize(_loaded(image, self.channels), (left, top, left + w, top + h), scale,
                                      (out_w, out_h)))


@dataclass(frozen=True)
class DraftEval:
    """value -> the eval PIL image: resized to cover `cover` keeping the aspect (decoded at reduced
    size where that stays at least the resized size), then centre-cropped."""

    cover: tuple[int, int]  # (height, width) the resize covers
    channels: Callable
    crop: tuple[int, int]  # (height, width) of the centre crop
    slow: Callable
    fallback: Callable

    def __call__(self, value) -> Image.Image:
        image = open_lazily(value)
        if image is None or not _upright(image):
            return self.slow(self.fallback(value) if image is None else _exif_upright(image))
        out_h, out_w = ResizeKeepRatio.get_params(image, self.cover, 0.0)  # the slow path's size
        width, height = image.size
        scale = draft(image, (out_w, out_h))
        # Only the centre crop is resampled: its box in source pixels, at the full resize's scale, gives
        # the same samples and filter as resizing everything and cropping (torchvision's centre offsets).
        crop_h, crop_w = self.crop
        top, left = int(round((out_h - crop_h) / 2.0)), int(round((out_w - crop_w) / 2.0))
        if top < 0 or left < 0:  # the crop is larger than the resize (eval_crop > 1): pad as the slow path does
            return self.slow(_loaded(image, _same))
        sx, sy = width / scale / out_w, height / scale / out_h
        box = (left * sx, top * sy, (left + crop_w) * sx, (top + crop_h) * sy)
        return _loaded(image, self.channels).resize((crop_w, crop_h), Image.BILINEAR, box=box)


def _same(image: Image.Image) -> Image.Image:
    return image


def _crop_resize(image: Image.Image, box: tuple[int, ...], scale: float, size: tuple[int, int]) -> Image.Image:
    """Crop `box` (full-size pixels) of an image decoded at 1/`scale` and resize it to `size`. Cropped
    first, as torchvision does, so that the filter stops at the crop's edges; the fractional rest of the
    box is resampled exactly."""
    source = [v / scale for v in box]
    outer = (math.floor(source[0]), math.floor(source[1]), math.ceil(source[2]), math.ceil(source[3]))
    inner = (source[0] - outer[0], source[1] - outer[1], source[2] - outer[0], source[3] - outer[1])
    return image.crop(outer).resize(size, Image.BILINEAR, box=inner)


def _exif_upright(image: Image.Image) -> Image.Image:
    image.load()
    return upright(image)


def train_reader(pil: v2.Compose, channels: Callable, fallback: Callable) -> DraftTrain | None:
    """The fast form of `pil` (a `train_pil_transform`), or None where it has no inception crop."""
    steps = list(pil.transforms)
    crops = [i for i, step in enumerate(steps) if isinstance(step, v2.RandomResizedCrop)]
    if not crops:
        return None
    rest = steps[crops[0] + 1 :]
    return DraftTrain(steps[crops[0]], channels, v2.Compose(rest) if rest else _same, pil, fallback)


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

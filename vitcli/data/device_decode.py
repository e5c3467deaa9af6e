"""JPEGs decoded on the run's device (`data.decode: gpu`, or `auto` on CUDA): nvJPEG through torchvision.

A worker does what needs no pixels: it opens each image's header (the one decoder's checks), draws the
crop box and flip exactly as the CPU path does (same rule, same RNG, same order), and sends the JPEG's
bytes with that `Plan`. The training process then decodes the whole batch in one batched
`torchvision.io.decode_jpeg(..., device=...)` call and crops, resizes and flips each image there as a
uint8 tensor (`geometry.py`, the CPU path's own functions). Images nvJPEG would not decode as the CPU
does (PNGs, CMYK or EXIF-turned JPEGs, grey models) arrive decoded by the worker instead.

On the CPU (`device="cpu"`, the tests) the same code runs torchvision's libjpeg-turbo decoder: the path is
tested without a GPU; only the decoder library differs on CUDA.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from vitcli.data.geometry import resized_centre_crop, resized_crop
from vitcli.data.images import DECODE_ERRORS, jpeg_pixels
from vitcli.data.images import reason as image_reason

# What a batched decode may raise for a corrupt image among good ones: the batch is then decoded one
# image at a time, so that only the bad one is skipped and counted.
_DECODE_ERRORS = (RuntimeError, ValueError)


@dataclass(frozen=True)
class Plan:
    """One JPEG to decode on the device: its bytes and its geometry, drawn by the worker."""

    data: bytes
    geometry: tuple[int, ...]  # training: the crop (top, left, height, width); eval: the resized (height, width)
    flip: bool


@dataclass
class Planned:
    """A batch as a worker sends it for decoding on the device: JPEG plans, and pixels already decoded."""

    plans: list[tuple[int, Plan]]  # (slot in the batch, plan)
    ready: list[tuple[int, np.ndarray]]  # (slot, uint8 [C, H, W]) decoded by the worker
    positions: list[int]  # each slot's example position (bad images are reported by it)
    size: tuple[int, int]  # (height, width) of every output image
    channels: int
    crop: tuple[int, int] | None  # eval: the centre crop (height, width); None: training crops

    def __len__(self) -> int:
        return len(self.positions)

    def decode(self, device) -> tuple[torch.Tensor, torch.Tensor, list[int], str | None]:
        """(uint8 [B', C, H, W] on `device`, kept [B] bool, positions of images that did not decode, the
        first reason); B' = kept.sum()."""
        device = torch.device(device)
        out = torch.empty((len(self), self.channels, *self.size), dtype=torch.uint8, device=device)
        kept = torch.ones(len(self), dtype=torch.bool)
        decoded, reason = _decode_all([plan.data for _, plan in self.plans], device)
        for (slot, plan), image in zip(self.plans, decoded):
            if image is None:
                kept[slot] = False
                continue
            out[slot] = self._transform(image, plan)
        for slot, pixels in self.ready:
            out[slot] = torch.from_numpy(np.ascontiguousarray(pixels)).to(device)
        bad = [self.positions[i] for i in range(len(self)) if not kept[i]]
        return (out if not bad else out[kept.to(device)]), kept, bad, reason

    def _transform(self, image: torch.Tensor, plan: Plan) -> torch.Tensor:
        if self.crop is not None:
            return resized_centre_crop(image, plan.geometry, self.crop)
        out = resized_crop(image, plan.geometry, self.size)
        return out.flip(-1) if plan.flip else out


def _decode_all(datas: list[bytes], device: torch.device) -> tuple[list[torch.Tensor | None], str | None]:
    """Every JPEG decoded to uint8 RGB [3, H, W] on `device` in one batched call. When the batch call fails,
    one by one; a JPEG the device's decoder refuses (nvJPEG lacks some of libjpeg's modes) is decoded by
    libjpeg-turbo here and moved over, and only one the CPU cannot decode either is None (bad, with the
    first such reason): the CPU path is the judge of what is undecodable, on either path."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return [], None
    tensors = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in datas]
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs for TorchCodec's, warning on every call; they still
        # run, and TorchCodec is not a dependency of vit (a later torchvision may drop them: see README)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)), None
        except _DECODE_ERRORS:
            pass
        images, reason = [], None
        for data, tensor in zip(datas, tensors):
            try:
                images.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=device))
                continue
            except _DECODE_ERRORS:
                pass
            try:
                images.append(torch.from_numpy(jpeg_pixels(data)).permute(2, 0, 1).to(device))
            except DECODE_ERRORS as e:
                images.append(None)
                reason = reason or image_reason(e)
    return images, reason

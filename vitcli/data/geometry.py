"""The per-image geometry as uint8 tensor operations, on any device: the training crop's resize, the eval
resize and centre crop, and a crop box carried into an image decoded at 1/scale of its size.

The same calls serve the CPU (after a libjpeg-turbo decode, `draft.py`) and the run's GPU (after nvJPEG,
`device_decode.py`). torchvision's tensor resize of uint8 images on the CPU is its antialiased bilinear
kernel for channels-last bytes: about 4x faster than PIL's resize of the same crop, and within one level
of it (tests/test_draft.py); on CUDA it resamples in float and rounds back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

def resize(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 [C, H, W] resized to `size` (height, width): bilinear, antialiased when shrinking, as
    torchvision's `resize` of a uint8 tensor. Called on the pixels as decoded (channels last in memory), not
    a contiguous copy: the CPU kernel reads and writes bytes in that layout, and the batch is stacked in it."""
    if tuple(pixels.shape[-2:]) == tuple(size):  # (a DCT-scaled decode often lands on the size exactly)
        return pixels
    image = pixels.unsqueeze(0)
    if image.device.type == "cpu":
        image = image.contiguous(memory_format=torch.channels_last)  # (a crop's view is neither layout)
        out = F.interpolate(image, size=list(size), mode="bilinear", antialias=True, align_corners=False)
    else:  # CUDA's antialiased kernel takes floats: rounded back, as torchvision does
        out = F.interpolate(image.float(), size=list(size), mode="bilinear", antialias=True, align_corners=False)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out[0]


def resized_crop(pixels: torch.Tensor, box: tuple[int, int, int, int], size: tuple[int, int]) -> torch.Tensor:
    """uint8 [C, H, W] -> the (top, left, height, width) box resized to `size` (height, width):
    `v2.RandomResizedCrop`'s resample."""
    top, left, height, width = box
    return resize(pixels[:, top : top + height, left : left + width], size)


def resized_centre_crop(pixels: torch.Tensor, resized: tuple[int, int], crop: tuple[int, int]) -> torch.Tensor:
    """uint8 [C, H, W] resized to `resized` (height, width), then centre-cropped to `crop`: the eval transform
    (`ResizeKeepRatio` then `v2.CenterCrop`, with torchvision's centre offsets)."""
    return TF.center_crop(resize(pixels, resized), list(crop))


def reduced_box(box: tuple[int, int, int, int], scale: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A (top, left, height, width) box of the full-size image carried into the image decoded at 1/`scale`
    (`shape`: its height, width): edges rounded to the nearest decoded pixel, so the box moves by at most
    `scale` / 2 full-size pixels and in no preferred direction (the crop statistics stay those of the draws)."""
    if scale == 1:
        return box
    top, left, height, width = box
    y0, x0 = round(top / scale), round(left / scale)
    y1 = min(shape[0], max(y0 + 1, round((top + height) / scale)))
    x1 = min(shape[1], max(x0 + 1, round((left + width) / scale)))
    return y0, x0, y1 - y0, x1 - x0


def as_array(pixels: torch.Tensor):
    """uint8 [C, H, W] on the CPU as a numpy view (what `transforms.to_pixels` stacks, a memcpy per image:
    the resize's output is [C, H, W] contiguous, and a transpose to [H, W, C] would cost more than the
    resize itself)."""
    return pixels.numpy()

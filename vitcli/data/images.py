"""Image files and pixels: finding images on disk, opening them upright, any PIL mode as 8-bit RGB or grey.

One place for the decoding rules that training, evaluation and `vit predict` share, so a file is seen
the same way whichever command reads it: EXIF orientation applied (as `datasets.Image` does), 16-bit
and floating-point greys scaled to 8 bits rather than clipped to white, palettes expanded, alpha dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# What the loaders catch as "this image does not decode" (a truncated file, a bad header, a bomb).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


# Common image formats. Pillow registers many more suffixes (.h5, .mpeg, .eps ...), most of them stubs
# that need outside handlers: a folder search must not list every such file as unreadable.
_COMMON = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".gif", ".bmp", ".dib", ".tif", ".tiff",
           ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".avif", ".heic", ".heif")


def image_suffixes() -> frozenset[str]:
    """File suffixes (lower case, with the dot) of the common image formats this Pillow can open."""
    Image.init()  # registers the plugins, so the list is complete
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return frozenset(ext for ext in _COMMON if ext in readable)


def find_images(folder: Path) -> list[Path]:
    """Image files under `folder`, recursively, in sorted order; hidden files and folders are skipped."""
    suffixes = image_suffixes()
    found = []
    for path in sorted(Path(folder).rglob("*")):
        relative = path.relative_to(folder).parts
        if any(part.startswith(".") for part in relative):
            continue
        if path.suffix.lower() in suffixes and path.is_file():
            found.append(path)
    return found


def open_image(path: Path) -> Image.Image:
    """Decode an image file completely, turned upright by its EXIF orientation (mode unchanged).

    Raises one of DECODE_ERRORS when the file is not a readable image.
    """
    with Image.open(path) as image:
        image.load()  # decode now, inside the caller's error handling, not lazily later
        upright = ImageOps.exif_transpose(image)
    return upright if upright is not None else image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: grey replicated, 16-bit and float scaled, palette expanded, alpha dropped."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        return Image.fromarray(_grey_to_8bit(image), mode="L").convert("RGB")
    if image.mode in ("LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Going through RGBA avoids PIL's warning about palette transparency lost in conversion.
        image = image.convert("RGBA")
    return image.convert("RGB")


def to_grey(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit grey ("L"): 16-bit and float greys scaled as `to_rgb` does, colour by PIL's
    ITU-R 601-2 luma (what `Image.convert("L")` and torchvision's Grayscale compute)."""
    if image.mode == "L":
        return image
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        return Image.fromarray(_grey_to_8bit(image), mode="L")
    return to_rgb(image).convert("L")


def to_channels(channels: int):
    """The conversion that gives images `channels` channels: 3 -> `to_rgb`, 1 -> `to_grey`."""
    if channels not in (1, 3):
        raise ValueError(f"images can be read with 1 (L) or 3 (RGB) channels, not {channels}")
    return to_grey if channels == 1 else to_rgb


def _grey_to_8bit(image: Image.Image) -> np.ndarray:
    """A 16-bit, 32-bit or float grey image as uint8: PIL's own conversion clips them (to white, mostly)."""
    pixels = np.asarray(image)
    if image.mode == "F":
        # Floats are taken to be in [0, 1] when they fit there (the usual convention), else in [0, 255].
        scale = 255.0 if float(np.nanmax(pixels, initial=0.0)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(pixels) * scale, 0, 255).round().astype(np.uint8)
    if image.mode == "I" and int(pixels.max(initial=0)) <= 255:
        return pixels.clip(0, 255).astype(np.uint8)  # 8-bit values stored in a 32-bit image
    # 16-bit: 0..65535 onto 0..255 (65535 / 257 = 255), rounded.
    return ((pixels.astype(np.uint32).clip(0, 65535) + 128) // 257).astype(np.uint8)


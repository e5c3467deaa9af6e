"""Image files and pixels: the one bounded decoder, finding images on disk, any PIL mode as 8-bit RGB or grey.

`decode` is the only way `vit` turns a file or bytes into pixels (training and evaluation loaders,
`vit predict`, `vit inspect`), so an image is seen the same way whichever command reads it and the same
limits hold everywhere: only regular files (a FIFO would block forever), only the common formats (no
EPS, which would run Ghostscript), a size read from the header and refused before anything is decoded
(pixels, longest side and aspect ratio: a 1 x 30,000,000 PNG is under any pixel limit, yet resizing its
short side to 224 would ask for 6.7 billion pixels), EXIF orientation applied whatever type the tag
holds, 16-bit and floating-point greys scaled to 8 bits rather than clipped to white, palettes
expanded, alpha dropped.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from vitcli.errors import DataError, first_line
from vitcli.files import NotRegular, open_regular

MAX_PIXELS = 1 << 26  # 8192 x 8192: 200 MB as RGB, and a few copies of it while resizing
MAX_SIDE = 1 << 15
MAX_ASPECT = 64  # the short side is resized to the model's resolution: the long one grows by this much
MAX_FILE_BYTES = 1 << 30  # a compressed image larger than this is not read into memory
LIMITS = f"at most {MAX_PIXELS:,} pixels, {MAX_SIDE:,} a side and an aspect ratio of {MAX_ASPECT}:1"


class ImageError(DataError):
    """An image refused or not decodable; the message says why, without the image's name (the caller
    knows it: a path, an example index)."""


# What the loaders catch as "this image does not decode": ImageError from `decode`, and what a PIL
# transform may still raise on an odd image.
DECODE_ERRORS = (ImageError, OSError, ValueError, SyntaxError, EOFError)
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_ORIENTATION = 0x0112
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


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


def decode(source: Path | str | bytes, mode: str | None = None) -> Image.Image:
    """An image file (a path) or its bytes, decoded completely and turned upright by its EXIF orientation.

    `mode` None keeps the image's own mode; "RGB" gives 8-bit RGB (`to_rgb`), "L" 8-bit grey. Raises
    ImageError, in one line, for anything that is not a readable image within the limits (LIMITS).
    """
    image = open_image(source)
    with image, _as_image_error():
        image.load()  # decode now, inside the caller's error handling, not lazily later
        image = upright(image)
    return image if mode is None else _MODES[mode](image)


def read_bytes(path: Path | str) -> bytes:
    """The bytes of an image file, refused as `decode` refuses it when it is not a regular file."""
    with _open(Path(path)) as handle, _as_image_error():
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"refused: over {MAX_FILE_BYTES:,} bytes, more than any image file within {LIMITS}")
    return data


def jpeg_pixels(data: bytes, scale: int = 1) -> np.ndarray:
    """8-bit RGB pixels [H, W, 3] of JPEG bytes already checked by `open_image`, decoded by libjpeg-turbo at
    1/`scale` (1, 2, 4 or 8) of each side.

    The same library and settings as PIL's decoder (and `Image.draft`'s scales), so the same pixels, bit for
    bit (tests/test_draft.py), in less time (benchmarks/README.md): simplejpeg writes straight into an array,
    where PIL unpacks every row into its own 4-byte layout and `np.asarray` copies it out again.
    """
    import simplejpeg  # imported where used: only the per-image JPEG path needs it

    with _as_image_error():
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        _check_size(width, height)
        return simplejpeg.decode_jpeg(data, "RGB", min_height=-(-height // scale), min_width=-(-width // scale))


def open_image(source: Path | str | bytes) -> Image.Image:
    """An image opened and checked from its header (regular file, common format, LIMITS), not decoded
    yet: `decode` loads it; the fast JPEG path (`draft.py`) decodes it at a reduced size."""
    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else _open(Path(source))
    with _as_image_error(), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, in our words
        try:
            image = Image.open(handle, formats=_formats())
        except BaseException:
            handle.close()
            raise
        _check_size(*image.size)
    return image


@contextlib.contextmanager
def _as_image_error():
    """PIL's many ways of saying "not an image" or "corrupt" as one ImageError line."""
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"refused before decoding: {first_line(e).rstrip('.')}; images may have {LIMITS}") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"not an image in a format vit reads ({', '.join(sorted(_formats()))})") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise ImageError(f"{type(e).__name__}: {first_line(e)[:200]}") from None


def reason(e: BaseException) -> str:
    """Why an image was not read, in one line: the decoder's own words, or a transform's error type and line."""
    return str(e) if isinstance(e, ImageError) else f"{type(e).__name__}: {first_line(e)[:200]}"


def decode_stored(value) -> Image.Image:
    """An image as a `datasets` column stores it undecoded ({"bytes", "path"}), through `decode`."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return decode(value["bytes"])
        if value.get("path"):
            return decode(value["path"])
        raise ImageError("the example holds neither image bytes nor a path")
    if isinstance(value, Image.Image):  # a column already decoded upstream: the size limits still hold
        _check_size(*value.size)
        return value
    return decode(value)


def _open(path: Path):
    """A regular file opened for reading; a FIFO or a device is refused at once instead of blocking."""
    try:
        return open_regular(path, follow=True)
    except OSError as exc:
        raise ImageError(f"cannot be read ({exc.strerror})") from None
    except ValueError:  # a NUL byte in the name
        raise ImageError("cannot be read (the name holds a NUL byte)") from None
    except NotRegular as exc:
        raise ImageError(f"refused: it is {exc}, not a regular file; give an image file") from None


def _check_size(width: int, height: int) -> None:
    """Refuse, from the header alone, an image whose decoding or resizing would not fit in memory."""
    if width < 1 or height < 1:
        raise ImageError(f"{width}x{height} pixels: an image has at least one pixel")
    if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE or \
            max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"{width}x{height} pixels: refused before decoding; images may have {LIMITS}")


def orientation(image: Image.Image) -> int:
    """The EXIF orientation 1-8 (whole, whatever type the tag holds: TIFF may store it as a rational);
    1 (as stored) for an unreadable or meaningless tag, as viewers ignore one."""
    try:
        value = float(image.getexif().get(_ORIENTATION) or 1)
    except Exception:  # noqa: BLE001 - malformed EXIF: the pixels are still fine
        return 1
    return int(value) if value.is_integer() and 1 <= value <= 8 else 1


def upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says."""
    method = _TRANSPOSE.get(orientation(image))
    return image.transpose(method) if method is not None else image


@functools.cache
def _formats() -> tuple[str, ...]:
    """PIL format names of the common image suffixes (JPEG opens phones' multi-picture files too)."""
    Image.init()
    registered = Image.registered_extensions()
    return tuple(sorted({registered[ext] for ext in _COMMON if registered.get(ext) in Image.OPEN}))


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


_MODES = {"RGB": to_rgb, "L": to_grey}


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


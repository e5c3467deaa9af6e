"""Images/s per core of the per-image path (decode, transform, batch): before (PIL: full-size decoding,
torchvision's PIL crop and resize, the batch normalised to float32 by the worker) against after (the fast
path of `vitcli.data.draft`: libjpeg-turbo through simplejpeg straight into arrays, at reduced size where
the output allows, torchvision's uint8 tensor resize, the batch left uint8 for the loader to normalise on
the device), in one process. `gpu_worker` is what a worker does per image under `data.decode: gpu`
(header, crop and flip draws, no pixels: the decode is the GPU's).

    .venv/bin/python benchmarks/decode.py                 # 224 px training and 384 px eval transforms
    .venv/bin/python benchmarks/decode.py --rounds 7 --images 96

The JPEGs are made here, photo-like (smooth colour fields, texture noise, a few shapes), at ImageNet's
typical 500x375 and a larger 1024x768, quality 90; nothing is written to disk. Each round runs the
loader's `Decoder` over the same seeded batch on one thread, one path after the other; the table shows
each path's median over the rounds and their ratio to before. `after_cpu_norm` adds the normalisation
back on the CPU, which is where it stays for a CPU-only run (in the main process instead of a worker).
Each path is timed in thread CPU seconds (`time.thread_time`), images/s per core: on a shared machine the
wall clock counts the other jobs' time slices too.

`breakdown` times the after path's pieces where it calls them, in the same rounds (one more run of it with
each piece wrapped in a thread-time timer): the header parse, the libjpeg-turbo decode, the uint8 resample
(with the crop's copy), the batch stack, and the rest (crop and flip draws, Python glue, the timers' own
cost). `ceiling_x` is before's time over decode + resample alone: the most any path that decodes the whole
JPEG with libjpeg-turbo and resamples with torch's kernel could reach, with nothing else left to cost.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from vitcli.data import draft
from vitcli.data.images import to_rgb
from vitcli.data.images import decode_stored
from vitcli.data import readers
from vitcli.data.device_decode import Planned
from vitcli.data.readers import Decoder
from vitcli.data.transforms import eval_pil_transform, norm_stats, normalise, train_pil_transform
from vitcli.recipe.config import DataCfg


def photo(width: int, height: int, rng: np.random.Generator) -> bytes:
    """A JPEG (quality 90) that compresses like a photo: low-frequency colour, noise, edges."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    f = rng.uniform(2, 9, size=(3, 2))
    phase = rng.uniform(0, 6.3, size=3)
    pixels = np.stack([128 + 90 * np.sin(f[c, 0] * x + f[c, 1] * y + phase[c]) for c in range(3)], -1)
    pixels += rng.normal(0, 10, pixels.shape)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        box = (x0, y0, x0 + rng.integers(20, width // 2), y0 + rng.integers(20, height // 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def decoders(case: str, cfg: DataCfg) -> tuple[Decoder, Decoder, Decoder]:
    """(full-size PIL, fast, planning for the device) decoders of the loader for `case` ('train224' or
    'eval384')."""
    res = (224, 224) if case == "train224" else (384, 384)
    pil = train_pil_transform(cfg, res) if case == "train224" else eval_pil_transform(cfg, res)
    fast = (draft.train_reader if case == "train224" else draft.eval_reader)(pil, to_rgb, decode_stored)
    slow = Decoder("image", "label", pil, norm_stats(cfg), res)
    return (slow, Decoder("image", "label", pil, norm_stats(cfg), res, fast),
            Decoder("image", "label", pil, norm_stats(cfg), res, fast, on_device=True))


def img_s(decoder: Decoder, values: list, seed: int, normalised: bool) -> float:
    start = time.thread_time()
    images, _, bad, _ = decoder(values, [0] * len(values), range(len(values)), seed)
    if normalised:  # what the worker did before: the float32 batch
        normalise(images, decoder.stats)
    assert not bad and len(images) == len(values)
    if isinstance(images, Planned):  # the workers' part of data.decode gpu: headers and draws, no pixels
        assert len(images.plans) == len(values)
    return len(values) / (time.thread_time() - start)


# (module, name it is called by, piece): what `breakdown` times inside the after path
PIECES = ((draft, "open_lazily", "header"), (draft, "jpeg_pixels", "decode"), (draft, "resized_crop", "resample"),
          (draft, "resized_centre_crop", "resample"), (readers, "to_pixels", "stack"))


@contextlib.contextmanager
def timed_pieces(seconds: dict[str, float]):
    """While inside, each of PIECES adds the thread CPU seconds of its calls to `seconds[piece]`."""
    saved = [getattr(module, name) for module, name, _ in PIECES]

    def timer(fn, piece):
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[piece] = seconds.get(piece, 0.0) + time.thread_time() - start
        return timed

    for (module, name, piece), fn in zip(PIECES, saved):
        setattr(module, name, timer(fn, piece))
    try:
        yield
    finally:
        for (module, name, _), fn in zip(PIECES, saved):
            setattr(module, name, fn)


def breakdown(decoder: Decoder, values: list, seed: int) -> dict[str, float]:
    """ms per image of each piece of one run of `decoder`, and of the rest ('total' is the whole run)."""
    seconds: dict[str, float] = {}
    with timed_pieces(seconds):
        start = time.thread_time()
        decoder(values, [0] * len(values), range(len(values)), seed)
        total = time.thread_time() - start
    seconds["rest"], seconds["total"] = total - sum(seconds.values()), total
    return {piece: 1e3 * s / len(values) for piece, s in seconds.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--images", type=int, default=64, help="JPEGs per size (one batch)")
    args = p.parse_args()
    torch.set_num_threads(1)  # per core
    rng = np.random.default_rng(0)
    cfg = DataCfg()
    for width, height in ((500, 375), (1024, 768)):
        values = [{"bytes": photo(width, height, rng), "path": None} for _ in range(args.images)]
        for case in ("train224", "eval384"):
            slow, fast, plan = decoders(case, cfg)
            paths = {"before": (slow, True), "after": (fast, False), "after_cpu_norm": (fast, True),
                     "gpu_worker": (plan, False)}
            rates: dict[str, list[float]] = {name: [] for name in paths}
            pieces: list[dict[str, float]] = []
            for r in range(args.rounds):
                for name, (decoder, normalised) in paths.items():
                    rates[name].append(img_s(decoder, values, r, normalised))
                pieces.append(breakdown(fast, values, r))
            median = {name: statistics.median(v) for name, v in rates.items()}
            row = {"jpeg": f"{width}x{height}", "case": case, "min_area": cfg.min_area}
            row.update({f"{name}_img_s": round(v) for name, v in median.items()})
            row.update({f"{name}_x": round(v / median["before"], 2) for name, v in median.items() if name != "before"})
            names = ("header", "decode", "resample", "stack", "rest", "total")
            ms = {piece: statistics.median(p.get(piece, 0.0) for p in pieces) for piece in names}
            row["before_ms"] = round(1e3 / median["before"], 3)
            row["after_breakdown_ms"] = {piece: round(v, 3) for piece, v in ms.items()}
            row["ceiling_x"] = round(1e3 / median["before"] / (ms["decode"] + ms["resample"]), 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

"""Figures of `vit inspect` and `vit eval --out` (PNG, PDF or SVG), drawn with matplotlib's Agg renderer.

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot: there is no global figure
state and no GUI backend, so drawing works headless and in threads. Every figure has a fixed size in
inches at `DPI` (or `style(dpi=...)`), so its pixel size is known (tests check it); text is at least 8 pt,
readable at a paper's column width. User text (class names, file names) is drawn as plain text, never
as mathematics. The numbers come from `internals.py`.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from vitcli.files import atomic_write
from vitcli.formats import printable

DPI = 100
FORMATS = ("png", "pdf", "svg")
# A PNG's pixels are held uncompressed while drawn (4 bytes each, several copies): a 14-inch confusion
# matrix at --dpi 1200 would be 16800 x 16800 pixels, over a gigabyte each copy. Past MAX_PIXELS a figure
# is drawn at a lower resolution, said in a warning; Agg draws at most 2^16 - 1 pixels a side in any case.
MAX_PIXELS = 16_000_000  # e.g. 4000 x 4000: a 14-inch figure at 285 dpi, a 12 x 3.6-inch one at 600
MAX_SIDE = (1 << 16) - 1
MAX_MAPS, MAP_COLUMNS = 64, 8  # attention maps drawn (inspection.json keeps every one), in rows of 8
MAX_LABEL = 48  # characters of user text (a class, file or run name) drawn; matplotlib lays out every one
log = logging.getLogger(__name__)


# Where `save` also keeps a PNG of each figure (its name -> encoded PNG), for the trackers' image panels.
_KEPT: contextvars.ContextVar[dict[str, bytes] | None] = contextvars.ContextVar("kept_pngs", default=None)


@contextlib.contextmanager
def style(fmt: str = "png", dpi: int = DPI, keep: dict[str, bytes] | None = None) -> Iterator[None]:
    """Figures drawn inside are saved as `fmt` at `dpi`, with user text never parsed as mathtext; with
    `keep`, a PNG of each one (whatever `fmt` is) is kept there under its file's stem, for TensorBoard and W&B."""
    # Vector text stays text (editable, searchable in a paper): SVG text elements, TrueType fonts in PDF.
    token = _KEPT.set(keep)
    try:
        with matplotlib.rc_context({"savefig.format": fmt, "savefig.dpi": dpi, "text.parse_math": False,
                                    "font.size": 9, "svg.fonttype": "none", "pdf.fonttype": 42}):
            yield
    finally:
        _KEPT.reset(token)


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` atomically (a crash leaves the old file or none, never half an image), in the format
    `style` chose (the suffix of `path` follows it); returns the path written."""
    fmt = matplotlib.rcParams["savefig.format"]
    path = Path(path).with_suffix(f".{fmt}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=_dpi(fig, path) if fmt == "png" else DPI)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    kept = _KEPT.get()
    if kept is not None:
        if fmt != "png":
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=DPI)
        kept[path.stem] = buffer.getvalue()
    return path


def _dpi(fig: Figure, path: Path) -> float:
    """The asked PNG resolution, or the highest one at which the figure fits MAX_PIXELS and MAX_SIDE."""
    asked = matplotlib.rcParams["savefig.dpi"]
    asked = float(fig.dpi if asked == "figure" else asked)  # "figure": matplotlib's default, outside `style`
    width, height = fig.get_size_inches()
    fits = min(math.sqrt(MAX_PIXELS / (width * height)), MAX_SIDE / max(width, height))
    if asked <= fits:
        return asked
    dpi = math.floor(fits)
    log.warning(f"{path.name}: drawn at {dpi} dpi, not {asked:g}: at {asked:g} dpi it would be "
                f"{round(width * asked)}x{round(height * asked)} pixels, more than the {MAX_PIXELS:,} a figure may "
                "have")
    return dpi


def _short(text: str) -> str:
    """User text as drawn: control characters and undecodable bytes escaped (`formats.printable`: a file
    name in Latin-1 holds surrogates, which matplotlib's font layer refuses with a TypeError), each line cut
    to MAX_LABEL characters (a class name of 100,000 characters took 40 s to lay out and left no room for
    the axes; the JSON and tables keep it whole)."""
    return "\n".join(line if len(line) <= MAX_LABEL else line[:MAX_LABEL - 1] + "\u2026"
                     for line in printable(text, lines=True).split("\n"))


def _unit(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def embedding_filters(components: torch.Tensor, variance: torch.Tensor, what: str, path: Path,
                      note: str = "") -> Path:
    """Figure 7 (left): each principal component [3, kh, kw] as an RGB patch, 7 per row."""
    k = len(components)
    cols = min(7, k)
    rows = -(-k // cols)
    fig = Figure(figsize=(7, 1.1 * rows + 0.9))
    size = "x".join(map(str, components.shape[2:]))
    fig.suptitle(f"{what}: first {k} principal components ({size} px RGB)" + (f"\n{note}" if note else ""),
                 fontsize=10)
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        if i < k:
            ax.imshow(_unit(components[i].permute(1, 2, 0).numpy()), interpolation="nearest")
            ax.set_title(f"{100 * float(variance[i]):.1f}%", fontsize=8)
    return save(fig, path)


def posemb_similarity(sim: torch.Tensor, path: Path, note: str = "") -> Path:
    """Figure 7 (centre): for each patch position (row, column), its similarity with every other position.

    The small grids are tiled into one image with a one-pixel gap, so a 24x24 grid is one `imshow`.
    """
    rows, cols = sim.shape[:2]
    mosaic = np.full((rows * (rows + 1) - 1, cols * (cols + 1) - 1), np.nan)
    for i in range(rows):
        for j in range(cols):
            mosaic[i * (rows + 1):i * (rows + 1) + rows, j * (cols + 1):j * (cols + 1) + cols] = sim[i, j].numpy()
    fig = Figure(figsize=(6, 5.4))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(mosaic, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([j * (cols + 1) + (cols - 1) / 2 for j in range(cols)], [str(j + 1) for j in range(cols)],
                  fontsize=8)
    ax.set_yticks([i * (rows + 1) + (rows - 1) / 2 for i in range(rows)], [str(i + 1) for i in range(rows)],
                  fontsize=8)
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    ax.set_title("Position embedding similarity" + (f"\n{note}" if note else ""), fontsize=10)
    fig.colorbar(image, ax=ax, label="cosine similarity", shrink=0.8)
    return save(fig, path)


def attention_distance(distance: torch.Tensor, images: int, path: Path, limit: float, uniform: float,
                       note: str = "") -> Path:
    """Figure 7 (right): one dot per head at its layer's index; `limit` is the image diagonal in pixels,
    `uniform` the distance of a head that attends to every patch alike (a dashed line)."""
    layers, heads = distance.shape
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot(1, 1, 1)
    ax.axhline(uniform, color="grey", linestyle="--", linewidth=1, label="uniform attention")
    for h in range(heads):
        ax.scatter(np.arange(1, layers + 1), distance[:, h].numpy(), s=14, label=f"head {h + 1}")
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_xticks(range(1, layers + 1))
    ax.set_ylim(0, limit)
    ax.set_title(f"Mean attention distance over {images} images" + (f"\n{note}" if note else ""), fontsize=10)
    if heads <= 16:
        ax.legend(fontsize=8, ncol=2, loc="lower right")
    else:
        ax.legend(handles=ax.get_lines(), fontsize=8, loc="lower right")
    fig.tight_layout()
    return save(fig, path)


def attention_maps(images: np.ndarray, maps: torch.Tensor, titles: Sequence[str], path: Path,
                   note: str = "") -> Path:
    """Figure 6: each input image (uint8 [n, H, W, 3]) above itself weighted by its rollout map (the first
    MAX_MAPS, in rows of MAP_COLUMNS, so the figure stays drawable whatever the number of images).

    Each map is scaled to a maximum of 1 and resized bilinearly to the image, as in the paper's figure.
    """
    n = min(len(images), MAX_MAPS)
    if len(images) > n:
        note = f"{note}; the first {n} of {len(images)} images" if note else f"the first {n} of {len(images)} images"
    height, width = images.shape[1:3]
    masks = F.interpolate(maps[:n, None].float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    masks = masks / masks.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    cols = min(n, MAP_COLUMNS)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(1.6 * cols, 3.9 * rows))
    fig.suptitle("Attention rollout to the input" + (f"\n{note}" if note else ""), fontsize=10)
    for i in range(n):
        row, col = divmod(i, cols)
        top = fig.add_subplot(2 * rows, cols, 2 * row * cols + col + 1)
        bottom = fig.add_subplot(2 * rows, cols, (2 * row + 1) * cols + col + 1)
        top.imshow(images[i])
        top.set_title(_short(titles[i]), fontsize=8)
        bottom.imshow((images[i] * masks[i].clamp(0, 1).numpy()[..., None]).astype(np.uint8))
        top.set_axis_off()
        bottom.set_axis_off()
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.78, hspace=0.35)
    return save(fig, path)


def learning_curves(rows: list[dict], path: Path, title: str = "") -> Path:
    """Training loss, learning rate and evaluation top-1 against the step, from metrics.jsonl rows: lines,
    the noisy ones lightly smoothed (the raw values faint behind), a lone evaluation a marker with its value."""
    fig = Figure(figsize=(12, 3.6))
    fig.suptitle(f"Learning curves{f' of {_short(title)}' if title else ''}", fontsize=10)
    panels = [("loss", ["loss"], "training loss"), ("lr", ["lr"], "learning rate"),
              ("top-1", ["eval/top1", "eval/ema_top1"], "evaluation top-1")]
    for i, (label, keys, name) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                _curve(ax, points, key.removeprefix("eval/"), smooth=key == "loss")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.set_title(name, fontsize=10)
        smoothed = any("smoothed" in line.get_label() for line in ax.get_lines())
        if ax.get_lines() and (i == 2 or smoothed):
            ax.legend(fontsize=8)
        elif not ax.get_lines():
            ax.text(0.5, 0.5, "not logged yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.tight_layout()
    return save(fig, path)


def _curve(ax, points: list[tuple[int, float]], label: str, smooth: bool) -> None:
    steps, values = map(np.asarray, zip(*points))
    if len(points) == 1:  # one evaluation: a marker that says its value, not an invisible line
        ax.plot(steps, values, marker="o", linestyle="none", label=label)
        ax.annotate(f"{values[0]:.4g}", (steps[0], values[0]), textcoords="offset points", xytext=(6, 4), fontsize=8)
        return
    if smooth and len(points) >= 20:
        (raw,) = ax.plot(steps, values, alpha=0.25, linewidth=0.8)
        ax.plot(steps, _ema(values, 0.8), color=raw.get_color(), linewidth=1.5, label=f"{label} (smoothed)")
        return
    ax.plot(steps, values, linewidth=1.5, marker="o" if len(points) < 12 else None, markersize=3, label=label)


def _ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start."""
    out, last, norm = np.empty_like(values, dtype=np.float64), 0.0, 0.0
    for i, value in enumerate(values):
        last, norm = weight * last + (1 - weight) * value, weight * norm + (1 - weight)
        out[i] = last / norm
    return out


def confusion_matrix(counts: Sequence[Sequence[int]], names: Sequence[str], path: Path, title: str = "") -> Path:
    """Each true class's row as fractions of its images (so rare classes read as well as common ones),
    class names on the axes up to 40 classes (every n-th beyond), the percentages written up to 20."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    matrix = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    classes = len(matrix)
    side = float(min(14, max(6, 0.3 * classes + 2)))
    fig = Figure(figsize=(side, side))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="Blues", interpolation="nearest", vmin=0.0, vmax=1.0)
    every = 1 if classes <= 40 else int(np.ceil(classes / 40))
    ticks = list(range(0, classes, every))
    ax.set_xticks(ticks, [_short(names[t]) for t in ticks], rotation=90, fontsize=8)
    ax.set_yticks(ticks, [_short(names[t]) for t in ticks], fontsize=8)
    if classes <= 20:
        for t in range(classes):
            for p in range(classes):
                ax.text(p, t, f"{100 * matrix[t, p]:.0f}", ha="center", va="center", fontsize=8,
                        color="white" if matrix[t, p] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix{f' ({_short(title)})' if title else ''}, % of each true class", fontsize=10)
    fig.colorbar(image, ax=ax, label="fraction of the true class's images", shrink=0.8)
    fig.tight_layout()
    return save(fig, path)

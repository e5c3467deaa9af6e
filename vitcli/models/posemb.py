"""Resampling learned position embeddings to another patch grid (fine-tuning at a higher resolution).

The paper (Section 3.2) interpolates the pre-trained position embeddings in 2-D according to their
location in the image. Its reference code zooms the (h, w, D) grid linearly with the corner embeddings
kept at the corners (`scipy.ndimage.zoom(order=1)`); that is `align_corners=True` bilinear interpolation,
which is the "paper" mode here. "bilinear" and "bicubic" are what timm's checkpoint loading does
(`resample_abs_pos_embed`: `align_corners=False`, `antialias=True`; its default is bicubic), so a
checkpoint resampled here equals the one timm would build. With `antialias=True` PyTorch's bicubic uses
the a=-0.5 kernel (as PIL does) rather than -0.75, so it differs from plain bicubic even when upsampling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vitcli.models.variants import RELATIVE_SPECIALS, relative_shape  # noqa: F401 (arithmetic, torch-free)

MODES = ("paper", "bilinear", "bicubic")


@dataclass(frozen=True)
class Resample:
    """A change of position-embedding grid made while loading weights: what reports and logs show."""

    old: tuple[int, int] | None  # the checkpoint's patch grid (None: not known)
    new: tuple[int, int]  # the model's
    how: str  # the mode, e.g. "paper", or what was done instead ("sincos2d recomputed")

    def __str__(self) -> str:
        was = f"{self.old[0]}x{self.old[1]}" if self.old else "checkpoint grid"
        return f"{was} -> {self.new[0]}x{self.new[1]} ({self.how})"

    @property
    def note(self) -> str:
        """The log line: "position embeddings resampled: 4x4 -> 8x8 (paper)"."""
        return f"position embeddings resampled: {self}"


def square_grid(num_tokens: int) -> tuple[int, int] | None:
    """(n, n) when `num_tokens` is a perfect square, else None."""
    side = math.isqrt(num_tokens)
    return (side, side) if side * side == num_tokens else None


def resample_posemb(
    posemb: torch.Tensor,
    new_grid: tuple[int, int],
    old_grid: tuple[int, int] | None = None,
    num_prefix: int = 1,
    mode: str = "paper",
) -> torch.Tensor:
    """Resample position embeddings of shape (1, num_prefix + h*w, D) to the grid `new_grid`.

    Prefix tokens (class token) keep their embedding. `old_grid` defaults to the square grid that the
    token count implies. Computed in float32 and returned in the input dtype.
    """
    if mode not in MODES:
        raise ValueError(f"unknown position-embedding resampling mode {mode!r}; valid: {', '.join(MODES)}")
    prefix, tokens = posemb[:, :num_prefix], posemb[:, num_prefix:]
    old_grid = tuple(old_grid) if old_grid is not None else square_grid(tokens.shape[1])
    if old_grid is None or old_grid[0] * old_grid[1] != tokens.shape[1]:
        raise ValueError(
            f"position embeddings hold {tokens.shape[1]} patch tokens, which is not the grid {old_grid}; "
            "pass old_grid for non-square grids"
        )
    new_grid = tuple(new_grid)
    if new_grid == old_grid:
        return posemb
    dim = tokens.shape[-1]
    image = tokens.float().reshape(1, *old_grid, dim).permute(0, 3, 1, 2)
    if mode == "paper":
        image = F.interpolate(image, size=new_grid, mode="bilinear", align_corners=True)
    else:
        image = F.interpolate(image, size=new_grid, mode=mode, align_corners=False, antialias=True)
    tokens = image.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(posemb.dtype)
    return torch.cat([prefix, tokens], dim=1)


# --- the other position embeddings of the paper's ablation (Appendix D.4) -------------------------

KINDS = ("learned", "none", "learned_2d", "relative", "relative_2d", "sincos2d")
# timm's VisionTransformer holds a learned table ("learned"), no table ("none"), or any fixed table under
# the same key ("sincos2d" is stored as `pos_embed`, so timm reproduces it exactly, though as trainable).
TIMM_KINDS = ("learned", "none", "sincos2d")


def sincos_2d(grid: tuple[int, int], dim: int, num_prefix: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sine-cosine embeddings (1, num_prefix + h*w, dim): a quarter of the channels each for
    sin(x), cos(x), sin(y), cos(y) at geometric frequencies, as big_vision's `posemb_sincos_2d`.

    Prefix tokens (the class token) get zeros: they have no place in the image.
    """
    if dim % 4:
        raise ValueError(f"sincos2d position embeddings need a width divisible by 4, got {dim}")
    h, w = grid
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                          indexing="ij")
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float64) / max(quarter - 1, 1))
    x = x.reshape(-1, 1) * omega
    y = y.reshape(-1, 1) * omega
    table = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).float()
    return torch.cat([torch.zeros(num_prefix, dim), table]).unsqueeze(0)


def axes_table(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """The 2-D learned embedding of the paper: row (1, h, D/2) and column (1, w, D/2) embeddings of a
    patch concatenated, in row-major patch order: (1, h*w, D)."""
    h, w = row.shape[1], col.shape[1]
    rows = row[0, :, None, :].expand(h, w, row.shape[-1])
    cols = col[0, None, :, :].expand(h, w, col.shape[-1])
    return torch.cat([rows, cols], dim=-1).reshape(1, h * w, -1)


def relative_index(grid: tuple[int, int], num_prefix: int, two_d: bool) -> torch.Tensor:
    """(T, T) row of the flattened offset table for each (query, key) token pair, T = num_prefix + h*w.

    Patch pairs index their offset (query minus key): along the 1-D patch sequence, or as a (row, column)
    offset in 2-D. Pairs involving a prefix token use the three special rows after the offsets.
    """
    h, w = grid
    n = h * w
    pos = torch.arange(n)
    if two_d:
        r, c = pos // w, pos % w
        dr = r[:, None] - r[None, :] + h - 1
        dc = c[:, None] - c[None, :] + w - 1
        patches = dr * (2 * w - 1) + dc
    else:
        patches = pos[:, None] - pos[None, :] + n - 1
    k = math.prod(relative_shape(grid, two_d))
    index = torch.full((num_prefix + n, num_prefix + n), k + 2, dtype=torch.long)
    index[:num_prefix, num_prefix:] = k
    index[num_prefix:, :num_prefix] = k + 1
    index[num_prefix:, num_prefix:] = patches
    return index


def resample_relative(table: torch.Tensor, new_shape: tuple[int, ...], mode: str = "paper") -> torch.Tensor:
    """Interpolate an offset table (*offsets, d) to other offset counts, by the same interpolation as the
    absolute tables; in "paper" mode offset 0 and the largest offsets keep their embeddings."""
    old_shape = tuple(table.shape[:-1])
    if old_shape == tuple(new_shape):
        return table
    as_grid = lambda s: s if len(s) == 2 else (s[0], 1)
    flat = table.reshape(1, -1, table.shape[-1])
    out = resample_posemb(flat, as_grid(tuple(new_shape)), as_grid(old_shape), num_prefix=0, mode=mode)
    return out.reshape(*new_shape, table.shape[-1])


def sequence_offsets_2d(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The 1-D offset table (2hw-1, d) of a grid (h, w) seen by (row, column): (2h-1, 2w-1, d).

    Cell (dr, dc) holds the embedding of the sequence offset dr*w + dc, the one every pair of patches
    dr rows and dc columns apart used on that grid.
    """
    h, w = grid
    dr = torch.arange(-(h - 1), h)[:, None]
    dc = torch.arange(-(w - 1), w)[None, :]
    return table[dr * w + dc + h * w - 1]


def resample_sequence_offsets(table: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                              mode: str = "paper") -> torch.Tensor:
    """Fit a 1-D (sequence) offset table (2n-1, d) of `old_grid` to `new_grid`, keeping what offsets mean.

    Stretching the table along the sequence would change meaning: on a wider grid "one row down" is a
    larger sequence offset, and would read the old table at "a few to the right". So the offsets are
    re-indexed by (row, column) through the old grid, that 2-D table is resampled as `relative_2d`'s
    is, and each new sequence offset takes the mean of the (row, column) offsets it stands for on the
    new grid (at most two, e.g. +w-1: w-1 to the right, or one down and one to the left), weighted by
    how many patch pairs are that far apart.
    """
    h, w = new_grid
    if tuple(old_grid) == (h, w):
        return table
    offsets = resample_relative(sequence_offsets_2d(table, old_grid), relative_shape(new_grid, True), mode)
    dr = torch.arange(-(h - 1), h)[:, None]
    dc = torch.arange(-(w - 1), w)[None, :]
    pairs = ((h - dr.abs()) * (w - dc.abs())).reshape(-1, 1).to(offsets.dtype)
    index = (dr * w + dc + h * w - 1).reshape(-1)
    out = torch.zeros(2 * h * w - 1, table.shape[-1], dtype=offsets.dtype)
    out.index_add_(0, index, offsets.reshape(-1, table.shape[-1]) * pairs)
    weight = torch.zeros(2 * h * w - 1, 1, dtype=offsets.dtype).index_add_(0, index, pairs)
    return (out / weight).to(table.dtype)


def resample_axis(axis: torch.Tensor, new_len: int, mode: str = "paper") -> torch.Tensor:
    """Interpolate one axis table (1, n, d) of the 2-D learned embedding to `new_len` positions."""
    return resample_posemb(axis, (new_len, 1), (axis.shape[1], 1), num_prefix=0, mode=mode)

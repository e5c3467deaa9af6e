"""Masked patch prediction, the paper's self-supervised pretraining (Section 4.6, Appendix B.1.2).

Half of the patch embeddings (by default) are corrupted, as BERT corrupts words: of those, 80% are
replaced by one learnable [mask] embedding, 10% by the embedding of a random other patch and 10% are
left as they are. A linear head then predicts, from each corrupted patch's output token, a summary of
that patch's pixels: its mean colour in 3 bits per channel (512 classes, the paper's choice), a 4x4
downsized version of it in 3-bit colour (16 predictions of 512 classes), or the normalised pixels
themselves (L2 regression). Here live the corruption, the targets and the pixel maths; the loss and
the recipe settings are the engine's (`engine/train/objectives.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# State-dict entries that exist only for this pretraining; fine-tuning, eval and export leave them out.
PRETRAINING_KEYS = ("mask_token", "mpp_head.")
TARGETS = ("mean_color", "color_4x4", "pixels")


def is_pretraining_key(key: str) -> bool:
    """Whether `key` belongs to the masked-patch parts ([mask] embedding, prediction head)."""
    return key == "mask_token" or key.startswith("mpp_head.")


@dataclass
class Corruption:
    """Which patches of a batch are corrupted, and how; all tensors are (B, N)."""

    selected: torch.Tensor  # bool: corrupted patches, the ones whose output tokens predict a target
    masked: torch.Tensor  # bool: replaced by the [mask] embedding
    swapped: torch.Tensor  # bool: replaced by the embedding of another patch
    source: torch.Tensor  # long: flat index (b * N + n) of the patch a swapped patch takes its embedding from


def sample_corruption(batch: int, num_patches: int, rate: float, mask_frac: float = 0.8,
                      swap_frac: float = 0.1, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None) -> Corruption:
    """Draw a corruption: `round(rate * num_patches)` patches of every image, each masked with
    probability `mask_frac`, swapped with `swap_frac`, else kept (the default RNG when no `generator`)."""
    count = round(rate * num_patches)
    kw = {"device": device, "generator": generator}
    order = torch.rand(batch, num_patches, **kw).argsort(dim=1)
    selected = torch.zeros(batch, num_patches, dtype=torch.bool, device=device)
    selected.scatter_(1, order[:, :count], True)
    kind = torch.rand(batch, num_patches, **kw)
    masked = selected & (kind < mask_frac)
    swapped = selected & (kind >= mask_frac) & (kind < mask_frac + swap_frac)
    total = batch * num_patches
    # A shift in [1, total) of the flat index never lands on the patch itself.
    shift = torch.randint(1, max(total, 2), (batch, num_patches), **kw) if total > 1 else torch.zeros(
        batch, num_patches, dtype=torch.long, device=device)
    source = (torch.arange(total, device=device).view(batch, num_patches) + shift) % total
    return Corruption(selected, masked, swapped, source)


def corrupt(tokens: torch.Tensor, mask_token: torch.Tensor, c: Corruption) -> torch.Tensor:
    """Apply corruption `c` to patch embeddings `tokens` (B, N, D); swaps read the uncorrupted ones."""
    flat = tokens.reshape(-1, tokens.shape[-1])
    swapped_in = flat[c.source.reshape(-1)].view_as(tokens)
    out = torch.where(c.swapped[..., None], swapped_in, tokens)
    return torch.where(c.masked[..., None], mask_token.to(out.dtype).expand_as(out), out)


def to_patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) images as (B, N, C, patch, patch) patches in the model's row-major token order."""
    b, ch, h, w = images.shape
    x = images.reshape(b, ch, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), ch, patch, patch)


def color_class(rgb: torch.Tensor, bits: int = 3) -> torch.Tensor:
    """Colours (..., 3) in [0, 1] quantised to `bits` per channel, as one class: r * 4^bits + g * 2^bits + b."""
    levels = 1 << bits
    q = (rgb * levels).floor().clamp(0, levels - 1).long()
    return (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]


def make_target(target: str, pixels01: torch.Tensor, normalised: torch.Tensor, patch: int, bits: int = 3,
                cells: int = 4) -> torch.Tensor:
    """Per-patch targets of a batch: (B, N) classes, (B, N, cells^2) classes, or (B, N, 3*patch^2) values.

    `pixels01` are the images in [0, 1] (colour targets); `normalised` are the model's inputs (pixels).
    """
    if target == "pixels":
        return to_patches(normalised, patch).flatten(2)
    patches = to_patches(pixels01, patch)
    if target == "mean_color":
        return color_class(patches.mean(dim=(-1, -2)), bits)
    b, n = patches.shape[:2]
    small = F.adaptive_avg_pool2d(patches.flatten(0, 1), cells)  # (B*N, 3, cells, cells)
    return color_class(small.permute(0, 2, 3, 1), bits).reshape(b, n, cells * cells)

"""The numbers behind `vit inspect`: the paper's Section 4.5 ("Inspecting Vision Transformer").

- embedding filters (Figure 7 left): principal components of the patch-embedding weights;
- position-embedding similarity (Figure 7 centre): cosine similarity of every grid position with every other;
- mean attention distance (Figure 7 right): per layer and head, the attention-weighted distance in pixels
  between a query patch and the patches it attends to;
- attention rollout (Figure 6; Abnar & Zuidema, 2020): how much of the pooled representation flows from
  each input patch, through all layers.

Everything works on a timm-layout `VisionTransformer` (class token or GAP, any grid, ResNet hybrids,
where a "patch" is a cell of the backbone's feature map). Drawing lives in `figures.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vitcli.models.attention import record_attention

FILTERS = 28  # the paper shows the first 28 principal components


@dataclass(frozen=True)
class Geometry:
    """Where the patch tokens of a model sit in the image."""

    grid: tuple[int, int]  # patch rows, columns
    cell: tuple[float, float]  # pixels per patch (height, width): the backbone's stride for hybrids
    prefix: int  # tokens before the patches (the class token)
    pooled_by_token: bool  # the head reads the class token (else the mean of the patch tokens)
    hybrid: bool

    @property
    def patches(self) -> int:
        return self.grid[0] * self.grid[1]


def geometry(model: nn.Module, res: tuple[int, int]) -> Geometry:
    """The patch grid and token layout of a timm-layout ViT at input resolution `res`."""
    grid = tuple(int(g) for g in model.patch_embed.grid_size)
    hybrid = hasattr(model.patch_embed, "backbone")
    return Geometry(grid=grid, cell=(res[0] / grid[0], res[1] / grid[1]), prefix=int(model.num_prefix_tokens),
                    pooled_by_token=model.global_pool == "token", hybrid=hybrid)


# -- weights only -------------------------------------------------------------------------------------
def filter_weights(model: nn.Module) -> tuple[torch.Tensor, str]:
    """The RGB filters the image first meets, [out, 3, kh, kw], and what they are.

    A plain ViT's patch projection is RGB; a hybrid's projection reads 1024 ResNet channels, so its
    image-facing filters are the 7x7 stem convolution of the ResNet.
    """
    if hasattr(model.patch_embed, "backbone"):
        return model.patch_embed.backbone.stem.conv.weight.detach().float(), "ResNet stem 7x7 convolution"
    return model.patch_embed.proj.weight.detach().float(), "patch embedding"


def embedding_filters(model: nn.Module, k: int = FILTERS) -> dict:
    """The top-`k` principal components of the image-facing filters, each an RGB patch [3, kh, kw].

    The filters are rows of a matrix [out, 3*kh*kw]; after removing their mean, its right singular
    vectors are the components (sign as SVD returns it) and the squared singular values their variance.
    """
    weight, what = filter_weights(model)
    rows = weight.reshape(weight.shape[0], -1).double()
    rows = rows - rows.mean(dim=0, keepdim=True)
    _, sv, vh = torch.linalg.svd(rows, full_matrices=False)
    k = min(k, vh.shape[0])
    variance = sv.square() / sv.square().sum().clamp_min(1e-30)
    return {"what": what, "components": vh[:k].reshape(k, *weight.shape[1:]).float(),
            "explained_variance": variance[:k].float()}


def posemb_absent(model: nn.Module) -> str | None:
    """Why the model has no embedding per patch position (None when it has one)."""
    kind = getattr(model, "posemb", "learned")
    if kind in ("relative", "relative_2d"):
        return f"the model's position embedding is {kind}: one per offset between patches, not one per position"
    if kind == "none" or (kind in ("learned", "sincos2d") and getattr(model, "pos_embed", None) is None):
        return "the model has no position embeddings"
    return None


def patch_posemb(model: nn.Module, geom: Geometry) -> torch.Tensor:
    """The embedding of each patch position, [patches, width] (the class token's left out): the learned
    or sin-cos table, or the paper's 2-D embedding (row and column halves concatenated)."""
    reason = posemb_absent(model)
    if reason:
        raise ValueError(reason)
    if getattr(model, "posemb", "learned") == "learned_2d":
        from vitcli.models.posemb import axes_table

        return axes_table(model.pos_embed_row, model.pos_embed_col).detach().float()[0]
    return model.pos_embed.detach().float()[0, -geom.patches:]


def posemb_similarity(model: nn.Module, geom: Geometry) -> torch.Tensor:
    """Cosine similarity between the position embeddings of every two patches, [rows, cols, rows, cols].

    `sim[i, j]` is the small grid of Figure 7 (centre) for the patch at row i, column j.
    """
    emb = F.normalize(patch_posemb(model, geom), dim=-1)
    return (emb @ emb.T).reshape(*geom.grid, *geom.grid)


def row_column_structure(sim: torch.Tensor) -> dict[str, float]:
    """Mean similarity to the other patches of the same row, of the same column, and to all the rest.

    Position embeddings that learned the 2-D grid are more alike along rows and columns than elsewhere.
    """
    rows, cols = sim.shape[:2]
    r = torch.arange(rows).view(rows, 1, 1, 1).expand_as(sim)
    c = torch.arange(cols).view(1, cols, 1, 1).expand_as(sim)
    r2 = torch.arange(rows).view(1, 1, rows, 1).expand_as(sim)
    c2 = torch.arange(cols).view(1, 1, 1, cols).expand_as(sim)
    same_row, same_col = (r == r2) & (c != c2), (c == c2) & (r != r2)
    other = (r != r2) & (c != c2)
    mean = lambda mask: float(sim[mask].mean()) if mask.any() else float("nan")
    return {"same_row": mean(same_row), "same_column": mean(same_col), "elsewhere": mean(other)}


# -- attention ----------------------------------------------------------------------------------------
def pixel_distances(geom: Geometry) -> torch.Tensor:
    """Euclidean distance in pixels between the centres of every two patches, [patches, patches]."""
    ys = (torch.arange(geom.grid[0], dtype=torch.float64) + 0.5) * geom.cell[0]
    xs = (torch.arange(geom.grid[1], dtype=torch.float64) + 0.5) * geom.cell[1]
    centres = torch.cartesian_prod(ys, xs)
    return torch.cdist(centres, centres)


def uniform_distance(geom: Geometry) -> float:
    """Mean attention distance of a head that attends to every patch alike: the grid's mean pair distance."""
    return float(pixel_distances(geom).mean())


def attention_distance(probs: torch.Tensor, geom: Geometry, dist: torch.Tensor) -> torch.Tensor:
    """Mean attention distance of each image and head, [batch, heads], in pixels.

    `probs` [batch, heads, tokens, tokens] are one layer's attention probabilities. Only patch queries
    and patch keys count (the class token has no place in the image); each query's weights over the
    patches are renormalised to 1, so a head that looks at its own patch scores 0 and a uniform head
    scores the mean distance between two patches of the grid.
    """
    p = probs[:, :, geom.prefix:, geom.prefix:].double()
    p = p / p.sum(dim=-1, keepdim=True).clamp_min(1e-30)
    return (p * dist.to(p.device)).sum(dim=-1).mean(dim=-1)


def rollout(layers: Iterable[torch.Tensor]) -> torch.Tensor:
    """Attention rollout [batch, tokens, tokens] from head-averaged attention, first layer first.

    Each layer's attention [batch, tokens, tokens] gets the identity added for the residual connection
    and its rows renormalised; the layers are then multiplied through, so row t says how much each
    input token contributes to output token t.
    """
    result = None
    for attn in layers:
        attn = attn.double()
        eye = torch.eye(attn.shape[-1], dtype=attn.dtype, device=attn.device)
        mixed = attn + eye
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed if result is None else mixed @ result
    if result is None:
        raise ValueError("attention rollout needs at least one layer")
    return result


def rollout_map(rolled: torch.Tensor, geom: Geometry) -> torch.Tensor:
    """From a rollout to one map per image [batch, rows, cols]: the class token's row for token
    pooling, else the mean of the patch tokens' rows (what global average pooling reads)."""
    if geom.pooled_by_token and geom.prefix:
        row = rolled[:, 0, geom.prefix:]
    else:
        row = rolled[:, geom.prefix:, geom.prefix:].mean(dim=1)
    return row.reshape(-1, *geom.grid).float()


@dataclass
class AttentionSummary:
    """What one pass over the sample images measured."""

    distance: torch.Tensor  # [layers, heads]: mean attention distance in pixels, averaged over images
    images: int  # how many images the distance is averaged over
    maps: torch.Tensor  # [images, rows, cols]: rollout of each image
    logits: torch.Tensor | None  # [images, classes], None for a headless model


@torch.no_grad()
def attention_pass(model: nn.Module, images: torch.Tensor, geom: Geometry, chunk: int = 0) -> AttentionSummary:
    """Run `images` (normalised, [n, 3, H, W]) through `model` in fp32, recording every layer's attention.

    Images go in chunks so that one layer's probabilities stay near 200 MB whatever the sequence length.
    """
    model.eval()
    device = next(model.parameters()).device
    tokens = geom.prefix + geom.patches
    heads = max(int(getattr(m, "num_heads", 1)) for m in model.modules())
    chunk = chunk or max(1, min(64, int(2e8 // (heads * tokens * tokens * 4))))
    dist = pixel_distances(geom).to(device)
    sums, maps, logits = None, [], []
    for start in range(0, len(images), chunk):
        distance, layers, out = _record(model, images[start:start + chunk].to(device).float(), geom, dist)
        sums = distance if sums is None else sums + distance
        maps.append(rollout_map(rollout(layers), geom).cpu())
        logits.append(out.float().cpu())
    has_head = getattr(model, "num_classes", 0) > 0
    return AttentionSummary(distance=(sums / len(images)).float(), images=len(images), maps=torch.cat(maps),
                            logits=torch.cat(logits) if has_head else None)


def _record(model: nn.Module, batch: torch.Tensor, geom: Geometry, dist: torch.Tensor):
    """One forward: summed distances [layers, heads], head-averaged attention per layer, the output."""
    layers: dict[int, torch.Tensor] = {}
    per_head: dict[int, torch.Tensor] = {}

    def keep(i: int, probs: torch.Tensor) -> None:
        layers[i] = probs.mean(dim=1)
        per_head[i] = attention_distance(probs, geom, dist).sum(dim=0)

    with record_attention(model, keep):
        out = model(batch)
    order = sorted(layers)
    return torch.stack([per_head[i] for i in order]).cpu(), [layers[i] for i in order], out

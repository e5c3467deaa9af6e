"""Where a ViT's position embeddings live and where they are added (paper Appendix D.4, Table 8).

The kinds (`posemb.KINDS`) are the tables; `posemb_where` is the other axis of Table 8: "stem" adds the
table once, after the patch embedding (the default of every other experiment); "every_layer" learns a
table per block and adds it to the input of that block (block 0's is the stem table); "every_layer_shared"
adds the one stem table to the input of every block. Only the learned tables have the two other rows in
the paper (no embedding and relative ones are N/A there), so only "learned" and "learned_2d" take them.

The stem tables keep their keys (timm's `pos_embed`, or `pos_embed_row/col/prefix`); the per-block ones
are `pos_embed_layers.<i>.table` (1-D) or `.row/.col/.prefix` (2-D), i = 0 for block 1.
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from timm.models import checkpoint_seq
from torch import nn
from torch.utils.checkpoint import checkpoint

from vitcli.errors import CheckpointError
from vitcli.models import posemb as pe


def not_in_timm(desc: dict) -> str | None:
    """The position-embedding setting of a model description (`describe`) that timm's ViT cannot hold, as
    'model.posemb relative', or None when timm builds the model with all its tables."""
    kind, where = desc.get("posemb", "learned"), desc.get("posemb_where", "stem")
    if kind not in pe.TIMM_KINDS:
        return f"model.posemb {kind}"
    return None if where == "stem" else f"model.posemb_where {where}"


def not_in_transformers(desc: dict) -> str | None:
    """Likewise for transformers' ViT, which has one learned table added after the stem."""
    kind = desc.get("posemb", "learned")
    return f"model.posemb {kind}" if kind != "learned" else not_in_timm(desc)


def _table(*shape: int) -> nn.Parameter:
    return nn.Parameter(trunc_normal_(torch.empty(*shape), std=0.02))


class LayerTable(nn.Module):
    """The position table of one block under "every_layer": a 1-D learned table, or row and column tables
    (plus the prefix tokens' embeddings) for the 2-D kind."""

    def __init__(self, kind: str, grid: tuple[int, int], dim: int, prefix: int) -> None:
        super().__init__()
        self.table = self.row = self.col = self.prefix = None
        if kind == "learned":
            self.table = _table(1, prefix + grid[0] * grid[1], dim)
        else:
            self.row, self.col = _table(1, grid[0], dim // 2), _table(1, grid[1], dim - dim // 2)
            self.prefix = _table(1, prefix, dim) if prefix else None

    def forward(self) -> torch.Tensor:
        """The (1, prefix + h*w, dim) table added to the block's input."""
        if self.table is not None:
            return self.table
        table = pe.axes_table(self.row, self.col)
        return table if self.prefix is None else torch.cat([self.prefix, table], dim=1)


class PositionTables:
    """Mixin of `ViT` (before timm's VisionTransformer): the position tables of `self.posemb`, added
    where `self.posemb_where` says, and their fitting to another patch grid."""

    def _attach_posemb(self) -> None:
        """Create the tables of the position embedding `self.posemb` (timm made the learned one)."""
        grid, dim = tuple(self.patch_embed.grid_size), self.embed_dim
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        self.pos_embed_row = self.pos_embed_col = self.pos_embed_prefix = None
        if self.posemb == "sincos2d":
            # A fixed table under timm's own key: timm loads it and computes the same function.
            del self.pos_embed
            self.register_buffer("pos_embed", pe.sincos_2d(grid, dim, prefix))
        elif self.posemb == "learned_2d":
            self.pos_embed_row = _table(1, grid[0], dim // 2)
            self.pos_embed_col = _table(1, grid[1], dim - dim // 2)
            if prefix:
                self.pos_embed_prefix = _table(1, prefix, dim)
        elif self.posemb in ("relative", "relative_2d"):
            for block in self.blocks:
                block.attn.enable_relative(grid, prefix, two_d=self.posemb == "relative_2d")
        self.pos_embed_layers = None
        if self.posemb_where == "every_layer":
            self.pos_embed_layers = nn.ModuleList(
                LayerTable(self.posemb, grid, dim, prefix) for _ in range(len(self.blocks) - 1))

    def stem_table(self) -> torch.Tensor:
        """The learned table added after the stem, (1, tokens, dim) over prefix and patch tokens."""
        if self.posemb == "learned_2d":
            table = pe.axes_table(self.pos_embed_row, self.pos_embed_col)
            return table if self.pos_embed_prefix is None else torch.cat([self.pos_embed_prefix, table], dim=1)
        if self.no_embed_class and self.num_prefix_tokens:
            pad = self.pos_embed.new_zeros(1, self.num_prefix_tokens, self.pos_embed.shape[-1])
            return torch.cat([pad, self.pos_embed], dim=1)
        return self.pos_embed

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.posemb in ("learned", "sincos2d"):
            return super()._pos_embed(x)
        x = super()._pos_embed(x)  # no timm table: this only puts the class token in front
        if self.posemb == "learned_2d":
            x = x + self.stem_table()
        return self.pos_drop(x)

    def _encode(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """The blocks, each input but the first (which had the stem's) plus its position table."""
        # train.grad_checkpointing (timm's flag): each block's activations are recomputed in backward.
        recompute = self.grad_checkpointing and self.training and not torch.jit.is_scripting()
        if self.posemb_where == "stem" and attn_mask is None and not is_causal:
            return checkpoint_seq(self.blocks, x) if recompute else self.blocks(x)
        for i, block in enumerate(self.blocks):
            if i and self.posemb_where == "every_layer":
                x = x + self.pos_embed_layers[i - 1]()
            elif i and self.posemb_where == "every_layer_shared":
                x = x + self.stem_table()
            kwargs = {"attn_mask": attn_mask, "is_causal": is_causal} if attn_mask is not None or is_causal else {}
            x = checkpoint(block, x, use_reentrant=False, **kwargs) if recompute else block(x, **kwargs)
        return x

    def no_weight_decay(self) -> set[str]:
        """timm's no-decay names plus the tables of the other position embeddings."""
        extra = {n for n, _ in self.named_parameters() if n.startswith("pos_embed_") or ".attn.rel_" in n}
        return set(super().no_weight_decay()) | extra

    def fit_posemb(self, sd: dict[str, torch.Tensor], mode: str,
                   old_grid: tuple[int, int] | None = None) -> pe.Resample | None:
        """Fit a checkpoint's position tables (state dict `sd`, changed in place) to this model's grid.

        Learned 2-D axes, per-block tables and relative offset tables are interpolated (`mode`), the fixed
        sine-cosine table is recomputed; timm's learned table is left to `weights.fit`. `old_grid` (the
        checkpoint's patch grid, when known) names the change and lays out 1-D tables. Returns the change
        (4x4 -> 6x6, how), or None.
        """
        own = dict(self.named_parameters()) | dict(self.named_buffers())
        changed = [k for k in sd if k in own and sd[k].shape != own[k].shape and sd[k].ndim == own[k].ndim
                   and sd[k].shape[-1] == own[k].shape[-1]]
        if "pos_embed_row" in sd and "pos_embed_col" in sd:
            old_grid = (sd["pos_embed_row"].shape[1], sd["pos_embed_col"].shape[1])
        how = None
        for key in changed:
            sd[key], done, old_grid = self._fit_one(key, sd[key], own[key], mode, old_grid)
            how = done or how
        if how is None:
            return None
        return pe.Resample(tuple(old_grid) if old_grid else None, tuple(self.patch_embed.grid_size), how)

    def _fit_one(self, key: str, old: torch.Tensor, new: torch.Tensor, mode: str,
                 old_grid: tuple[int, int] | None) -> tuple[torch.Tensor, str | None, tuple[int, int] | None]:
        """One table fitted to this model's grid: (the table, how, the old grid as now known)."""
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        if self.posemb == "sincos2d" and key == "pos_embed":
            old_grid = old_grid or pe.square_grid(old.shape[1] - (new.shape[1] - self.patch_embed.num_patches))
            return new.detach().clone(), "sincos2d recomputed", old_grid
        if key in ("pos_embed_row", "pos_embed_col") or key.endswith((".row", ".col")):
            return pe.resample_axis(old, new.shape[1], mode), f"{mode}, row and column tables", old_grid
        if key.startswith("pos_embed_layers.") and key.endswith(".table"):
            old_grid = old_grid or pe.square_grid(old.shape[1] - prefix)
            table = pe.resample_posemb(old, tuple(self.patch_embed.grid_size), old_grid, prefix, mode)
            return table, f"{mode}, every block's table", old_grid
        if key.endswith(".attn.rel_pos") and old.ndim == 3:  # 2-D offsets (2h-1, 2w-1) hold the old grid
            old_grid = ((old.shape[0] + 1) // 2, (old.shape[1] + 1) // 2)
            return pe.resample_relative(old, tuple(new.shape[:-1]), mode), f"{mode}, relative offsets", old_grid
        if key.endswith(".attn.rel_pos"):
            old_grid = old_grid or pe.square_grid((old.shape[0] + 1) // 2)
            if old_grid is None:
                raise CheckpointError(f"{key}: {(old.shape[0] + 1) // 2} patch positions are not a square grid, "
                                      "and the checkpoint does not record its resolution; valid: a vit checkpoint "
                                      "with its recipe, or model.posemb: relative_2d")
            table = pe.resample_sequence_offsets(old, old_grid, tuple(self.patch_embed.grid_size), mode)
            return table, f"{mode}, sequence offsets re-indexed by row and column", old_grid
        return old, None, old_grid

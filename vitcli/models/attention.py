"""timm's self-attention, with its fused kernel run in fp32 when bf16 inputs need gradients on a CPU.

PyTorch's CPU flash-attention backward is several times slower in bf16 than in fp32 (measured here, one
forward + backward: 64 tokens x 32 dims, 57.8 ms in bf16 against 16.3 ms in fp32; S/16 at 577 tokens,
156 against 114 ms), while its bf16 forward is as fast or faster (S/16, 197 tokens, batch 64: 39.8 ms
against 61.3 ms upcast). So training upcasts q, k and v for the attention product alone, and inference
keeps bf16. Everything around attention (the qkv and output projections, the MLP) stays in bf16, where
the CPU's matmuls are 2.3x faster. Parameters and state-dict keys are timm's, untouched. On CUDA, and in
fp32, nothing changes.

The same module carries the paper's relative position attention (Appendix D.4) when `enable_relative`
is called: one learned embedding per offset between query and key patch, used as the keys of an extra
attention from the original queries, whose logits are added to the content logits before the softmax.

For inspection (`vit inspect`), `record_attention` makes every block compute the softmax explicitly and
hand the attention probabilities to a callback; the parameters and keys stay as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from timm.layers import Attention as TimmAttention
from timm.layers import trunc_normal_
from torch import nn

from vitcli.models.posemb import RELATIVE_SPECIALS, relative_index, relative_shape


def _fp32_on_cpu(q: torch.Tensor) -> bool:
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.requires_grad


class Attention(TimmAttention):
    """`timm.layers.Attention` whose fused SDPA call runs in fp32 for bf16 training on a CPU, with an
    optional relative-position bias (`enable_relative`)."""

    # Set by `record_attention`: called with the probabilities [B, heads, N, N] of each forward. A plain
    # attribute, not a buffer, so state dicts never see it.
    on_probs: Callable[[torch.Tensor], None] | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rel_pos: nn.Parameter | None = None  # (*offsets, head_dim) when relative
        self.rel_prefix: nn.Parameter | None = None  # embeddings of pairs involving a prefix token

    def enable_relative(self, grid: tuple[int, int], num_prefix: int, two_d: bool) -> None:
        """Add the offset table of the patch grid `grid` (1-D sequence offsets, or row/column in 2-D)."""
        ref = self.qkv.weight
        self.rel_pos = nn.Parameter(torch.empty(*relative_shape(grid, two_d), self.head_dim, device=ref.device))
        trunc_normal_(self.rel_pos, std=0.02)
        if num_prefix:
            self.rel_prefix = nn.Parameter(torch.empty(RELATIVE_SPECIALS, self.head_dim, device=ref.device))
            trunc_normal_(self.rel_prefix, std=0.02)
        # Derived from the grid, so not saved: a model built at another resolution makes its own.
        self.register_buffer("rel_index", relative_index(grid, num_prefix, two_d).to(ref.device),
                             persistent=False)

    def _relative_bias(self, q: torch.Tensor) -> torch.Tensor:
        """(B, H, T, T) logits of the queries against the embedding of each pair's offset."""
        table = self.rel_pos.reshape(-1, self.head_dim)
        if self.rel_prefix is not None:
            table = torch.cat([table, self.rel_prefix])
        # Scores against every offset once (T x K), then each pair picks its own: cheaper than T x T x d.
        logits = (q * self.scale) @ table.to(q.dtype).transpose(0, 1)
        return logits.gather(-1, self.rel_index.expand(*q.shape[:2], -1, -1))

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if self.on_probs is not None:
            return self._explicit(x, attn_mask)
        # The CPU bf16 case and the relative bias follow timm's fused path step for step; anything else
        # (CUDA, fp32, the gated or unfused variants) is timm's own forward.
        relative = self.rel_pos is not None
        plain = getattr(self, "gate", None) is not None or not self.fused_attn or x.device.type != "cpu"
        if plain and not relative:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if relative:
            bias = self._relative_bias(q)
            attn_mask = bias if attn_mask is None else bias + attn_mask
        dropout_p = self.attn_drop.p if self.training else 0.0
        if _fp32_on_cpu(q):
            mask = attn_mask.float() if attn_mask is not None and attn_mask.is_floating_point() else attn_mask
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
                ).to(q.dtype)
        else:
            if attn_mask is not None and attn_mask.is_floating_point():
                attn_mask = attn_mask.to(q.dtype)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal
            )
        out = out.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        out = self.norm(out)
        out = self.proj(out)
        return self.proj_drop(out)

    def _explicit(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """Unfused attention (timm's formula, plus the relative bias) that reports its softmax; only
        used for inspection."""
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q).float(), self.k_norm(k).float()
        logits = (q * self.scale) @ k.transpose(-2, -1)
        if self.rel_pos is not None:
            logits = logits + self._relative_bias(q).float()
        if attn_mask is not None:
            logits = logits + attn_mask if attn_mask.is_floating_point() else logits.masked_fill(~attn_mask, -torch.inf)
        probs = logits.softmax(dim=-1)
        self.on_probs(probs)
        out = (self.attn_drop(probs) @ v.float()).to(v.dtype)
        out = self.norm(out.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim))
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out))


@contextlib.contextmanager
def record_attention(model: torch.nn.Module, on_probs: Callable[[int, torch.Tensor], None]) -> Iterator[int]:
    """Within the block, each attention layer of `model` calls `on_probs(layer_index, probs)`.

    Layers are numbered in module order (block 0 first); yields their number. Raises ValueError when the
    model has no `vitcli` attention layer (e.g. a model built by timm itself).
    """
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    if not layers:
        raise ValueError("the model has no vitcli.models.attention.Attention layers to record")
    try:
        for i, layer in enumerate(layers):
            layer.on_probs = lambda probs, i=i: on_probs(i, probs)
        yield len(layers)
    finally:
        for layer in layers:
            del layer.on_probs  # back to the class default: None

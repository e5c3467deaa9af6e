"""timm's self-attention, with its fused kernel run in fp32 when bf16 inputs need gradients on a CPU.

PyTorch's CPU flash-attention backward is several times slower in bf16 than in fp32 (measured here, one
forward + backward: 64 tokens x 32 dims, 57.8 ms in bf16 against 16.3 ms in fp32; S/16 at 577 tokens,
156 against 114 ms), while its bf16 forward is as fast or faster (S/16, 197 tokens, batch 64: 39.8 ms
against 61.3 ms upcast). So training upcasts q, k and v for the attention product alone, and inference
keeps bf16. Everything around attention (the qkv and output projections, the MLP) stays in bf16, where
the CPU's matmuls are 2.3x faster. Parameters and state-dict keys are timm's, untouched. On CUDA, and in
fp32, nothing changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention as TimmAttention


def _fp32_on_cpu(q: torch.Tensor) -> bool:
    return q.device.type == "cpu" and q.dtype == torch.bfloat16 and q.requires_grad


class Attention(TimmAttention):
    """`timm.layers.Attention` whose fused SDPA call runs in fp32 for bf16 training on a CPU."""

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        # The CPU bf16 case follows timm's fused path step for step; anything else (CUDA, fp32, the
        # gated or unfused variants) is timm's own forward.
        if getattr(self, "gate", None) is not None or not self.fused_attn or x.device.type != "cpu":
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        dropout_p = self.attn_drop.p if self.training else 0.0
        if _fp32_on_cpu(q):
            mask = attn_mask.float() if attn_mask is not None and attn_mask.is_floating_point() else attn_mask
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(
                    q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
                ).to(q.dtype)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal
            )
        out = out.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        out = self.norm(out)
        out = self.proj(out)
        return self.proj_drop(out)

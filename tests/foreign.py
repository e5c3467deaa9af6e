"""Writers of other frameworks' checkpoint formats, for tests: Google's .npz layouts from a timm model.

The .npz writer is the inverse of timm's `vision_transformer._load_weights` (which `vit` reads them
with): Flax kernels are (in, out), convolutions (kh, kw, in, out), attention kernels split by head.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _conv(w: torch.Tensor) -> np.ndarray:
    return _np(w).transpose(2, 3, 1, 0)


def _block(out: dict, p: str, sd: dict, i: int, heads: int, big_vision: bool) -> None:
    b = f"blocks.{i}."
    attn, mlp, ln2 = ("MultiHeadDotProductAttention_0", "MlpBlock_0", "LayerNorm_1") if big_vision else (
        "MultiHeadDotProductAttention_1", "MlpBlock_3", "LayerNorm_2")
    width = sd[b + "norm1.weight"].shape[0]
    out[p + "LayerNorm_0/scale"], out[p + "LayerNorm_0/bias"] = _np(sd[b + "norm1.weight"]), _np(sd[b + "norm1.bias"])
    out[p + f"{ln2}/scale"], out[p + f"{ln2}/bias"] = _np(sd[b + "norm2.weight"]), _np(sd[b + "norm2.bias"])
    qkv_w, qkv_b = sd[b + "attn.qkv.weight"].chunk(3), sd[b + "attn.qkv.bias"].chunk(3)
    for name, w, bias in zip(("query", "key", "value"), qkv_w, qkv_b):
        out[p + f"{attn}/{name}/kernel"] = _np(w.T).reshape(width, heads, -1)
        out[p + f"{attn}/{name}/bias"] = _np(bias).reshape(heads, -1)
    out[p + f"{attn}/out/kernel"] = _np(sd[b + "attn.proj.weight"]).reshape(width, heads, -1).transpose(1, 2, 0)
    out[p + f"{attn}/out/bias"] = _np(sd[b + "attn.proj.bias"])
    for r in range(2):
        out[p + f"{mlp}/Dense_{r}/kernel"] = _np(sd[b + f"mlp.fc{r + 1}.weight"].T)
        out[p + f"{mlp}/Dense_{r}/bias"] = _np(sd[b + f"mlp.fc{r + 1}.bias"])


def _backbone(out: dict, sd: dict) -> None:
    s = "patch_embed.backbone."
    out["conv_root/kernel"] = _conv(sd[s + "stem.conv.weight"])
    out["gn_root/scale"], out["gn_root/bias"] = _np(sd[s + "stem.norm.weight"]), _np(sd[s + "stem.norm.bias"])
    stages = sorted({int(k.split(".")[3]) for k in sd if k.startswith(s + "stages.")})
    for i in stages:
        blocks = sorted({int(k.split(".")[5]) for k in sd if k.startswith(f"{s}stages.{i}.blocks.")})
        for j in blocks:
            src, dst = f"{s}stages.{i}.blocks.{j}.", f"block{i + 1}/unit{j + 1}/"
            for r in range(1, 4):
                out[f"{dst}conv{r}/kernel"] = _conv(sd[f"{src}conv{r}.weight"])
                out[f"{dst}gn{r}/scale"], out[f"{dst}gn{r}/bias"] = _np(sd[f"{src}norm{r}.weight"]), _np(
                    sd[f"{src}norm{r}.bias"])
            if f"{src}downsample.conv.weight" in sd:
                out[f"{dst}conv_proj/kernel"] = _conv(sd[f"{src}downsample.conv.weight"])
                out[f"{dst}gn_proj/scale"] = _np(sd[f"{src}downsample.norm.weight"])
                out[f"{dst}gn_proj/bias"] = _np(sd[f"{src}downsample.norm.bias"])


def _stack_blocks(out: dict, depth: int) -> dict:
    """big_vision's scanned layout: one array per parameter, blocks along a leading axis."""
    stacked = {k: v for k, v in out.items() if not k.startswith("Transformer/encoderblock_")}
    for key in [k for k in out if k.startswith("Transformer/encoderblock_0/")]:
        name = key.removeprefix("Transformer/encoderblock_0/")
        stacked[f"Transformer/encoderblock/{name}"] = np.stack(
            [out[f"Transformer/encoderblock_{i}/{name}"] for i in range(depth)])
    return stacked


def npz_arrays(model: torch.nn.Module, *, big_vision: bool = False, stacked: bool = False) -> dict[str, np.ndarray]:
    """The arrays of a Google .npz checkpoint of `model` (vit_jax layout, or big_vision's with params/,
    optionally with the blocks stacked as `nn.scan` saves them).

    big_vision prepends the class token after adding the position embeddings: its table has no class-token
    row, and the class token holds timm's class token plus that row.
    """
    sd = model.state_dict()
    heads = model.blocks[0].attn.num_heads
    out: dict[str, np.ndarray] = {}
    if "patch_embed.backbone.stem.conv.weight" in sd:
        _backbone(out, sd)
    out["embedding/kernel"] = _conv(sd["patch_embed.proj.weight"])
    out["embedding/bias"] = _np(sd["patch_embed.proj.bias"])
    pos = sd["pos_embed"]
    if "cls_token" in sd:
        out["cls"] = _np(sd["cls_token"] + pos[:, :1]) if big_vision else _np(sd["cls_token"])
        pos = pos[:, 1:] if big_vision else pos
    out["pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding"] = _np(pos)
    for i in range(len(model.blocks)):
        _block(out, f"Transformer/encoderblock_{i}/", sd, i, heads, big_vision)
    out["Transformer/encoder_norm/scale"], out["Transformer/encoder_norm/bias"] = _np(sd["norm.weight"]), _np(
        sd["norm.bias"])
    if "pre_logits.fc.weight" in sd:
        out["pre_logits/kernel"], out["pre_logits/bias"] = _np(sd["pre_logits.fc.weight"].T), _np(
            sd["pre_logits.fc.bias"])
    if "head.weight" in sd:
        out["head/kernel"], out["head/bias"] = _np(sd["head.weight"].T), _np(sd["head.bias"])
    if stacked:
        out = _stack_blocks(out, len(model.blocks))
    return {("params/" if big_vision else "") + k: v for k, v in out.items()}


def write_npz(model: torch.nn.Module, path: Path, *, big_vision: bool = False, stacked: bool = False,
              drop: tuple[str, ...] = ()) -> Path:
    """Write `model` as a Google .npz checkpoint, leaving out the arrays named in `drop`."""
    arrays = {k: v for k, v in npz_arrays(model, big_vision=big_vision, stacked=stacked).items() if k not in drop}
    np.savez(path, **arrays)
    return path


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (fresh models have zero biases, unit norms and a zero head)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()

"""Google's `.npz` checkpoints: the paper's own weights (vit_jax), AugReg, big_vision and the R50 hybrids.

The arrays say which model they are: width and patch from `embedding/kernel`, heads from the query
kernel (width x heads x head size), depth from the encoder blocks, pooling from `cls` (absent: GAP),
the tanh pre-logits layer from `pre_logits/kernel`, the classes from `head/kernel`, a hybrid from
`conv_root` and its `block*/unit*` counts. The conversion to timm's layout is timm's own
(`vision_transformer._load_weights`, which covers the vit_jax and big_vision layouts); only the
pre-logits layer, which timm no longer has, is copied here. Arrays load with `allow_pickle=False`.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from vitcli.errors import CheckpointError
from vitcli.models import build_model
from vitcli.models.variants import R50_LAYERS
from vitcli.weights.arch import describe_dims, model_cfg

_PREFIXES = ("opt/target/", "params/img/", "params/")  # flax optimizer and big_vision trees; "" otherwise
_FLOATS = (np.float16, np.float32, np.float64)
_ACCEPTED = "a vit_jax / big_vision ViT .npz (e.g. ViT-B_16.npz, an AugReg file, R50+ViT-B_16.npz)"


class _Arrays:
    """Shapes and values of an open .npz; a missing array is one line naming it."""

    def __init__(self, path: Path, npz: np.lib.npyio.NpzFile, prefix: str) -> None:
        self.path, self.npz, self.prefix = path, npz, prefix

    def has(self, key: str) -> bool:
        return self.prefix + key in self.npz.files

    def get(self, key: str) -> np.ndarray:
        if not self.has(key):
            raise CheckpointError(f"{self.path}: missing array '{self.prefix}{key}'; expected {_ACCEPTED}")
        value = self.npz[self.prefix + key]
        if value.dtype.type not in _FLOATS:
            raise CheckpointError(f"{self.path}: array '{self.prefix}{key}' has dtype {value.dtype}; "
                                  "vit reads float16/32/64 weights")
        return value


def _open(path: Path) -> np.lib.npyio.NpzFile:
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable .npz archive ({str(exc).splitlines()[0][:160]}); "
                              f"expected {_ACCEPTED}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path}: a single .npy array, not an .npz archive; expected {_ACCEPTED}")
    return npz


def _prefix(path: Path, npz: np.lib.npyio.NpzFile) -> str:
    for prefix in ("", *_PREFIXES):
        if f"{prefix}embedding/kernel" in npz.files:
            return prefix
    shown = ", ".join(sorted(npz.files)[:4]) or "no arrays"
    raise CheckpointError(f"{path}: unknown .npz layout: no 'embedding/kernel' array (found {shown}); "
                          f"expected {_ACCEPTED}")


def _depth(a: _Arrays) -> tuple[int, str]:
    """Number of blocks and the name of block 0 (big_vision may stack all blocks along a leading axis)."""
    if a.has("Transformer/encoderblock/LayerNorm_0/scale"):
        return int(a.get("Transformer/encoderblock/LayerNorm_0/scale").shape[0]), "Transformer/encoderblock/"
    depth = 0
    while a.has(f"Transformer/encoderblock_{depth}/LayerNorm_0/scale"):
        depth += 1
    a.get("Transformer/encoderblock_0/LayerNorm_0/scale")  # the one-line error when there is no block
    return depth, "Transformer/encoderblock_0/"


def _hybrid_patch(a: _Arrays) -> int:
    layers = []
    while a.has(f"block{len(layers) + 1}/unit1/conv1/kernel"):
        units = 0
        while a.has(f"block{len(layers) + 1}/unit{units + 1}/conv1/kernel"):
            units += 1
        layers.append(units)
    for patch, want in R50_LAYERS.items():
        if tuple(layers) == want:
            return patch
    raise CheckpointError(f"{a.path}: unknown hybrid layout: ResNet units {tuple(layers)} per block; vit builds "
                          f"the paper's R50 hybrids ({', '.join(str(v) for v in R50_LAYERS.values())})")


def describe_npz(path: Path, a: _Arrays) -> tuple[dict, bool]:
    """The model description the arrays imply, and whether the class token has no position embedding.

    big_vision adds the position embeddings to the patches and then prepends the class token, so its
    table has no class-token row; a zero row in timm's layout (class token first, then add) is the same.
    """
    if a.has("MAPHead_0/probe"):
        raise CheckpointError(f"{path}: the checkpoint pools with a MAP head (MAPHead_0), which the paper's ViT "
                              "does not have; vit reads class-token and GAP models")
    big_vision = a.prefix.startswith("params/") or a.has("pos_embedding") or a.has(
        "Transformer/encoderblock/LayerNorm_0/scale")
    kernel = a.get("embedding/kernel")
    if kernel.ndim != 4:
        raise CheckpointError(f"{path}: unknown layout: embedding/kernel has shape {kernel.shape}, expected "
                              "(patch, patch, channels, width)")
    hybrid = "r50" if a.has("conv_root/kernel") else None
    patch, width = (_hybrid_patch(a) if hybrid else int(kernel.shape[0])), int(kernel.shape[-1])
    token = a.has("cls")
    pos = a.get("pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding")
    rows = int(pos.reshape(-1, width).shape[0])
    cls_unembedded = token and math.isqrt(rows) ** 2 == rows and math.isqrt(rows - 1) ** 2 != rows - 1
    patches = rows - int(token and not cls_unembedded)
    side = math.isqrt(patches)
    if side * side != patches:
        raise CheckpointError(f"{path}: unknown layout: {patches} position embeddings for the patches are not a "
                              "square grid; vit reads square-grid checkpoints")
    depth, block = _depth(a)
    attn, mlp = ("MultiHeadDotProductAttention_0", "MlpBlock_0") if big_vision else (
        "MultiHeadDotProductAttention_1", "MlpBlock_3")
    query = a.get(f"{block}{attn}/query/kernel")
    dense = a.get(f"{block}{mlp}/Dense_0/kernel")
    a.get("Transformer/encoder_norm/scale")
    rep = int(a.get("pre_logits/kernel").shape[-1]) if a.has("pre_logits/kernel") else None
    classes = int(a.get("head/kernel").shape[-1]) if a.has("head/kernel") else 0
    desc = describe_dims(width=width, depth=depth, heads=int(query.shape[-2]), mlp_dim=int(dense.shape[-1]),
                         patch=patch, hybrid=hybrid, res=(side * patch, side * patch),
                         pool="token" if token else "gap", representation_size=rep, num_classes=classes,
                         where=str(path))
    return desc, cls_unembedded


def read_npz(path: Path) -> dict:
    """Read a Google .npz checkpoint: {"state_dict": timm-named tensors, "model": its description}."""
    from timm.models.vision_transformer import _load_weights

    npz = _open(path)
    try:
        a = _Arrays(path, npz, _prefix(path, npz))
        desc, cls_unembedded = describe_npz(path, a)
        model = build_model(model_cfg(desc), desc["num_classes"])
        if cls_unembedded:  # a table without the class-token row, so that timm's loader copies it as it is
            model.pos_embed = torch.nn.Parameter(model.pos_embed.data[:, 1:].clone())
        try:
            _load_weights(model, str(path), prefix=a.prefix)
        except KeyError as exc:  # numpy: "'X is not a file in the archive'"
            name = str(exc.args[0]).removesuffix(" is not a file in the archive")
            raise CheckpointError(f"{path}: missing array '{name}'; expected {_ACCEPTED}") from None
        except (ValueError, RuntimeError) as exc:  # a shape that does not fit the model the arrays implied
            raise CheckpointError(f"{path}: unknown layout ({str(exc).splitlines()[0][:200]}); "
                                  f"expected {_ACCEPTED}") from None
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if cls_unembedded:
            sd["pos_embed"] = torch.cat([torch.zeros_like(sd["pos_embed"][:, :1]), sd["pos_embed"]], dim=1)
        if desc["representation_size"]:
            sd["pre_logits.fc.weight"] = torch.from_numpy(np.ascontiguousarray(a.get("pre_logits/kernel").T)).float()
            sd["pre_logits.fc.bias"] = torch.from_numpy(a.get("pre_logits/bias").copy()).float()
        return {"state_dict": sd, "model": desc}
    finally:
        npz.close()

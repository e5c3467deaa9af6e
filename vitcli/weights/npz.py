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

from vitcli.errors import CheckpointError, first_line
from vitcli.models import build_model
from vitcli.models.variants import R50_LAYERS, count_params, resolve_variant
from vitcli.weights.arch import describe_dims, model_cfg

_PREFIXES = ("opt/target/", "params/img/", "params/")  # flax optimizer and big_vision trees; "" otherwise
_FLOATS = (np.float16, np.float32, np.float64)
_ACCEPTED = "a vit_jax / big_vision ViT .npz (e.g. ViT-B_16.npz, an AugReg file, R50+ViT-B_16.npz)"
# Past ViT-e (3.9e9): a model described by a damaged or hostile header is refused before it is built.
MAX_PARAMS = 1 << 32
_MAX_HEADER = 10000  # numpy's own bound on an .npy header (a longer one is refused, not parsed)


def _header(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype an .npz member declares in its .npy header, checked against the bytes it holds.

    Only the header is read (numpy bounds its length): nothing is allocated for the array, a member
    that would inflate past its declared size is caught by the size check, and a pickled (object)
    array is refused here, before numpy could be asked to read it.
    """
    from numpy.lib import format as npy

    name = info.filename.removesuffix(".npy")
    try:
        with archive.open(info) as handle:
            version = npy.read_magic(handle)
            read = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f".npy format version {version[0]}.{version[1]}")
            shape, _, dtype = read(handle, max_header_size=_MAX_HEADER)
            header = handle.tell()
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises ValueError, SyntaxError, TypeError...
        raise CheckpointError(f"{path}: member '{name}' has no valid .npy header ({first_line(exc, limit=120)}); "
                              f"the file is damaged or not {_ACCEPTED}") from None
    if dtype.hasobject:
        raise CheckpointError(f"{path}: refused: array '{name}' holds Python objects (a pickle), which vit never "
                              "loads; a ViT .npz holds float arrays only")
    declared = math.prod(shape) * dtype.itemsize
    if declared != info.file_size - header:
        raise CheckpointError(f"{path}: array '{name}' declares shape {tuple(shape)} ({declared} bytes of "
                              f"{dtype}) but holds {info.file_size - header} bytes; the file is damaged")
    return tuple(shape), dtype


class _Arrays:
    """Declared shapes (from the .npy headers) and values of an open .npz; a missing array is one line.

    Values are read only once `limit` (the element count of the model the shapes describe) is set and
    the array's declared size is within it, so no header can make vit allocate more than the model.
    """

    def __init__(self, path: Path, npz: np.lib.npyio.NpzFile, prefix: str,
                 shapes: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
        self.path, self.npz, self.prefix, self.shapes = path, npz, prefix, shapes
        self.limit: int | None = None

    def has(self, key: str) -> bool:
        return self.prefix + key in self.shapes

    def shape(self, key: str) -> tuple[int, ...]:
        """The declared shape of a float array (nothing is read)."""
        if not self.has(key):
            raise CheckpointError(f"{self.path}: missing array '{self.prefix}{key}'; expected {_ACCEPTED}")
        shape, dtype = self.shapes[self.prefix + key]
        if dtype.type not in _FLOATS:
            raise CheckpointError(f"{self.path}: array '{self.prefix}{key}' has dtype {dtype}; "
                                  "vit reads float16/32/64 weights")
        return shape

    def get(self, key: str) -> np.ndarray:
        shape = self.shape(key)
        check_size(self.path, self.prefix + key, shape, self.limit)
        return self.npz[self.prefix + key]


def check_size(path: Path, name: str, shape: tuple[int, ...], limit: int | None) -> None:
    """Refuse an array larger than the whole model the file describes (or any, before it is known)."""
    if limit is None or math.prod(shape) > limit:
        raise CheckpointError(f"{path}: array '{name}' declares shape {shape} ({math.prod(shape)} values), more than "
                              f"the whole model the file describes holds ({limit or 0}); the file is damaged or not "
                              "this model's")


def _open(path: Path) -> tuple[np.lib.npyio.NpzFile, dict]:
    """The open archive and every member's declared (shape, dtype), each header checked first."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic == b"\x93NUMPY":
        raise CheckpointError(f"{path}: a single .npy array, not an .npz archive; expected {_ACCEPTED}")
    try:
        with zipfile.ZipFile(path) as archive:
            shapes = {info.filename.removesuffix(".npy"): _header(path, archive, info)
                      for info in archive.infolist() if not info.is_dir()}
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable .npz archive ({first_line(exc, limit=120)}); "
                              f"expected {_ACCEPTED}") from None
    return npz, shapes


def _prefix(path: Path, shapes: dict) -> str:
    for prefix in ("", *_PREFIXES):
        if f"{prefix}embedding/kernel" in shapes:
            return prefix
    shown = ", ".join(sorted(shapes)[:4]) or "no arrays"
    raise CheckpointError(f"{path}: unknown .npz layout: no 'embedding/kernel' array (found {shown}); "
                          f"expected {_ACCEPTED}")


def _depth(a: _Arrays) -> tuple[int, str]:
    """Number of blocks and the name of block 0 (big_vision may stack all blocks along a leading axis)."""
    if a.has("Transformer/encoderblock/LayerNorm_0/scale"):
        return int(a.shape("Transformer/encoderblock/LayerNorm_0/scale")[0]), "Transformer/encoderblock/"
    depth = 0
    while a.has(f"Transformer/encoderblock_{depth}/LayerNorm_0/scale"):
        depth += 1
    a.shape("Transformer/encoderblock_0/LayerNorm_0/scale")  # the one-line error when there is no block
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
    kernel = a.shape("embedding/kernel")
    if len(kernel) != 4:
        raise CheckpointError(f"{path}: unknown layout: embedding/kernel has shape {kernel}, expected "
                              "(patch, patch, channels, width)")
    hybrid = "r50" if a.has("conv_root/kernel") else None
    patch, width = (_hybrid_patch(a) if hybrid else int(kernel[0])), int(kernel[-1])
    token = a.has("cls")
    pos = a.shape("pos_embedding" if big_vision else "Transformer/posembed_input/pos_embedding")
    rows, left = divmod(math.prod(pos), max(width, 1))
    if left or not pos or pos[-1] != width:
        raise CheckpointError(f"{path}: unknown layout: the position embeddings have shape {pos}, which does not "
                              f"end in the width {width} of embedding/kernel")
    cls_unembedded = token and math.isqrt(rows) ** 2 == rows and math.isqrt(rows - 1) ** 2 != rows - 1
    patches = rows - int(token and not cls_unembedded)
    side = math.isqrt(max(patches, 0))
    if patches <= 0 or side * side != patches:
        raise CheckpointError(f"{path}: unknown layout: {patches} position embeddings for the patches are not a "
                              "square grid; vit reads square-grid checkpoints")
    depth, block = _depth(a)
    attn, mlp = ("MultiHeadDotProductAttention_0", "MlpBlock_0") if big_vision else (
        "MultiHeadDotProductAttention_1", "MlpBlock_3")
    query = a.shape(f"{block}{attn}/query/kernel")
    dense = a.shape(f"{block}{mlp}/Dense_0/kernel")
    a.shape("Transformer/encoder_norm/scale")
    if len(query) < 2 or not dense:
        raise CheckpointError(f"{path}: unknown layout: {block}{attn}/query/kernel has shape {query} and "
                              f"{block}{mlp}/Dense_0/kernel {dense}; expected {_ACCEPTED}")
    rep = int(a.shape("pre_logits/kernel")[-1]) if a.has("pre_logits/kernel") else None
    classes = int(a.shape("head/kernel")[-1]) if a.has("head/kernel") else 0
    desc = describe_dims(width=width, depth=depth, heads=int(query[-2]), mlp_dim=int(dense[-1]),
                         patch=patch, hybrid=hybrid, res=(side * patch, side * patch),
                         pool="token" if token else "gap", representation_size=rep, num_classes=classes,
                         where=str(path), in_chans=_channels(a, kernel, hybrid))
    return desc, cls_unembedded


def _channels(a: _Arrays, kernel: tuple[int, ...], hybrid: str | None) -> int:
    """Input channels: the patch kernel's (patch, patch, channels, width), or the ResNet root's for hybrids."""
    root = a.shape("conv_root/kernel") if hybrid else kernel
    if len(root) != 4:
        raise CheckpointError(f"{a.path}: unknown layout: conv_root/kernel has shape {root}, expected (k, k, "
                              "channels, width)")
    return int(root[2])


def _params(path: Path, desc: dict) -> int:
    """Parameters of the model a description names, refused past MAX_PARAMS before anything is built."""
    cfg = model_cfg(desc)
    params = count_params(resolve_variant(cfg), desc["num_classes"], cfg.res, cfg.pool, cfg.representation_size)
    if params > MAX_PARAMS:
        raise CheckpointError(f"{path}: the array shapes describe a model of {params:.3g} parameters, more than "
                              f"the {MAX_PARAMS:.3g} vit builds; the file is damaged or not {_ACCEPTED}")
    return params


def read_npz(path: Path) -> dict:
    """Read a Google .npz checkpoint: {"state_dict": timm-named tensors, "model": its description}."""
    from timm.models.vision_transformer import _load_weights

    npz, shapes = _open(path)
    try:
        a = _Arrays(path, npz, _prefix(path, shapes), shapes)
        desc, cls_unembedded = describe_npz(path, a)
        a.limit = _params(path, desc)
        for name, (shape, _) in shapes.items():  # timm's loader reads what it needs: all is checked first
            if name.startswith(a.prefix):
                a.shape(name[len(a.prefix):])
                check_size(path, name, shape, a.limit)
        model = build_model(model_cfg(desc), desc["num_classes"])
        if cls_unembedded:  # a table without the class-token row, so that timm's loader copies it as it is
            model.pos_embed = torch.nn.Parameter(model.pos_embed.data[:, 1:].clone())
        try:
            _load_weights(model, str(path), prefix=a.prefix)
        except KeyError as exc:  # numpy: "'X is not a file in the archive'"
            name = str(exc.args[0]).removesuffix(" is not a file in the archive")
            raise CheckpointError(f"{path}: missing array '{name}'; expected {_ACCEPTED}") from None
        except (ValueError, RuntimeError) as exc:  # a shape that does not fit the model the arrays implied
            raise CheckpointError(f"{path}: unknown layout ({first_line(exc, limit=200)}); "
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

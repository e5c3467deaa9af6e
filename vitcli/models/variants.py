"""The paper's ViT variants as plain numbers: names, shapes, sequence lengths, parameters and MACs.

Everything here is arithmetic on a `Variant`, so the CLI can list models and check recipes without
importing torch (importing torch costs seconds). `count_params` must agree exactly with the model that
`vit.build_model` builds; the tests hold it to that.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from vitcli.recipe.config import ModelCfg, Res
from vitcli.errors import RecipeError, did_you_mean


@dataclass(frozen=True)
class Variant:
    """Shape of one ViT. `patch` is the effective patch: the backbone stride for hybrids."""

    name: str
    width: int
    depth: int
    heads: int
    mlp_dim: int
    patch: int
    hybrid: str | None = None  # "r50": the paper's ResNet-50 feeding 1x1 patches to the transformer


# Table 1 of the paper: (width, depth, heads); the MLP is always 4x the width.
FAMILIES: dict[str, tuple[int, int, int]] = {
    "Ti": (192, 12, 3),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "H": (1280, 32, 16),
}
_TIMM_FAMILY = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H"}
_FAMILY_TIMM = {v: k for k, v in _TIMM_FAMILY.items()}
_BY_LOWER = {k.lower(): k for k in FAMILIES}

# Option (ii) of the paper's hybrids: stage 4 folded into stage 3 gives a stride-16 feature map.
R50_LAYERS: dict[int, tuple[int, ...]] = {16: (3, 4, 9), 32: (3, 4, 6, 3)}

_PAPER_RE = re.compile(r"^(?:vit-)?(?:(r50)\+)?(ti|s|b|l|h)/(\d+)$", re.IGNORECASE)
_TIMM_RE = re.compile(r"^vit_(tiny|small|base|large|huge)_patch(\d+)_(\d+)(?:\.\w+)?$")
_TIMM_HYBRID_RE = re.compile(r"^vit_(tiny|small|base|large|huge)_r50_s(16|32)_(\d+)(?:\.\w+)?$")

_VALID_NAMES = (
    "Ti, S, B, L, H with patch 8/14/16/32, e.g. 'B/16', 'R50+B/16', "
    "or a timm name such as 'vit_base_patch16_224'"
)


def family(v: Variant) -> str:
    """The Table 1 family ("Ti" ... "H") a variant was derived from."""
    return v.name.split("/")[0].removeprefix("R50+")


def _base(family_: str, patch: int, hybrid: str | None) -> Variant:
    width, depth, heads = FAMILIES[family_]
    prefix = "R50+" if hybrid else ""
    return Variant(f"{prefix}{family_}/{patch}", width, depth, heads, 4 * width, patch, hybrid)


def _parse(name: str) -> Variant | None:
    m = _PAPER_RE.match(name.strip())
    if m:
        return _base(_BY_LOWER[m[2].lower()], int(m[3]), "r50" if m[1] else None)
    m = _TIMM_RE.match(name.strip())
    if m:
        return _base(_TIMM_FAMILY[m[1]], int(m[2]), None)
    m = _TIMM_HYBRID_RE.match(name.strip())
    if m:
        return _base(_TIMM_FAMILY[m[1]], int(m[2]), "r50")
    return None


def _suggestions() -> list[str]:
    names = [v.name for v in zoo()]
    names += [f"vit_{t}_patch{p}_{r}" for t in _TIMM_FAMILY for p in (8, 14, 16, 32) for r in (224, 384)]
    return names + ["vit_base_r50_s16_384", "vit_large_r50_s32_384"]


def resolve_variant(cfg: ModelCfg) -> Variant:
    """Turn `cfg.name` (paper or timm name) plus the width/depth/heads/mlp_dim/patch overrides into a Variant.

    A width override without an mlp_dim override keeps the paper's 4x MLP ratio. Overridden variants are
    renamed (e.g. "Ti/8 (width=64, depth=2, heads=2)") so tables and logs never pass them off as the paper's.
    """
    base = _parse(cfg.name)
    if base is None:
        hint = did_you_mean(cfg.name, _suggestions())
        raise RecipeError(f"model.name: unknown variant {cfg.name!r}{hint}; valid: {_VALID_NAMES}")
    width = cfg.width or base.width
    v = replace(
        base,
        width=width,
        depth=cfg.depth or base.depth,
        heads=cfg.heads or base.heads,
        mlp_dim=cfg.mlp_dim or 4 * width,
        patch=cfg.patch or base.patch,
    )
    _validate(v)
    return replace(v, name=_display_name(v))


def _validate(v: Variant) -> None:
    if v.patch <= 0 and not v.hybrid:
        raise RecipeError(f"model.patch: {v.patch} is not valid; valid: a positive integer")
    if v.hybrid and v.patch not in R50_LAYERS:
        raise RecipeError(
            f"model.patch: {v.patch} is not available for the hybrid {v.name}; valid: 16 or 32 "
            "(the stride of the ResNet-50 backbone)"
        )
    if v.width % v.heads:
        divisors = [d for d in range(1, v.width + 1) if v.width % d == 0][:8]
        raise RecipeError(
            f"model.heads: {v.heads} does not divide model.width {v.width}; valid: a divisor of "
            f"{v.width} such as {', '.join(map(str, divisors))}"
        )
    # timm sizes the MLP as int(width * mlp_ratio); a ratio that rounds to another size builds another model.
    if int(v.width * (v.mlp_dim / v.width)) != v.mlp_dim:
        raise RecipeError(
            f"model.mlp_dim: {v.mlp_dim} cannot be expressed as a ratio of width {v.width} in timm; "
            f"valid: e.g. {4 * v.width} (4x width) or another multiple of the width"
        )


def buildable(cfg: ModelCfg) -> tuple[Variant, Res]:
    """The variant and patch grid of `cfg`, or one RecipeError naming the fields that make it unbuildable.

    Every rule that timm's VisionTransformer or vit's own layers would enforce when building the model
    (name, patch, heads dividing the width, the MLP ratio, a resolution that tiles, the position
    embedding's split of the width and its place), checked as arithmetic: the recipe check calls it
    before any data or torch is loaded, `build_model` before building.
    """
    v = resolve_variant(cfg)
    size = grid(v, cfg.res)
    problem = posemb_problem(cfg.posemb, cfg.posemb_where, v.width)
    if problem:
        raise RecipeError(problem)
    return v, size


def parameter_roots(cfg: ModelCfg, *, head: bool, masked: bool) -> tuple[str, ...]:
    """The first part of every parameter name of the model `build_model` makes (what train.freeze names).

    `head`: a classification head (the model has classes); `masked`: masked patch prediction's parts.
    """
    roots = ["patch_embed", "blocks", "fc_norm" if cfg.fc_norm else "norm"]  # timm: one final norm or the other
    token = cfg.pool == "token"
    roots += (["cls_token"] if token else []) + (["reg_token"] if cfg.reg_tokens else [])
    if cfg.distilled:
        roots += ["dist_token"] + (["head_dist"] if head else [])
    prefix = 0 if cfg.no_embed_class else token + cfg.reg_tokens + cfg.distilled  # tokens the table covers
    # sincos2d is a fixed buffer, not a parameter; timm's distilled ViT makes its own learned table whatever
    # posemb says.
    if cfg.posemb == "learned" or cfg.distilled and cfg.posemb != "sincos2d":
        roots.append("pos_embed")
    if cfg.posemb == "learned_2d":
        roots += ["pos_embed_row", "pos_embed_col"] + (["pos_embed_prefix"] if prefix else [])
    if cfg.posemb_where == "every_layer" and resolve_variant(cfg).depth > 1:  # a table for each later block
        roots.append("pos_embed_layers")
    if cfg.representation_size:
        roots.append("pre_logits")
    if head:
        roots.append("head")
    if masked:
        roots += ["mask_token", "mpp_head"]
    return tuple(sorted(roots))


def _display_name(v: Variant) -> str:
    fam = family(v)
    base = _base(fam, v.patch, v.hybrid)
    changed = [
        f"{f}={getattr(v, f)}"
        for f in ("width", "depth", "heads", "mlp_dim")
        if getattr(v, f) != getattr(base, f)
    ]
    return f"{base.name} ({', '.join(changed)})" if changed else base.name


def zoo() -> list[Variant]:
    """The variants listed by `vit models`: the paper's models, smallest to largest, hybrids last."""
    names = ("Ti/16", "S/32", "S/16", "B/32", "B/16", "B/8", "L/32", "L/16", "H/14")
    plain = [_base(n.split("/")[0], int(n.split("/")[1]), None) for n in names]
    return plain + [_base("B", 16, "r50"), _base("L", 32, "r50")]


def timm_family(v: Variant) -> str:
    """The timm size word ("tiny" ... "huge") of the variant's family."""
    return _FAMILY_TIMM[family(v)]


def _nearest(size: int, patch: int) -> str:
    below, above = (size // patch) * patch, (size // patch + 1) * patch
    return f"{below} or {above}" if below > 0 else str(above)


def grid(v: Variant, res: Res) -> Res:
    """Number of patches along (height, width) at resolution `res`; RecipeError if `res` does not tile."""
    for size in res:
        if size <= 0 or size % v.patch:
            raise RecipeError(
                f"model.res: {size} is not divisible by the patch size {v.patch} of {v.name}; "
                f"nearest valid: {_nearest(size, v.patch)}"
            )
    return res[0] // v.patch, res[1] // v.patch


def seq_len(v: Variant, res: Res, class_token: bool = True) -> int:
    """Tokens the transformer sees: one per patch, plus the class token."""
    h, w = grid(v, res)
    return h * w + int(class_token)


RELATIVE_SPECIALS = 3  # relative offsets: query prefix -> key patch, query patch -> key prefix, prefix -> prefix


def relative_shape(grid_hw: Res, two_d: bool) -> tuple[int, ...]:
    """Shape of the offset table, less its embedding dim: (2n-1,) along the sequence, (2h-1, 2w-1) in 2-D."""
    h, w = grid_hw
    return (2 * h - 1, 2 * w - 1) if two_d else (2 * h * w - 1,)


def mpp_outputs(target: str, patch: int, bits: int = 3, cells: int = 4) -> int:
    """Width of the masked-patch prediction head: 2^(3 bits) colour classes (per cell for color_4x4), or
    the patch's normalised pixels."""
    classes = 1 << (3 * bits)
    return {"mean_color": classes, "color_4x4": cells * cells * classes, "pixels": 3 * patch * patch}[target]


def block_bytes(v: Variant, res: Res, posemb: str = "learned", class_token: bool = True) -> tuple[int, int]:
    """Memory of one image in one block's forward pass, in fp32 bytes: (the whole, the relative part).

    The largest tensors are the MLP's hidden activations (tokens x mlp_dim) and, with relative position
    attention, the logits of every query against every offset (heads x T x K) plus the T x T bias gathered
    from them and its index; fused attention keeps no T x T otherwise. Training keeps every block's.
    """
    tokens = seq_len(v, res, class_token)
    relative = 0
    if posemb in ("relative", "relative_2d"):
        offsets = math.prod(relative_shape(grid(v, res), posemb == "relative_2d")) + RELATIVE_SPECIALS
        relative = v.heads * tokens * (offsets + tokens) * 4 + tokens * tokens * 8
    return tokens * max(v.mlp_dim, 3 * v.width) * 4 + relative, relative


def _r50_convs(layers: tuple[int, ...], res: Res, in_chans: int = 3) -> Iterator[tuple[int, int, int, int]]:
    """Yield (in_ch, out_ch, kernel, output_pixels) for every conv of the ResNet-50 backbone.

    Mirrors timm's non-pre-activation ResNetV2 used by its hybrids: a 7x7/2 stem, a 3x3/2 max pool, then
    bottlenecks whose first block strides (except in stage 1) and projects the shortcut with a 1x1 conv.
    Padding is "same", so each stride-2 step halves the size, rounding up.
    """
    h, w = -(-res[0] // 2), -(-res[1] // 2)
    yield in_chans, 64, 7, h * w
    h, w = -(-h // 2), -(-w // 2)
    in_ch = 64
    for stage, blocks in enumerate(layers):
        out_ch, mid = 256 * 2**stage, 64 * 2**stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            yield in_ch, mid, 1, h * w
            h, w = -(-h // stride), -(-w // stride)
            yield mid, mid, 3, h * w
            yield mid, out_ch, 1, h * w
            if block == 0:
                yield in_ch, out_ch, 1, h * w
            in_ch = out_ch


def _backbone_params(v: Variant, in_chans: int = 3) -> int:
    # Convs are bias-free (weight standardised); every conv is followed by a GroupNorm (weight, bias).
    convs = _r50_convs(R50_LAYERS[v.patch], (64, 64), in_chans)
    return sum(k * k * cin * cout + 2 * cout for cin, cout, k, _ in convs)


def _backbone_macs(v: Variant, res: Res) -> int:
    return sum(k * k * cin * cout * pixels for cin, cout, k, pixels in _r50_convs(R50_LAYERS[v.patch], res))


def _embed_in(v: Variant, in_chans: int = 3) -> int:
    """Inputs to the linear patch projection: pixels of a patch, or backbone channels for hybrids."""
    return 256 * 2 ** (len(R50_LAYERS[v.patch]) - 1) if v.hybrid else in_chans * v.patch * v.patch


def count_params(
    v: Variant,
    num_classes: int = 1000,
    res: Res = (224, 224),
    pool: str = "token",
    representation_size: int | None = None,
    in_chans: int = 3,
) -> int:
    """Parameters of the model `build_model` makes, counted without building it (exact, hybrids too)."""
    d, m = v.width, v.mlp_dim
    tokens = seq_len(v, res, class_token=pool == "token")
    embed = _embed_in(v, in_chans) * d + d + (_backbone_params(v, in_chans) if v.hybrid else 0)
    prefix = (d if pool == "token" else 0) + tokens * d  # class token, position embeddings
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
    head_in = representation_size or d
    pre_logits = d * representation_size + representation_size if representation_size else 0
    head = head_in * num_classes + num_classes if num_classes > 0 else 0
    return embed + prefix + v.depth * block + 2 * d + pre_logits + head


def macs(v: Variant, res: Res, num_classes: int = 1000) -> int:
    """Multiply-accumulates of one forward pass of one image (norms, softmax and GELU left out)."""
    d, m = v.width, v.mlp_dim
    h, w = grid(v, res)
    n = seq_len(v, res)
    embed = h * w * _embed_in(v) * d + (_backbone_macs(v, res) if v.hybrid else 0)
    # qkv, scores q.k^T and the weighted sum of values (each n*n*d over all heads), output proj, MLP.
    block = n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * m
    return embed + v.depth * block + d * num_classes


# Position embeddings that can be built (arithmetic too, so recipe checks need no torch).
POSEMB_WHERE = ("stem", "every_layer", "every_layer_shared")  # Table 8's rows: where the table is added
LAYERED_POSEMB = ("learned", "learned_2d")  # the kinds with the "every layer" rows in the paper


def posemb_problem(posemb: str, where: str, width: int) -> str | None:
    """Why a position embedding cannot be built at that width and place, as 'model.KEY: ...; valid: ...'."""
    if posemb == "sincos2d" and width % 4 or posemb == "learned_2d" and width % 2:
        return (f"model.posemb: {posemb} needs a width divisible by {4 if posemb == 'sincos2d' else 2}, got "
                f"{width}; valid: another width or posemb")
    if where != "stem" and posemb not in LAYERED_POSEMB:
        return (f"model.posemb_where: {where} adds a learned table to every block, and model.posemb {posemb} has "
                f"none to add (the paper's N/A); valid: posemb {' or '.join(LAYERED_POSEMB)}, or posemb_where stem")
    return None

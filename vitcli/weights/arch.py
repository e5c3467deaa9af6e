"""Which ViT a bare set of weights is: the model description from the shapes of timm-named tensors.

Every foreign format (Google .npz, Hugging Face, timm hub folders, plain timm state dicts) ends as a
timm state dict plus a `vitcli.models.describe` dictionary, so `vit` builds the variant without being
told its name. Width, depth, MLP size, patch, pooling, pre-logits and head are read off the shapes; the
number of heads cannot be (it only splits the width), so it comes from the format when it says, else
from the paper's variant of that width and depth, else width // 64, and the guess is logged.
"""

from __future__ import annotations

import logging
import math

import torch

from vitcli.recipe.config import NORMS, ModelCfg
from vitcli.errors import CheckpointError, RecipeError
from vitcli.models import describe
from vitcli.models.variants import FAMILIES, R50_LAYERS, resolve_variant
from vitcli.weights.external import Normalisation, TimmConfig

log = logging.getLogger(__name__)

# Parts of other timm ViT families that `vit`'s model does not have: (key fragment, what it is).
_FOREIGN = (
    ("norm_pre.", "a pre-norm (CLIP-style norm_pre)"),
    ("attn_pool.", "an attention-pooling (MAP) head"),
    (".q_norm.", "query/key normalisation"),
)


_ARCH = ("name", "width", "depth", "heads", "mlp_dim", "pool", "representation_size")
_EXTRAS = ("in_chans", "fc_norm", "init_values", "reg_tokens", "no_embed_class", "distilled")


def model_cfg(desc: dict, **changes) -> ModelCfg:
    """The ModelCfg that builds the model a description (`vitcli.models.describe`) describes."""
    fields = {k: desc[k] for k in _ARCH}
    for key in ("posemb", "posemb_where", "norm_eps", *_EXTRAS):  # older descriptions lack them: the defaults
        if key in desc:
            fields[key] = desc[key]
    fields.update(changes)
    return ModelCfg(**{"res": tuple(desc["res"]), **fields})


def family_for(width: int, depth: int) -> str:
    """The paper family of that width and depth, else the one of the nearest width (names the variant)."""
    for fam, (w, d, _) in FAMILIES.items():
        if (w, d) == (width, depth):
            return fam
    return min(FAMILIES, key=lambda fam: abs(FAMILIES[fam][0] - width))


def default_heads(width: int, depth: int, where: str) -> int | None:
    """Heads of a model whose weights do not say: the paper's variant of that shape, else None."""
    for w, d, heads in FAMILIES.values():
        if (w, d) == (width, depth):
            return heads
    return None


def _guess_heads(width: int, where: str) -> int:
    heads = max(1, width // 64)
    while width % heads:
        heads -= 1
    log.warning("%s: the weights do not record the number of attention heads; assuming %d (width %d // 64) "
                "unless the recipe says (model.heads, or --set model.heads=N)", where, heads, width)
    return heads


def describe_dims(*, width: int, depth: int, heads: int, mlp_dim: int, patch: int, hybrid: str | None,
                  res: tuple[int, int], pool: str, representation_size: int | None, num_classes: int,
                  where: str, **extras) -> dict:
    """The model description (`vitcli.models.describe`) of a ViT of these dimensions; `extras` are the
    ModelCfg fields of timm's other ViTs (in_chans, fc_norm, init_values, reg_tokens, ...)."""
    fam = family_for(width, depth)
    name = f"{'R50+' if hybrid else ''}{fam}/{patch}"
    cfg = ModelCfg(name=name, res=tuple(res), pool=pool, representation_size=representation_size,
                   width=width, depth=depth, heads=heads, mlp_dim=mlp_dim, **extras)
    try:
        return describe(cfg, num_classes)
    except RecipeError as exc:  # e.g. an MLP size timm cannot express, or a width the heads do not divide
        raise CheckpointError(f"{where}: the weights describe a ViT that vit cannot build ({exc})") from None


def refuse_foreign(sd: dict[str, torch.Tensor], where: str) -> None:
    """One line naming the first part of another ViT family found in a timm state dict."""
    for fragment, what in _FOREIGN:
        keys = [k for k in sd if fragment in k or k.startswith(fragment)]
        if keys:
            raise CheckpointError(f"{where}: the weights have {what} ({keys[0]}), which the paper's ViT does not; "
                                  "vit reads plain ViT and R50+ViT checkpoints only")


def _backbone_patch(sd: dict[str, torch.Tensor], where: str) -> int:
    """Stride of a timm R50 hybrid backbone from its stages and blocks (16: 3 stages, 32: 4)."""
    stages = sorted({int(k.split(".")[3]) for k in sd if k.startswith("patch_embed.backbone.stages.")})
    layers = tuple(len({k.split(".")[5] for k in sd if k.startswith(f"patch_embed.backbone.stages.{s}.blocks.")})
                   for s in stages)
    for patch, want in R50_LAYERS.items():
        if layers == want:
            return patch
    raise CheckpointError(f"{where}: the ResNet backbone has blocks {layers} per stage; vit builds the paper's "
                          f"R50 hybrids only ({', '.join(f'{v} for stride {k}' for k, v in R50_LAYERS.items())})")


def _patches_only(rows: int, prefix: int, res: tuple[int, int] | None, patch: int) -> bool:
    """Whether a position table of `rows` has no rows for the `prefix` tokens (timm's no_embed_class)."""
    if res is not None:
        return rows == (res[0] // patch) * (res[1] // patch)
    square = lambda n: n >= 0 and math.isqrt(n) ** 2 == n  # noqa: E731
    return square(rows) and not square(rows - prefix)


def _extras(sd: dict[str, torch.Tensor], hybrid: str | None) -> dict:
    """The parts of timm's other ViTs a state dict has, as ModelCfg fields (only those that are on)."""
    stem = sd.get("patch_embed.backbone.stem.conv.weight") if hybrid else sd.get("patch_embed.proj.weight")
    reg = sd.get("reg_token")
    extras = {"in_chans": int(stem.shape[1]) if stem is not None and stem.ndim == 4 else 3,
              "fc_norm": "fc_norm.weight" in sd, "distilled": "dist_token" in sd,
              "reg_tokens": int(reg.shape[1]) if reg is not None and reg.ndim == 3 else 0,
              # layer scale's values are in the weights; its initial value only matters for training
              "init_values": 1e-5 if any(".ls1." in k for k in sd) else None}
    return {k: v for k, v in extras.items() if v not in (False, None, 0) and not (k == "in_chans" and v == 3)}


def from_state_dict(sd: dict[str, torch.Tensor], where: str, *, heads: int | None = None,
                    res: tuple[int, int] | None = None) -> dict | None:
    """Describe the ViT that a timm-named state dict holds (heads and resolution when known otherwise).

    None when the keys are not timm's ViT names at all (the recipe must then name the variant). When
    the number of heads had to be guessed, the description lists it under "guessed": a recipe's own
    model.heads wins over it.
    """
    refuse_foreign(sd, where)
    proj = sd.get("patch_embed.proj.weight")
    pos = sd.get("pos_embed")
    if proj is None or proj.ndim != 4 or pos is None or pos.ndim != 3:
        return None
    width = int(proj.shape[0])
    hybrid = "r50" if any(k.startswith("patch_embed.backbone.") for k in sd) else None
    patch = _backbone_patch(sd, where) if hybrid else int(proj.shape[-1])
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if depth == 0 or fc1 is None:
        raise CheckpointError(f"{where}: no transformer blocks (blocks.0.mlp.fc1.weight) in the weights")
    token = "cls_token" in sd
    extras = _extras(sd, hybrid)
    prefix = int(token) + int(extras.get("distilled", False)) + extras.get("reg_tokens", 0)
    rows = int(pos.shape[1])
    if prefix and _patches_only(rows, prefix, res, patch):
        extras["no_embed_class"] = True  # the table covers the patches only (DeiT III, big_vision)
    patches = rows - (0 if extras.get("no_embed_class") else prefix)
    side = math.isqrt(max(patches, 0))
    if res is None:
        if side * side != patches:
            raise CheckpointError(f"{where}: {patches} position embeddings are not a square grid; give the "
                                  "resolution with --set model.res=HxW")
        res = (side * patch, side * patch)
    pre = sd.get("pre_logits.fc.weight")
    head = sd.get("head.weight")
    heads = heads or default_heads(width, depth, where)
    guessed = heads is None
    desc = describe_dims(
        width=width, depth=depth, heads=heads or _guess_heads(width, where), mlp_dim=int(fc1.shape[0]),
        patch=patch, hybrid=hybrid, res=res, pool="token" if token else "gap",
        representation_size=int(pre.shape[0]) if pre is not None else None,
        num_classes=int(head.shape[0]) if head is not None and head.ndim == 2 else 0, where=where, **extras)
    return {**desc, "guessed": ["heads"]} if guessed else desc


def from_recipe(model: dict | None) -> dict:
    """The heads and resolution a vit recipe's model section gives (`from_state_dict`'s keywords), or {}
    for what it does not give or gives in a form no recipe has."""
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        return {}
    try:
        dims = {k: model.get(k) for k in ("width", "depth", "heads", "mlp_dim", "patch")}
        heads = resolve_variant(ModelCfg(name=model["name"], **dims)).heads
    except (RecipeError, TypeError, ValueError):
        return {}
    res = model.get("res")
    res = [res, res] if type(res) is int else res
    found = {"heads": heads} if type(heads) is int and heads > 0 else {}
    if isinstance(res, list) and len(res) == 2 and all(type(v) is int and v > 0 for v in res):
        found["res"] = tuple(res)
    return found


def from_timm_config(sd: dict[str, torch.Tensor], config: TimmConfig, where: str) -> dict:
    """Pretrained fields of a timm hub folder: the config's architecture, input size, mean and labels.

    The config names the architecture (and, in model_args, any dimension it changes); the dimensions
    are read off the shapes all the same and the config's name only settles the number of heads.
    """
    heads = config.num_heads
    if heads is None:
        try:
            named = resolve_variant(ModelCfg(name=config.architecture.split(".")[0]))
        except RecipeError:  # a timm architecture outside the paper's names: the shapes decide
            named = None
        proj = sd.get("patch_embed.proj.weight")
        if named is not None and proj is not None and int(proj.shape[0]) == named.width:
            heads = named.heads
    res = config.input_size[1:] if config.input_size else config.img_size
    desc = from_state_dict(sd, where, heads=heads, res=res)
    return {"model": desc, "recipe": {"data": data_norm(config.norm)}, "label_names": config.label_names}


def data_norm(norm: Normalisation) -> dict:
    """The recipe's data section for a checkpoint's own normalisation: data.mean / data.std when it says
    both (exactly, so vit sees the pixels its training did), and the data.norm name they are closest to."""
    mean = [round(m, 3) for m in norm.mean or NORMS["paper"][0]]
    data = {"norm": next((name for name, (m, _) in NORMS.items() if list(m) == mean), "paper")}
    if norm.mean is not None and norm.std is not None:
        data.update(mean=list(norm.mean), std=list(norm.std))
    return data

"""State dicts as other trainers save them: wrapped, prefixed, or under torchvision's names.

Lightning saves `{'state_dict': {'model.blocks.0...': ...}, 'epoch': 3, ...}`, DeiT and MAE `{'model': ...}`,
DINO `{'teacher': {'backbone.…'}, 'student': ...}`, DDP adds `module.`, torch.compile `_orig_mod.`.
`unwrap` finds the state dict inside such an object and `normalise` takes the prefix off (keeping the
tensors under it and naming what is left behind), then turns torchvision's `VisionTransformer` names
into timm's, which every other part of vit reads. What is taken off is said in one line. A state dict
whose keys are no ViT layout vit knows is refused, listing its first keys.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from vitcli.errors import CheckpointError

log = logging.getLogger("vitcli.weights")

# Keys under which trainers nest the weights, in the order they are taken: DINO's teacher is the model
# its authors evaluate, so it wins over the student.
WRAPPERS = ("state_dict", "model", "teacher", "module", "student", "model_ema", "net")
PREFIXES = ("module.", "model.", "_orig_mod.", "backbone.", "encoder.")
# One key that every ViT of a layout has (its patch embedding), by layout.
_PATCH_KEYS = {
    "patch_embed.proj.weight": "timm", "patch_embed.backbone.stem.conv.weight": "timm",
    "conv_proj.weight": "torchvision",
    "embeddings.patch_embeddings.projection.weight": "transformers",
    "vit.embeddings.patch_embeddings.projection.weight": "transformers",
}
_SHOWN = 4


def _is_state_dict(value) -> bool:
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def unwrap(data, path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict a loaded checkpoint object holds, and the wrapper key it was found under (or None).

    A mapping of names to tensors is a state dict as it is; otherwise the first of WRAPPERS that holds
    one (a level of nesting deep, as Lightning's and DINO's files have it) is taken.
    """
    if _is_state_dict(data):
        return data, None
    if isinstance(data, dict):
        for key in WRAPPERS:
            inner = data.get(key)
            if _is_state_dict(inner):
                return inner, key
            if isinstance(inner, dict) and _is_state_dict(inner.get("state_dict")):
                return inner["state_dict"], f"{key}.state_dict"
        keys = ", ".join(repr(k)[:40] for k in list(data)[:6]) or "none"
        raise CheckpointError(f"{path}: not a state dict: no mapping of parameter names to tensors in it or under "
                              f"{', '.join(repr(w) for w in WRAPPERS)} (its keys: {keys})")
    raise CheckpointError(f"{path}: not a state dict (expected a mapping of parameter names to tensors, got "
                          f"{type(data).__name__})")


def layout(sd: dict[str, torch.Tensor]) -> str | None:
    """"timm", "torchvision" or "transformers" by the patch embedding's name; None when none is there."""
    return next((name for key, name in _PATCH_KEYS.items() if key in sd), None)


def _known_prefix(head: str) -> bool:
    """Whether `head` is a run of PREFIXES ("module._orig_mod." is DDP around torch.compile)."""
    while head:
        prefix = next((p for p in PREFIXES if head.startswith(p)), None)
        if prefix is None:
            return False
        head = head[len(prefix):]
    return True


def _strip(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Take known prefixes off the patch embedding's name and everything under them; (state dict, prefix
    taken, keys left behind). Unchanged when a layout shows already or no known prefix leads to one."""
    if layout(sd) is not None:
        return sd, "", []
    heads = [key[:-len(patch)] for key in sd for patch in _PATCH_KEYS if key.endswith("." + patch)]
    head = next((h for h in heads if _known_prefix(h)), None)
    if head is None:
        return sd, "", []
    return ({k[len(head):]: v for k, v in sd.items() if k.startswith(head)}, head,
            [k for k in sd if not k.startswith(head)])


def normalise(sd: dict[str, torch.Tensor], path: Path, wrapper: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict in timm's names: prefixes taken off, torchvision's names mapped; one line says what
    was done. Refuses keys of no known layout, naming the first of them."""
    sd, taken, left = _strip(sd)
    kind = layout(sd)
    if kind is None:
        shown = ", ".join(sorted(sd)[:_SHOWN]) + (f" (+{len(sd) - _SHOWN} more)" if len(sd) > _SHOWN else "")
        raise CheckpointError(f"{path}: unknown key layout: no ViT patch embedding (patch_embed.proj.weight, "
                              f"conv_proj.weight, ...) among the keys; first keys: {shown}; vit reads timm, "
                              "torchvision and transformers ViT names, also under the prefixes "
                              f"{', '.join(PREFIXES)}")
    if kind == "torchvision":
        sd = from_torchvision(sd, path)
    said = [f"the weights under '{wrapper}'"] if wrapper else []
    said += [f"the prefix '{taken}'"] if taken else []
    said += [f"{kind}'s names mapped to timm's"] if kind == "torchvision" else []
    if said:
        dropped = f"; left out {len(left)} tensors outside it ({', '.join(left[:3])}{' ...' if len(left) > 3 else ''})"
        log.warning("%s: read %s%s", path, ", ".join(said), dropped if left else "")
    return sd


# torchvision's VisionTransformer (torchvision.models.vision_transformer) in timm's names: the same network
# (LayerNorm eps 1e-6, exact GELU, class token first, then the position table added).
_TV_TOP = {"class_token": "cls_token", "conv_proj.weight": "patch_embed.proj.weight",
           "conv_proj.bias": "patch_embed.proj.bias", "encoder.pos_embedding": "pos_embed",
           "encoder.ln.weight": "norm.weight", "encoder.ln.bias": "norm.bias",
           "heads.pre_logits.weight": "pre_logits.fc.weight", "heads.pre_logits.bias": "pre_logits.fc.bias",
           "heads.head.weight": "head.weight", "heads.head.bias": "head.bias"}
_TV_BLOCK = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj_weight": "attn.qkv.weight",
             "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj": "attn.proj",
             "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2", "mlp.linear_1": "mlp.fc1", "mlp.linear_2": "mlp.fc2"}
_TV_LAYER = "encoder.layers.encoder_layer_"


def _tv_block_key(key: str) -> str | None:
    rest = key[len(_TV_LAYER):]
    index, _, name = rest.partition(".")
    if not index.isdigit():
        return None
    for tv, timm_name in _TV_BLOCK.items():
        if name == tv or name.startswith(tv + "."):
            return f"blocks.{int(index)}.{timm_name}{name[len(tv):]}"
    return None


def from_torchvision(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """torchvision ViT tensors in timm's names; a key that is not torchvision's ViT is one line."""
    out, unknown = {}, []
    for key, value in sd.items():
        name = _TV_TOP.get(key) or (_tv_block_key(key) if key.startswith(_TV_LAYER) else None)
        if name is None:
            unknown.append(key)
        else:
            out[name] = value
    if unknown:
        raise CheckpointError(f"{path}: tensors that torchvision's VisionTransformer does not have: "
                              f"{', '.join(unknown[:_SHOWN])}{' ...' if len(unknown) > _SHOWN else ''}")
    return out


def to_torchvision(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain ViT's timm-named tensors in torchvision's `VisionTransformer` names (the inverse of
    `from_torchvision`; its current MLP names, mlp.0 and mlp.3)."""
    top = {timm_name: tv for tv, timm_name in _TV_TOP.items()}
    block = {timm_name: tv for tv, timm_name in _TV_BLOCK.items() if not tv.startswith("mlp.linear")}
    out = {}
    for key, value in sd.items():
        if key in top:
            out[top[key]] = value
            continue
        _, index, name = key.split(".", 2)
        part = next(p for p in block if name == p or name.startswith(p + "."))
        out[f"{_TV_LAYER}{index}.{block[part]}{name[len(part):]}"] = value
    return out

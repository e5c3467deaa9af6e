"""Hugging Face `transformers` ViT checkpoints, in (`ViTModel`, `ViTForImageClassification`) and out.

The two layouts hold the same network under other names: HF splits the attention input projection in
query/key/value where timm has one qkv matrix, calls the final norm `layernorm` and the head
`classifier`. HF's pooler (dense + tanh on the class token) is the paper's pre-logits layer, timm/vit's
`pre_logits.fc`. `ViTForImageClassification` has no pooler: its classifier reads the class token
directly, so a classifier and a pooler never apply together in HF. Files on the hub and those
`save_pretrained` writes (transformers 4 and 5) use the names below.
"""

from __future__ import annotations

import logging

import torch

from vitcli.errors import CheckpointError
from vitcli.weights.arch import data_norm, describe_dims
from vitcli.weights.external import HfConfig, Normalisation

log = logging.getLogger(__name__)


# (HF name inside encoder.layer.N, timm name inside blocks.N); q/k/v are joined separately.
_BLOCK = (
    ("layernorm_before", "norm1"),
    ("layernorm_after", "norm2"),
    ("attention.output.dense", "attn.proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
)
_TOP = (
    ("embeddings.cls_token", "cls_token"),
    ("embeddings.position_embeddings", "pos_embed"),
    ("embeddings.patch_embeddings.projection.weight", "patch_embed.proj.weight"),
    ("embeddings.patch_embeddings.projection.bias", "patch_embed.proj.bias"),
    ("layernorm.weight", "norm.weight"),
    ("layernorm.bias", "norm.bias"),
    ("pooler.dense.weight", "pre_logits.fc.weight"),
    ("pooler.dense.bias", "pre_logits.fc.bias"),
)


def is_hf_config(config: dict) -> bool:
    """Whether a config.json is a `transformers` model config (it names a model_type)."""
    return "model_type" in config and "architecture" not in config


def check_config(config: HfConfig, where: str) -> None:
    """Refuse, in one line, a ViT variant vit does not build (external.hf_config refused other model types)."""
    wrong = [(key, getattr(config, key), want) for key, want in (
        ("hidden_act", "gelu"), ("qkv_bias", True), ("pooler_act", "tanh"))
        if getattr(config, key) != want]
    if wrong:
        key, got, want = wrong[0]
        raise CheckpointError(f"{where}: {key} {got!r} is not supported; vit builds the paper's ViT ({key} {want!r})")


def _label_names(config: HfConfig) -> list[str] | None:
    """id2label as a list, or None when it only holds transformers' placeholder names (LABEL_0 ...)."""
    names = config.label_names
    if not names or names == [f"LABEL_{i}" for i in range(len(names))]:
        return None
    return names


def to_timm(tensors: dict[str, torch.Tensor], config: HfConfig, where: str) -> tuple[dict, list[str]]:
    """HF ViT tensors to timm's names; returns the state dict and notes on what was left out."""
    sd = {k.removeprefix("vit."): v for k, v in tensors.items()}
    out, notes = {}, []
    for hf, timm_name in _TOP:
        if hf in sd:
            out[timm_name] = sd.pop(hf)
    if "classifier.weight" in sd:
        out["head.weight"], out["head.bias"] = sd.pop("classifier.weight"), sd.pop("classifier.bias")
        if out.pop("pre_logits.fc.weight", None) is not None:
            out.pop("pre_logits.fc.bias")
            notes.append("the pooler is not used by ViTForImageClassification's classifier; left out")
    sd.pop("embeddings.mask_token", None)  # only masked-image modelling uses it
    depth = config.num_hidden_layers
    for i in range(depth):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for hf, timm_name in _BLOCK:
            for kind in ("weight", "bias"):
                key = f"{src}{hf}.{kind}"
                if key not in sd:
                    raise CheckpointError(f"{where}: missing tensor '{key}' (config.json says "
                                          f"{depth} layers)")
                out[f"{dst}{timm_name}.{kind}"] = sd.pop(key)
        for kind in ("weight", "bias"):
            parts = [sd.pop(f"{src}attention.attention.{n}.{kind}", None) for n in ("query", "key", "value")]
            if any(p is None for p in parts):
                raise CheckpointError(f"{where}: missing tensor '{src}attention.attention.query.{kind}' "
                                      "(or key/value)")
            out[f"{dst}attn.qkv.{kind}"] = torch.cat(parts)
    if sd:
        raise CheckpointError(f"{where}: tensors that a transformers ViT does not have: "
                              f"{', '.join(sorted(sd)[:3])}{' ...' if len(sd) > 3 else ''}")
    return out, notes


def describe_hf(sd: dict, config: HfConfig, where: str) -> dict:
    """The vit model description of an HF ViT config (the weights already in timm's names).

    The config's sizes must be the weights' own: a config that says otherwise is refused by name
    rather than building another model than the weights hold.
    """
    proj, fc1 = sd.get("patch_embed.proj.weight"), sd.get("blocks.0.mlp.fc1.weight")
    for field, said, held in (("hidden_size", config.hidden_size, None if proj is None else proj.shape[0]),
                              ("patch_size", config.patch_size, None if proj is None else proj.shape[-1]),
                              ("num_channels", config.num_channels, None if proj is None else proj.shape[1]),
                              ("intermediate_size", config.intermediate_size, None if fc1 is None else fc1.shape[0])):
        if held is not None and said != held:
            raise CheckpointError(f"{where}: config.json {field} {said} does not match the weights ({held}); "
                                  "fix config.json or give the matching weights")
    pre = sd.get("pre_logits.fc.weight")
    head = sd.get("head.weight")
    return describe_dims(width=config.hidden_size, depth=config.num_hidden_layers, heads=config.num_attention_heads,
                         mlp_dim=config.intermediate_size, patch=config.patch_size, hybrid=None,
                         res=config.image_size, pool="token",
                         representation_size=int(pre.shape[0]) if pre is not None else None,
                         num_classes=int(head.shape[0]) if head is not None else 0, where=where,
                         norm_eps=config.layer_norm_eps, in_chans=config.num_channels)


def read_hf(tensors: dict[str, torch.Tensor], config: HfConfig, preprocessing: Normalisation, where: str) -> dict:
    """Pretrained fields of an HF ViT: timm-named state dict, model description, label names, norm."""
    check_config(config, where)
    sd, notes = to_timm(tensors, config, where)
    for note in notes:
        log.warning("%s: %s", where, note)
    return {"state_dict": sd, "model": describe_hf(sd, config, where), "label_names": _label_names(config),
            "recipe": {"data": data_norm(preprocessing)}}


def hf_config(desc: dict, label_names: list[str] | None, has_pooler: bool) -> dict:
    """config.json of the `transformers` ViT that holds a vit model (see `from_timm`)."""
    classes = desc["num_classes"]
    names = label_names or [f"LABEL_{i}" for i in range(classes)]
    res = desc["res"]
    config = {
        "architectures": ["ViTForImageClassification" if classes else "ViTModel"], "model_type": "vit",
        "hidden_size": desc["width"], "num_hidden_layers": desc["depth"], "num_attention_heads": desc["heads"],
        "intermediate_size": desc["mlp_dim"], "hidden_act": "gelu", "layer_norm_eps": desc.get("norm_eps", 1e-6),
        "image_size": res[0] if res[0] == res[1] else list(res), "patch_size": desc["patch"],
        "num_channels": desc.get("in_chans", 3),
        "qkv_bias": True, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
    }
    if has_pooler:
        config.update(pooler_output_size=desc["representation_size"], pooler_act="tanh")
    return config


def from_timm(sd: dict[str, torch.Tensor], depth: int, prefix: str) -> dict[str, torch.Tensor]:
    """vit/timm tensors to HF names; `prefix` is "vit." for ViTForImageClassification, "" for ViTModel."""
    out = {f"{prefix}{hf}": sd[timm_name] for hf, timm_name in _TOP if timm_name in sd}
    for i in range(depth):
        src, dst = f"blocks.{i}.", f"{prefix}encoder.layer.{i}."
        for hf, timm_name in _BLOCK:
            for kind in ("weight", "bias"):
                out[f"{dst}{hf}.{kind}"] = sd[f"{src}{timm_name}.{kind}"]
        for kind in ("weight", "bias"):
            for name, part in zip(("query", "key", "value"), sd[f"{src}attn.qkv.{kind}"].chunk(3)):
                out[f"{dst}attention.attention.{name}.{kind}"] = part
    if "head.weight" in sd:
        out["classifier.weight"], out["classifier.bias"] = sd["head.weight"], sd["head.bias"]
    return {k: v.contiguous() for k, v in out.items()}

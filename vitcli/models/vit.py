"""The paper's ViT on timm's modules, plus the one thing timm dropped: the tanh pre-logits layer.

State-dict keys are timm's own, with `pre_logits.fc.*` only when a representation layer is configured, so
timm checkpoints load here unchanged and our checkpoints load into `timm.create_model`.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Any

import timm
import torch
from timm.layers import HybridEmbed, StdConv2dSame, trunc_normal_
from timm.models.resnetv2 import ResNetV2
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vitcli.recipe.config import ModelCfg
from vitcli.models import posemb as pe
from vitcli.models.attention import Attention
from vitcli.models.masked import Corruption, corrupt
from vitcli.models.positions import PositionTables
from vitcli.models.variants import (
    LAYERED_POSEMB,
    POSEMB_WHERE,
    R50_LAYERS,
    Variant,
    buildable,
    timm_family,
)


TIMM_EPS = 1e-6  # LayerNorm eps of timm's ViT (and the paper's); a timm config.json cannot set another


class PreLogits(nn.Sequential):
    """The paper's representation layer: Linear then tanh, between the pooled token and the head."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(OrderedDict(fc=nn.Linear(in_features, out_features), act=nn.Tanh()))


class ViT(PositionTables, VisionTransformer):
    """timm's VisionTransformer with an optional tanh pre-logits layer (`representation_size`) and the
    paper's other position embeddings (`posemb`, added where `posemb_where` says: models/positions.py).

    `forward_head(x, pre_logits=True)` returns the input of the head, i.e. the tanh output when the layer
    exists: that is the representation the paper's few-shot evaluation fits on.
    """

    def __init__(self, *, representation_size: int | None = None, posemb: str = "learned",
                 posemb_where: str = "stem", **kwargs: Any) -> None:
        if posemb not in pe.KINDS:
            raise ValueError(f"unknown position embedding {posemb!r}; valid: {', '.join(pe.KINDS)}")
        if posemb_where not in POSEMB_WHERE or posemb_where != "stem" and posemb not in LAYERED_POSEMB:
            raise ValueError(f"position embeddings {posemb!r} cannot be added at {posemb_where!r}; valid: "
                             f"{', '.join(POSEMB_WHERE)} for {' or '.join(LAYERED_POSEMB)}, else stem")
        if posemb not in ("learned", "sincos2d"):
            kwargs["pos_embed"] = "none"  # timm holds no table; ours (if any) is added in _pos_embed
        super().__init__(**kwargs)
        self.representation_size = representation_size
        self.posemb, self.posemb_where = posemb, posemb_where
        self._attach_posemb()
        self.mask_token: nn.Parameter | None = None  # masked patch prediction only (enable_masked_patch)
        self.mpp_head: nn.Linear | None = None
        # Re-register the head after pre_logits so printing the model follows the data flow.
        head = self.head
        del self.head
        if representation_size:
            self.pre_logits = PreLogits(self.embed_dim, representation_size)
            _init_linear(self.pre_logits.fc)
            self.head_hidden_size = representation_size
            head = self._new_head(self.num_classes)
        else:
            self.pre_logits = nn.Identity()
        self.head = head

    def _new_head(self, num_classes: int) -> nn.Module:
        if num_classes <= 0:
            return nn.Identity()
        ref = self.pre_logits.fc.weight
        head = nn.Linear(self.head_hidden_size, num_classes, device=ref.device, dtype=ref.dtype)
        _init_linear(head)
        return head

    def enable_masked_patch(self, outputs: int) -> None:
        """Add the parts of masked patch prediction: the learnable [mask] embedding and a linear head of
        `outputs` predictions per corrupted patch (`forward(x, corruption=...)`)."""
        device = next(self.parameters()).device
        self.mask_token = nn.Parameter(trunc_normal_(torch.empty(1, 1, self.embed_dim, device=device), std=0.02))
        self.mpp_head = nn.Linear(self.embed_dim, outputs, device=device)
        _init_linear(self.mpp_head)

    def forward(self, x: torch.Tensor, corruption: Corruption | None = None) -> torch.Tensor:
        """Class logits; with `corruption`, the masked-patch predictions (M, outputs) of the M corrupted
        patches in batch order. One entry point, so DDP and FSDP see both kinds of step."""
        if corruption is None:
            return super().forward(x)
        if self.mpp_head is None:
            raise RuntimeError("masked patch prediction needs enable_masked_patch() first")
        x = corrupt(self.patch_embed(x), self.mask_token, corruption)
        x = self._pos_embed(x)
        x = self.norm_pre(self.patch_drop(x))
        x = self.norm(self._encode(x))
        return self.mpp_head(x[:, self.num_prefix_tokens:][corruption.selected])

    def forward_features(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                         is_causal: bool = False) -> torch.Tensor:
        """timm's, with the position tables of every block added to its input (`posemb_where`)."""
        if self.posemb_where == "stem":
            return super().forward_features(x, attn_mask=attn_mask, is_causal=is_causal)
        x = self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))
        return self.norm(self._encode(x, attn_mask, is_causal))

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head (timm API); the new head reads the pre-logits output when there is one."""
        super().reset_classifier(num_classes, global_pool)
        if self.representation_size:
            self.head = self._new_head(num_classes)
            self.head.train(self.training)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, normalise, then pre-logits and head; `pre_logits=True` stops before the head."""
        x = self.pool(x)
        x = self.fc_norm(x)
        x = self.head_drop(x)
        x = self.pre_logits(x)
        return x if pre_logits else self.head(x)


class DistilledViT(ViT, VisionTransformerDistilled):
    """DeiT's distilled ViT on vit's model: a distillation token after the class token and a second head on
    it; the output is the mean of both heads, as DeiT evaluates (timm's `VisionTransformerDistilled`)."""

    forward_head = VisionTransformerDistilled.forward_head


def _init_linear(layer: nn.Linear) -> None:
    # Same scheme timm uses for every other Linear of the model, so a fresh model is uniform.
    trunc_normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)


# ModelCfg's parts of timm's other ViTs and their "off" values: a description names only those switched on.
EXTRAS = {"fc_norm": False, "init_values": None, "reg_tokens": 0, "no_embed_class": False, "distilled": False}


def timm_kwargs(v: Variant, cfg: ModelCfg, num_classes: int) -> dict[str, Any]:
    """Architecture arguments of timm's VisionTransformer (JSON-able) for a variant and config."""
    mlp_ratio = v.mlp_dim / v.width  # exact for every variant resolve_variant accepts
    token = cfg.pool == "token"
    return {
        "img_size": list(cfg.res),
        "patch_size": 1 if v.hybrid else v.patch,
        "embed_dim": v.width,
        "depth": v.depth,
        "num_heads": v.heads,
        "mlp_ratio": mlp_ratio,
        "num_classes": num_classes,
        "global_pool": "token" if token else "avg",
        "class_token": token,
        **({"in_chans": cfg.in_chans} if cfg.in_chans != 3 else {}),
        # The paper's GAP normalises all tokens and then averages (timm's default for avg is the reverse,
        # fc_norm, which MAE's checkpoints have).
        "fc_norm": cfg.fc_norm,
        **({"pos_embed": "none"} if cfg.posemb == "none" else {}),
        **({"init_values": cfg.init_values} if cfg.init_values else {}),
        **({"reg_tokens": cfg.reg_tokens} if cfg.reg_tokens else {}),
        **({"no_embed_class": True} if cfg.no_embed_class else {}),
    }


def _r50_embed(v: Variant, in_chans: int) -> partial:
    """Patch embedding of the hybrids: ResNet-50 features at stride 16/32, built like timm's."""
    backbone = ResNetV2(
        layers=R50_LAYERS[v.patch],
        num_classes=0,
        global_pool="",
        in_chans=in_chans,
        preact=False,
        stem_type="same",
        conv_layer=partial(StdConv2dSame, eps=1e-8),
    )
    return partial(HybridEmbed, backbone=backbone)


def build_model(cfg: ModelCfg, num_classes: int) -> ViT:
    """Build the ViT described by `cfg` with a `num_classes` head (0: no head).

    `dropout` is the paper's dropout (after the position embedding, in MLP and projection layers).
    `head_init="zero"` gives the paper's fine-tuning head: zero weights and a constant bias.
    """
    v, _ = buildable(cfg)  # one RecipeError naming the fields, before timm's bare assertions
    kwargs = timm_kwargs(v, cfg, num_classes)
    if v.hybrid:
        kwargs["embed_layer"] = _r50_embed(v, cfg.in_chans)
    model = (DistilledViT if cfg.distilled else ViT)(
        representation_size=cfg.representation_size,
        posemb=cfg.posemb,
        posemb_where=cfg.posemb_where,
        pos_drop_rate=cfg.dropout,
        proj_drop_rate=cfg.dropout,
        attn_drop_rate=cfg.attn_dropout,
        drop_path_rate=cfg.drop_path,
        norm_layer=partial(nn.LayerNorm, eps=cfg.norm_eps),  # timm's own default, with the recipe's eps
        attn_layer=Attention,  # timm's, with fp32 attention for bf16 on CPU (models/attention.py)
        **kwargs,
    )
    if cfg.head_init == "zero" and num_classes > 0:
        with torch.no_grad():
            for head in (model.head, getattr(model, "head_dist", None)):
                if head is not None:
                    head.weight.zero_()
                    head.bias.fill_(cfg.head_bias)
    return model


def _timm_name(v: Variant, res: tuple[int, int], distilled: bool = False) -> str:
    """The closest registered timm name; `timm_kwargs` pins every dimension, so the name only sets the
    architecture family (plain, DeiT's distilled class, or the R50 backbone with the right stage count)."""
    size = timm_family(v)
    r = 384 if res == (384, 384) else 224
    if distilled:
        name, fallback = f"deit_{size}_distilled_patch16_{r}", "deit_base_distilled_patch16_224"
    elif v.hybrid:
        name = f"vit_{size}_r50_s{v.patch}_{r}"
        fallback = "vit_base_r50_s16_224" if v.patch == 16 else "vit_large_r50_s32_224"
    else:
        name, fallback = f"vit_{size}_patch{v.patch}_{r}", "vit_base_patch16_224"
    return name if timm.is_model(name) else fallback


def describe(cfg: ModelCfg, num_classes: int) -> dict[str, Any]:
    """A JSON-able description of the model `build_model(cfg, num_classes)` makes.

    `ModelCfg(name=d["name"], width=d["width"], ...)` rebuilds the same variant, and, when
    `representation_size` is None and timm holds its position embedding (`positions.not_in_timm`),
    `timm.create_model(d["timm_name"], **d["timm_kwargs"])` builds a timm
    model with identical state-dict keys and shapes.
    """
    v, _ = buildable(cfg)
    return {
        "name": cfg.name,
        "variant": v.name,
        "width": v.width,
        "depth": v.depth,
        "heads": v.heads,
        "mlp_dim": v.mlp_dim,
        "patch": v.patch,
        "hybrid": v.hybrid,
        "res": list(cfg.res),
        "pool": cfg.pool,
        "representation_size": cfg.representation_size,
        "posemb": cfg.posemb,
        "posemb_where": cfg.posemb_where,
        "norm_eps": cfg.norm_eps,
        **({"in_chans": cfg.in_chans} if cfg.in_chans != 3 else {}),  # absent: RGB, as before it could vary
        **{key: getattr(cfg, key) for key, off in EXTRAS.items() if getattr(cfg, key) != off},
        "num_classes": num_classes,
        "timm_name": _timm_name(v, cfg.res, cfg.distilled),
        "timm_kwargs": timm_kwargs(v, cfg, num_classes),
    }


def param_groups_no_decay(model: nn.Module) -> set[str]:
    """Names of parameters that weight decay must skip: biases, norm scales, position embeddings, tokens.

    Any parameter with fewer than two dimensions is a bias or a norm scale; timm's `no_weight_decay()`
    adds the embeddings, which are 3-D.
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    return {n for n, p in model.named_parameters() if p.ndim <= 1 or n in skip}

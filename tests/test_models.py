"""Variants, parameter/MAC arithmetic and the timm-compatible ViT (tiny models, CPU or meta device)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode
from conftest import tiny

from vitcli.recipe.config import ModelCfg
from vitcli.errors import RecipeError
from vitcli.models import (
    Variant,
    build_model,
    count_params,
    describe,
    grid,
    macs,
    param_groups_no_decay,
    resolve_variant,
    seq_len,
    zoo,
)


def numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def images(res=(32, 32), n=2) -> torch.Tensor:
    return torch.randn(n, 3, *res, generator=torch.Generator().manual_seed(0))


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Ti/16", Variant("Ti/16", 192, 12, 3, 768, 16)),
        ("S/32", Variant("S/32", 384, 12, 6, 1536, 32)),
        ("B/16", Variant("B/16", 768, 12, 12, 3072, 16)),
        ("L/16", Variant("L/16", 1024, 24, 16, 4096, 16)),
        ("H/14", Variant("H/14", 1280, 32, 16, 5120, 14)),
        ("Ti/4", Variant("Ti/4", 192, 12, 3, 768, 4)),
        ("b/16", Variant("B/16", 768, 12, 12, 3072, 16)),
        ("ViT-L/32", Variant("L/32", 1024, 24, 16, 4096, 32)),
        ("R50+B/16", Variant("R50+B/16", 768, 12, 12, 3072, 16, "r50")),
        ("R50+L/32", Variant("R50+L/32", 1024, 24, 16, 4096, 32, "r50")),
    ],
)
def test_paper_names(name, expected):
    assert resolve_variant(ModelCfg(name=name)) == expected


@pytest.mark.parametrize(
    "name, paper",
    [
        ("vit_base_patch16_224", "B/16"),
        ("vit_small_patch16_384", "S/16"),
        ("vit_tiny_patch16_224", "Ti/16"),
        ("vit_large_patch32_384", "L/32"),
        ("vit_huge_patch14_224", "H/14"),
        ("vit_base_patch8_224.augreg_in21k", "B/8"),
        ("vit_base_r50_s16_384", "R50+B/16"),
        ("vit_large_r50_s32_384", "R50+L/32"),
    ],
)
def test_timm_names(name, paper):
    assert resolve_variant(ModelCfg(name=name)) == resolve_variant(ModelCfg(name=paper))


def test_overrides_rename_and_keep_mlp_ratio():
    v = resolve_variant(tiny())
    assert (v.width, v.depth, v.heads, v.mlp_dim, v.patch) == (64, 2, 2, 256, 8)
    assert v.name == "Ti/8 (width=64, depth=2, heads=2, mlp_dim=256)"
    assert resolve_variant(ModelCfg(name="B/16", patch=32)).name == "B/32"
    assert resolve_variant(ModelCfg(name="B/16", mlp_dim=1000)).mlp_dim == 1000


@pytest.mark.parametrize(
    "cfg, fragments",
    [
        (ModelCfg(name="B16"), ["model.name: unknown variant 'B16'", "did you mean 'B/16'?", "valid:"]),
        (ModelCfg(name="vit_bsae_patch16_224"), ["did you mean 'vit_base_patch16_224'?"]),
        (ModelCfg(name="vit_large_patch14_clip_224"), ["unknown variant", "timm name"]),
        (ModelCfg(name="R50+B/8"), ["model.patch: 8", "valid: 16 or 32"]),
        (ModelCfg(name="B/16", heads=5), ["model.heads: 5 does not divide model.width 768"]),
    ],
)
def test_bad_models_are_one_line_recipe_errors(cfg, fragments):
    with pytest.raises(RecipeError) as err:
        resolve_variant(cfg)
    msg = str(err.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg


def test_zoo_is_resolvable_and_ordered_by_size():
    variants = zoo()
    assert [v.name for v in variants][:3] == ["Ti/16", "S/32", "S/16"]
    paper = {"B/16", "B/32", "L/16", "L/32", "H/14", "B/8", "R50+B/16", "R50+L/32"}
    assert paper <= {v.name for v in variants}
    for v in variants:
        assert resolve_variant(ModelCfg(name=v.name)) == v


def test_variants_module_does_not_import_torch():
    code = "import sys, vitcli.models; vitcli.models.zoo(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- grids, parameters, MACs ----------------------------------------------------------------------


def test_grid_and_seq_len():
    b16 = resolve_variant(ModelCfg(name="B/16"))
    assert grid(b16, (384, 384)) == (24, 24)
    assert grid(b16, (224, 320)) == (14, 20)
    assert seq_len(b16, (224, 224)) == 197
    assert seq_len(b16, (224, 224), class_token=False) == 196
    assert grid(resolve_variant(ModelCfg(name="R50+L/32")), (384, 384)) == (12, 12)


def test_indivisible_res_names_nearest_sizes():
    with pytest.raises(RecipeError, match=r"model.res: 225 is not divisible by the patch size 16 of B/16; "
                                          r"nearest valid: 224 or 240"):
        grid(resolve_variant(ModelCfg(name="B/16")), (225, 225))
    with pytest.raises(RecipeError, match="nearest valid: 16$"):
        grid(resolve_variant(ModelCfg(name="B/16")), (224, 10))


@pytest.mark.parametrize("name, millions", [("B/16", 86), ("L/16", 307), ("H/14", 632)])
def test_table1_param_counts(name, millions):
    n = count_params(resolve_variant(ModelCfg(name=name)), num_classes=1000)
    assert abs(n / 1e6 - millions) / millions < 0.015


@pytest.mark.parametrize("name", ["B/16", "R50+B/16"])
def test_analytic_params_equal_real_model(name):
    cfg = ModelCfg(name=name)
    with torch.device("meta"):
        model = build_model(cfg, 1000)
    assert numel(model) == count_params(resolve_variant(cfg), 1000)


@pytest.mark.parametrize(
    "cfg, num_classes",
    [
        (tiny(), 10),
        (tiny(pool="gap"), 10),
        (tiny(representation_size=48), 10),
        (tiny(res=(32, 48)), 0),
        (tiny(mlp_dim=96, heads=4), 7),
    ],
)
def test_analytic_params_equal_real_model_tiny(cfg, num_classes):
    model = build_model(cfg, num_classes)
    v = resolve_variant(cfg)
    assert numel(model) == count_params(v, num_classes, cfg.res, cfg.pool, cfg.representation_size)


def test_hybrid_params_match_timm():
    v = resolve_variant(ModelCfg(name="R50+B/16"))
    # timm's vit_base_r50_s16_384 (1000 classes, 24x24 grid) has 98,950,952 parameters.
    assert count_params(v, 1000, (384, 384)) == 98_950_952


def test_macs_b16():
    b16 = resolve_variant(ModelCfg(name="B/16"))
    assert abs(macs(b16, (224, 224)) / 1e9 - 17.5) < 0.2
    assert macs(b16, (384, 384)) > 3 * macs(b16, (224, 224))


@pytest.mark.parametrize("cfg", [ModelCfg(name="B/16"), ModelCfg(name="R50+B/16"), tiny(res=(32, 48))])
def test_macs_equal_torch_flop_counter(cfg):
    with torch.device("meta"):
        model = build_model(cfg, 1000).eval()
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(1, 3, *cfg.res))
    assert counter.get_total_flops() == 2 * macs(resolve_variant(cfg), cfg.res, 1000)


# --- the model ------------------------------------------------------------------------------------


def test_timm_state_dict_loads_unchanged_and_outputs_match():
    torch.manual_seed(0)
    ref = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10
    ).eval()
    model = build_model(tiny(), 10).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_bf16_training_on_cpu_runs_attention_in_fp32_and_matches_timm(monkeypatch):
    torch.manual_seed(0)
    ref = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10
    )
    model = build_model(tiny(), 10)
    model.load_state_dict(ref.state_dict(), strict=True)
    x = images()
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.dtype, torch.is_autocast_enabled("cpu")))
        return sdpa(q, k, v, *args, **kwargs)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = ref(x)
        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
        out = model(x)
    assert seen == [(torch.float32, False)] * 2  # both blocks, fp32 inputs, autocast off inside
    assert out.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.float(), rtol=0.05, atol=0.05)
    out.float().sum().backward()  # gradients flow through the upcast
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    seen.clear()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)  # inference: the bf16 forward kernel is the fast one
    assert seen == [(torch.bfloat16, True)] * 2


def test_describe_is_json_and_rebuilds_in_timm():
    cfg = tiny(res=(32, 48), pool="gap")
    desc = json.loads(json.dumps(describe(cfg, 10)))
    ref = timm.create_model(desc["timm_name"], pretrained=False, **desc["timm_kwargs"]).eval()
    model = build_model(cfg, 10).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = images((32, 48))
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
    dims = {k: desc[k] for k in ("width", "depth", "heads", "mlp_dim", "patch")}
    again = ModelCfg(name=desc["name"], **dims)
    assert resolve_variant(again) == resolve_variant(cfg)


def test_describe_hybrid_matches_timm_keys():
    cfg = ModelCfg(name="R50+L/32", res=(384, 384))
    desc = describe(cfg, 1000)
    assert desc["timm_name"] == "vit_large_r50_s32_384"
    with torch.device("meta"):
        ref = timm.create_model(desc["timm_name"], **desc["timm_kwargs"])
        model = build_model(cfg, 1000)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in ref.state_dict().items()}


@pytest.mark.slow  # weight-standardised convs make even a 32px ResNet-50 take seconds on CPU
def test_tiny_hybrid_runs_and_loads_timm_weights():
    cfg = ModelCfg(name="R50+Ti/16", res=(32, 32), depth=1)
    desc = describe(cfg, 5)
    ref = timm.create_model(desc["timm_name"], **desc["timm_kwargs"]).eval()
    model = build_model(cfg, 5).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_representation_size_adds_tanh_pre_logits():
    model = build_model(tiny(representation_size=48), 10).eval()
    keys = model.state_dict().keys()
    assert {"pre_logits.fc.weight", "pre_logits.fc.bias"} <= set(keys)
    assert model.head.in_features == 48
    x = images()
    with torch.no_grad():
        feats = model.forward_features(x)
        rep = model.forward_head(feats, pre_logits=True)
        expected = torch.tanh(model.pre_logits.fc(feats[:, 0]))
        torch.testing.assert_close(rep, expected)
        torch.testing.assert_close(model(x), model.head(rep))
    assert rep.shape == (2, 48)
    model.reset_classifier(3)
    assert model.head.in_features == 48 and model(x).shape == (2, 3)


def test_no_representation_means_identity_pre_logits():
    model = build_model(tiny(), 10)
    assert isinstance(model.pre_logits, torch.nn.Identity)
    assert not any(k.startswith("pre_logits") for k in model.state_dict())


def test_zero_head_init():
    model = build_model(tiny(head_init="zero", head_bias=-2.0), 10).eval()
    assert torch.all(model.head.weight == 0)
    with torch.no_grad():
        assert torch.all(model(images()) == -2.0)


def test_gap_pooling_has_no_class_token():
    cfg = tiny(pool="gap")
    model = build_model(cfg, 10).eval()
    assert model.cls_token is None and model.global_pool == "avg"
    assert model.pos_embed.shape == (1, 16, 64)
    x = images()
    with torch.no_grad():
        feats = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean(1))


def test_non_square_res_builds_and_runs():
    model = build_model(tiny(res=(32, 48)), 10).eval()
    assert tuple(model.patch_embed.grid_size) == (4, 6)
    with torch.no_grad():
        assert model(images((32, 48))).shape == (2, 10)


def test_regularisation_rates_reach_timm_modules():
    model = build_model(tiny(dropout=0.1, attn_dropout=0.2, drop_path=0.3), 10)
    block = model.blocks[-1]
    assert model.pos_drop.p == 0.1 and block.mlp.drop1.p == 0.1 and block.attn.proj_drop.p == 0.1
    assert block.attn.attn_drop.p == 0.2 and block.attn.fused_attn
    assert block.drop_path1.drop_prob == pytest.approx(0.3)


def test_no_decay_names():
    model = build_model(tiny(representation_size=32), 10)
    names = param_groups_no_decay(model)
    assert {"pos_embed", "cls_token", "head.bias", "blocks.0.norm1.weight", "pre_logits.fc.bias"} <= names
    assert not names & {"blocks.0.attn.qkv.weight", "head.weight", "patch_embed.proj.weight"}


def test_bad_res_is_a_recipe_error_at_build():
    with pytest.raises(RecipeError, match="nearest valid: 32 or 40"):
        build_model(tiny(res=(33, 32)), 10)


# --- what a recipe check knows of the model before building it ----------------------------------------


@pytest.mark.parametrize("pool", ["token", "gap"])
@pytest.mark.parametrize("posemb", ["learned", "none", "learned_2d", "relative_2d", "sincos2d"])
@pytest.mark.parametrize("representation_size, masked", [(None, False), (16, False), (None, True)])
@pytest.mark.parametrize("where", ["stem", "every_layer", "every_layer_shared"])
def test_parameter_roots_are_the_built_models(pool, posemb, representation_size, masked, where):
    _same_roots(tiny(pool=pool, posemb=posemb, representation_size=representation_size, posemb_where=where), masked)


@pytest.mark.parametrize("extra", [{"fc_norm": True, "pool": "gap"}, {"reg_tokens": 2}, {"distilled": True},
                                   {"no_embed_class": True, "reg_tokens": 1}, {"init_values": 0.1},
                                   {"in_chans": 1}])
@pytest.mark.parametrize("posemb", ["learned", "learned_2d"])
def test_parameter_roots_follow_timms_other_vits(extra, posemb):
    _same_roots(tiny(posemb=posemb, **extra), masked=False)


def _same_roots(cfg, masked: bool) -> None:
    from vitcli.models.variants import mpp_outputs
    from vitcli.models.variants import LAYERED_POSEMB, parameter_roots

    if cfg.posemb_where != "stem" and cfg.posemb not in LAYERED_POSEMB:
        pytest.skip("no table to add to every layer (the recipe check refuses it)")
    model = build_model(cfg, 0 if masked else 10)
    if masked:
        model.enable_masked_patch(mpp_outputs("mean_color", 8))
    built = tuple(sorted({name.split(".")[0] for name, _ in model.named_parameters()}))
    assert parameter_roots(cfg, head=not masked, masked=masked) == built


@pytest.mark.parametrize("changes, problem", [
    ({"posemb": "sincos2d", "width": 66, "heads": 3}, "model.posemb: sincos2d needs a width divisible by 4, got 66"),
    ({"posemb": "learned_2d", "width": 33, "heads": 3}, "model.posemb: learned_2d needs a width divisible by 2"),
    ({"width": 7, "heads": 7, "mlp_dim": 61}, "model.mlp_dim: 61 cannot be expressed as a ratio of width 7"),
    ({"heads": 3}, "model.heads: 3 does not divide model.width 64"),
    ({"res": (30, 32)}, "model.res: 30 is not divisible by the patch size 8"),
])
def test_what_cannot_be_built_is_refused_by_the_arithmetic_and_by_the_build(changes, problem):
    from vitcli.models.variants import buildable

    with pytest.raises(RecipeError, match=problem):
        buildable(tiny(**changes))  # what `vit recipe check` calls, without torch or data
    with pytest.raises(RecipeError, match=problem):
        build_model(tiny(**changes), 10)

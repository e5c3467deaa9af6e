"""`--from` in every format a ViT checkpoint comes in: Google .npz, Hugging Face transformers, timm hub
folders and hub names. Each checkpoint is written here by its own framework (or, for .npz, with the
vit_jax array names from a timm model); vit's logits must equal that framework's on the same batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from foreign import randomise, write_npz
from typer.testing import CliRunner

from vitcli.recipe import assembly
from vitcli.cli import app
from vitcli.recipe.config import ModelCfg
from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter
from vitcli.weights.restore import restore
from vitcli.models import build_model
from vitcli.weights import convert, reader

TINY = {"name": "Ti/4", "res": (16, 16), "width": 32, "depth": 2, "heads": 2, "mlp_dim": 64}
BATCH = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
runner = CliRunner()


def vit_forward(source: reader.Pretrained, x: torch.Tensor = BATCH) -> torch.Tensor:
    """What `vit eval` / `vit fewshot` run: the recipe assembled from the checkpoint, its model, a forward."""
    options = ["data.source=builtin:digits", "eval.weights=raw"]
    cfg = assembly.from_checkpoint(source, None, options, [], assembly.EVALUATE)
    model, _ = restore(source, cfg.model, weights=cfg.eval.weights)
    with torch.no_grad():
        return model.eval()(x)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


def one_line_error(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# -- Google .npz -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("pool", "rep", "layout"), [("token", None, "vit_jax"), ("gap", None, "big_vision"),
                                                     ("token", 24, "vit_jax"), ("gap", 24, "vit_jax"),
                                                     ("gap", None, "big_vision_scan"),
                                                     ("token", None, "big_vision")])
def test_npz_logits_equal_the_model_that_wrote_it(tmp_path, pool, rep, layout):
    src = randomise(build_model(ModelCfg(**TINY, pool=pool, representation_size=rep), 5))
    path = write_npz(src, tmp_path / "ViT-Ti_4.npz", big_vision=layout != "vit_jax", stacked=layout.endswith("scan"))
    source = reader.read(path)
    desc = source.model
    assert (desc["pool"], desc["representation_size"], desc["heads"], desc["num_classes"]) == (pool, rep, 2, 5)
    assert source.recipe == {"data": {"norm": "paper"}}
    with torch.no_grad():
        assert max_diff(vit_forward(source), src(BATCH)) <= 1e-4


def test_npz_finetune_drops_the_pre_logits_layer_and_head(tmp_path):
    src = randomise(build_model(ModelCfg(**TINY, representation_size=24), 5))
    path = write_npz(src, tmp_path / "pre.npz")
    cfg = assembly.from_checkpoint(reader.read(path), None, [], ["data.source=builtin:digits"], assembly.FINETUNE)
    assert cfg.model.representation_size is None and cfg.train.init_from == str(path)
    model, _ = restore(reader.read(cfg.train.init_from), cfg.model, new_head=4, weights="raw")
    assert not any(k.startswith("pre_logits.") for k in model.state_dict())
    torch.testing.assert_close(model.state_dict()["blocks.1.mlp.fc2.weight"], src.state_dict()["blocks.1.mlp.fc2.weight"])


def test_vit_finetune_from_an_npz_runs(tmp_path, tiny_data):
    src = randomise(build_model(ModelCfg(**TINY, representation_size=24), 5))
    path = write_npz(src, tmp_path / "ViT-Ti_4.npz")
    sets = [f"data.source={tiny_data}", "train.batch_size=16", "train.steps=2", "schedule.warmup_steps=1",
            "train.precision=fp32", "train.checkpoint_every=0", "data.workers=0"]
    result = runner.invoke(app, ["finetune", "--from", str(path), "--out", str(tmp_path / "ft"),
                                 *[a for item in sets for a in ("--set", item)]])
    assert result.exit_code == 0, result.output
    assert "head not loaded: 4 tensors of head/pre_logits dropped, new head kept" in result.output
    assert reader.read(tmp_path / "ft").model["representation_size"] is None


@pytest.mark.slow
def test_npz_r50_hybrid_logits_equal(tmp_path):
    src = randomise(build_model(ModelCfg(**{**TINY, "name": "R50+Ti/16", "res": (32, 32), "depth": 1}), 3))
    for module in src.modules():  # random GroupNorm scales blow the 50 layers up to inf
        if isinstance(module, torch.nn.GroupNorm):
            torch.nn.init.ones_(module.weight)
            torch.nn.init.zeros_(module.bias)
    source = reader.read(write_npz(src, tmp_path / "R50+ViT-Ti_16.npz"))
    assert source.model["hybrid"] == "r50" and source.model["patch"] == 16
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert max_diff(vit_forward(source, x), src(x)) <= 1e-4


def test_npz_missing_array_is_one_line(tmp_path):
    src = randomise(build_model(ModelCfg(**TINY), 5))
    path = write_npz(src, tmp_path / "cut.npz", drop=("Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias",))
    line = one_line_error("fewshot", "--from", path)
    assert f"{path}: missing array 'Transformer/encoderblock_1/MlpBlock_3/Dense_1/bias'" in line


def test_npz_of_unknown_layout_is_one_line(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, **{"conv1/kernel": np.zeros((3, 3, 3, 8), np.float32)})
    assert "unknown .npz layout: no 'embedding/kernel' array (found conv1/kernel)" in one_line_error(
        "eval", "--from", path)
    src = randomise(build_model(ModelCfg(**TINY), 5))
    map_head = tmp_path / "map.npz"
    np.savez(map_head, **{"MAPHead_0/probe": np.zeros((1, 1, 32), np.float32)}, **{
        "embedding/kernel": src.patch_embed.proj.weight.detach().numpy().transpose(2, 3, 1, 0)})
    assert "MAP head" in one_line_error("eval", "--from", map_head)


# -- Hugging Face transformers -----------------------------------------------------------------------------
def _hf_model(cls_name: str, tmp_path: Path, **config):
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=16, patch_size=4, layer_norm_eps=1e-6, **config)
    model = getattr(transformers, cls_name)(cfg)
    return randomise(model)


@pytest.mark.parametrize("what", ["folder", "model.safetensors", "pytorch_model.bin", "sharded"])
def test_hf_classifier_logits_and_labels(tmp_path, what):
    labels = {0: "cat", 1: "dog", 2: "eel"}
    hf = _hf_model("ViTForImageClassification", tmp_path, id2label=labels, label2id={v: k for k, v in labels.items()})
    hf.save_pretrained(tmp_path, **({"max_shard_size": "20KB"} if what == "sharded" else {}))
    if what == "sharded":
        assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
        what = "model.safetensors.index.json"
    if what == "pytorch_model.bin":  # the older format on the hub, with the same (legacy) names
        from safetensors.torch import load_file

        torch.save(load_file(str(tmp_path / "model.safetensors")), tmp_path / what)
        (tmp_path / "model.safetensors").unlink()
    source = reader.read(tmp_path if what == "folder" else tmp_path / what)
    assert source.label_names == ["cat", "dog", "eel"] and source.model["num_classes"] == 3
    with torch.no_grad():
        assert max_diff(vit_forward(source), hf(pixel_values=BATCH).logits) <= 1e-4
    if what.endswith(".index.json"):  # the folder finds the index too
        assert reader.read(tmp_path).state_dict.keys() == source.state_dict.keys()


def test_hf_vitmodel_pooler_is_the_pre_logits_layer(tmp_path):
    hf = _hf_model("ViTModel", tmp_path)
    hf.save_pretrained(tmp_path)
    source = reader.read(tmp_path)
    assert source.model["representation_size"] == 32 and source.model["num_classes"] == 0
    assert source.label_names is None  # transformers' placeholder names (LABEL_0, ...) are not class names
    with torch.no_grad():  # no head: vit's output is the tanh pre-logits features, HF's pooler_output
        assert max_diff(vit_forward(source), hf(pixel_values=BATCH).pooler_output) <= 1e-4
    cfg = assembly.from_checkpoint(source, None, [], ["data.source=builtin:digits"], assembly.FINETUNE)
    assert cfg.model.representation_size is None  # fine-tuning drops it, as the paper does


def test_hf_layer_norm_eps_is_kept_for_eval_finetuning_and_export(tmp_path, tiny_data):
    """transformers' default eps (1e-12), not timm's (1e-6): vit computes what transformers computes."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)  # transformers' own initialisation, which leaves the norms' inputs small
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=16, patch_size=4, num_labels=3)
    assert config.layer_norm_eps == 1e-12
    hf = transformers.ViTForImageClassification(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    source = reader.read(tmp_path / "hf")
    assert source.model["norm_eps"] == 1e-12
    with torch.no_grad():
        expected = hf(pixel_values=BATCH).logits
        assert max_diff(vit_forward(source), expected) <= 1e-5
        at_timm = build_model(convert.model_cfg(source.model, norm_eps=1e-6), 3).eval()
        at_timm.load_state_dict(source.state_dict)
        assert max_diff(at_timm(BATCH), expected) > 1e-5  # what running it at timm's eps got wrong
    sets = [f"data.source={tiny_data}", "train.batch_size=16", "train.steps=2", "schedule.warmup_steps=1",
            "train.precision=fp32", "train.checkpoint_every=0", "data.workers=0"]
    cfg = assembly.from_checkpoint(source, None, [], sets, assembly.FINETUNE)
    assert cfg.model.norm_eps == 1e-12
    jobs.train(cfg, tmp_path / "ft", log=Reporter(enabled=False))
    assert json.loads((tmp_path / "ft" / "recipe.json").read_text())["model"]["norm_eps"] == 1e-12
    assert reader.read(tmp_path / "ft").model["norm_eps"] == 1e-12
    assert all(m.eps == 1e-12 for m in jobs_model(tmp_path / "ft").modules() if isinstance(m, torch.nn.LayerNorm))
    result = runner.invoke(app, ["export", str(tmp_path / "hf"), "--format", "hf", "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    again = transformers.ViTForImageClassification.from_pretrained(tmp_path / "again").eval()
    assert again.config.layer_norm_eps == 1e-12
    with torch.no_grad():
        assert max_diff(again(pixel_values=BATCH).logits, expected) <= 1e-5
    result = runner.invoke(app, ["export", str(tmp_path / "hf"), "--format", "timm", "--out", str(tmp_path / "timm"),
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert "LayerNorm eps 1e-12: timm's config.json cannot name it" in json.loads(result.stdout.splitlines()[-1])[
        "not_carried"]


@pytest.mark.parametrize("eps", ["tiny", -1.0, 0.5, None])
def test_hf_layer_norm_eps_that_is_no_epsilon_is_one_line(tmp_path, eps):
    _hf_model("ViTModel", tmp_path).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "layer_norm_eps": eps}))
    line = one_line_error("export", tmp_path, "--format", "onnx", "--out", tmp_path / "out")
    assert f"config.json: layer_norm_eps: expected a LayerNorm epsilon in (0, 0.1], e.g. 1e-12 (transformers' default) " \
           f"or 1e-6 (the paper's), got {eps!r}" in line
    assert not (tmp_path / "out").exists()


def jobs_model(run: Path) -> torch.nn.Module:
    source = reader.read(run)
    cfg = assembly.from_checkpoint(source, None, ["data.source=builtin:digits"], [], assembly.EVALUATE)
    return restore(source, cfg.model, weights=cfg.eval.weights)[0]


@pytest.mark.parametrize(("model_type", "extra"), [("deit", {}), ("swin", {}), ("beit", {}), ("vit-hybrid", {})])
def test_hf_config_of_another_model_type_is_one_line(tmp_path, model_type, extra):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, **extra}))
    torch.save({"x": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    assert f"model_type {model_type!r} is not supported" in one_line_error("eval", "--from", tmp_path)


# -- timm hub folders ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["token", "avg"])
def test_timm_hub_folder_needs_no_model_name(tmp_path, pool):
    import timm
    from timm.models._hub import save_for_hf

    src = randomise(timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
        num_classes=3, global_pool=pool, class_token=pool == "token", fc_norm=False))
    save_for_hf(src, tmp_path, safe_serialization=True, model_config={"label_names": ["a", "b", "c"]})
    source = reader.read(tmp_path)
    assert source.model["heads"] == 2 and "guessed" not in source.model  # model_args say
    assert source.model["pool"] == ("token" if pool == "token" else "gap") and source.label_names == ["a", "b", "c"]
    with torch.no_grad():
        assert max_diff(vit_forward(source), src(BATCH)) <= 1e-4


def test_timm_model_of_another_family_is_one_line(tmp_path):
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                              pre_norm=True)  # CLIP's norm before the blocks: not among the parts vit builds
    save_file(model.state_dict(), str(tmp_path / "clip.safetensors"))
    assert "norm_pre" in one_line_error("eval", "--from", tmp_path / "clip.safetensors")


def test_a_config_json_of_another_tool_does_not_hide_the_shapes(tmp_path):
    from safetensors.torch import save_file

    src = randomise(build_model(ModelCfg(**{**TINY, "name": "S/4", "width": 384, "depth": 12, "heads": 6,
                                            "mlp_dim": 1536}), 2))
    save_file(src.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"trained_with": "something else"}))
    desc = reader.read(tmp_path).model
    assert (desc["variant"], desc["heads"], "guessed" in desc) == ("S/4", 6, False)  # the paper's S: 6 heads

"""What vit writes for other tools: a run's config.json as a timm hub config, and `vit export --format
timm|hf|onnx`. Each export is loaded by the tool it is for (timm, transformers, onnxruntime), whose
outputs must equal vit's on the same batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CLASSES
from foreign import randomise, write_npz
from test_weights_formats import BATCH, max_diff, one_line_error
from typer.testing import CliRunner

from vitcli.cli import app
from vitcli.recipe.config import ModelCfg
from vitcli.models import build_model
from vitcli.weights import convert, reader

runner = CliRunner()


def vit_model(path) -> torch.nn.Module:
    source = reader.read(path)
    model = build_model(convert.model_cfg(source.model), source.model["num_classes"])
    model.load_state_dict(source.state_dict)
    return model.eval()


def export(path, fmt: str, out: Path) -> dict:
    result = runner.invoke(app, ["export", str(path), "--format", fmt, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_run_config_is_a_timm_hub_config(tiny_run):
    import timm
    from timm.data import resolve_data_config

    config = json.loads((tiny_run / "config.json").read_text())
    pcfg = config["pretrained_cfg"]
    assert pcfg["input_size"] == [3, 16, 16] and pcfg["num_classes"] == 4 and pcfg["label_names"] == CLASSES
    assert (pcfg["mean"], pcfg["std"], pcfg["crop_pct"]) == ([0.5] * 3, [0.5] * 3, 1.0)  # data.norm: paper
    expected = vit_model(tiny_run)(BATCH)
    for model in (timm.create_model(f"local-dir:{tiny_run}", pretrained=True),
                  timm.create_model(config["architecture"], pretrained=True, **config["model_args"],
                                    pretrained_cfg_overlay={**pcfg, "file": str(tiny_run / "model.safetensors")})):
        data = resolve_data_config({}, model=model)  # what timm's inference script uses
        assert (tuple(data["input_size"]), tuple(data["mean"]), data["crop_pct"]) == ((3, 16, 16), (0.5,) * 3, 1.0)
        with torch.no_grad():
            assert max_diff(model.eval()(BATCH), expected) <= 1e-4


def test_export_hf_loads_in_transformers_with_the_same_logits(tiny_run, tmp_path):
    import transformers

    result = export(tiny_run, "hf", tmp_path / "hf")
    assert result["not_carried"] is None and result["files"][0] == "model.safetensors"
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert [hf.config.id2label[i] for i in range(4)] == CLASSES
    with torch.no_grad():
        expected = vit_model(tiny_run)(BATCH)
        assert max_diff(hf(pixel_values=BATCH).logits, expected) <= 1e-4
        assert max_diff(vit_model(tmp_path / "hf")(BATCH), expected) <= 1e-4  # and vit reads it back


def test_export_onnx_runs_in_onnxruntime_with_the_same_logits(tiny_run, tmp_path):
    import onnxruntime

    export(tiny_run, "onnx", tmp_path / "onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"pixel_values": BATCH.numpy()})
    with torch.no_grad():
        assert max_diff(torch.from_numpy(logits), vit_model(tiny_run)(BATCH)) <= 1e-4


@pytest.fixture
def pre_logits_npz(tmp_path) -> Path:
    return write_npz(randomise(build_model(ModelCfg(name="Ti/4", res=(16, 16), width=32, depth=2, heads=2,
                                                    mlp_dim=64, representation_size=24), 5)), tmp_path / "pre.npz")


def test_export_hf_keeps_pre_logits_as_the_pooler_and_says_the_head_is_dropped(pre_logits_npz, tmp_path):
    import transformers

    result = runner.invoke(app, ["export", str(pre_logits_npz), "--format", "hf", "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0 and "not carried: the head: transformers' classifier reads" in result.output
    hf = transformers.ViTModel.from_pretrained(tmp_path / "hf").eval()
    model = vit_model(pre_logits_npz)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(BATCH), pre_logits=True)
        assert max_diff(hf(pixel_values=BATCH).pooler_output, features) <= 1e-4


def test_export_timm_drops_pre_logits_and_head_and_says_so(pre_logits_npz, tmp_path):
    import timm

    result = export(pre_logits_npz, "timm", tmp_path / "timm")
    assert "timm's ViT has no pre-logits layer" in result["not_carried"]
    timm_model = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    model = vit_model(pre_logits_npz)
    with torch.no_grad():
        assert max_diff(timm_model(BATCH), model.forward_features(BATCH)[:, 0]) <= 1e-4


def test_export_refusals_are_one_line(tiny_run, tmp_path):
    gap = write_npz(randomise(build_model(ModelCfg(name="Ti/4", res=(16, 16), width=32, depth=1, heads=2, mlp_dim=64,
                                                   pool="gap"), 3)), tmp_path / "gap.npz")
    assert "a GAP model (no class token) cannot be carried" in one_line_error(
        "export", gap, "--format", "hf", "--out", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert "already exists and is not an empty directory" in one_line_error(
        "export", tiny_run, "--format", "timm", "--out", tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert "--format 'tflite': valid: timm, hf, onnx" in one_line_error("export", tiny_run, "--format", "tflite")


def test_export_writes_only_into_out(tiny_run, tmp_path):
    before = sorted(p.relative_to(tiny_run.parent) for p in tiny_run.parent.rglob("*"))
    export(tiny_run, "timm", tmp_path / "timm")
    assert sorted(p.relative_to(tiny_run.parent) for p in tiny_run.parent.rglob("*")) == before
    assert sorted(p.name for p in (tmp_path / "timm").iterdir()) == ["README.md", "config.json", "model.safetensors"]  # README.md: the model card
    assert convert.default_export_dir(str(tiny_run), reader.read(tiny_run), "hf") == tiny_run.parent / "run-hf"


def test_export_onnx_without_the_onnx_package_is_one_line(tiny_run, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if `pip install 'vitcli[export]'` had not been run
    line = one_line_error("export", tiny_run, "--format", "onnx", "--out", tmp_path / "onnx")
    assert "--format onnx needs the onnx package" in line and "pip install 'vitcli[export]'" in line
    assert not (tmp_path / "onnx").exists()

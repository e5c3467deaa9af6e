"""A 1-channel (grayscale) model through every command: pretrain, fine-tune at a higher resolution,
evaluate, predict, few-shot, inspect, export to timm and onnx. Images are read as PIL's "L"; predict's top-1 is eval's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import invoke, one_json, tiny_recipe
from PIL import Image

CLASSES = ("dark", "light", "left", "right")


def _image(kind: str, rng: np.random.Generator) -> np.ndarray:
    pixels = rng.integers(0, 60, (16, 16)).astype(np.int32)
    if kind == "light":
        pixels += 170
    elif kind == "left":
        pixels[:, :8] += 190
    elif kind == "right":
        pixels[:, 8:] += 190
    return pixels.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory) -> Path:
    """train/ and test/ of four classes of 16x16 grey PNGs (mode L) that a tiny ViT separates quickly."""
    root = tmp_path_factory.mktemp("grey")
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("test", 6)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(_image(name, rng), mode="L").save(root / split / name / f"{i}.png")
    return root


def test_a_grayscale_model_through_every_command(grey_folder, tmp_path):
    recipe = tmp_path / "grey.yaml"
    data = tiny_recipe(f"imagefolder:{grey_folder}", model={"in_chans": 1},
                       data={"mean": [0.45], "std": [0.3]}, train={"steps": 24})
    recipe.write_text(yaml.safe_dump(data))
    assert invoke("pretrain", recipe, "--out", tmp_path / "pre").exit_code == 0
    config = json.loads((tmp_path / "pre" / "config.json").read_text())
    assert config["pretrained_cfg"]["input_size"] == [1, 16, 16]
    assert (config["pretrained_cfg"]["mean"], config["pretrained_cfg"]["std"]) == ([0.45], [0.3])
    assert config["model_args"]["in_chans"] == 1

    result = invoke("finetune", "--from", tmp_path / "pre", "--res", "24", "--out", tmp_path / "ft",
                    "--set", "train.steps=24", "--set", "train.precision=fp32", "--set", "data.workers=0",
                    "--set", "train.batch_size=16", "--set", "schedule.warmup_steps=2")
    assert result.exit_code == 0, result.output
    report = one_json(invoke("eval", "--from", tmp_path / "ft", "--json", "--set", "train.precision=fp32"))
    assert report["res"] == [24, 24] and report["images"] == 24
    assert report["top1"] >= 0.5, report  # four classes: chance is 0.25

    predicted = one_json(invoke("predict", "--from", tmp_path / "ft", grey_folder / "test", "--top-k", "1",
                                "--json", "--set", "train.precision=fp32"))
    right = sum(Path(row["path"]).parent.name == row["top"][0]["label"] for row in predicted["predictions"])
    assert right / len(predicted["predictions"]) == report["top1"]

    few = invoke("fewshot", "--from", tmp_path / "ft", "--shots", "2", "--seeds", "1", "--json")
    assert few.exit_code == 0, few.output
    shown = invoke("inspect", "--from", tmp_path / "ft", "--images", grey_folder / "test" / "left" / "0.png",
                   "--out", tmp_path / "inspect")
    assert shown.exit_code == 0, shown.output
    for fmt in ("timm", "onnx"):
        out = tmp_path / f"ft-{fmt}"
        assert invoke("export", tmp_path / "ft", "--format", fmt, "--out", out).exit_code == 0
    import timm

    model = timm.create_model(f"local-dir:{tmp_path / 'ft-timm'}", pretrained=True).eval()
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        timm_out = model(x)
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(tmp_path / "ft-onnx" / "model.onnx"))
    onnx_out = session.run(None, {"pixel_values": x.numpy()})[0]
    assert np.abs(onnx_out - timm_out.numpy()).max() < 1e-4

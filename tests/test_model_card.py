"""Every run and every export writes a README.md that huggingface_hub reads as a model card."""

from __future__ import annotations

import json

from conftest import tiny_recipe
from huggingface_hub import ModelCard
from typer.testing import CliRunner

from vitcli import recipe
from vitcli.cli import app


def test_a_run_and_its_exports_carry_a_model_card(tmp_path, tiny_data):
    path = tmp_path / "tiny.yaml"
    path.write_text(recipe.to_yaml(recipe.from_data(tiny_recipe(tiny_data, train={"steps": 3}), "test")))
    out = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(app, ["pretrain", str(path), "--out", str(out)]).exit_code == 0
    card = ModelCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "timm" and "image-classification" in meta["tags"]
    top1 = json.loads((out / "results.json").read_text())["top1"]
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"][0]["value"] == top1 and result["dataset"]["split"] == "test"
    assert f"## Reproduce\n\n```bash\nvit pretrain {path}\n```" in card.text and "red, green, blue, grey" in card.text
    for fmt, library in (("hf", "transformers"), ("timm", "timm")):
        exported = tmp_path / f"export-{fmt}"
        done = runner.invoke(app, ["export", str(out), "--format", fmt, "--out", str(exported)])
        assert done.exit_code == 0, done.output
        card = ModelCard.load(exported / "README.md")
        assert card.data.library_name == library and f"--format {fmt}" in card.text
        assert card.data.to_dict()["model-index"][0]["results"][0]["metrics"][0]["value"] == top1

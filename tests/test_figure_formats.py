"""Figures for a paper: PDF and SVG that open, PNG at the asked DPI, the numbers beside vit eval's figure,
curves as lines (a lone evaluation as a marker with its value), confusion rows as fractions."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

from conftest import tiny_recipe
from PIL import Image
from typer.testing import CliRunner

from vitcli import recipe
from vitcli.cli import app
from vitcli.engine.evaluate import figures


def test_eval_out_writes_pdf_svg_or_png_at_the_dpi_and_the_numbers_beside(tmp_path, tiny_data):
    path = tmp_path / "tiny.yaml"
    path.write_text(recipe.to_yaml(recipe.from_data(tiny_recipe(tiny_data, train={"steps": 2}), "test")))
    runner = CliRunner()
    assert runner.invoke(app, ["pretrain", str(path), "--out", str(tmp_path / "run"), "-q"]).exit_code == 0
    for fmt in ("pdf", "svg", "png"):
        out = tmp_path / fmt
        result = runner.invoke(app, ["eval", "--from", str(tmp_path / "run"), "--out", str(out), "--format", fmt,
                                     "--dpi", "200", "-q", "--json"])
        assert result.exit_code == 0, result.output
        figure = out / f"confusion_matrix.{fmt}"
        data = figure.read_bytes()
        if fmt == "pdf":
            assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF") and b"/Type /Page" in data
        elif fmt == "svg":
            assert ET.fromstring(data).tag.endswith("svg")
        else:
            with Image.open(figure) as image:
                assert image.size == (6 * 200, 6 * 200)  # 6 inches (4 classes) at --dpi 200
        numbers = json.loads((out / "eval.json").read_text())
        assert numbers["top1"] == json.loads(result.stdout)["top1"]
        assert numbers["confusion_matrix"]["counts"] and numbers["confusion_matrix"]["classes"] == \
            ["red", "green", "blue", "grey"]


def test_a_lone_evaluation_is_a_marker_with_its_value(tmp_path):
    rows = [{"step": s, "loss": 2.0 / s, "lr": 0.1} for s in range(1, 31)] + [{"step": 30, "eval/top1": 0.625}]
    fig_path = figures.learning_curves(rows, tmp_path / "curves.svg")
    with figures.style("svg"):
        svg = figures.learning_curves(rows, tmp_path / "curves.png").read_text()
    assert fig_path.suffix == ".png" and "0.625" in svg and "(smoothed)" in svg


def test_confusion_rows_are_fractions_of_each_true_class(tmp_path):
    counts = [[90, 10], [1, 0]]  # a rare class must not vanish next to a common one
    with figures.style("svg"):
        svg = figures.confusion_matrix(counts, ["$\\undefined$", "b"], tmp_path / "cm").read_text()
    cells = re.findall(r">(\d+)</text>", svg)
    assert "% of each true class" in svg and cells[:4] == ["90", "10", "100", "0"]  # the rare class: 1 of 1
    assert svg.count("$\\undefined$") == 2  # a class name drawn as written (both axes), never as mathtext

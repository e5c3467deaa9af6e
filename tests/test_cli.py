"""The command line through Typer's CliRunner: help texts, the zoo table, recipe show/check, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import invoke

from vitcli.cli import app

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", ["pretrain", "finetune", "eval", "fewshot", "models", "bench", "recipe show",
                                     "recipe check"])
def test_every_command_has_help_with_examples(command):
    result = invoke(*command.split(), "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert "Usage" in result.output


def test_top_level_help_lists_every_command():
    import re

    import typer

    result = invoke("--help")
    assert result.exit_code == 0, result.output
    names = set(typer.main.get_command(app).commands)
    assert {"pretrain", "finetune", "eval", "fewshot", "models", "bench", "recipe"} <= names
    # A command row of the help's command panel: the name, two or more spaces, then its summary.
    listed = set(re.findall(r"^\W*([a-z]+)  +\S", result.output.split("Commands", 1)[1], flags=re.MULTILINE))
    assert names <= listed, names - listed


def test_models_table_lists_the_paper_variants():
    result = invoke("models")
    assert result.exit_code == 0, result.output
    for name in ("Ti/16", "B/16", "L/16", "H/14", "R50+B/16"):
        assert name in result.output


def test_models_json_counts_and_resolution():
    out = json.loads(invoke("models", "--json", "--res", "384").output)
    assert out["res"] == [384, 384]  # a resolution is [h, w] in every command's JSON, never a string
    b16 = next(r for r in out["models"] if r["name"] == "B/16")
    assert b16["seq_len"] == 24 * 24 + 1
    assert abs(b16["params"] - 86e6) / 86e6 < 0.015
    # FLOPs grow faster than the token count because attention is quadratic in it.
    b16_224 = next(r for r in json.loads(invoke("models", "--json").output)["models"] if r["name"] == "B/16")
    assert b16["gflops"] / b16_224["gflops"] > 577 / 197


def test_models_marks_variants_the_resolution_does_not_fit():
    rows = json.loads(invoke("models", "--json", "--res", "384").output)["models"]
    assert next(r for r in rows if r["name"] == "H/14")["gflops"] is None


def test_models_bad_res_is_one_line_exit_2():
    result = invoke("models", "--res", "225")
    assert result.exit_code == 2
    assert "not divisible by the patch size" in result.output
    assert "Traceback" not in result.output


def test_recipe_show_prints_resolved_yaml_with_overrides():
    result = invoke("recipe", "show", ROOT / "recipes/imagenet1k/b16.yaml", "--set", "optim.lr=1e-3")
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["optim"]["lr"] == 1e-3
    assert data["model"]["name"] == "B/16"
    assert data["train"]["batch_size"] == 4096  # from base.yaml


def test_recipe_check_passes_every_shipped_recipe():
    files = sorted((ROOT / "recipes").rglob("*.yaml"))
    result = invoke("recipe", "check", *files)
    assert result.exit_code == 0, result.output


def test_recipe_check_stops_at_first_invalid(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("data:\n  source: builtin:digits\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  source: builtin:digits\ntrain:\n  batch_sise: 3\n")
    result = invoke("recipe", "check", good, bad)
    assert result.exit_code == 2
    assert "train.batch_sise: unknown key (did you mean 'batch_size'?)" in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if "error" in line]) == 1


def test_pretrain_missing_recipe_file_exit_2(tmp_path):
    result = invoke("pretrain", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "recipe file not found" in result.output

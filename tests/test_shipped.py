"""A first hour without surprises: shipped recipes by name, run directories the next command can type,
`vit --version`, and what a run records about itself. (The wheel install itself is checked by .ci/run.)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from conftest import invoke, tiny_recipe

from vitcli import __version__, recipe
from vitcli.engine.persistence.rundir import default_run_dir
from vitcli.recipe.assembly import data_name



def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"vit {__version__}\n"


@pytest.mark.parametrize("name", ["demo", "demo.yaml", "recipes/demo.yaml", "./recipes/demo.yaml"])
def test_a_shipped_recipe_is_found_by_name_from_any_folder(name):
    assert recipe.locate(name) == recipe.SHIPPED / "demo.yaml"  # the test runs in an empty tmp folder


def test_a_file_of_that_name_wins_over_the_shipped_recipe(tmp_path):
    (tmp_path / "demo.yaml").write_text("model: {name: B/16}\n")
    assert recipe.locate("demo.yaml") == Path("demo.yaml")


def test_recipe_show_and_list_use_the_package_not_the_checkout():
    shown = yaml.safe_load(invoke("recipe", "show", "cifar10/scratch").stdout)
    assert shown["run"]["name"] == "cifar10-scratch" and shown["model"]["name"] == "Ti/4"
    rows = json.loads(invoke("recipe", "list", "--json").stdout)
    names = [r["name"] for r in rows]
    assert {"demo", "cifar10/scratch", "finetune/default", "imagenet1k/b16"} <= set(names)
    demo = rows[names.index("demo")]
    assert Path(demo["path"]).is_file() and demo["about"].startswith("Expect: about 98%")
    table = invoke("recipe", "list").stdout
    assert "cifar10/scratch" in table and str(recipe.SHIPPED) in table


def test_an_unknown_recipe_name_suggests_a_shipped_one():
    result = invoke("recipe", "show", "demoo")
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: recipe file not found: demoo; no shipped recipe has that name either "
                                     "(did you mean 'demo'?); vit recipe list shows them")


def test_recipe_check_takes_directories_and_the_shipped_folder(tmp_path):
    # `recipes/**/*.yaml` without bash's globstar skips top-level files; a directory never does.
    result = invoke("recipe", "check", "recipes")  # no recipes/ here: the shipped folder, by that name
    assert result.exit_code == 0, result.output
    checked = [line.split()[-1] for line in result.stderr.splitlines()]
    assert "recipes/demo.yaml" in checked and "recipes/finetune/default.yaml" in checked
    assert len(checked) == len(recipe.shipped())
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "top.yaml").write_text("model: {name: B/16}\n")
    (mine / "sub" / "deep.yaml").write_text("model: {name: S/16}\n")
    result = invoke("recipe", "check", mine)
    assert result.exit_code == 0, result.output
    assert [line.split()[-1] for line in result.stderr.splitlines()] == [str(mine / "sub" / "deep.yaml"),
                                                                         str(mine / "top.yaml")]


def test_the_default_run_directory_is_runs_name_then_the_next_free_number(tmp_path):
    assert default_run_dir("demo") == Path("runs/demo")
    Path("runs/demo").mkdir(parents=True)
    assert default_run_dir("demo") == Path("runs/demo-2")
    Path("runs/demo-2").mkdir()
    assert default_run_dir("demo") == Path("runs/demo-3")
    assert default_run_dir("demo", resume=True) == Path("runs/demo")  # a resume continues, never a new name


def test_a_length_on_the_command_line_replaces_the_recipes_length_in_another_unit():
    cfg = recipe.load("demo", ["train.steps=20"])
    assert (cfg.train.steps, cfg.train.epochs) == (20, None)


@pytest.fixture(scope="module")
def pretrained(tiny_data, tmp_path_factory):
    """`vit pretrain RECIPE` with no --out, as a new user runs it: the run lands in runs/tiny."""
    folder = tmp_path_factory.mktemp("first-hour")
    (folder / "tiny.yaml").write_text(yaml.safe_dump(tiny_recipe(tiny_data, train={"steps": 3})))
    before = Path.cwd()
    os.chdir(folder)
    try:
        result = invoke("pretrain", "tiny.yaml")
        assert result.exit_code == 0, result.output
        finetuned = invoke("finetune", "--from", "runs/tiny", "--set", "train.steps=2", "--set", "train.batch_size=16",
                           "--set", "schedule.warmup_steps=1")
        assert finetuned.exit_code == 0, finetuned.output
    finally:
        os.chdir(before)
    return folder, result, finetuned


def test_a_default_run_says_where_it_is_and_records_time_date_version_and_command(pretrained):
    folder, result, _ = pretrained
    # datasets' own bars come first when it prepares a split for the first time in the process (test order)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("Generating ")]
    assert lines[0] == "run directory: runs/tiny"
    saved = json.loads((folder / "runs/tiny/results.json").read_text())
    assert saved["vit_version"] == __version__
    # The process's own argv: in-process that is pytest's (empty under a bare `python -m pytest`), so only
    # the program name is checked here; test_readme checks the whole command in a real run.
    assert saved["command"].split(" ")[0] == "vit"
    assert saved["date"].endswith("+00:00") and saved["date"][:4].isdigit()
    assert 0 < saved["train_s"] <= saved["wall_s"]
    assert isinstance(saved["images"], int) and saved["images"] == 32
    assert re.search(r"^trained 3 steps in \d+:\d\d$", result.stderr, flags=re.M)


def test_finetune_without_a_recipe_uses_the_shipped_defaults_and_names_the_run_after_its_source(pretrained):
    folder, _, finetuned = pretrained
    assert "run directory: runs/tiny-finetune" in finetuned.stderr
    saved = json.loads((folder / "runs/tiny-finetune/recipe.json").read_text())
    assert saved["optim"]["name"] == "sgd" and saved["model"]["head_init"] == "zero"  # finetune/default


def test_help_examples_and_recipe_headers_name_run_directories_a_default_run_gets():
    """`--from runs/X` in a help text or a recipe header must be where some shipped recipe's run lands."""
    import vitcli.cli as cli

    names = {recipe.load(row["path"]).run.name for row in recipe.shipped()}
    names |= {f"{name}-finetune" for name in names}  # vit finetune --from runs/NAME without a recipe
    texts = [cmd.callback.__doc__ or "" for group in (cli.app, cli.recipe_app)
             for cmd in group.registered_commands]
    texts += [Path(row["path"]).read_text() for row in recipe.shipped()]
    named = {m for text in texts for m in re.findall(r"runs/([\w.-]+)", text)}
    # vit pretrain --data SOURCE without a recipe: the run is named after the data
    names |= {data_name(m) for text in texts for m in re.findall(r"pretrain --data (\S+)", text)}
    assert named and named <= names, sorted(named - names)

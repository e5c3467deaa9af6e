"""Recipe parsing, inheritance, overrides, length resolution and every class of recipe error."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitcli import recipe
from vitcli.recipe.config import TrainCfg
from vitcli.recipe.length import resolve_steps
from vitcli.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


MINIMAL = "data:\n  source: builtin:digits\n"


def test_minimal_recipe_fills_defaults(tmp_path):
    cfg = recipe.load(write(tmp_path, "r.yaml", MINIMAL))
    assert cfg.data.source == "builtin:digits"
    assert cfg.model.res == (224, 224)
    assert cfg.run.name == "r"
    assert cfg.optim.b1 == 0.9 and cfg.optim.b2 == 0.999


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_validates(path):
    recipe.load(path)


def _header(path: Path) -> list[str]:
    """The comment block a recipe opens with, without the '# '."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return lines


BASES = {(p.parent / line.split(":", 1)[1].strip()).resolve() for p in RECIPES
         for line in p.read_text().splitlines() if line.startswith("base:")}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_recipe_header_names_a_runnable_command_and_its_expected_result(path):
    import shlex

    import typer

    from vitcli.recipe import assembly
    from vitcli.cli import app

    header = _header(path)
    assert header, f"{path}: no header comment"
    if path.resolve() in BASES and not header[0].startswith(("vit ", "torchrun ")):
        assert any("Not run on its own" in line for line in header), f"{path}: a base must say it is not run alone"
        return
    words = shlex.split(header[0])
    if words[0] == "torchrun":
        assert "-m" in words and words[words.index("-m") + 1] == "vitcli", header[0]
        words = words[words.index("-m") + 1:]
    assert words[0] in ("vit", "vitcli"), header[0]
    commands = typer.main.get_command(app).commands
    assert words[1] in commands, f"{path}: '{words[1]}' is not a vit command"
    ctx = commands[words[1]].make_context(words[1], words[2:])  # parses every option as `vit` would
    named = ctx.params.get("path")
    if named is None:  # the command's default recipe (vit finetune without a RECIPE)
        default = {"finetune": assembly.FINETUNE.default_recipe, "pretrain": assembly.PRETRAIN_DEFAULT}[words[1]]
        assert path.resolve() == default.resolve(), header[0]
    else:
        assert (ROOT / named).is_file() and (ROOT / named).resolve() == path.resolve(), header[0]
        recipe.load(ROOT / named, ctx.params.get("sets") or [])  # its --set keys exist and their values fit
    assert any(line.startswith("Expect") for line in header), f"{path}: the header names no expected result"


def test_base_inheritance_child_overrides(tmp_path):
    write(tmp_path, "base.yaml", MINIMAL + "optim:\n  lr: 0.1\n  weight_decay: 0.3\nmodel:\n  name: S/16\n")
    child = write(tmp_path, "sub/child.yaml", "base: ../base.yaml\noptim:\n  lr: 0.01\n")
    cfg = recipe.load(child)
    assert cfg.optim.lr == 0.01 and cfg.optim.weight_decay == 0.3 and cfg.model.name == "S/16"
    assert cfg.run.name == "child"


def test_relative_paths_resolve_against_the_recipe_file(tmp_path):
    path = write(tmp_path, "a/r.yaml", "data:\n  source: ./local_data\n")
    assert recipe.load(path).data.source == str((tmp_path / "a" / "local_data").resolve())
    hub = write(tmp_path, "b/r.yaml", "data:\n  source: uoft-cs/cifar10\n")
    assert recipe.load(hub).data.source == "uoft-cs/cifar10"


def test_overrides_coerce_types_and_lists(tmp_path):
    path = write(tmp_path, "r.yaml", MINIMAL)
    cfg = recipe.load(path, ["optim.lr=3e-3", "fewshot.shots=[1,5]", "model.res=384x256", "train.ema=0.9999",
                             "train.precision=fp32"])
    assert cfg.optim.lr == pytest.approx(3e-3)
    assert cfg.fewshot.shots == (1, 5)
    assert cfg.model.res == (384, 256)
    assert cfg.train.ema == 0.9999
    assert cfg.train.precision == "fp32"
    sweep = recipe.load(path, ["optim.lr=[0.001,0.01]"])
    assert sweep.optim.lr == (0.001, 0.01)


def test_resolved_recipe_round_trips(tmp_path):
    cfg = recipe.load(write(tmp_path, "r.yaml", MINIMAL), ["model.res=48", "fewshot.shots=[2]"])
    again = recipe.load(write(tmp_path, "resolved.yaml", recipe.to_yaml(cfg)))
    assert again == cfg


@pytest.mark.parametrize("train, n, steps", [
    (TrainCfg(steps=7), 1000, 7),
    (TrainCfg(batch_size=100, epochs=2), 1000, 20),
    (TrainCfg(batch_size=100, epochs=1.5), 1050, 16),
    (TrainCfg(batch_size=64, examples=640), None, 10),
    (TrainCfg(), 1000, 0),
])
def test_training_length_resolves_to_steps(train, n, steps):
    assert resolve_steps(train, n) == steps


def test_epochs_on_a_stream_is_an_error():
    with pytest.raises(RecipeError, match="streaming"):
        resolve_steps(TrainCfg(epochs=1), None)


# Each bad recipe must give one line naming the file, the key path and what would be valid.
BAD = [
    ("unknown key", MINIMAL + "optim:\n  lrr: 0.1\n", r"optim\.lrr: unknown key \(did you mean 'lr'\?\); valid keys: 'name'"),
    ("unknown section", MINIMAL + "optimiser:\n  lr: 0.1\n", r"optimiser: unknown key \(did you mean 'optim'\?\)"),
    ("wrong type", MINIMAL + "train:\n  batch_size: many\n", r"train\.batch_size: expected a whole number, got 'many'"),
    ("bool type", MINIMAL + "train:\n  compile: 3\n", r"train\.compile: expected true or false, got 3"),
    ("bad choice", MINIMAL + "optim:\n  name: adma\n", r"optim\.name: 'adma' is not valid \(did you mean 'adam'\?\); choose one of 'adam', 'adamw', 'sgd'"),
    ("missing required", MINIMAL + "fewshot:\n  datasets:\n    - source: x\n", r"fewshot\.datasets\[0\]\.name: missing required field"),
    ("lr <= 0", MINIMAL + "optim:\n  lr: 0\n", r"optim\.lr: must be > 0, got 0"),
    ("res vs patch", MINIMAL + "model:\n  name: B/16\n  res: 225\n", r"225 is not divisible by the patch size 16 .*nearest valid: 224 or 240"),
    ("micro batch", MINIMAL + "train:\n  batch_size: 32\n  micro_batch: 5\n", r"train\.micro_batch: 5 does not divide train\.batch_size 32"),
    ("two lengths", MINIMAL + "train:\n  steps: 5\n  epochs: 1\n", r"train: give only one of steps, epochs or examples"),
    ("bad res", MINIMAL + "model:\n  res: big\n", r"model\.res: expected a resolution such as 384 or 384x256, got 'big'"),
    ("unknown model", MINIMAL + "model:\n  name: X/16\n", r"model\.name: unknown variant .X/16."),
    ("not a mapping", "- a\n- b\n", r"a recipe must be a mapping"),
    ("depth 0", MINIMAL + "model:\n  depth: 0\n", r"model\.depth: must be in \[1, 1024\], got 0"),
]


@pytest.mark.parametrize("label, text, message", BAD, ids=[b[0] for b in BAD])
def test_bad_recipes_give_one_line_naming_the_file_and_key(tmp_path, label, text, message):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(RecipeError, match=message) as info:
        recipe.load(path)
    text = str(info.value)
    assert "\n" not in text
    assert str(path) in text


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.yaml", "data:\n  source: [unclosed\nmodel:\n  name: B/16\n")
    with pytest.raises(RecipeError, match=rf"{path}:\d+:\d+: YAML syntax error"):
        recipe.load(path)


def test_base_cycle_is_named(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n" + MINIMAL)
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match=r"base: cycle in recipe inheritance: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        recipe.load(tmp_path / "a.yaml")


def test_missing_base_and_missing_file(tmp_path):
    path = write(tmp_path, "a.yaml", "base: nothere.yaml\n" + MINIMAL)
    with pytest.raises(RecipeError, match=r"a\.yaml: base: recipe file not found: .*nothere\.yaml"):
        recipe.load(path)
    with pytest.raises(RecipeError, match="recipe file not found"):
        recipe.load(tmp_path / "absent.yaml")


def test_override_errors_name_the_override(tmp_path):
    path = write(tmp_path, "r.yaml", MINIMAL)
    with pytest.raises(RecipeError, match=r"--set optim.lr=abc: optim\.lr: expected a number, got 'abc'"):
        recipe.load(path, ["optim.lr=abc"])
    with pytest.raises(RecipeError, match=r"--set optim.lrr=1: unknown key 'optim.lrr' \(did you mean 'lr'\?\)"):
        recipe.load(path, ["optim.lrr=1"])
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        recipe.load(path, ["optim.lr"])


FEWSHOT_SETS = MINIMAL + ("fewshot:\n  datasets:\n    - {name: a, source: hub/a}\n"
                          "    - {name: b, source: hub/b, test_split: val}\n")


def test_overrides_address_items_of_a_list_of_sections(tmp_path):
    path = write(tmp_path, "r.yaml", FEWSHOT_SETS)
    cfg = recipe.load(path, ["fewshot.datasets[1].source=other/b", "fewshot.datasets[0].train_split=train[:10%]"])
    assert [d.source for d in cfg.fewshot.datasets] == ["hub/a", "other/b"]
    assert cfg.fewshot.datasets[0].train_split == "train[:10%]" and cfg.fewshot.datasets[1].test_split == "val"
    whole = recipe.load(path, ["fewshot.datasets[0]={name: c, source: hub/c}"])
    assert whole.fewshot.datasets[0].name == "c"


@pytest.mark.parametrize("item, message", [
    ("fewshot.datasets[2].source=x", (r"'fewshot\.datasets\[2\]': index out of range, fewshot\.datasets has 2 "
                                      r"item\(s\); valid: 0 to 1")),
    ("optim.lr[0]=1", r"'optim\.lr' is not a list of sections; drop the \[0\]"),
    ("fewshot.datasets[x].source=y", r"'datasets\[x\]': expected a list index such as datasets\[0\]"),
    ("fewshot.datasets[0].sourc=y", r"unknown key 'fewshot\.datasets\[0\]\.sourc' \(did you mean 'source'\?\)"),
    ("fewshot.datasets[0].name=[1]", r"fewshot\.datasets\[0\]\.name: expected text"),
])
def test_bad_list_index_overrides_are_one_clear_error(tmp_path, item, message):
    path = write(tmp_path, "r.yaml", FEWSHOT_SETS)
    with pytest.raises(RecipeError, match=message) as info:
        recipe.load(path, [item])
    assert str(info.value).startswith(f"--set {item}: ") and "\n" not in str(info.value)


def test_list_index_into_an_empty_list_says_so(tmp_path):
    with pytest.raises(RecipeError, match=r"has 0 item\(s\); the recipe lists none; set the whole list instead"):
        recipe.load(write(tmp_path, "r.yaml", MINIMAL), ["fewshot.datasets[0].source=x"])


def test_one_normalisation_table_names_every_data_norm():
    import typing

    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD

    from vitcli.recipe.config import NORMS, DataCfg
    from vitcli.weights.arch import data_norm
    from vitcli.weights.external import Normalisation

    assert set(NORMS) == set(typing.get_args(typing.get_type_hints(DataCfg)["norm"]))
    # the numbers timm itself uses, so exported preprocessing matches timm's and transformers'
    assert NORMS == {"paper": (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD),
                     "imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)}
    assert data_norm(Normalisation(mean=(0.4850001, 0.456, 0.406)))["norm"] == "imagenet"
    assert data_norm(Normalisation())["norm"] == "paper"
    assert data_norm(Normalisation(mean=(0.48145466, 0.4578275, 0.40821073)))["norm"] == "paper"  # CLIP's: neither

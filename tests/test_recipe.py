"""Recipe parsing, inheritance, overrides, length resolution and every class of recipe error."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitcli import recipe
from vitcli.config import TrainCfg, resolve_steps
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


def test_shipped_recipes_open_with_their_command():
    for path in RECIPES:
        first = path.read_text().splitlines()[0]
        assert first.startswith("#"), path


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
                             "train.precision=fp32", "optim.lr=[0.001,0.01]"][:5])
    assert cfg.optim.lr == pytest.approx(3e-3)
    assert cfg.fewshot.shots == (1, 5)
    assert cfg.model.res == (384, 256)
    assert cfg.train.ema == 0.9999
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

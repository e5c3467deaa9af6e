"""Recipes: YAML files plus `--set` overrides, turned once into one checked, frozen `RecipeCfg`.

A recipe is data. `load` reads a file (or shipped name), `from_data` checks already-parsed data (a
checkpoint's stored recipe); both apply overrides, the length rule, the schema and every range check.
"""

from __future__ import annotations

from pathlib import Path

from vitcli.errors import RecipeError
from vitcli.recipe import ranges, schema
from vitcli.recipe.config import RecipeCfg
from vitcli.recipe.loader import deep_copy, read_with_bases, dump, merge, parse_yaml, to_yaml
from vitcli.recipe.length import one_length
from vitcli.recipe.overrides import Override, apply_override, given_key
from vitcli.recipe.shipped import SHIPPED, expand, locate, shipped

__all__ = ["Override", "RecipeCfg", "SHIPPED", "apply_override", "check_overrides", "dump", "expand", "from_data",
           "load", "locate",
           "merge", "given_key", "parse_yaml", "read", "shipped", "to_yaml"]


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RecipeCfg:
    """Read a recipe file (following `base:`), apply `KEY=VALUE` overrides, check it, return the config."""
    return from_data(read(path), str(path), overrides)


def read(path: str | Path) -> dict:
    """A recipe file (or shipped recipe name) as plain data, `base:` chain merged, relative paths resolved."""
    path = locate(path)
    data = read_with_bases(path, stack=())
    if not isinstance(data.setdefault("run", {}), dict):
        raise RecipeError(f"{path}: run: expected a mapping of keys (name, out), got {data['run']!r}")
    data["run"].setdefault("name", path.stem)
    return data


def from_data(data: dict, origin: str, overrides: list[str | Override] | tuple[str | Override, ...] = ()) -> RecipeCfg:
    """Build a checked config from already-parsed recipe data (e.g. a checkpoint's stored recipe).

    Each override is a `--set` item's text, or an `Override` (a command option makes one), so that an
    error names `--res big` or `--set optim.lr=0` rather than the recipe file.
    """
    data = deep_copy(data)
    given: dict[str, str] = {}
    for entry in overrides:
        override = Override.of(entry)
        given[apply_override(data, override)] = override.label
    one_length(data, given)
    cfg = schema.from_dict(data, origin)
    ranges.check(cfg, origin, given)
    return cfg


def check_overrides(items) -> None:
    """Each `--set` item's key and value checked against the schema alone, before any recipe is read (an
    item into a list of sections, `fewshot.datasets[0].source=...`, needs the recipe and is checked there)."""
    for item in items:
        given = given_key(item)
        if "[" not in (given[0] if given else item):
            apply_override({}, Override.of(item))

"""`--set KEY=VALUE` overrides: split, parsed as YAML, checked against the schema, applied to recipe data.

One override type: `Override` is the text a user gave (`KEY=VALUE`), or (text, what the user typed) when a
command option made it, so that an error names `--res big` rather than the `--set` it became.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from vitcli.errors import RecipeError, did_you_mean, one_of
from vitcli.recipe import schema
from vitcli.recipe.config import RecipeCfg
from vitcli.recipe.loader import NotYaml, Refused, parse_yaml

Override = str | tuple[str, str]  # "KEY=VALUE", or ("KEY=VALUE", "--res 384"): the option that gave it


LENGTH_KEYS = ("steps", "epochs", "examples")


def one_length(data: dict, named) -> None:
    """`--set train.steps=20` on a recipe that says `epochs: 40` means 20 steps, not a conflict: a length
    given on the command line (`named`: the dotted keys set) replaces the file's length in another unit."""
    given = [k for k in LENGTH_KEYS if f"train.{k}" in named]
    train = data.get("train")
    if given and isinstance(train, dict):
        for key in LENGTH_KEYS:
            if key not in given:
                train.pop(key, None)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (['a','b','c'], parsed value). The value is read as YAML (so lists work)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=3e-3")
    if "\x00" in item:
        raise RecipeError(f"--set {item!r}: contains a NUL byte")
    try:
        value = parse_yaml(text) if text.strip() else ""
    except Refused as exc:
        raise RecipeError(f"--set {short(item)}: {exc.problem}") from None
    except (NotYaml, RecursionError):
        value = text  # not YAML (e.g. "a:b"): keep it as text, the field's type decides
    return key.strip().split("."), value


def short(text: str, limit: int = 100) -> str:
    """An override as errors quote it: a value of thousands of characters is cut, not repeated whole."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def apply_override(data: dict, item: str, label: str | None = None) -> str:
    """Set one dotted key in recipe data, checking the key path against the config schema; returns the key.

    `label` is how errors name the override (default `--set KEY=VALUE`). A key may index a list of
    sections: `fewshot.datasets[0].source=...` sets a field of the first item.
    """
    label = label or f"--set {short(item)}"
    keys, value = parse_override(item)
    cls: Any = RecipeCfg
    node: Any = data
    for depth, part in enumerate(keys):
        key, index = _split_index(part, label)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        where = ".".join(keys[:depth] + [key])
        if key not in fields:
            raise RecipeError(
                f"--set {item}: unknown key '{where}'{did_you_mean(key, fields)}; valid: {one_of(fields)}"
            )
        hint = typing.get_type_hints(cls)[key]
        if index is not None:
            node, hint = _list_item(node, key, index, hint, label, where)
            key = index
        if depth == len(keys) - 1:
            # Coerce now so a bad value is reported as the --set that gave it, not as the recipe file.
            schema.coerce(value, hint, label, ".".join(keys))
            node[key] = value
            return ".".join(keys)
        cls = hint if dataclasses.is_dataclass(hint) else None
        if cls is None:
            raise RecipeError(f"--set {item}: '{'.'.join(keys[:depth + 1])}' has no sub-keys")
        if index is not None:  # an item of a list of sections: it must already be a mapping to set into
            node = node[key]
            if not isinstance(node, dict):
                raise RecipeError(f"{label}: '{where}[{index}]' is {node!r}, not a mapping of keys")
            continue
        child = node.get(key)
        node = node.setdefault(key, {}) if child is None or isinstance(child, dict) else {}


def _split_index(part: str, label: str) -> tuple[str, int | None]:
    """`datasets[0]` -> ('datasets', 0); `lr` -> ('lr', None)."""
    name, bracket, rest = part.partition("[")
    if not bracket:
        return part, None
    if not rest.endswith("]") or not rest[:-1].strip().isdigit():
        raise RecipeError(f"{label}: '{part}': expected a list index such as {name}[0]")
    return name, int(rest[:-1])


def _list_item(node: dict, key: str, index: int, hint: Any, label: str, where: str) -> tuple[list, Any]:
    """The list under `key` (to set item `index` in) and the type of its items; one error otherwise."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is not tuple or len(args) != 2 or args[1] is not Ellipsis \
            or not dataclasses.is_dataclass(args[0]):
        raise RecipeError(f"{label}: '{where}' is not a list of sections; drop the [{index}]")
    items = node.get(key) if isinstance(node, dict) else None
    count = len(items) if isinstance(items, list) else 0
    if index >= count:
        valid = f"valid: 0 to {count - 1}" if count else "the recipe lists none; set the whole list instead"
        raise RecipeError(f"{label}: '{where}[{index}]': index out of range, {where} has {count} "
                          f"item(s); {valid}")
    return items, args[0]

"""`--set KEY=VALUE` overrides: split, parsed as YAML, checked against the schema, applied to recipe data.

One override type: an `Override` is a dotted key, its value and how errors name it. A `--set` item is
split here once (`split_item`) and its value read as YAML; a command option (`--res 384`, `--seeds 3`)
makes one from its own typed value (`Override.option`), never from KEY=VALUE text, and errors name the
option rather than a `--set` it never was.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from vitcli.errors import RecipeError, did_you_mean, one_of
from vitcli.recipe import schema
from vitcli.recipe.config import RecipeCfg
from vitcli.recipe.loader import NotYaml, Refused, parse_yaml


def split_item(item: str) -> tuple[str, str] | None:
    """`KEY=VALUE` -> (KEY without surrounding spaces, VALUE as typed); None without '=' or KEY."""
    key, sep, text = item.partition("=")
    return (key.strip(), text) if sep and key.strip() else None


@dataclass(frozen=True)
class Override:
    """One change to recipe data: `key` (dotted; `fewshot.datasets[0].source` indexes a list) set to `value`."""

    key: str
    value: Any  # a --set's text read as YAML, or a command option's own value
    label: str  # how errors name it: "--set optim.lr=0.1" (cut when long) or the option, "--res 384"
    item: str  # the KEY=VALUE text (a --set as given), as errors about the key quote it

    @classmethod
    def parse(cls, item: str, label: str | None = None) -> "Override":
        """A `--set KEY=VALUE` item; the value is read as YAML (so lists work), else kept as text."""
        split = split_item(item)
        if split is None:
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=3e-3")
        if "\x00" in item:
            raise RecipeError(f"--set {item!r}: contains a NUL byte")
        key, text = split
        try:
            value = parse_yaml(text) if text.strip() else ""
        except Refused as exc:
            raise RecipeError(f"--set {short(item)}: {exc.problem}") from None
        except (NotYaml, RecursionError):
            value = text  # not YAML (e.g. "a:b"): keep it as text, the field's type decides
        return cls(key, value, label or f"--set {short(item)}", item)

    @classmethod
    def option(cls, key: str, value: Any, label: str) -> "Override":
        """A command option's value for recipe key `key`; `label` is the option as typed (`--res 384`)."""
        return cls(key, value, label, f"{key}={value}")

    @classmethod
    def of(cls, entry: "str | Override") -> "Override":
        """An override given either way: a `--set` item's text, or an Override made already."""
        return entry if isinstance(entry, Override) else cls.parse(entry)


def given_key(entry: "str | Override") -> tuple[str, Any] | None:
    """(key, value as given: a --set's raw text) of an override, without checking it; None when malformed."""
    if isinstance(entry, Override):
        return entry.key, entry.value
    return split_item(entry)


def short(text: str, limit: int = 100) -> str:
    """An override as errors quote it: a value of thousands of characters is cut, not repeated whole."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def apply_override(data: dict, override: Override) -> str:
    """Set one dotted key in recipe data, checking the key path against the config schema; returns the key.

    A key may index a list of sections: `fewshot.datasets[0].source=...` sets a field of the first item.
    """
    label, item, value = override.label, override.item, override.value
    keys = override.key.split(".")
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

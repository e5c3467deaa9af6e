"""Recipe files as data: the hardened YAML parser, `base:` inheritance, relative paths, and YAML out.

This is the only module that imports yaml. Every problem becomes a one-line `RecipeError` that names the
file (and line for syntax errors), the key and what would be valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vitcli import files
from vitcli.errors import RecipeError, did_you_mean, first_line
from vitcli.recipe import schema
from vitcli.recipe.config import RecipeCfg
from vitcli.data.ref import SourceRef
from vitcli.recipe.shipped import by_name, shipped


MAX_DEPTH = 32  # a recipe is sections of keys with short lists: anything deeper is a mistake or an attack
MAX_RECIPE_BYTES = 1 << 20


class Refused(yaml.MarkedYAMLError):
    """Valid YAML that a recipe may not hold (an alias, deep nesting, a duplicate key)."""


# What `parse_yaml` raises for text that is not YAML at all, named here so no other module imports yaml.
NotYaml = yaml.YAMLError


class _Loader(yaml.SafeLoader):
    """`yaml.safe_load` with three refusals: aliases (`*name`, which can expand a few hundred bytes
    into gigabytes), nesting deeper than MAX_DEPTH (Python's recursion limit would end in a traceback)
    and duplicate keys (YAML lets the last one win silently)."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise Refused(None, None, f"alias *{event.anchor} is not allowed in a recipe; "
                                              "write the value out (or share it with base:)", event.start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise Refused(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key (a list): the schema names it
                continue
            if first != key_node.start_mark.line + 1:
                raise Refused(
                    None, None, f"duplicate key {key!r} (first given on line {first}); give each key once",
                    key_node.start_mark)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str):
    """Parse YAML text as recipes are parsed (safe types only, no aliases, bounded depth, unique keys)."""
    line = _too_deep(text)
    if line is not None:
        # PyYAML's scanner is quadratic in bracket depth: refuse before it runs, not after seconds.
        raise Refused(None, None, f"nested deeper than {MAX_DEPTH} levels", yaml.Mark("", 0, line, 0, None, None))
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _too_deep(text: str) -> int | None:
    """The 0-based line where flow brackets ([ {) open deeper than MAX_DEPTH, ignoring quotes and comments."""
    depth, line, quote = 0, 0, ""
    for i, ch in enumerate(text):
        if ch == "\n":
            line += 1
            if not quote or quote == "#":
                quote = ""
        elif quote:
            if ch == quote and quote != "#" and text[i - 1] != "\\":
                quote = ""
        elif ch in "'\"" or (ch == "#" and (i == 0 or text[i - 1] in " \t\n")):
            quote = ch
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line
        elif ch in "]}":
            depth = max(0, depth - 1)
    return None


class _Dumper(yaml.SafeDumper):
    """Block-style mappings, with short lists of scalars (res, shots, lr sweeps) kept on one line."""


def _represent_list(dumper: yaml.SafeDumper, value: list):
    flow = all(not isinstance(v, (dict, list)) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def to_yaml(cfg: RecipeCfg) -> str:
    """The resolved recipe as YAML: every field, defaults included, loadable again with `load`."""
    return dump(schema.to_dict(cfg))


def dump(data: dict) -> str:
    """Recipe data (`schema.to_dict` of a config) as YAML; what a run's recipe.yaml holds."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def read_with_bases(path: Path, stack: tuple[Path, ...]) -> dict:
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise RecipeError(f"{path}: base: cycle in recipe inheritance: {chain}")
    data = _read_yaml(path, stack[-1] if stack else None)
    _resolve_paths(data, path.parent)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise RecipeError(f"{path}: base: expected a relative file path or a shipped recipe name, got {base!r}")
    beside = path.parent / base  # a file beside this one wins over a shipped recipe of the same name
    parent = read_with_bases(beside if beside.exists() else by_name(base) or beside, (*stack, resolved))
    return merge(without_replaced_length(parent, data), data)


def without_replaced_length(base: dict, child: dict) -> dict:
    """A child recipe that gives a training length replaces its base's, whatever the unit (`train.steps: 20`
    on a base of `train.epochs: 40` means 20 steps), as a length given with --set does."""
    from vitcli.recipe.length import LENGTH_KEYS, one_length

    train = child.get("train")
    if not isinstance(train, dict):
        return base
    base = deep_copy(base)
    one_length(base, {f"train.{k}" for k in LENGTH_KEYS if k in train})
    return base


def _read_yaml(path: Path, child: Path | None) -> dict:
    who = f"{child}: base: " if child else ""
    files.check_path(path, f"{who}recipe file", RecipeError)
    if not path.is_file():
        hint = " (is a directory)" if path.is_dir() else ""
        if child is None and not path.suffix and not path.is_dir():  # a name, not a file: offer the shipped ones
            names = [row["name"] for row in shipped()]
            hint = (f"; no shipped recipe has that name either{did_you_mean(path.as_posix(), names)}; "
                    "vit recipe list shows them")
        raise RecipeError(f"{who}recipe file not found: {path}{hint}")
    try:
        raw = files.read_bytes(path, follow=True, limit=MAX_RECIPE_BYTES, error=RecipeError)
        data = parse_yaml(raw.decode("utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        kind = "" if isinstance(exc, Refused) else "YAML syntax error: "
        raise RecipeError(f"{path}{line}: {kind}{exc.problem}") from None
    except (yaml.YAMLError, OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RecipeError(f"{path}: cannot read recipe: {first_line(exc, limit=200)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections (model, data, ...), got {type(data).__name__}")
    return data


def _resolve_paths(data: dict, folder: Path) -> None:
    """Make the recipe's paths (train.init_from, data sources) that are relative to its file absolute.

    A relative path in a recipe file is relative to that file, never to wherever the user happens to run
    `vit` from; paths given with --set are relative to the shell's cwd. Only explicit relative paths
    ("./x", "../x") are file paths: "org/name" stays a hub id.
    """
    train = data.get("train")
    if isinstance(train, dict) and isinstance(train.get("init_from"), str) \
            and train["init_from"].startswith(("./", "../")):
        train["init_from"] = str((folder / train["init_from"]).resolve())
    sources = [data.get("data")]
    fewshot = data.get("fewshot")
    if isinstance(fewshot, dict) and isinstance(fewshot.get("datasets"), list):
        sources += fewshot["datasets"]
    for entry in sources:
        if isinstance(entry, dict) and isinstance(entry.get("source"), str):
            entry["source"] = SourceRef.parse(entry["source"]).resolved(folder).text


def merge(base: dict, child: dict) -> dict:
    """Deep-merge two recipe dicts: the child's keys win, mappings merge, lists are replaced."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [deep_copy(v) for v in data]
    return data

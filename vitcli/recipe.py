"""YAML recipes: `base:` inheritance, `--set` overrides, checks, and the resolved recipe as YAML.

A recipe is data. This is the only module that parses YAML; it turns a file plus command-line overrides
into one frozen `RecipeCfg`, exactly once, and every problem becomes a one-line `RecipeError` that names
the file (and line for syntax errors), the key and what would be valid.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from vitcli import files, ranges, schema
from vitcli.config import RecipeCfg
from vitcli.errors import RecipeError, did_you_mean, one_of

# Keys whose values are paths: a relative path in a recipe file is relative to that file, never to
# wherever the user happens to run `vit` from. Paths given with --set are relative to the shell's cwd.
_PATH_KEYS = (("data", "source"), ("train", "init_from"))
SHIPPED = Path(__file__).resolve().parent / "recipes"  # package data: there after any kind of install


def locate(path: str | Path) -> Path:
    """The recipe file `path` names: the file itself when it exists, else a shipped recipe of that name.

    'demo', 'cifar10/scratch', 'finetune/cifar10_48.yaml' and 'recipes/demo.yaml' (the README's paths,
    typed outside a clone) all name shipped recipes; an existing file always wins.
    """
    path = Path(path)
    try:
        if path.exists():
            return path
    except (OSError, ValueError):  # a NUL byte or an over-long name: _read_yaml names the problem
        return path
    name = path.as_posix().removeprefix("./").removeprefix("recipes/")
    candidate = SHIPPED / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    return candidate if candidate.is_file() else path


def expand(paths) -> list[Path]:
    """Recipe files from files, shipped names and directories (every *.yaml below a directory, sorted).

    `recipes` or `recipes/finetune` outside a clone are the shipped folders, listed by those names.
    """
    out = []
    for path in map(Path, paths):
        shipped_dir = SHIPPED / path.as_posix().removeprefix("./").removeprefix("recipes").lstrip("/")
        if path.is_dir():
            found = sorted(path.rglob("*.yaml"))
            if not found:
                raise RecipeError(f"recipe check {path}: no recipe files (*.yaml) in this directory")
            out += found
        elif path.parts and path.parts[0] == "recipes" and shipped_dir.is_dir():
            out += [path / f.relative_to(shipped_dir) for f in sorted(shipped_dir.rglob("*.yaml"))]
        else:
            out.append(path)
    return out


def shipped() -> list[dict]:
    """The recipes that ship with vit: name, file and the first line of what their header says."""
    rows = []
    for file in sorted(SHIPPED.rglob("*.yaml")):
        name = file.relative_to(SHIPPED).with_suffix("").as_posix()
        rows.append({"name": name, "path": str(file), "about": _headline(file)})
    return rows


def _headline(file: Path, width: int = 72) -> str:
    """The first sentence of the header after the command that runs it, cut to `width` characters."""
    lines = []
    for line in file.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("# ").strip()
        if not (not lines and re.match(r"(\w+:\s*)?(vit|torchrun) ", text)):  # the command, maybe "then: vit ..."
            lines.append(text)
    text = " ".join(lines)
    for match in re.finditer(r"(\S+)\. ", text):
        if match.group(1).lstrip("(") not in ("al", "Sec", "e.g", "i.e", "vs", "Fig"):
            text = text[: match.end() - 2]
            break
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RecipeCfg:
    """Read a recipe file (following `base:`), apply `KEY=VALUE` overrides, check it, return the config."""
    return from_data(read(path), str(path), overrides)


def read(path: str | Path) -> dict:
    """A recipe file (or shipped recipe name) as plain data, `base:` chain merged, relative paths resolved."""
    path = locate(path)
    data = _read_with_bases(path, stack=())
    if not isinstance(data.setdefault("run", {}), dict):
        raise RecipeError(f"{path}: run: expected a mapping of keys (name, out), got {data['run']!r}")
    data["run"].setdefault("name", path.stem)
    return data


Override = str | tuple[str, str]  # "KEY=VALUE", or ("KEY=VALUE", "--res 384"): the option that gave it


def from_data(data: dict, origin: str, overrides: list[Override] | tuple[Override, ...] = ()) -> RecipeCfg:
    """Build a checked config from already-parsed recipe data (e.g. a checkpoint's stored recipe).

    Each override is a `--set` item, or (item, what the user typed) when a command option made it, so
    that an error names `--res big` or `--set optim.lr=0` rather than the recipe file.
    """
    data = _deep_copy(data)
    given: dict[str, str] = {}
    for entry in overrides:
        item, label = (entry, f"--set {_short(entry)}") if isinstance(entry, str) else entry
        given[apply_override(data, item, label)] = label
    _one_length(data, given)
    cfg = schema.from_dict(data, origin)
    ranges.check(cfg, origin, given)
    return cfg


MAX_DEPTH = 32  # a recipe is sections of keys with short lists: anything deeper is a mistake or an attack
MAX_RECIPE_BYTES = 1 << 20


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that a recipe may not hold (an alias, deep nesting, a duplicate key)."""


class _Loader(yaml.SafeLoader):
    """`yaml.safe_load` with three refusals: aliases (`*name`, which can expand a few hundred bytes
    into gigabytes), nesting deeper than MAX_DEPTH (Python's recursion limit would end in a traceback)
    and duplicate keys (YAML lets the last one win silently)."""

    depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(None, None, f"alias *{event.anchor} is not allowed in a recipe; "
                                              "write the value out (or share it with base:)", event.start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(None, None, f"nested deeper than {MAX_DEPTH} levels",
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
                raise _Refused(
                    None, None, f"duplicate key {key!r} (first given on line {first}); give each key once",
                    key_node.start_mark)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str):
    """Parse YAML text as recipes are parsed (safe types only, no aliases, bounded depth, unique keys)."""
    line = _too_deep(text)
    if line is not None:
        # PyYAML's scanner is quadratic in bracket depth: refuse before it runs, not after seconds.
        raise _Refused(None, None, f"nested deeper than {MAX_DEPTH} levels", yaml.Mark("", 0, line, 0, None, None))
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


_LENGTH_KEYS = ("steps", "epochs", "examples")


def _one_length(data: dict, named) -> None:
    """`--set train.steps=20` on a recipe that says `epochs: 40` means 20 steps, not a conflict: a length
    given on the command line (`named`: the dotted keys set) replaces the file's length in another unit."""
    given = [k for k in _LENGTH_KEYS if f"train.{k}" in named]
    train = data.get("train")
    if given and isinstance(train, dict):
        for key in _LENGTH_KEYS:
            if key not in given:
                train.pop(key, None)


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


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (['a','b','c'], parsed value). The value is read as YAML (so lists work)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=3e-3")
    if "\x00" in item:
        raise RecipeError(f"--set {item!r}: contains a NUL byte")
    try:
        value = parse_yaml(text) if text.strip() else ""
    except _Refused as exc:
        raise RecipeError(f"--set {_short(item)}: {exc.problem}") from None
    except (yaml.YAMLError, RecursionError):
        value = text  # not YAML (e.g. "a:b"): keep it as text, the field's type decides
    return key.strip().split("."), value


def _short(text: str, limit: int = 100) -> str:
    """An override as errors quote it: a value of thousands of characters is cut, not repeated whole."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def apply_override(data: dict, item: str, label: str | None = None) -> str:
    """Set one dotted key in recipe data, checking the key path against the config schema; returns the key.

    `label` is how errors name the override (default `--set KEY=VALUE`). A key may index a list of
    sections: `fewshot.datasets[0].source=...` sets a field of the first item.
    """
    label = label or f"--set {_short(item)}"
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


def _read_with_bases(path: Path, stack: tuple[Path, ...]) -> dict:
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
        raise RecipeError(f"{path}: base: expected a relative file path, got {base!r}")
    parent = _read_with_bases(path.parent / base, (*stack, resolved))
    return merge(parent, data)


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
        kind = "" if isinstance(exc, _Refused) else "YAML syntax error: "
        raise RecipeError(f"{path}{line}: {kind}{exc.problem}") from None
    except (yaml.YAMLError, OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise RecipeError(f"{path}: cannot read recipe: {str(exc).splitlines()[0][:200]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections (model, data, ...), got {type(data).__name__}")
    return data


def _resolve_paths(data: dict, folder: Path) -> None:
    for section, key in _PATH_KEYS:
        part = data.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str):
            part[key] = _resolve_path(part[key], folder)
    fewshot = data.get("fewshot")
    if isinstance(fewshot, dict) and isinstance(fewshot.get("datasets"), list):
        for entry in fewshot["datasets"]:
            if isinstance(entry, dict) and isinstance(entry.get("source"), str):
                entry["source"] = _resolve_path(entry["source"], folder)


def _resolve_path(value: str, folder: Path) -> str:
    # Only explicit relative paths ("./x", "../x") are file paths; "org/name" stays a hub id.
    prefix, sep, rest = value.partition(":")
    if sep and prefix == "imagefolder":
        return f"imagefolder:{_resolve_path(rest, folder)}"
    if value.startswith(("./", "../")):
        return str((folder / value).resolve())
    return value


def merge(base: dict, child: dict) -> dict:
    """Deep-merge two recipe dicts: the child's keys win, mappings merge, lists are replaced."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data

"""YAML recipes: `base:` inheritance, `--set` overrides, checks, and the resolved recipe as YAML.

A recipe is data. This is the only module that parses YAML; it turns a file plus command-line overrides
into one frozen `RecipeCfg`, exactly once, and every problem becomes a one-line `RecipeError` that names
the file (and line for syntax errors), the key and what would be valid.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from vitcli import schema
from vitcli.config import RecipeCfg
from vitcli.errors import RecipeError, VitError, did_you_mean, one_of

# Keys whose values are paths: a relative path in a recipe file is relative to that file, never to
# wherever the user happens to run `vit` from. Paths given with --set are relative to the shell's cwd.
_PATH_KEYS = (("data", "source"), ("train", "init_from"))


def load(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RecipeCfg:
    """Read a recipe file (following `base:`), apply `KEY=VALUE` overrides, check it, return the config."""
    return from_data(read(path), str(path), overrides)


def read(path: str | Path) -> dict:
    """A recipe file as plain data, with its `base:` chain merged and its relative paths resolved."""
    path = Path(path)
    data = _read_with_bases(path, stack=())
    if not isinstance(data.setdefault("run", {}), dict):
        raise RecipeError(f"{path}: run: expected a mapping of keys (name, out), got {data['run']!r}")
    data["run"].setdefault("name", path.stem)
    return data


def from_data(data: dict, origin: str, overrides: list[str] | tuple[str, ...] = ()) -> RecipeCfg:
    """Build a checked config from already-parsed recipe data (e.g. a checkpoint's stored recipe)."""
    data = _deep_copy(data)
    for item in overrides:
        apply_override(data, item)
    cfg = schema.from_dict(data, origin)
    check(cfg, origin)
    return cfg


class _Dumper(yaml.SafeDumper):
    """Block-style mappings, with short lists of scalars (res, shots, lr sweeps) kept on one line."""


def _represent_list(dumper: yaml.SafeDumper, value: list):
    flow = all(not isinstance(v, (dict, list)) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def to_yaml(cfg: RecipeCfg) -> str:
    """The resolved recipe as YAML: every field, defaults included, loadable again with `load`."""
    return yaml.dump(schema.to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (['a','b','c'], parsed value). The value is read as YAML (so lists work)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=3e-3")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text  # not YAML (e.g. "a:b"): keep it as text, the field's type decides
    return key.strip().split("."), value


def apply_override(data: dict, item: str) -> None:
    """Set one dotted key in recipe data, checking the key path against the config schema."""
    keys, value = parse_override(item)
    cls: Any = RecipeCfg
    node = data
    for depth, key in enumerate(keys):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if key not in fields:
            where = ".".join(keys[: depth + 1])
            raise RecipeError(
                f"--set {item}: unknown key '{where}'{did_you_mean(key, fields)}; valid: {one_of(fields)}"
            )
        if depth == len(keys) - 1:
            # Coerce now so a bad value is reported as the --set that gave it, not as the recipe file.
            schema.coerce(value, typing.get_type_hints(cls)[key], f"--set {item}", ".".join(keys))
            node[key] = value
            return
        cls = _field_class(cls, key)
        if cls is None:
            raise RecipeError(f"--set {item}: '{'.'.join(keys[:depth + 1])}' has no sub-keys")
        child = node.get(key)
        node = node.setdefault(key, {}) if child is None or isinstance(child, dict) else {}


def _field_class(cls: type, key: str) -> type | None:
    hint = typing.get_type_hints(cls)[key]
    return hint if dataclasses.is_dataclass(hint) else None


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
    if not path.is_file():
        who = f"{child}: base: " if child else ""
        hint = " (is a directory)" if path.is_dir() else ""
        raise RecipeError(f"{who}recipe file not found: {path}{hint}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise RecipeError(f"{path}{line}: YAML syntax error: {exc.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc}") from None
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


def check(cfg: RecipeCfg, origin: str) -> None:
    """Range checks that types alone cannot express; raises one RecipeError naming the key."""
    from vitcli.models.variants import grid, resolve_variant

    def bad(path: str, problem: str) -> RecipeError:
        return RecipeError(f"{origin}: {path}: {problem}")

    lrs = cfg.optim.lr if isinstance(cfg.optim.lr, tuple) else (cfg.optim.lr,)
    if not lrs or min(lrs) <= 0:
        raise bad("optim.lr", f"must be > 0, got {cfg.optim.lr}")
    _check_positive(bad, {"train.batch_size": cfg.train.batch_size, "eval.batch_size": cfg.eval.batch_size,
                          "train.micro_batch": cfg.train.micro_batch, "train.steps": cfg.train.steps,
                          "train.epochs": cfg.train.epochs, "train.examples": cfg.train.examples,
                          "fewshot.seeds": cfg.fewshot.seeds, "optim.clip_norm": cfg.optim.clip_norm})
    _check_non_negative(bad, {"optim.weight_decay": cfg.optim.weight_decay, "schedule.warmup_steps":
                              cfg.schedule.warmup_steps, "schedule.end_lr": cfg.schedule.end_lr,
                              "eval.every": cfg.eval.every, "train.skip_nonfinite": cfg.train.skip_nonfinite,
                              "train.checkpoint_every": cfg.train.checkpoint_every})
    micro = cfg.train.micro_batch
    if micro is not None and cfg.train.batch_size % micro:
        raise bad("train.micro_batch", f"{micro} does not divide train.batch_size {cfg.train.batch_size}; "
                  f"valid: {one_of(_divisors(cfg.train.batch_size))}")
    given = [k for k in ("steps", "epochs", "examples") if getattr(cfg.train, k) is not None]
    if len(given) > 1:
        raise bad("train", f"give only one of steps, epochs or examples (got {', '.join(given)})")
    for path, value in {"model.dropout": cfg.model.dropout, "model.drop_path": cfg.model.drop_path,
                        "model.attn_dropout": cfg.model.attn_dropout, "train.ema": cfg.train.ema or 0.0,
                        "train.label_smoothing": cfg.train.label_smoothing}.items():
        if not 0.0 <= value < 1.0:
            raise bad(path, f"must be in [0, 1), got {value}")
    for path, value in {"data.min_area": cfg.data.min_area, "data.eval_crop": cfg.data.eval_crop,
                        "data.max_bad_fraction": cfg.data.max_bad_fraction or 1.0}.items():
        if not 0.0 < value <= 1.0:
            raise bad(path, f"must be in (0, 1], got {value}")
    if any(k <= 0 for k in cfg.fewshot.shots) or any(r <= 0 for r in cfg.fewshot.l2_reg):
        raise bad("fewshot", f"shots and l2_reg must be > 0, got shots={list(cfg.fewshot.shots)} "
                  f"l2_reg={list(cfg.fewshot.l2_reg)}")
    _check_mpp(bad, cfg)
    try:
        grid(resolve_variant(cfg.model), cfg.model.res)
    except VitError as exc:
        raise RecipeError(f"{origin}: {exc}") from None


def _check_mpp(bad, cfg: RecipeCfg) -> None:
    """Masked patch prediction: fractions in range, and a target the patch size allows."""
    mpp = cfg.mpp
    if not 0.0 < mpp.corrupt <= 1.0:
        raise bad("mpp.corrupt", f"must be in (0, 1], got {mpp.corrupt}")
    if mpp.mask < 0 or mpp.random < 0 or mpp.mask + mpp.random > 1.0:
        raise bad("mpp", f"mask and random must be >= 0 with mask + random <= 1 (the rest is kept), got "
                  f"mask={mpp.mask} random={mpp.random}")
    if not 1 <= mpp.bits <= 8:
        raise bad("mpp.bits", f"must be in 1..8, got {mpp.bits}")


def _check_positive(bad, values: dict) -> None:
    for path, value in values.items():
        if value is not None and value <= 0:
            raise bad(path, f"must be > 0, got {value}")


def _check_non_negative(bad, values: dict) -> None:
    for path, value in values.items():
        if value is not None and value < 0:
            raise bad(path, f"must be >= 0, got {value}")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0][:12]

"""Plain dicts <-> frozen config objects, with errors that name the key and what would be valid.

Kept apart from `recipe.py` so that a recipe stored inside a checkpoint (a plain dict) is rebuilt by
exactly the same rules as one read from YAML, without the engine ever importing a YAML parser.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

from vitcli.recipe.config import RecipeCfg
from vitcli.errors import RecipeError, did_you_mean, one_of

_NONE = type(None)
MAX_INT = 2**62  # every count, step and seed fits int64 arithmetic with room to spare
MAX_TEXT = 4096  # names, paths and specs; longer is a mistake (a path is at most 4095 bytes)


def from_dict(data: Any, origin: str, cls: type = RecipeCfg) -> Any:
    """Build `cls` (a config dataclass) from plain data; `origin` (a file name) prefixes every error."""
    return _build(cls, data, origin, "")


def to_dict(cfg: Any) -> dict:
    """A config object as plain, YAML/JSON-friendly data (tuples become lists)."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def field_names(cls: type) -> list[str]:
    """Names of a config dataclass's fields, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def _fail(origin: str, path: str, problem: str) -> RecipeError:
    return RecipeError(f"{origin}: {path}: {problem}")


def _build(cls: type, data: Any, origin: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(data, dict):
        raise _fail(origin, where, f"expected a mapping of keys ({one_of(field_names(cls))}), got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise _fail(
                origin,
                f"{prefix}{key}",
                f"unknown key{did_you_mean(key, fields)}; valid keys: {one_of(fields)}",
            )
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = coerce(data[name], hints[name], origin, f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _fail(origin, f"{prefix}{name}", "missing required field")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, origin: str, path: str) -> Any:
    """Coerce one value to the field's type, or raise an error naming `path`."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, origin, path + ".")
    if hint == tuple[int, int]:
        return _coerce_res(value, origin, path)
    origin_type = typing.get_origin(hint)
    if origin_type in (Union, types.UnionType):
        return _coerce_union(value, typing.get_args(hint), origin, path)
    if origin_type is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise _fail(origin, path, f"{_show(value)} is not valid{did_you_mean(value, choices)}; choose one of {one_of(choices)}")
        return value
    if origin_type is tuple:
        item = typing.get_args(hint)[0]
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(coerce(v, item, origin, f"{path}[{i}]") for i, v in enumerate(items))
    return _coerce_scalar(value, hint, origin, path)


def _coerce_union(value: Any, args: tuple, origin: str, path: str) -> Any:
    if value is None:
        if _NONE in args:
            return None
        raise _fail(origin, path, "must not be null")
    options = [a for a in args if a is not _NONE]
    # A list can only mean the tuple alternative (e.g. a learning-rate sweep); a scalar prefers the scalar.
    options.sort(key=lambda a: (typing.get_origin(a) is tuple) != isinstance(value, (list, tuple)))
    error = None
    for option in options:
        try:
            return coerce(value, option, origin, path)
        except RecipeError as exc:
            error = error or exc
    raise error


def _coerce_scalar(value: Any, hint: Any, origin: str, path: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _fail(origin, path, f"expected true or false, got {_show(value)}")
    if hint is int:
        if isinstance(value, str):
            value = _parse_number(value, origin, path, "a whole number")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_INT:
                raise _fail(origin, path, f"{value:.3g} is too large; valid: a whole number of magnitude at most 2^62")
            return value
        raise _fail(origin, path, f"expected a whole number, got {_show(value)}")
    if hint is float:
        if isinstance(value, str):
            value = _parse_number(value, origin, path, "a number")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 1e300:
            value = math.inf
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _fail(origin, path, f"expected a finite number, got {value}")
            return float(value)
        raise _fail(origin, path, f"expected a number, got {_show(value)}")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            if "\x00" in str(value):
                raise _fail(origin, path, "contains a NUL byte; give text without one")
            if len(str(value)) > MAX_TEXT:
                raise _fail(origin, path, f"is {len(str(value))} characters long; at most {MAX_TEXT}")
            return str(value)
        raise _fail(origin, path, f"expected text, got {_show(value)}")
    raise TypeError(f"unsupported config type {hint!r} at {path}")  # a bug in config.py, not user input


def _parse_number(text: str, origin: str, path: str, what: str) -> float:
    # YAML 1.1 reads "3e-3" as text; recipes and --set values should not have to write "3.0e-3".
    try:
        return float(text)
    except ValueError:
        raise _fail(origin, path, f"expected {what}, got {_show(text)}") from None


def _coerce_res(value: Any, origin: str, path: str) -> tuple[int, int]:
    """A resolution: 384, "384", "384x256" or [384, 256] -> (height, width)."""
    parts: list[Any]
    if isinstance(value, (list, tuple)):
        parts = list(value)
    elif isinstance(value, str):
        parts = value.lower().split("x")
    else:
        parts = [value]
    nums = [_whole(p) for p in parts]
    if None in nums or len(nums) not in (1, 2) or min(nums) <= 0:
        raise _fail(origin, path, f"expected a resolution such as 384 or 384x256, got {_show(value)}")
    return (nums[0], nums[-1])


def _whole(part: Any) -> int | None:
    """A positive whole number written as an int, an integral float or digits; None for anything else."""
    if isinstance(part, bool):
        return None
    if isinstance(part, float) and part.is_integer() and abs(part) < MAX_INT:
        return int(part)
    if isinstance(part, int):
        return part if abs(part) <= MAX_INT else None
    if isinstance(part, str) and part.strip().isdigit() and len(part.strip()) < 19:
        return int(part)
    return None


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return f"a list {list(value)!r}"[:120]
    text = repr(value)
    return text if len(text) <= 120 else text[:100] + "...'"


def diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two recipe dicts (the run section is ignored)."""
    keys = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        if path == "run":
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += diff(a, b, path + ".")
        elif a != b:
            keys.append(path)
    return keys

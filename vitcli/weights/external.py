"""Configs written by other tools, read through one typed schema at the reader boundary.

`transformers`' config.json and preprocessor_config.json and timm's hub config.json are data somebody
else wrote: a field may be missing, null, a string where a number belongs ("16" read as 16 by one
reader and as "1" by `value[0]` in another), a list where a mapping belongs, zero, NaN or huge. Every
field the readers use is read here, once, into a frozen dataclass, with its type and range checked; a
bad one is one line naming the file, the field, the value found and what is valid. Nothing past this
module looks into a raw external dict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vitcli.errors import CheckpointError

_MAX_DIM = 1 << 16  # far above any ViT's width, depth, heads or image side; rules out absurd numbers early
_MAX_CHANNELS = 64


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Fields:
    """Typed access to one JSON object of `file` (`prefix` names where it sits, e.g. "model_args.")."""

    def __init__(self, data, file: str, prefix: str = "") -> None:
        self.file, self.prefix = file, prefix
        self.data = data if isinstance(data, dict) else {}

    def fail(self, key: str, value, valid: str) -> CheckpointError:
        return CheckpointError(f"{self.file}: {self.prefix}{key}: expected {valid}, got {_shown(value)}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def int(self, key: str, default: int | None, *, low: int = 1, high: int = _MAX_DIM) -> int | None:
        """A whole number in [low, high] (JSON true/false and "16" are not numbers); null means default."""
        value = self.data.get(key)
        if value is None:
            return default
        if type(value) is not int or not low <= value <= high:
            raise self.fail(key, value, f"a whole number in [{low}, {high}]")
        return value

    def float(self, key: str, default: float | None, *, positive: bool = False) -> float | None:
        """A finite number (> 0 when `positive`); null means default."""
        value = self.data.get(key)
        if value is None:
            return default
        if type(value) not in (int, float) or not math.isfinite(value) or (positive and value <= 0):
            raise self.fail(key, value, "a positive finite number" if positive else "a finite number")
        return float(value)

    def bool(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if type(value) is not bool:
            raise self.fail(key, value, "true or false")
        return value

    def str(self, key: str, default: str | None, choices: tuple[str, ...] | None = None) -> str | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or (choices is not None and value not in choices):
            valid = f"one of {', '.join(map(repr, choices))}" if choices else "text"
            raise self.fail(key, value, valid)
        return value

    def size(self, key: str, default: tuple[int, int] | None) -> tuple[int, int] | None:
        """An image or patch size: one whole number, or [height, width]."""
        value = self.data.get(key)
        if value is None:
            return default
        sides = [value] if not isinstance(value, list) else value
        if len(sides) not in (1, 2) or not all(type(v) is int and 1 <= v <= _MAX_DIM for v in sides):
            raise self.fail(key, value, f"a size in pixels (a whole number in [1, {_MAX_DIM}], or [height, width])")
        return (sides[0], sides[-1])

    def floats(self, key: str, *, positive: bool = False) -> tuple[float, ...] | None:
        """Per-channel numbers (a list of 1 to 64 finite numbers, > 0 when `positive`), or None."""
        value = self.data.get(key)
        if value is None:
            return None
        if (not isinstance(value, list) or not 1 <= len(value) <= _MAX_CHANNELS
                or not all(type(v) in (int, float) and math.isfinite(v) and (v > 0 or not positive) for v in value)):
            what = "positive finite numbers" if positive else "finite numbers"
            raise self.fail(key, value, f"a list of 1 to {_MAX_CHANNELS} {what}, one per channel")
        return tuple(float(v) for v in value)

    def section(self, key: str) -> Fields:
        """A nested object (absent or null: an empty one)."""
        value = self.data.get(key)
        if value is not None and not isinstance(value, dict):
            raise self.fail(key, value, "a mapping")
        return Fields(value or {}, self.file, f"{self.prefix}{key}.")

    def names(self, key: str) -> list[str] | None:
        """Class names as a list of strings, or None when absent."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, value, "a list of class names (strings)")
        return value

    def id2label(self, key: str) -> list[str] | None:
        """transformers' id2label ({"0": "cat", ...}) as a list in index order; keys must be 0..n-1."""
        value = self.data.get(key)
        if value is None or value == {}:
            return None
        if not isinstance(value, dict):
            raise self.fail(key, value, 'a mapping of class indices to names, e.g. {"0": "cat", "1": "dog"}')
        want = {str(i) for i in range(len(value))}
        bad = [k for k in value if k not in want] or [k for k, v in value.items() if not isinstance(v, str)]
        if bad:
            raise self.fail(f"{key}[{bad[0]!r}]", value[bad[0]], f"keys \"0\" to \"{len(value) - 1}\" (one per class) "
                            "whose values are class names (text)")
        return [value[str(i)] for i in range(len(value))]


@dataclass(frozen=True)
class Normalisation:
    """The per-channel mean and std an image processor or timm pretrained_cfg gives (None: not said)."""

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _normalisation(fields: Fields, mean_key: str, std_key: str) -> Normalisation:
    mean, std = fields.floats(mean_key), fields.floats(std_key, positive=True)
    if mean is not None and std is not None and len(mean) != len(std):
        raise fields.fail(std_key, list(std), f"as many numbers as {fields.prefix}{mean_key} ({len(mean)})")
    return Normalisation(mean, std)


@dataclass(frozen=True)
class HfConfig:
    """What vit reads of a `transformers` ViT config.json (field names are transformers')."""

    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    patch_size: int
    image_size: tuple[int, int]
    num_channels: int
    hidden_act: str
    qkv_bias: bool
    pooler_act: str
    layer_norm_eps: float
    label_names: list[str] | None


def hf_config(data: dict, file: str) -> HfConfig:
    """Read a transformers config.json (already known to be a JSON object) through the schema."""
    f = Fields(data, file)
    kind = f.str("model_type", "")
    if kind != "vit":  # first: another model's fields mean other things
        raise CheckpointError(f"{file}: model_type {kind!r} is not supported (vit reads transformers ViT "
                              "checkpoints, model_type 'vit'; DeiT, Swin, BEiT and hybrids are other models)")
    patch = f.size("patch_size", (16, 16))
    if patch[0] != patch[1]:
        raise f.fail("patch_size", data.get("patch_size"), "a square patch (one whole number)")
    width, heads = f.int("hidden_size", 768), f.int("num_attention_heads", 12)
    if width % heads:
        raise f.fail("num_attention_heads", heads, f"a divisor of hidden_size {width}")
    return HfConfig(
        model_type=kind, hidden_size=width, num_hidden_layers=f.int("num_hidden_layers", 12),
        num_attention_heads=heads, intermediate_size=f.int("intermediate_size", 4 * width),
        patch_size=patch[0], image_size=f.size("image_size", (224, 224)),
        num_channels=f.int("num_channels", 3, high=_MAX_CHANNELS), hidden_act=f.str("hidden_act", "gelu"),
        qkv_bias=f.bool("qkv_bias", True), pooler_act=f.str("pooler_act", "tanh"),
        layer_norm_eps=_eps(f), label_names=f.id2label("id2label"))


def _eps(f: Fields) -> float:
    """transformers' layer_norm_eps (its default 1e-12 when absent): a LayerNorm epsilon, in (0, 0.1]; null
    is refused, since transformers would hand it to LayerNorm as it is."""
    if "layer_norm_eps" not in f.data:
        return 1e-12
    eps = f.data["layer_norm_eps"]
    if type(eps) not in (int, float) or not 0 < eps <= 0.1:
        raise f.fail("layer_norm_eps", eps, "a LayerNorm epsilon in (0, 0.1], e.g. 1e-12 (transformers' default) "
                     "or 1e-6 (the paper's)")
    return float(eps)


def hf_preprocessor(data: dict | None, file: str) -> Normalisation:
    """The normalisation of a transformers preprocessor_config.json (None when there is none)."""
    if data is None:
        return Normalisation()
    f = Fields(data, file)
    if not f.bool("do_normalize", True):
        return Normalisation((0.0,) * 3, (1.0,) * 3)
    return _normalisation(f, "image_mean", "image_std")


@dataclass(frozen=True)
class TimmConfig:
    """What vit reads of a timm hub config.json: the architecture, its model_args and pretrained_cfg."""

    architecture: str
    num_heads: int | None
    img_size: tuple[int, int] | None
    in_chans: int | None
    input_size: tuple[int, int, int] | None  # pretrained_cfg's (channels, height, width)
    norm: Normalisation
    label_names: list[str] | None


def timm_config(data: dict, file: str) -> TimmConfig:
    """Read a timm hub config.json (one with an "architecture") through the schema."""
    f = Fields(data, file)
    args, pcfg = f.section("model_args"), f.section("pretrained_cfg")
    size = pcfg.data.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 3 and all(
            type(v) is int and 1 <= v <= _MAX_DIM for v in size)):
        raise pcfg.fail("input_size", size, "[channels, height, width] (three positive whole numbers)")
    return TimmConfig(
        architecture=f.str("architecture", ""), num_heads=args.int("num_heads", None),
        img_size=args.size("img_size", None), in_chans=args.int("in_chans", None, high=_MAX_CHANNELS),
        input_size=tuple(size) if size is not None else None, norm=_normalisation(pcfg, "mean", "std"),
        label_names=f.names("label_names") or pcfg.names("label_names"))

"""How numbers read on screen, the same in every command: accuracies as percentages, counts as whole
numbers, throughput with one decimal, large quantities with an SI prefix, durations as h:mm:ss.

`--json` keeps the raw values (accuracies as fractions in [0, 1], seconds as seconds); these functions
are only for what a person reads. No torch, no Rich.
"""

from __future__ import annotations

import math

_PERCENT_KEYS = ("top1", "top5", "acc", "accuracy", "mfu")
_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def percent(value: float) -> str:
    """A fraction in [0, 1] as a percentage with two decimals: 0.9806 -> '98.06%'."""
    return f"{100 * value:.2f}%"


def duration(seconds: float) -> str:
    """A duration as m:ss, or h:mm:ss from an hour on (never to be mistaken for a clock time)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def rough_duration(seconds: float) -> str:
    """An estimated length of time, as precise as an estimate is: '45 s', '12 min', '3 h 05 min', '2 d 4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    hours, mins = divmod(round(minutes), 60)
    if hours < 48:
        return f"{hours} h {mins:02d} min"
    return f"{hours // 24} d {hours % 24} h"


def si(value: float, unit: str = "") -> str:
    """A large quantity with an SI prefix and three significant digits: 19485578335.8 -> '19.5 G'."""
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 step', '2 steps' ('1 process', '2 processes' with `nouns`)."""
    return f"{count:,} {noun if count == 1 else (nouns or noun + 's')}"


def metric(key: str, value) -> str:
    """One result value as the tables and log lines show it, chosen by the key's last part."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str)) for v in value):
        if name_of(key) == "res" and len(value) == 2:
            return str(value[0]) if value[0] == value[1] else f"{value[0]}x{value[1]}"
        return ", ".join(metric(key, v) for v in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    name = name_of(key)
    if name.endswith(_PERCENT_KEYS) or name.endswith("shot") or "shot_l2=" in name:
        return percent(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if name == "lr" or name.endswith("_lr"):
        return f"{value:.2e}"
    if name.endswith("img_s"):
        return f"{value:,.1f}"
    if name.endswith("flops"):
        return si(value, "FLOP/s")
    if name.startswith("macs"):
        return si(value, "MAC")
    if name.endswith(("_s", "_s_min")) and "step" in name:
        return f"{1000 * value:.1f} ms"
    if name.endswith("_s"):
        return duration(value)
    if name.endswith("_mb"):
        return f"{value:,.0f} MB"
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e15 and name != "loss"):
        return f"{int(value):,}"
    return f"{value:.4f}"


def name_of(key: str) -> str:
    """The last part of a metric key: 'ema_fewshot/digits/5shot' -> '5shot'."""
    return key.rsplit("/", 1)[-1]


def printable(text: object, *, lines: bool = False) -> str:
    """User text (a file, class or run name) safe to show on a terminal: control characters, ESC first (it
    starts the escape sequences that clear a screen or retitle a window), written as Python escapes
    (\\x1b, \\n), so the text stays on its line and cannot drive the terminal; `lines` keeps line breaks."""
    return "".join(ch if ch.isprintable() or (lines and ch == "\n") else repr(ch)[1:-1] for ch in str(text))

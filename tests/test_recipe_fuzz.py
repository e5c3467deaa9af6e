"""Property test: any recipe value, of any type or size, in any field, is accepted or refused in one line.

Hypothesis draws recipes (every field of every section, with values that are wrong types, out of
range, non-finite, huge, negative, NUL-laden, deeply nested) and YAML texts (aliases, deep nesting,
duplicate keys), plus `--set` overrides, and runs `vit recipe check` / `vit recipe show` on them through
the CLI in-process. Each must end in exit 0, or exit 2 with exactly one `error:` line and no traceback,
within a time and memory budget. Validation only: nothing is trained.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
import typing

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from vitcli import recipe  # noqa: E402
from vitcli.cli import app  # noqa: E402
from vitcli.recipe.config import RecipeCfg  # noqa: E402
from vitcli.errors import VitError  # noqa: E402

TIME_BUDGET_S = 5.0  # one check of one recipe, on a loaded 2-core machine: seconds at worst, never minutes
MEMORY_BUDGET = 256 << 20  # growth of the process's peak memory while checking one recipe (an alias bomb: GBs)

FIELDS = [(section.name, f.name) for section in dataclasses.fields(RecipeCfg)
          for f in dataclasses.fields(typing.get_type_hints(RecipeCfg)[section.name])]

_numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**12, 1e30, -1e30, 1e-300, 0.5, 1.0, 1.5]),
    st.floats(allow_nan=True, allow_infinity=True),
)
_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "B/16", "Ti/4", "rand-m9-mstd0.5", "train[:0]", "x" * 5000, "a\x00b", "../../etc",
                     "384x256", "0x0", "-16", "1e400", "nan", "blocks.0-99999999999", "builtin:digits"]),
)
# Values at the edges of every range (drawn most often: that is where validation has holes).
_edges = st.sampled_from([-1, 0, 0.5, 1, 1.5, 2, 3, 64, 10**9, 2**40, -(2**40), float("nan"), float("inf"),
                          float("-inf"), 1e-9, -0.0])
_scalars = st.one_of(_edges, _edges, _edges, _numbers, _text, st.booleans(), st.none())
_values = st.one_of(_scalars, _scalars, st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=12))


@st.composite
def recipes(draw) -> dict:
    """A recipe built on a valid tiny one, with some fields replaced by drawn values."""
    data = {"model": {"name": "Ti/4", "res": 16, "width": 32, "depth": 2, "heads": 2, "mlp_dim": 64},
            "data": {"source": "builtin:digits"}, "train": {"batch_size": 16, "steps": 2}}
    for section, key in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2)):
        data.setdefault(section, {})[key] = draw(_values)
    return data


def _deep(depth: int) -> str:
    return "model:\n  name: " + "[" * depth + "]" * depth + "\n"


def _alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


_texts = st.one_of(
    st.integers(min_value=1, max_value=20000).map(_deep),
    st.integers(min_value=1, max_value=12).map(_alias_bomb),
    st.sampled_from(["train:\n  steps: 1\n  steps: 2\n", "train: {}\ntrain: {}\n", "- a\n",
                     "!!python/object:os.system {}",
                     "model: !!binary aGVsbG8=\n", "\x00\x01\x02", "a: b: c\n", "{" * 3000, "x: *undefined\n"]),
)


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _engine_takes(cfg) -> None:
    """What the engine builds first from an accepted recipe must build: validation let nothing through that
    the optimiser, schedule, seeding, freezing, augmentation or position grid would choke on. (A VitError
    here is still a one-line refusal; anything else is a hole in the recipe layer.)"""
    import numpy as np
    import torch

    from vitcli.recipe.length import resolve_steps
    from vitcli.data.transforms import eval_transform, mixup_fn, train_transform
    from vitcli.engine.train import optim
    from vitcli.errors import VitError
    from vitcli.models import resolve_variant, seq_len

    try:
        torch.Generator().manual_seed(cfg.train.seed + 1000)
        np.random.seed((cfg.train.seed + 1000) % 2**32)
        assert seq_len(resolve_variant(cfg.model), cfg.model.res) <= 65537
        total = resolve_steps(cfg.train, 1000)
        lrs = cfg.optim.lr if isinstance(cfg.optim.lr, tuple) else (cfg.optim.lr,)
        layers = torch.nn.ModuleDict({"patch_embed": torch.nn.Linear(2, 2),
                                      "blocks": torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(2))})
        for lr in lrs:
            optim.build_optimizer(layers, cfg.optim, lr)
            for step in (0, total // 2, max(0, total - 1)):
                value = optim.lr_at(step, max(total, 1), lr, cfg.schedule)
                assert math.isfinite(value) and value >= 0, (step, value)
        for group in optim.param_groups(layers, cfg.optim):
            assert group["lr_scale"] > 0 and math.isfinite(group["lr_scale"])
        assert sum(len(optim._expand(p)) for p in cfg.train.freeze) <= 100_000
        train_transform(cfg.data, cfg.model.res)
        eval_transform(cfg.data, cfg.model.res)
        mixup_fn(cfg.data, cfg.data.num_classes or 10, cfg.train.label_smoothing)
    except VitError:
        pass


def _check(args: list[str]) -> None:
    before, start = _max_rss(), time.monotonic()
    result = CliRunner().invoke(app, args)
    elapsed, grown = time.monotonic() - start, _max_rss() - before
    output = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in output
    assert result.exit_code in (0, 2), output
    if result.exit_code == 2:
        errors = [line for line in output.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and len(output.strip().splitlines()) == 1, output
    assert elapsed < TIME_BUDGET_S, f"{elapsed:.1f} s for {args}"
    assert grown < MEMORY_BUDGET, f"the process grew by {grown / 1e6:.0f} MB for {args}"


@pytest.fixture(scope="module", autouse=True)
def _warm(tmp_path_factory):
    """Import what a recipe check imports once, so that the budget measures checking, not importing."""
    path = tmp_path_factory.mktemp("warm") / "r.yaml"
    path.write_text("model: {name: B/16}\ndata: {source: 'builtin:digits'}\n")
    assert CliRunner().invoke(app, ["recipe", "check", str(path)]).exit_code == 0


_SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


@settings(max_examples=60, **_SETTINGS)
@given(data=recipes())
def test_any_recipe_value_is_accepted_or_refused_in_one_line(data, tmp_path):
    path = tmp_path / "r.yaml"
    try:
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
    except (UnicodeEncodeError, ValueError):  # lone surrogates cannot even be written to a file
        return
    _check(["recipe", "check", str(path)])
    try:
        cfg = recipe.load(path)
    except VitError:
        return
    _engine_takes(cfg)


@settings(max_examples=40, **_SETTINGS)
@given(text=_texts)
def test_hostile_yaml_is_refused_in_one_line(text, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _check(["recipe", "check", str(path)])


@settings(max_examples=80, **_SETTINGS)
@given(field=st.sampled_from(FIELDS), value=st.one_of(_values.map(lambda v: yaml.safe_dump(v, default_flow_style=True)
                                                                   .strip().removesuffix("...").strip()),
                                                      _texts.map(lambda t: t.replace("\n", " "))))
def test_any_set_value_is_accepted_or_refused_in_one_line(field, value, tmp_path):
    if "\x00" in value or any(ord(c) > 0xFFFF or 0xD800 <= ord(c) <= 0xDFFF for c in value):
        value = value.replace("\x00", "")  # argv cannot carry NUL; the schema's NUL check has its own cases
    path = tmp_path / "r.yaml"
    path.write_text("model: {name: Ti/4, res: 16, width: 32, depth: 2, heads: 2, mlp_dim: 64}\n"
                    "data: {source: 'builtin:digits'}\n")
    _check(["recipe", "show", str(path), "--set", f"{field[0]}.{field[1]}={value}"])

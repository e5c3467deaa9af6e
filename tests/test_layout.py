"""The architecture's import rules and size limits (issue 23, DESIGN.md), checked on the source with `ast`.

Every import counts, a lazy one inside a function too. `from a.b import c` is read as `a.b.c`, so
`from vitcli.engine import jobs` and `from vitcli.engine.jobs import train` both enter through jobs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vitcli"
LOWER_ENGINE = ("train", "evaluate", "persistence", "runtime")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 50  # from the def line through the last line of the body


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _imports(path: Path) -> list[str]:
    """Every module (or module.name) the file imports, absolute."""
    package = path.relative_to(PACKAGE.parent).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the file's package
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            found += [f"{base}.{alias.name}" for alias in node.names]
    return found


def _within(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")


def _where(folder: str) -> list[Path]:
    return [p for p in _sources() if p.relative_to(PACKAGE).parts[0] == folder]


def _offences(paths: list[Path], bad) -> list[str]:
    return [f"{p.relative_to(PACKAGE.parent)}: {name}" for p in paths for name in _imports(p) if bad(name)]


def test_the_sources_are_found():
    assert len(_sources()) > 50 and _where("cli") and _where("engine") and _where("models") and _where("data")


def test_the_cli_enters_the_engine_only_through_jobs():
    outside_jobs = lambda n: _within(n, "vitcli.engine") and not _within(n, "vitcli.engine.jobs")  # noqa: E731
    assert _offences(_where("cli"), outside_jobs) == []
    # and it does use the door (a rule that matches nothing checks nothing)
    assert _offences(_where("cli"), lambda n: _within(n, "vitcli.engine.jobs"))


@pytest.mark.parametrize("lower", LOWER_ENGINE)
def test_no_lower_engine_package_imports_the_jobs(lower):
    paths = sorted((PACKAGE / "engine" / lower).rglob("*.py"))
    assert paths
    assert _offences(paths, lambda n: _within(n, "vitcli.engine.jobs") or n == "vitcli.engine") == []


@pytest.mark.parametrize("folder, other", [("models", "vitcli.data"), ("data", "vitcli.models")])
def test_models_and_data_know_nothing_of_the_cli_recipes_engine_or_each_other(folder, other):
    # recipe.config (frozen dataclasses, no YAML, no Typer) is the one part of the recipe layer they take
    def bad(name):
        recipe = _within(name, "vitcli.recipe") and not _within(name, "vitcli.recipe.config")
        return recipe or any(_within(name, m) for m in ("vitcli.cli", "vitcli.engine", other, "yaml", "typer"))

    assert _offences(_where(folder), bad) == []


def test_typer_only_in_the_cli_and_yaml_only_in_the_recipe_loader():
    outside_cli = [p for p in _sources() if p.relative_to(PACKAGE).parts[0] != "cli"]
    assert _offences(outside_cli, lambda n: _within(n, "typer")) == []
    loader = PACKAGE / "recipe" / "loader.py"
    assert _offences([p for p in _sources() if p != loader], lambda n: _within(n, "yaml")) == []
    assert _offences([loader], lambda n: _within(n, "yaml"))


def test_nothing_imports_the_cli():
    entry = {PACKAGE / "__main__.py"}
    outside = [p for p in _sources() if p.relative_to(PACKAGE).parts[0] != "cli" and p not in entry]
    assert _offences(outside, lambda n: _within(n, "vitcli.cli")) == []


def test_no_source_file_is_over_400_lines():
    sizes = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines()) for p in _sources()}
    assert {path: n for path, n in sizes.items() if n > MAX_FILE_LINES} == {}


def test_no_function_is_over_50_lines():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []

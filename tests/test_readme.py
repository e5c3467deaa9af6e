"""The README's tour runs as written: every `$ vit ...` line of its ```console blocks, in order, in a fresh
folder holding only `digits/` (an image folder made here), each succeeding and printing the lines the README shows under it (numbers may differ).

The fast variant (default suite) trains 3 steps wherever the tour trains, so it checks commands and
output shapes; the slow one (`pytest -m slow`, and `.ci/run`) runs the tour exactly as written.
Commands anyone adds to the README's console blocks are picked up the same way.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_BOX = "\u2500-\u257f\u2580-\u259f"  # Rich's table rules and bar glyphs: their widths follow the numbers
_NUMBER = re.compile(r"\d[\d.,:]*(?:e[-+]?\d+)?")


@dataclass
class Step:
    """One `$ vit ...` command (continuation lines kept) and the output lines the README shows for it."""

    command: str
    expected: list[str] = field(default_factory=list)


def tour(text: str) -> list[Step]:
    """The `$ vit ...` commands of the README's console blocks, in order."""
    steps: list[Step] = []
    for block in re.findall(r"^```console\n(.*?)^```", text, flags=re.S | re.M):
        current = None
        lines = iter(block.splitlines())
        for line in lines:
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\"):
                    command += "\n" + next(lines, "")
                current = Step(command)
                steps.append(current)
            elif current is not None:
                current.expected.append(line)
    return [s for s in steps if s.command.startswith("vit ")]


def shape(line: str) -> str:
    """A line with its numbers masked and its spacing and table rules dropped: what must match."""
    return re.sub(f"[\\s{_BOX}]+", "", _NUMBER.sub("#", line))


def missing_lines(expected: list[str], output: str) -> list[str]:
    """README lines whose shape no output line has ('...' stands for lines left out)."""
    have = {shape(line) for line in output.splitlines()}
    return [line for line in expected if line.strip() not in ("", "...") and shape(line) not in have]


def vit_shim(folder: Path, extra: list[str]) -> Path:
    """A `vit` on PATH that is this interpreter's `-m vitcli`; `extra` is appended to training commands."""
    folder.mkdir()
    shim = folder / "vit"
    tail = " ".join(shlex.quote(a) for a in extra)
    shim.write_text(f'#!/bin/sh\ncase "$1" in pretrain|finetune) exec {shlex.quote(sys.executable)} -m vitcli "$@" '
                    f'{tail} ;; esac\nexec {shlex.quote(sys.executable)} -m vitcli "$@"\n')
    shim.chmod(0o755)
    return folder


def digits_folder(root: Path) -> Path:
    """What the tour's folder holds besides nothing: the digits as PNGs in class folders, train/ and val/."""
    from vitcli.data.source import _digits

    for split, folder in (("train", "train"), ("test", "val")):
        for i, row in enumerate(_digits()[split]):
            path = root / folder / str(row["label"]) / f"digit_{folder}_{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            row["image"].save(path)
    return root


def run_tour(tmp_path: Path, extra: list[str]) -> None:
    steps = tour(README.read_text(encoding="utf-8"))
    assert len(steps) >= 5, "the README's tour lost its console blocks"
    bin_dir = vit_shim(tmp_path / "bin", extra)
    work = tmp_path / "tour"  # a fresh folder: no checkout, no recipes/ beside it
    digits_folder(work / "digits")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", COLUMNS="160")
    for step in steps:
        done = subprocess.run(["bash", "-o", "pipefail", "-c", step.command], cwd=work, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"$ {step.command}\nexit {done.returncode}\n{output[-3000:]}"
        missing = missing_lines(step.expected, output)
        assert not missing, f"$ {step.command}\nREADME lines not in the output:\n" + "\n".join(missing) + \
            f"\n--- output ---\n{output[-4000:]}"


def test_the_tour_parser_keeps_continuations_and_skips_other_commands():
    text = ("```console\n$ vit a \\\n      --b\nout 1\n$ ls\nx\n```\n```bash\n$ vit no\n```\n"
            "```console\n$ vit c | head -2\n...\n```\n")
    steps = tour(text)
    assert [s.command for s in steps] == ["vit a \\\n      --b", "vit c | head -2"]
    assert steps[0].expected == ["out 1"] and steps[1].expected == ["..."]


def test_output_shapes_ignore_numbers_and_table_widths_but_not_words():
    assert missing_lines(["│ top-1 │  98.06% │"], "│ top-1    │ 9.72% │") == []
    assert missing_lines(["┏━━┳━━┓"], "┏━━━━┳━━━━━━┓") == []
    assert missing_lines(["eval of runs/demo (raw weights)"], "eval of runs/demo (ema weights)") == [
        "eval of runs/demo (raw weights)"]


def test_the_readme_tour_runs_as_written_with_short_training(tmp_path):
    run_tour(tmp_path, ["--set", "train.steps=3", "--set", "schedule.warmup_steps=1"])
    # A real process: results.json records the command line exactly as the user gave it.
    saved = json.loads((tmp_path / "tour" / "runs" / "demo" / "results.json").read_text())
    assert saved["command"] == "vit pretrain demo --set train.steps=3 --set schedule.warmup_steps=1"


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path):
    run_tour(tmp_path, [])

"""Bad inputs, third pass (issue 31): what a command reads from and writes to the file system and its streams.

The same catalogue as `tests/test_bad_inputs.py` (both feed docs/bad-inputs.md through tests/catalogue.py),
for the families whose documented outcome is not always exit code 2: images without bounds (one decoder
for every command), output that cannot be written, user text drawn by matplotlib, `vit export` made
atomic, output paths a user owns, damaged metrics.jsonl, and two security holes (the TensorBoard event
file, formulas in `--csv`). Each case builds its input under `tmp_path` and runs the real command, in this
process or, where the streams themselves are the input (a closed pipe, /dev/full, the locale), in a real
process; it checks the exit code, the one line (error, unreadable image or warning), that no traceback is
printed, that it took under 10 s and 1 GB, and that nothing outside `{tmp}/new` and `--out` changed.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import resource
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, NamedTuple

import pytest
from test_bad_inputs import VIT, Ctx, error_lines, pattern
from typer.testing import CliRunner

from vitcli.cli import app

DEADLINE_S = 10.0
# A case run in a real process pays for the interpreter and, for `vit predict`, torch, timm and datasets
# being imported: 5 s on a quiet machine, over 20 s on a shared one; what it does after that is small.
PROCESS_DEADLINE_S = 60.0
MEMORY_BYTES = 1 << 30
LIMITS = "images may have at most 67,108,864 pixels, 32,768 a side and an aspect ratio of 64:1"
FORMATS = "AVIF, BMP, DIB, GIF, ICO, JPEG, JPEG2000, PNG, PPM, TGA, TIFF, WEBP"


class Case(NamedTuple):
    """One row: id, the command (a list of arguments, or a `Shell` line), what is expected, the exit code,
    and what else must hold afterwards. `expected` is the error line after "error: " (code 2, as in
    tests/test_bad_inputs.py), a whole "unreadable: ..." or "warning: ..." line that must be printed, or
    else (code 0) what the case shows, in words, for the docs; "<*>" matches any text."""

    id: str
    build: Callable
    expected: str
    code: int = 2
    check: Callable | None = None


class Shell(NamedTuple):
    """A command line run by bash in a real process (the streams or the locale are part of the case)."""

    line: str
    env: dict | None = None


# -- builders ----------------------------------------------------------------------------------------------

def quote(path: Path) -> str:
    return shlex.quote(str(path))


def png(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of any declared size, made in a fraction of a second (its rows compress to
    almost nothing): what a decompression bomb or a 1 x 30,000,000 strip looks like on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(1)
    body = b"".join(packer.compress(row * min(4096, height - i)) for i in range(0, height, 4096)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def image(c: Ctx, name: str, data: bytes | None = None) -> Path:
    """An image file under tmp: `data` as given, else a small RGB PNG."""
    from test_bad_inputs import _png

    path = c.tmp / name
    path.write_bytes(_png() if data is None else data)
    return path


def tiff_oriented(c: Ctx, name: str, value, kind: int) -> Path:
    """A 16x24 TIFF whose EXIF orientation holds `value` as TIFF type `kind` (5: a rational, 2: text)."""
    from PIL import Image, TiffImagePlugin

    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[0x0112] = value
    info.tagtype[0x0112] = kind
    Image.new("RGB", (16, 24), "red").save(c.tmp / name, tiffinfo=info)
    return c.tmp / name


def fifo(c: Ctx, name: str) -> Path:
    os.mkfifo(c.tmp / name)
    return c.tmp / name


def renamed_classes(c: Ctx, names: list[str], folder: str = "r") -> Path:
    """A copy of the finished run whose head's class names are `names` (as a checkpoint from anywhere
    may name them)."""
    from safetensors.torch import load_file, save_file

    run = Path(shutil.copytree(c.run, c.tmp / folder))
    path = run / "model.safetensors"
    save_file(load_file(str(path)), str(path), {"format": "pt", "label_names": json.dumps(names)})
    config = json.loads((run / "config.json").read_text())
    config["label_names"] = names
    (run / "config.json").write_text(json.dumps(config))
    return run


def with_metrics(c: Ctx, data: bytes | None = None, size: int | None = None) -> Path:
    """A copy of the finished run whose metrics.jsonl is its own rows plus `data`, or junk of `size` bytes
    (a sparse file: a gigabyte costs no disk)."""
    run = Path(shutil.copytree(c.run, c.tmp / "r"))
    path = run / "metrics.jsonl"
    if size is not None:
        with open(path, "r+b") as handle:
            handle.truncate(size)
    else:
        path.write_bytes(path.read_bytes() + data)
    return run


def results_with(c: Ctx, text: str) -> Path:
    """A copy of the finished run whose results.json is `text`."""
    run = Path(shutil.copytree(c.run, c.tmp / "r"))
    (run / "results.json").write_text(text)
    return run


def parquet_with(c: Ctx, bad: bytes) -> Path:
    """A 32-image parquet data set whose image 9 is `bad`."""
    from test_bad_inputs import _images, _parquet

    images = _images(32)
    images[9] = {"bytes": bad, "path": None}
    return _parquet(c.tmp / "d", {"img": images, "label": [i % 4 for i in range(32)]})


def stream_unlabelled(c: Ctx, bad: bytes) -> list:
    """Masked-patch pretraining on a streamed, unlabelled parquet data set whose image 3 is `bad`."""
    from conftest import tiny_recipe
    import yaml
    from test_bad_inputs import _images, _parquet

    images = _images(32)
    images[3] = {"bytes": bad, "path": None}
    source = _parquet(c.tmp / "d", {"img": images})
    recipe = tiny_recipe(source, data={"streaming": True, "eval_split": None},
                         train={"objective": "masked_patch", "steps": 2})
    (c.tmp / "r.yaml").write_text(yaml.safe_dump(recipe))
    return ["pretrain", c.tmp / "r.yaml", "--out", c.out]


def plant_event_links(c: Ctx, victim: Path) -> None:
    """As soon as the run opens its TensorBoard log, plant links under every name SummaryWriter would
    have used in the next seconds (time, host, pid and counter are all predictable) to `victim`."""
    from vitcli.engine.persistence import tensorboard

    real = tensorboard.TensorBoardLog._open

    def planted(self):
        if self._writer is None:
            now = int(time.time())
            for t in range(now - 2, now + 30):
                for uid in range(4):
                    name = f"events.out.tfevents.{t:010d}.{socket.gethostname()}.{os.getpid()}.{uid}"
                    (self.folder / name).symlink_to(victim)
        return real(self)

    c.monkeypatch.setattr(tensorboard.TensorBoardLog, "_open", planted)


def event_files_on_full_disk(c: Ctx) -> None:
    """Every TensorBoard event file is created on /dev/full: each write fails as on a full disk."""
    from vitcli import files
    from vitcli.engine.persistence import tensorboard

    def create_new(path):
        return open("/dev/full", "wb")

    c.monkeypatch.setattr(files, "create_new", create_new)
    c.monkeypatch.setattr(tensorboard.files, "create_new", create_new)


def pretrain(c: Ctx, steps: int = 2, **data) -> list:
    from conftest import tiny_recipe
    import yaml

    path = c.tmp / "r.yaml"
    recipe = tiny_recipe(data.pop("source", c.data), train={"steps": steps}, data={"eval_split": None, **data})
    path.write_text(yaml.safe_dump(recipe))
    return ["pretrain", path, "--out", c.out]


def fail_config_write(c: Ctx) -> None:
    """The fsync of the export's config.json fails as on a full disk (after the weights were written)."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").rpartition("/")[2].startswith(".config.json."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    c.monkeypatch.setattr(os, "fsync", fsync)


KILLED = Path(".exp.0badc0de.partial")


def leftover_partial(c: Ctx) -> None:
    """What a `kill -9` during an earlier export to the same --out left: a half-written temp folder."""
    old = c.tmp / KILLED.name
    old.mkdir()
    (old / ".model.onnx.1234abcd.tmp").write_bytes(b"\x08\x07half")


def linked_folder(c: Ctx, name: str = "home") -> Path:
    """tmp/home -> tmp/disk/me: a home (or project) folder that is a symbolic link, as on many clusters."""
    (c.tmp / "disk" / "me").mkdir(parents=True)
    (c.tmp / name).symlink_to(c.tmp / "disk" / "me")
    return c.tmp / name


def resumable_with_metrics(c: Ctx, junk: bytes) -> list:
    """A copy of the finished run in {tmp}/new whose metrics.jsonl ends in `junk`, resumed to step 3."""
    shutil.copytree(c.run, c.out)
    (c.out / "metrics.jsonl").write_bytes((c.out / "metrics.jsonl").read_bytes() + junk)
    return ["pretrain", "--resume", "--out", c.out, "--set", "train.steps=3"]


# -- checks of what a case leaves --------------------------------------------------------------------------

def csv_rows(path: Path) -> list[list[str]]:
    import csv

    return list(csv.reader(io.StringIO(path.read_text())))


def formulas_neutralised(c: Ctx, result) -> None:
    cells = [cell for row in csv_rows(c.tmp / "p.csv")[1:] for cell in row[:1] + row[1::2]]
    assert cells and not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    assert "'=HYPERLINK(\"http://evil.example\",\"x\")" in cells and "'@SUM(1+1)" in cells, cells
    assert "grey" in cells  # an ordinary name is left as it is


def event_file_written(c: Ctx, result) -> None:
    assert (c.tmp / "victim.txt").read_text() == "precious"
    events = [p for p in c.out.glob("events.out.tfevents.*") if not p.is_symlink()]
    assert len(events) == 1 and events[0].stat().st_size > 0


def png_written(name: str) -> Callable:
    def check(c: Ctx, result) -> None:
        found = list((c.tmp / "figs").glob(name))
        assert found and found[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", list((c.tmp / "figs").iterdir())
    return check


def upright(c: Ctx, result) -> None:
    from vitcli.data.images import decode

    assert decode(c.tmp / "rot.tif").size == (24, 16)  # orientation 6: turned a quarter
    report = json.loads((c.tmp / "figs" / "inspection.json").read_text())
    assert [m["image"] for m in report["attention_maps"]] == ["rot.tif"]


def exported(folder: str, *names: str) -> Callable:
    def check(c: Ctx, result) -> None:
        out = c.tmp / folder
        assert sorted(p.name for p in out.iterdir()) == sorted(names), list(out.iterdir())
        assert [p.name for p in out.parent.glob(f".{out.name}.*.partial")] in ([], [KILLED.name])
    return check


def nothing_exported(c: Ctx, result) -> None:
    assert not (c.tmp / "exp").exists() and not list(c.tmp.glob(".exp.*.partial"))


def csv_in(path: str) -> Callable:
    def check(c: Ctx, result) -> None:
        rows = csv_rows(c.tmp / path)
        assert rows[0][:3] == ["path", "label_1", "prob_1"] and len(rows) == 2
    return check


def csv_on_stdout(c: Ctx, result) -> None:
    assert re.search(r"^path,label_1,prob_1,", result.output, re.M), result.output


def curves(rows: int, damaged: int) -> Callable:
    def check(c: Ctx, result) -> None:
        report = json.loads((c.tmp / "figs" / "inspection.json").read_text())
        assert report["learning_curves"]["rows"] == rows and report["learning_curves"]["damaged_lines"] == damaged
        assert (c.tmp / "figs" / "learning_curves.png").is_file()
    return check


def metrics_rewritten(c: Ctx, result) -> None:
    lines = (c.out / "metrics.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["step"] <= 3 for line in lines), lines[-3:]


def evaluated(c: Ctx, result) -> None:
    assert json.loads(result.stdout)["top1"] >= 0, result.stdout


def card_in(folder: bytes) -> Callable:
    def check(c: Ctx, result) -> None:
        out = c.tmp / "exp" / os.fsdecode(folder)
        assert (out / "model.safetensors").is_file() and "m\\udce9" in (out / "README.md").read_text()
    return check


def card_without_results(c: Ctx, result) -> None:
    card = (c.tmp / "exp" / "README.md").read_text()
    assert "accuracy" in card and "value: 5" not in card and "| top1 |" not in card, card


def names_dropped(c: Ctx, result) -> None:
    data = json.loads(result.stdout)
    assert data["label_names"] is None and data["predictions"][0]["top"][0]["label"] in ("0", "1", "2", "3"), data


def no_terminal_codes(c: Ctx, result) -> None:
    assert "\x1b" not in result.output and "\x07" not in result.output, repr(result.output)


def quiet(c: Ctx, result) -> None:
    assert result.stderr == "", result.stderr


def escaped_names(c: Ctx, result) -> None:
    # Under LC_ALL=C the UTF-8 bytes of "é" are undecodable too: Python keeps each byte as a surrogate.
    assert "caf\\udcc3\\udca9.png" in result.stdout and "\\udcff.png" in result.stdout, result.stdout


# -- the catalogue -----------------------------------------------------------------------------------------

UNDECODABLE = os.fsdecode(b"\xff.png")  # a file name that is not UTF-8 (Python keeps the byte as a surrogate)
HYPERLINK = '=HYPERLINK("http://evil.example","x")'
CASES = [
    # 0. security
    Case("tensorboard-planted-link", lambda c: (plant_event_links(c, c.tmp / "victim.txt"),
                                                (c.tmp / "victim.txt").write_text("precious"), pretrain(c))[2],
         "links planted under every name TensorBoard's own writer would use are never followed: the event file "
         "has a name of its own, created new (O_EXCL, O_NOFOLLOW)", 0, event_file_written),
    Case("csv-formula-injection", lambda c: ["predict", "--from", renamed_classes(c, [
        HYPERLINK, "+cmd|' /C calc'!A0", "@SUM(1+1)", "grey"]), image(c, "-2+3.png"), image(c, "\tx.png"),
        "--top-k", "4", "--csv", c.tmp / "p.csv"],
         "cells that start with = + - @, a tab or a carriage return (class names, file names) are written with a "
         "leading ' (OWASP), so a spreadsheet shows them as text", 0, formulas_neutralised),
    # 3. images without bounds: one decoder for every command
    Case("inspect-image-bomb", lambda c: ["inspect", "--from", c.run, "--images", image(c, "bomb.png", png(20000, 20000)),
                                          "--out", c.tmp / "figs"],
         "--images {tmp}/bomb.png: refused before decoding: Image size (400000000 pixels) exceeds limit of 178956970 "
         f"pixels, could be decompression bomb DOS attack; {LIMITS}"),
    Case("inspect-image-strip", lambda c: ["inspect", "--from", c.run, "--images",
                                           image(c, "strip.png", png(1, 30_000_000)), "--out", c.tmp / "figs"],
         f"--images {{tmp}}/strip.png: 1x30000000 pixels: refused before decoding; {LIMITS}"),
    Case("predict-image-strip", lambda c: ["predict", "--from", c.run, image(c, "strip.png", png(1, 30_000_000))],
         f"unreadable: {{tmp}}/strip.png: 1x30000000 pixels: refused before decoding; {LIMITS}", 1),
    Case("predict-image-bomb", lambda c: ["predict", "--from", c.run, image(c, "bomb.png", png(9000, 9000))],
         f"unreadable: {{tmp}}/bomb.png: 9000x9000 pixels: refused before decoding; {LIMITS}", 1),
    Case("predict-image-aspect", lambda c: ["predict", "--from", c.run, image(c, "wide.png", png(20000, 100))],
         f"unreadable: {{tmp}}/wide.png: 20000x100 pixels: refused before decoding; {LIMITS}", 1),
    Case("inspect-images-fifo", lambda c: ["inspect", "--from", c.run, "--images", fifo(c, "cam.png"),
                                           "--out", c.tmp / "figs"],
         "--images {tmp}/cam.png: refused: it is a FIFO (named pipe), not a regular file; give an image file"),
    Case("predict-fifo", lambda c: ["predict", "--from", c.run, fifo(c, "cam.png")],
         "unreadable: {tmp}/cam.png: refused: it is a FIFO (named pipe), not a regular file; give an image file", 1),
    Case("predict-eps-as-png", lambda c: ["predict", "--from", c.run, image(c, "x.png", b"%!PS-Adobe-3.0 EPSF-3.0\n")],
         f"unreadable: {{tmp}}/x.png: not an image in a format vit reads ({FORMATS})", 1),
    Case("inspect-exif-rational-orientation", lambda c: ["inspect", "--from", c.run, "--images", tiff_oriented(
        c, "rot.tif", __import__("PIL.TiffImagePlugin").TiffImagePlugin.IFDRational(6, 1), 5),
        "--out", c.tmp / "figs"],
         "an EXIF orientation stored as a rational (TIFF) turns the image as a whole number would", 0, upright),
    Case("predict-exif-orientation-junk", lambda c: ["predict", "--from", c.run, tiff_oriented(
        c, "half.tif", __import__("PIL.TiffImagePlugin").TiffImagePlugin.IFDRational(13, 2), 5),
        tiff_oriented(c, "text.tif", "six", 2)],
         "an orientation that is no whole number in 1-8 (13/2, text) leaves the image as stored", 0),
    Case("train-image-strip", lambda c: pretrain(c, source=str(parquet_with(c, png(1, 30_000_000)))),
         "data.source '{tmp}/d' split 'train': 1 of 32 images seen could not be decoded, more than "
         f"max_bad_fraction=0.001 allows; e.g. example 9: 1x30000000 pixels: refused before decoding; {LIMITS}"),
    Case("train-image-bomb", lambda c: pretrain(c, source=str(parquet_with(c, png(20000, 20000)))),
         "data.source '{tmp}/d' split 'train': 1 of 32 images seen could not be decoded, more than "
         "max_bad_fraction=0.001 allows; e.g. example 9: refused before decoding: Image size (400000000 pixels) "
         f"exceeds limit of 178956970 pixels, could be decompression bomb DOS attack; {LIMITS}"),
    Case("stream-unlabelled-image-bomb", lambda c: stream_unlabelled(c, png(20000, 20000)),
         "warning: data.source '{tmp}/d' split 'train': skipping undecodable image, example <*>: refused before "
         f"decoding: Image size (400000000 pixels) exceeds limit of 178956970 pixels, could be decompression bomb DOS "
         f"attack; {LIMITS}", 0),
    # 5. output that cannot be written
    Case("stdout-closed-pipe", lambda c: Shell(f"{' '.join(VIT)} models | head -c 1 >/dev/null"),
         "", 0, quiet),
    Case("stdout-closed-pipe-json", lambda c: Shell(f"{' '.join(VIT)} recipe show demo | head -c 1 >/dev/null"),
         "", 0, quiet),
    Case("stdout-full", lambda c: Shell(f"{' '.join(VIT)} models > /dev/full"),
         "cannot write to stdout (No space left on device); the output is incomplete"),
    Case("stdout-full-yaml", lambda c: Shell(f"{' '.join(VIT)} recipe show demo > /dev/full"),
         "cannot write to stdout (No space left on device); the output is incomplete"),
    Case("stdout-closed-at-start", lambda c: Shell(f"{' '.join(VIT)} models >&-"),
         "cannot write to stdout (it was closed when vit started); the output is incomplete"),
    Case("stderr-full", lambda c: Shell(f"{' '.join(VIT)} recipe check demo 2> /dev/full"),
         "progress and notes that cannot be written to stderr are dropped; the command goes on", 0, quiet),
    Case("names-non-utf8-locale", lambda c: Shell(
        f"{' '.join(VIT)} predict --from {c.run} {quote(image(c, 'café.png'))} {quote(image(c, UNDECODABLE))} "
        "--top-k 1",
        {"LC_ALL": "C", "PYTHONUTF8": "0", "COLUMNS": "400"}),
         "file names the locale cannot encode are printed with backslash escapes", 0, escaped_names),
    Case("run-name-bytes-of-another-locale", lambda c: Shell(f"{' '.join(VIT)} recipe show demo --set run.name=café",
                                                             {"LC_ALL": "C", "PYTHONUTF8": "0"}),
         "--set run.name=caf\\udcc3\\udca9: run.name: 'caf\\udcc3\\udca9' is not a usable name; valid: up to 128 "
         "bytes of UTF-8 text without '/', e.g. 'cifar10-b16' (run.out chooses the folder)"),
    Case("tensorboard-disk-full", lambda c: (event_files_on_full_disk(c), pretrain(c))[1],
         "disk full while writing {tmp}/new; nothing was replaced, earlier files are intact"),
    Case("predict-file-name-terminal-escapes", lambda c: ["predict", "--from", c.run, image(
        c, "a\x1b[2Jb\x1b]0;pwn\x07.png", b"junk")],
         f"unreadable: {{tmp}}/a\\x1b[2Jb\\x1b]0;pwn\\x07.png: not an image in a format vit reads ({FORMATS})", 1,
         no_terminal_codes),
    # 6. user text drawn as plain text, never as mathematics
    Case("eval-out-mathtext-class-names", lambda c: ["eval", "--from", renamed_classes(
        c, ["$\\undefinedcommand$", "$x^2$", "a$b", "grey"]), "--ignore-labels", "--out", c.tmp / "figs"],
         "class names such as `$\\undefinedcommand$` are drawn as written", 0, png_written("confusion_matrix.png")),
    Case("inspect-mathtext-names", lambda c: ["inspect", renamed_classes(c, ["$\\sqrt{$", "b", "c", "d"], "$\\bad$"),
                                              "--images", image(c, "$\\frac$.png"), "--out", c.tmp / "figs"],
         "class, file and run names with `$` in figure titles are drawn as written", 0,
         png_written("attention_maps.png")),
    # 4. sizes a setting multiplies
    Case("eval-out-dpi-beyond-figure-limit", lambda c: ["eval", "--from", c.run, "--out", c.tmp / "figs", "--dpi",
                                                        "1200"],
         "warning: confusion_matrix.png: drawn at 666 dpi, not 1200: at 1200 dpi it would be 7200x7200 pixels, more "
         "than the 16,000,000 a figure may have", 0, png_written("confusion_matrix.png")),
    # 9. silently wrong
    Case("predict-class-names-of-another-head", lambda c: ["predict", "--from", renamed_classes(
        c, ["a", "b", "c", "d", "e"]), image(c, "a.png"), "--json"],
         "warning: {tmp}/r/model.safetensors: 5 class names for a head of 4 outputs; the names belong to another "
         "head or are damaged, so they are ignored and classes are shown by index", 0, names_dropped),
    # 6. user text drawn as plain text, and cut to a length that can be laid out
    Case("eval-out-class-names-100000-characters", lambda c: ["eval", "--from", renamed_classes(
        c, ["x" * 100_000, "y" * 50_000, "z", "w"]), "--ignore-labels", "--out", c.tmp / "figs"],
         "class names of 100,000 characters are drawn cut to 48 (the JSON keeps them whole)", 0,
         png_written("confusion_matrix.png")),
    Case("export-results-top1-not-an-accuracy", lambda c: ["export", results_with(c, '{"steps": 2, "top1": 5}'),
                                                           "--out", c.tmp / "exp"],
         "warning: {tmp}/r/results.json: top1 5 is not an accuracy in [0, 1] (damaged or hand-edited); the model card "
         "reports no results", 0, card_without_results),
    Case("inspect-image-named-in-latin-1", lambda c: ["inspect", "--from", c.run, "--images", image(
        c, os.fsdecode(b"caf\xe9.png")), "--out", c.tmp / "figs"],
         "an image named in Latin-1 (its byte kept by Python as a surrogate) is titled caf\\udce9.png in the figure",
         0, png_written("attention_maps.png")),
    Case("eval-run-in-a-latin-1-folder", lambda c: ["eval", "--from", shutil.copytree(
        c.run, c.tmp / os.fsdecode(b"run\xe9")), "--json"],
         "a run in a folder named in Latin-1 is read (safetensors, which takes UTF-8 paths only, opens the file vit "
         "checked through this process's handle on it)", 0, evaluated),
    Case("finetune-from-a-latin-1-run", lambda c: ["finetune", "--from", shutil.copytree(
        c.run, c.tmp / os.fsdecode(b"run\xe9")), "--data", c.data, "--steps", "1", "--set", "train.batch_size=16",
        "--set", "schedule.warmup_steps=0", "--out", c.out],
         "a fine-tune from a run in a Latin-1 folder: named run--finetune, the path escaped in TensorBoard's "
         "hyperparameters", 0, lambda c, result: (c.out / "model.safetensors").is_file() or pytest.fail(result.output)),
    Case("export-out-named-in-latin-1", lambda c: ["export", c.run, "--out", c.tmp / "exp" / os.fsdecode(b"m\xe9")],
         "an export into a folder named in Latin-1 (its name, escaped, in the model card)", 0, card_in(b"m\xe9")),
    # 7. vit export is atomic
    Case("export-out-under-a-file", lambda c: ((c.tmp / "notes.txt").write_text("x"),
                                              ["export", c.run, "--out", c.tmp / "notes.txt" / "exp"])[1],
         "--out {tmp}/notes.txt/exp: cannot create it (a part of the path is a file, not a directory); choose "
         "another --out"),
    Case("export-out-too-long", lambda c: ["export", c.run, "--out", c.tmp / ("o" * 300)],
         "--out <*>...: too long (<*> bytes; at most 255 a name, 4095 in all); give a shorter path"),
    Case("export-out-is-a-file", lambda c: ((c.tmp / "exp").write_text("x"), ["export", c.run, "--out", c.tmp / "exp"])[1],
         "--out {tmp}/exp: already exists and is not an empty directory; choose a new --out"),
    Case("export-fails-midway", lambda c: (fail_config_write(c), ["export", c.run, "--out", c.tmp / "exp"])[1],
         "disk full while writing {tmp}/exp/config.json; nothing was replaced, earlier files are intact", 2,
         nothing_exported),
    Case("export-after-a-killed-export", lambda c: (leftover_partial(c), ["export", c.run, "--format", "onnx",
                                                                          "--out", c.tmp / "exp"])[1],
         "a temp folder a killed export left beside --out does not block the next export", 0,
         exported("exp", "model.onnx", "config.json", "README.md")),
    # 10. output paths a user owns
    Case("csv-in-linked-home", lambda c: ["predict", "--from", c.run, image(c, "a.png"), "--csv",
                                          linked_folder(c) / "p.csv"],
         "a --csv in a home folder that is a symbolic link is written there", 0, csv_in("disk/me/p.csv")),
    Case("csv-to-dev-stdout", lambda c: ["predict", "--from", c.run, image(c, "a.png"), "--csv", "/dev/stdout"],
         "--csv /dev/stdout writes the CSV to stdout", 0, csv_on_stdout),
    Case("csv-is-a-directory", lambda c: ["predict", "--from", c.run, image(c, "a.png"), "--csv", c.tmp],
         "--csv {tmp}: is a directory; give a file name"),
    Case("csv-under-a-file", lambda c: ((c.tmp / "notes.txt").write_text("x"), [
        "predict", "--from", c.run, image(c, "a.png"), "--csv", c.tmp / "notes.txt" / "p.csv"])[1],
         "--csv {tmp}/notes.txt/p.csv: cannot be written (Not a directory); choose another --csv"),
    Case("csv-to-fifo-nobody-reads", lambda c: ["predict", "--from", c.run, image(c, "a.png"), "--csv",
                                                fifo(c, "p.fifo")],
         "--csv {tmp}/p.fifo: cannot be written (No such device or address); choose another --csv"),
    Case("inspect-out-linked-folder", lambda c: ["inspect", "--from", c.run, "--out", linked_folder(c, "figs")],
         "an --out that is a symbolic link to a folder is written into", 0, png_written("embedding_filters.png")),
    Case("export-out-in-linked-home", lambda c: ["export", c.run, "--out", linked_folder(c) / "exp"],
         "an export into a home folder that is a symbolic link", 0,
         exported("disk/me/exp", "model.safetensors", "config.json", "README.md")),
    # 11. damaged metrics.jsonl
    Case("metrics-integer-too-large", lambda c: ["inspect", with_metrics(c, b'{"step": 3, "loss": 1' + b"0" * 400
                                                                         + b'}\n'), "--out", c.tmp / "figs"],
         "warning: {tmp}/r/metrics.jsonl: 1 damaged line skipped (not a metrics row: torn, junk, or a number too large for "
         "a float); the learning curves show the other rows", 0, curves(3, 1)),
    Case("metrics-junk-rows", lambda c: ["inspect", with_metrics(c, b'[1]\n{"step": "3"}\n\xff\xfe\n{"step": -1}\n'
                                                                 + b"[" * 100000 + b"\n{\n"), "--out", c.tmp / "figs"],
         "warning: {tmp}/r/metrics.jsonl: 6 damaged lines skipped (not a metrics row: torn, junk, or a number too large "
         "for a float); the learning curves show the other rows", 0, curves(3, 6)),
    Case("metrics-values-too-large", lambda c: ["inspect", with_metrics(c, b"".join(
        b'{"step": %d, "loss": 1.7e308, "lr": 1e308}\n' % i for i in range(3, 28))), "--out", c.tmp / "figs"],
         "warning: {tmp}/r/metrics.jsonl: 25 damaged lines skipped (not a metrics row: torn, junk, or a number too large "
         "for a float); the learning curves show the other rows", 0, curves(3, 25)),
    Case("resume-metrics-nested-deep", lambda c: resumable_with_metrics(c, b"[" * 100000 + b"\n" + b"x" * 70000),
         "a line nested 100000 deep (or of 70 KB) in metrics.jsonl is dropped on --resume, like a torn one", 0,
         metrics_rewritten),
    Case("metrics-300000-rows", lambda c: ["inspect", with_metrics(c, b'{"step": 1, "loss": 1.0}\n' * 300_000),
                                            "--out", c.tmp / "figs"],
         "warning: {tmp}/r/metrics.jsonl: only the first 200,000 rows were read; the rest is left out", 0),
    Case("metrics-gigabyte-of-junk", lambda c: ["inspect", with_metrics(c, size=1 << 30), "--out", c.tmp / "figs"],
         "warning: {tmp}/r/metrics.jsonl: only the first 256 MiB were read (<*> rows); the rest is left out", 0),
]
CASE_IDS = [case.id for case in CASES]


# -- the harness -------------------------------------------------------------------------------------------

def snapshot(*roots: Path) -> dict[str, str]:
    """Every file and folder under `roots` with a hash of its content (size and mtime for big files: a
    case's gigabyte input is not read again to check that it is unchanged)."""
    seen = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not path.is_file():
                seen[str(path)] = "link" if path.is_symlink() else "dir"
            elif path.stat().st_size > 1 << 26:
                seen[str(path)] = f"{path.stat().st_size}:{path.stat().st_mtime_ns}"
            else:
                seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _in_process(c: Ctx, args: list, caplog) -> tuple[int, str, object]:
    c.monkeypatch.chdir(c.tmp)
    rss, peak = _rss(), _peak()
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(app, [str(a) for a in args])
    if _peak() > peak:  # a new high-water mark: this case's own peak, above what it started with
        assert _peak() - rss < MEMORY_BYTES, f"peak memory grew by {(_peak() - rss) / 2**20:.0f} MiB"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    warnings = "".join(f"warning: {r.getMessage()}\n" for r in caplog.records if r.levelname == "WARNING")
    return result.exit_code, result.output + warnings, result


def _in_a_process(c: Ctx, shell: Shell) -> tuple[int, str, subprocess.CompletedProcess]:
    """Run the line with its output in files of its own. (Its memory is not asserted: a child forked from
    this pytest process starts with pytest's own peak as its high-water mark, so ru_maxrss would measure
    pytest; the in-process cases check the bound.)"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(shell.env or {})}
    with open(c.tmp / ".stdout", "w+b") as out, open(c.tmp / ".stderr", "w+b") as err:
        proc = subprocess.Popen(["bash", "-c", shell.line], stdout=out, stderr=err, cwd=c.tmp, env=env)
        _, status, _ = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        stdout, stderr = os.fsdecode(out.read()), os.fsdecode(err.read())
    (c.tmp / ".stdout").unlink(), (c.tmp / ".stderr").unlink()
    result = subprocess.CompletedProcess(shell.line, proc.returncode, stdout, stderr)
    return result.returncode, stdout + stderr, result


def printed(case: Case) -> bool:
    """Whether `expected` is a line the command prints (else it says in words what the case shows)."""
    return case.code == 2 or case.expected.startswith(("unreadable: ", "warning: "))


def expected_line(case: Case, c: Ctx) -> re.Pattern:
    regex = pattern(case.expected, c).pattern
    return re.compile(regex if case.code == 2 else regex.replace("^error: ", "^", 1))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_case_ends_as_documented(case: Case, tmp_path, tiny_data, finished_run, monkeypatch, caplog):
    c = Ctx(tmp_path, tiny_data, finished_run, monkeypatch)
    start = time.monotonic()
    built = case.build(c)
    roots = (c.tmp, c.data, c.run)
    before = snapshot(*roots)
    if isinstance(built, Shell):
        code, output, result = _in_a_process(c, built)
    else:
        code, output, result = _in_process(c, built, caplog)
    deadline = PROCESS_DEADLINE_S if isinstance(built, Shell) else DEADLINE_S
    assert time.monotonic() - start < deadline, f"took {time.monotonic() - start:.1f} s"
    assert "Traceback" not in output and "Exception ignored" not in output, output
    assert code == case.code, output
    lines = [line for line in output.splitlines() if line.startswith(("error:", "unreadable:", "warning:"))]
    assert len(error_lines(output)) == (case.code == 2), output
    if printed(case):
        assert [line for line in lines if expected_line(case, c).match(line)], f"\n got: {lines}\nwant: {case.expected}"
    if case.check is not None:
        case.check(c, result)
    # Nothing changed outside the new run directory and --out (the cases' own outputs, named here).
    outputs = [c.out, c.tmp / "figs", c.tmp / "exp", c.tmp / "p.csv", c.tmp / "disk"]
    after = snapshot(*roots)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # `vit inspect` / `vit eval --out` of a run (or a case's copy of it) add the figures to its TensorBoard
    # log: a new event file in the run (run_figures.py); nothing the run holds changes.
    changed -= {k for k in changed if k not in before and Path(k).name.startswith("events.out.tfevents.")
                and (Path(k).parent / "recipe.json").is_file()}
    assert not [k for k in changed if not any(k == str(o) or k.startswith(f"{o}/") for o in outputs)], changed


def test_a_planted_file_under_a_new_name_is_refused_not_followed(tmp_path):
    """files.create_new never opens what is already there: a link planted under the name is refused."""
    from vitcli import files
    from vitcli.errors import RunError

    (tmp_path / "victim").write_text("precious")
    (tmp_path / "events.out.tfevents.1").symlink_to(tmp_path / "victim")
    with pytest.raises(RunError, match="refused: something is already there"):
        files.create_new(tmp_path / "events.out.tfevents.1")
    assert (tmp_path / "victim").read_text() == "precious"

"""Bad inputs, tried and listed: each one through the real CLI must end in one red line and exit code 2.

Every case builds its broken input under `tmp_path`, runs `vit ...`, and checks four things: the exit
code is 2, the whole error line is the expected one (paths substituted), no traceback is printed, and
nothing outside the new run directory `{tmp}/new` was written or deleted. The table below is also the
source of `docs/bad-inputs.md`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_recipe, write_webdataset
from typer.testing import CliRunner

from vitcli.cli import app

ROOT = Path(__file__).resolve().parents[1]
# The CLI as the running interpreter runs it: any environment (venv, conda, system) works.
VIT = [sys.executable, "-m", "vitcli"]
MARKER = "pwned.txt"  # what the malicious pickle would create if it were ever unpickled
HUB_DEADLINE_S = 20.0  # an unreachable hub must fail within this, not after minutes of retries


@dataclass
class Ctx:
    """What a case may use: a fresh tmp folder, the shared tiny data set and a finished tiny run."""

    tmp: Path
    data: Path
    run: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def out(self) -> Path:
        """The new run directory a case may create (and the only place it may write)."""
        return self.tmp / "new"

    def recipe(self, name: str = "r.yaml", text: str | None = None, **sections) -> Path:
        """Write a recipe: `text` as is, or the tiny recipe with `sections` merged in."""
        path = self.tmp / name
        path.write_text(text if text is not None else yaml.safe_dump(tiny_recipe(self.data, **sections)))
        return path

    def ckpt(self) -> Path:
        """The finished run's last training checkpoint."""
        return self.run / "checkpoints" / "step-00000002.pt"


# -- builders of broken inputs ---------------------------------------------------------------------------

def _png(seed: int = 0) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _parquet(folder: Path, columns: dict[str, list], split: str = "train") -> Path:
    """A plain parquet file (no `datasets` metadata) in the hub's layout; returns the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), folder / f"{split}-00000-of-00001.parquet")
    return folder


def _images(n: int, corrupt: set[int] = frozenset()) -> list[dict]:
    return [{"bytes": b"\x89PNG\r\n\x1a\n garbage" if i in corrupt else _png(i), "path": None} for i in range(n)]


def _npz(c: Ctx, drop: tuple[str, ...]) -> Path:
    """A Google .npz of a tiny ViT (vit_jax array names), without the arrays in `drop`."""
    from foreign import write_npz

    from vitcli.recipe.config import ModelCfg
    from vitcli.models import build_model

    model = build_model(ModelCfg(name="Ti/4", res=(16, 16), width=32, depth=1, heads=2, mlp_dim=64), 3)
    return write_npz(model, c.tmp / "ViT.npz", drop=drop)


def _npy(array_header: bytes, data: bytes) -> bytes:
    """An .npy member written by hand: magic, version 1.0, a header of our choosing, then `data`."""
    header = array_header + b" " * (-(len(array_header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + data


def _hostile_npz(c: Ctx, member: str, content: bytes | None = None, *, inflate: int = 0) -> Path:
    """The tiny ViT .npz with one member replaced by `content` (raw .npy bytes), or, with `inflate`, by a
    well-formed float32 array of `inflate` zero bytes that deflate squeezes to about a thousandth."""
    import zipfile

    path = _npz(c, drop=())
    with zipfile.ZipFile(path) as src:
        members = {info.filename: src.read(info) for info in src.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for name, data in members.items():
            if name != member + ".npy":
                out.writestr(name, data)
        if inflate:
            with out.open(member + ".npy", "w", force_zip64=True) as handle:
                handle.write(_npy(f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({inflate // 4},), }}".encode(),
                                  b""))
                chunk = bytes(1 << 20)
                for _ in range(inflate >> 20):
                    handle.write(chunk)
        else:
            out.writestr(member + ".npy", content)
    return path


def _object_npy() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


def _hf_folder(c: Ctx, model_type: str) -> Path:
    """A folder in transformers' layout whose config.json names another model type."""
    from safetensors.torch import save_file

    folder = c.tmp / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(f'{{"model_type": "{model_type}", "hidden_size": 32}}')
    save_file({"embeddings.cls_token": torch.zeros(1, 1, 32)}, str(folder / "model.safetensors"))
    return folder


def _external(c: Ctx, kind: str, changes: dict, name: str = "config.json") -> Path:
    """A tiny model folder written by its own framework (transformers' save_pretrained, timm's save_for_hf)
    whose `name` then has `changes` written over it (dotted keys reach into model_args / pretrained_cfg)."""
    import json

    from foreign import randomise

    folder = c.tmp / kind
    if kind == "hf":
        import transformers

        transformers.logging.set_verbosity_error()
        cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                     image_size=16, patch_size=4, id2label={0: "cat", 1: "dog"})
        randomise(transformers.ViTForImageClassification(cfg)).save_pretrained(folder)
        (folder / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5, 0.5]}')
    else:
        import timm
        from timm.models._hub import save_for_hf

        model = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=1,
                                  num_heads=2, num_classes=2)
        save_for_hf(model, folder, safe_serialization=True)
    config = json.loads((folder / name).read_text())
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    (folder / name).write_text(json.dumps(config))
    return folder


def _four_channels(c: Ctx) -> Path:
    """A timm ViT with a 4-channel patch embedding (RGBA or RGB+depth), as a bare safetensors file."""
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2,
                              num_classes=2, in_chans=4)
    save_file(model.state_dict(), str(c.tmp / "rgba.safetensors"))
    return c.tmp / "rgba.safetensors"


def _offline(c: Ctx, name: str) -> str:
    """A hub name, with the hub unreachable and an empty huggingface_hub cache under tmp."""
    from huggingface_hub import constants

    from vitcli import hub

    c.monkeypatch.setattr(constants, "HF_HUB_CACHE", str(c.tmp / "hf-cache"))
    c.monkeypatch.setattr(hub, "reachable", lambda timeout=hub.PROBE_TIMEOUT_S: False)
    return name


def _evil_pickle(path: Path, marker: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path.write_bytes(pickle.dumps({"model": {"w": Evil()}}))
    return path


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _script_dataset(c: Ctx) -> Path:
    """A local data set that is a `datasets` loading script; running it would create the marker file."""
    folder = c.tmp / "scr"
    folder.mkdir()
    (folder / "scr.py").write_text(f"open({str(c.tmp / MARKER)!r}, 'w').write('ran')\n")
    return folder


def _bad_shapes(c: Ctx) -> Path:
    from safetensors.torch import load_file, save_file

    folder = c.tmp / "weights"
    folder.mkdir()
    state = load_file(str(c.run / "model.safetensors"))
    state["pos_embed"] = torch.zeros(1, 5, 48)
    save_file(state, str(folder / "model.safetensors"))
    shutil.copy(c.run / "config.json", folder / "config.json")
    return folder / "model.safetensors"


def _truncated(src: Path, dst: Path) -> Path:
    blob = src.read_bytes()
    dst.write_bytes(blob[: len(blob) // 2])
    return dst


def _truncated_data(c: Ctx) -> Path:
    folder = c.tmp / "data"
    folder.mkdir()
    for part in c.data.glob("*.parquet"):
        _truncated(part, folder / part.name)
    return folder


def _tars(c: Ctx, truncate: bool = False, **kw) -> Path:
    """Two WebDataset shards of 16 examples (`KEY.png` + `KEY.cls`); the second cut in half if `truncate`."""
    folder = write_webdataset(c.tmp / "w", 2, 16, size=16, **kw)
    if truncate:
        _truncated(folder / "train-00001.tar", folder / "train-00001.tar")
    return folder


def _empty(c: Ctx) -> Path:
    (c.tmp / "empty").mkdir()
    return c.tmp / "empty"


def _streamed(source: Path) -> dict:
    return _no_eval(source, streaming=True, num_classes=4)


def _scrambled_data(c: Ctx) -> Path:
    """The tiny data with the middle of the train file scrambled: footer intact, pages unreadable."""
    folder = c.tmp / "data"
    shutil.copytree(c.data, folder)
    part = folder / "train-00000-of-00001.parquet"
    blob = bytearray(part.read_bytes())
    blob[200:-2000] = bytes((b * 7 + 3) % 256 for b in blob[200:-2000])
    part.write_bytes(bytes(blob))
    return folder


def _locked(c: Ctx) -> list[str]:
    """Hold the lock of the new run directory, as a `vit pretrain` running there would."""
    from vitcli.files import RunLock

    c.monkeypatch.setattr(c, "lock", RunLock(c.out).__enter__(), raising=False)
    return _pretrain(c, c.recipe())


def _planted_link(c: Ctx, name: str) -> Path:
    """A copy of the finished run with `name` replaced by a link to a file outside it."""
    run = Path(shutil.copytree(c.run, c.tmp / "r"))
    (c.tmp / "victim.txt").write_text("precious")
    (run / name).unlink()
    (run / name).symlink_to(c.tmp / "victim.txt")
    return run


def _config_with(c: Ctx, **model) -> Path:
    """A copy of the finished run whose config.json's model description has `model` written over it."""
    import json

    run = Path(shutil.copytree(c.run, c.tmp / "r"))
    config = json.loads((run / "config.json").read_text())
    config["vit_model"].update(model)
    (run / "config.json").write_text(json.dumps(config))
    return run


def _recipe_data(c: Ctx, **data) -> Path:
    """A copy of the finished run whose config.json's stored recipe has `data` written into its data section."""
    import json

    run = Path(shutil.copytree(c.run, c.tmp / "r"))
    config = json.loads((run / "config.json").read_text())
    config["vit_recipe"]["data"].update(data)
    (run / "config.json").write_text(json.dumps(config))
    return run


def _integer_weights(c: Ctx) -> Path:
    """The finished run's weights as int8, as a quantised checkpoint would hold them."""
    state = torch.load(c.ckpt(), weights_only=True)["model"]
    torch.save({k: (v * 100).to(torch.int8) for k, v in state.items()}, c.tmp / "int.pt")
    return c.tmp / "int.pt"


def _evil_zip(c: Ctx) -> Path:
    """A torch.save zip archive whose data.pkl would run code (protocol 2 inside the zip)."""
    import zipfile

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {c.tmp / MARKER}",))

    plain, path = c.tmp / "plain.pt", c.tmp / "evil.pt"
    torch.save({"w": torch.zeros(1)}, plain)
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            evil = pickle.dumps({"model": Evil()}, protocol=2)
            dst.writestr(info, evil if info.filename.endswith("data.pkl") else data)
    plain.unlink()
    return path


def _folder(c: Ctx, classes: tuple[str, ...]) -> str:
    """An image folder (one split) with one small PNG per class; returns its imagefolder: source."""
    for i, name in enumerate(classes):
        (c.tmp / "f" / name).mkdir(parents=True)
        (c.tmp / "f" / name / "0.png").write_bytes(_png(i))
    return f"imagefolder:{c.tmp / 'f'}"


def _wide_head(c: Ctx) -> Path:
    """The finished run's weights with an 8-way head and no class names (a plain state dict)."""
    from safetensors.torch import load_file

    state = load_file(str(c.run / "model.safetensors"))
    state["head.weight"] = torch.zeros(8, state["head.weight"].shape[1])
    state["head.bias"] = torch.zeros(8)
    torch.save(state, c.tmp / "wide.pth")
    return c.tmp / "wide.pth"


def _loose_image(c: Ctx) -> str:
    """An image folder with an image beside its class folders (which torchvision would not use either)."""
    source = _folder(c, ("red", "green"))
    (c.tmp / "f" / "n01440764_val_1.JPEG").write_bytes(_png(9))
    return source


def _mixed_folder(c: Ctx) -> str:
    """Class folders beside a split folder: which split would green/ and red/ be?"""
    source = _folder(c, ("red", "green"))
    (c.tmp / "f" / "train" / "red").mkdir(parents=True)
    (c.tmp / "f" / "train" / "red" / "0.png").write_bytes(_png(3))
    return source


def _deep_tree(c: Ctx) -> Path:
    """A home directory given as an image folder: folders far below <split>/<class>."""
    (c.tmp / "home" / "me" / "photos" / "2024" / "trip" / "day1").mkdir(parents=True)
    return c.tmp / "home"


def _pretrain(c: Ctx, path: Path, *sets: str) -> list[str]:
    args = ["pretrain", str(path), "--out", str(c.out)]
    for item in sets:
        args += ["--set", item]
    return args


def _no_eval(source: Path, **more) -> dict:
    return {"data": {"source": str(source), "eval_split": None, **more}}


def _disk_full(c: Ctx) -> list[str]:
    """Make the fsync of the step-3 checkpoint's temp file fail as a full disk would."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if ".step-00000003.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(fd)

    c.monkeypatch.setattr(os, "fsync", fsync)
    return _pretrain(c, c.recipe(train={"steps": 4, "checkpoint_every": 1}))


# id, command-line builder, the expected error line after "error: " ("<*>" is any text; {tmp}, {data}
# and {run} are the case's folder, the tiny data set and the finished run).
CASES = [
    # -- recipes and --set --------------------------------------------------------------------------------
    ("yaml-syntax", lambda c: ["recipe", "check", c.recipe(text="model:\n  name: [B/16\n")],
     "{tmp}/r.yaml:3:1: YAML syntax error: expected ',' or ']', but got '<stream end>'"),
    ("recipe-not-mapping", lambda c: ["recipe", "check", c.recipe(text="- model\n- data\n")],
     "{tmp}/r.yaml: a recipe must be a mapping of sections (model, data, ...), got list"),
    ("unknown-key", lambda c: ["recipe", "check", c.recipe(train={"batch_sise": 8})],
     "{tmp}/r.yaml: train.batch_sise: unknown key (did you mean 'batch_size'?); valid keys: 'batch_size', "
     "'micro_batch', 'steps', <*>"),
    ("wrong-type", lambda c: ["recipe", "check", c.recipe(train={"batch_size": "lots"})],
     "{tmp}/r.yaml: train.batch_size: expected a whole number, got 'lots'"),
    ("missing-required-field", lambda c: ["recipe", "check", c.recipe(fewshot={"datasets": [{"name": "x"}]})],
     "{tmp}/r.yaml: fewshot.datasets[0].source: missing required field"),
    ("missing-data-source", lambda c: _pretrain(c, c.recipe(text="model:\n  name: Ti/16\n")),
     "{tmp}/r.yaml: data.source: missing required field; give a hub id, a local directory, imagefolder:PATH or "
     "builtin:digits (or --set data.source=...)"),
    ("pretrain-without-data", lambda c: ["pretrain", "--out", c.out, "--res", "32"],
     "<*>/pretrain/default.yaml: data.source: missing; give --data SOURCE (a hub id, a local directory, "
     "imagefolder:PATH or builtin:digits) or a RECIPE"),
    ("steps-and-epochs-options", lambda c: ["pretrain", "--data", c.data, "--steps", "20", "--epochs", "2", "--out", c.out],
     "--steps 20 and --epochs 2: give one training length, not both"),
    ("base-cycle", lambda c: (c.recipe("b.yaml", "base: a.yaml\n"),
                              ["recipe", "check", c.recipe("a.yaml", "base: b.yaml\n")])[1],
     "{tmp}/a.yaml: base: cycle in recipe inheritance: {tmp}/a.yaml -> {tmp}/b.yaml -> {tmp}/a.yaml"),
    ("yaml-duplicate-key", lambda c: ["recipe", "check", c.recipe(text="train:\n  steps: 3\n  steps: 4\n")],
     "{tmp}/r.yaml:3:3: duplicate key 'steps' (first given on line 2); give each key once"),
    ("yaml-duplicate-section", lambda c: ["recipe", "check", c.recipe(text="train: {steps: 3}\ntrain: {seed: 1}\n")],
     "{tmp}/r.yaml:2:1: duplicate key 'train' (first given on line 1); give each key once"),
    ("yaml-alias-bomb", lambda c: ["recipe", "check", c.recipe(text="a: &a [x, x, x, x, x, x, x, x, x]\n"
                                                                     "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n")],
     "{tmp}/r.yaml:2:8: alias *a is not allowed in a recipe; write the value out (or share it with base:)"),
    ("yaml-nested-too-deep", lambda c: ["recipe", "check", c.recipe(text="model:\n  name: " + "[" * 5000 + "]" * 5000)],
     "{tmp}/r.yaml:2:1: nested deeper than 32 levels"),
    ("set-nested-too-deep", lambda c: _pretrain(c, c.recipe(), "optim.lr=" + "[" * 5000 + "]" * 5000),
     "--set optim.lr=[[[[[<*>...: nested deeper than 32 levels"),
    ("set-value-not-finite", lambda c: _pretrain(c, c.recipe(), "optim.lr=.nan"),
     "--set optim.lr=.nan: optim.lr: expected a finite number, got nan"),
    ("set-value-out-of-range", lambda c: _pretrain(c, c.recipe(), "optim.b1=1"),
     "--set optim.b1=1: optim.b1: must be in [0, 1), got 1"),
    ("res-too-large-for-memory", lambda c: ["recipe", "check", c.recipe(model={"res": 100000})],
     "{tmp}/r.yaml: model.res: 100000x100000 is larger than 16384 pixels a side: one such image is 120 GB as float32 "
     "and its activations cannot fit in memory"),
    ("freeze-range-too-large", lambda c: ["recipe", "check", c.recipe(train={"freeze": ["blocks.0-100000000000"]})],
     "{tmp}/r.yaml: train.freeze: range 'blocks.0-100000000000' is not within 0-1 (the model has 2 blocks)"),
    ("run-name-too-long", lambda c: ["recipe", "check", c.recipe(run={"name": "n" * 300})],
     "{tmp}/r.yaml: run.name: 'nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn' is not a usable name; "
     "valid: up to 128 bytes of UTF-8 text without '/', e.g. 'cifar10-b16' (run.out chooses the folder)"),
    ("out-path-too-long", lambda c: ["pretrain", c.recipe(), "--out", c.tmp / ("o" * 300)],
     "--out <*>...: too long (<*> bytes; at most 255 a name, 4095 in all); give a "
     "shorter path"),
    ("missing-recipe", lambda c: ["pretrain", c.tmp / "nope.yaml", "--out", c.out],
     "recipe file not found: {tmp}/nope.yaml"),
    ("recipe-is-directory", lambda c: ["recipe", "show", c.tmp], "recipe file not found: {tmp} (is a directory)"),
    ("recipe-check-empty-directory", lambda c: ["recipe", "check", c.tmp],
     "recipe check {tmp}: no recipe files (*.yaml) in this directory"),
    ("set-not-numeric", lambda c: _pretrain(c, c.recipe(), "optim.lr=fast"),
     "--set optim.lr=fast: optim.lr: expected a number, got 'fast'"),
    ("set-unknown-key", lambda c: _pretrain(c, c.recipe(), "optim.learning_rate=0.1"),
     "--set optim.learning_rate=0.1: unknown key 'optim.learning_rate'; valid: 'name', 'lr', 'weight_decay', "
     "'b1', 'b2', 'momentum', 'clip_norm', 'layer_decay'"),
    ("set-no-equals", lambda c: _pretrain(c, c.recipe(), "optim.lr"),
     "--set 'optim.lr': expected KEY=VALUE, e.g. --set optim.lr=3e-3"),
    ("unknown-variant", lambda c: ["recipe", "check", c.recipe(model={"name": "B16"})],
     "{tmp}/r.yaml: model.name: unknown variant 'B16' (did you mean 'B/16'?); valid: Ti, S, B, L, H with patch "
     "8/14/16/32, e.g. 'B/16', 'R50+B/16', or a timm name such as 'vit_base_patch16_224'"),
    ("res-not-divisible", lambda c: ["recipe", "check", c.recipe(model={"res": 18})],
     "{tmp}/r.yaml: model.res: 18 is not divisible by the patch size 4 of Ti/4 (width=32, depth=2, heads=2, "
     "mlp_dim=64); nearest valid: 16 or 20"),
    ("posemb-where-without-a-table", lambda c: ["recipe", "check", c.recipe(model={"posemb": "relative",
                                                                             "posemb_where": "every_layer"})],
     "{tmp}/r.yaml: model.posemb_where: every_layer adds a learned table to every block, and model.posemb "
     "relative has none to add (the paper's N/A); valid: posemb learned or learned_2d, or posemb_where stem"),
    ("posemb-width", lambda c: ["recipe", "check", c.recipe(model={"posemb": "sincos2d", "width": 34, "mlp_dim": 68})],
     "{tmp}/r.yaml: model.posemb: sincos2d needs a width divisible by 4, got 34; valid: another width or posemb"),
    ("mlp-dim-not-a-ratio", lambda c: ["recipe", "check", c.recipe(model={"width": 7, "heads": 7, "mlp_dim": 61})],
     "{tmp}/r.yaml: model.mlp_dim: 61 cannot be expressed as a ratio of width 7 in timm; valid: e.g. 28 (4x width) "
     "or another multiple of the width"),
    ("freeze-no-parameter", lambda c: ["recipe", "check", c.recipe(train={"freeze": ["blockz"]})],
     "{tmp}/r.yaml: train.freeze: 'blockz' matches no parameter; valid prefixes: blocks, cls_token, head, norm, "
     "patch_embed, pos_embed or a block range such as 'blocks.0-5'"),
    ("steps-and-epochs", lambda c: ["recipe", "check", c.recipe(train={"epochs": 2})],
     "{tmp}/r.yaml: train: give only one of steps, epochs or examples (got steps, epochs)"),
    ("micro-batch-not-divisor", lambda c: ["recipe", "check", c.recipe(train={"micro_batch": 5})],
     "{tmp}/r.yaml: train.micro_batch: 5 does not divide train.batch_size 16; valid: 1, 2, 4, 8, 16"),
    # -- data -------------------------------------------------------------------------------------------
    ("source-missing-path", lambda c: _pretrain(c, c.recipe(data={"source": str(c.tmp / "nowhere")})),
     "data.source '{tmp}/nowhere': no such file or directory; give an existing local path, imagefolder:PATH, "
     "builtin:digits or a Hugging Face hub id such as 'uoft-cs/cifar10'"),
    ("source-hub-offline", lambda c: _pretrain(c, c.recipe(data={"source": "acme/no-such-dataset"})),
     "data.source: cannot load 'acme/no-such-dataset' from the Hugging Face hub (offline or not found); download "
     "it where you have internet, or point data.source at a local copy (a directory of parquet/arrow files or "
     "imagefolder:PATH)"),
    ("source-is-a-script", lambda c: _pretrain(c, c.recipe(data={"source": str(_script_dataset(c))})),
     "data.source '{tmp}/scr' holds a dataset loading script (scr.py), which vit never runs; give parquet/arrow "
     "files, a save_to_disk directory or imagefolder:PATH"),
    ("builtin-unknown", lambda c: _pretrain(c, c.recipe(data={"source": "builtin:mnist"})),
     "data.source 'builtin:mnist' is not a builtin source; valid: 'builtin:digits'"),
    ("split-unknown", lambda c: _pretrain(c, c.recipe(data={"train_split": "validation"})),
     "data.source '{data}' has no split 'validation'; available splits: 'train', 'test'"),
    ("split-empty", lambda c: _pretrain(c, c.recipe(data={"train_split": "train[:0]"})),
     "data.source '{data}' split 'train[:0]' is empty; choose a split expression that selects some examples"),
    ("image-column-missing", lambda c: _pretrain(c, c.recipe(data={"image_column": "pixels"})),
     "data.source '{data}' split 'train' has no image column 'pixels'; columns found: 'img', 'label'"),
    ("no-image-column", lambda c: _pretrain(c, c.recipe(**_no_eval(
        _parquet(c.tmp / "d", {"text": ["a", "b"], "label": [0, 1]})))),
     "data.source '{tmp}/d' split 'train': no image column found (looked for 'img', 'image', 'jpg', 'jpeg', 'png', "
     "'webp'); columns found: 'text', 'label'; name it with image_column"),
    ("label-column-missing", lambda c: _pretrain(c, c.recipe(data={"label_column": "target"})),
     "data.source '{data}' split 'train' has no label column 'target'; columns found: 'img', 'label'"),
    ("labels-not-integers", lambda c: _pretrain(c, c.recipe(**_no_eval(
        _parquet(c.tmp / "d", {"img": _images(2), "label": ["cat", "dog"]})))),
     "data.source '{tmp}/d' split 'train': label column 'label' holds Value('string'), not integer class ids"),
    ("label-out-of-range", lambda c: _pretrain(c, c.recipe(**_no_eval(
        _parquet(c.tmp / "d", {"img": _images(32), "label": [i % 6 for i in range(32)]}), num_classes=4))),
     "data.source '{tmp}/d' split 'train': label 5 is outside [0, 4) for num_classes=4; set num_classes to cover "
     "every label"),
    ("num-classes-too-small", lambda c: _pretrain(c, c.recipe(data={"num_classes": 3})),
     "data.source '{data}' split 'train': num_classes is 3 but label column 'label' has 4 classes; leave "
     "num_classes unset or set it to 4"),
    ("images-all-corrupt", lambda c: _pretrain(c, c.recipe(**_no_eval(
        _parquet(c.tmp / "d", {"img": _images(32, set(range(32))), "label": [i % 4 for i in range(32)]})))),
     "data.source '{tmp}/d' split 'train': 16 of 16 images seen could not be decoded, more than "
     "max_bad_fraction=0.001 allows; e.g. example <*>: OSError: <*>"),
    ("label-null", lambda c: _pretrain(c, c.recipe(**_no_eval(_parquet(c.tmp / "d", {
        "img": _images(32), "label": [None if i == 3 else i % 4 for i in range(32)]})))),
     "data.source '{tmp}/d' split 'train': 1 of 32 examples have no label (null in column 'label', e.g. example 3); "
     "remove them or fill them in"),
    ("image-null", lambda c: _pretrain(c, c.recipe(**_no_eval(_parquet(c.tmp / "d", {
        "img": [None if i == 5 else x for i, x in enumerate(_images(32))], "label": [i % 4 for i in range(32)]})))),
     "data.source '{tmp}/d' split 'train': 1 of 32 examples have no image (null in column 'img', e.g. example 5); "
     "remove them or fill them in"),
    ("label-huge", lambda c: _pretrain(c, c.recipe(**_no_eval(_parquet(c.tmp / "d", {
        "img": _images(32), "label": [2_000_000_000 if i == 7 else i % 4 for i in range(32)]})))),
     "data.source '{tmp}/d' split 'train': label column 'label' holds the label 2000000000, which would make a head "
     "of 2000000001 classes (more than 1000000); labels must be class ids 0..K-1"),
    ("imagefolder-whole-tree", lambda c: _pretrain(c, c.recipe(data={"source": f"imagefolder:{_deep_tree(c)}"})),
     "data.source 'imagefolder:{tmp}/home': '{tmp}/home/me/photos/2024/trip/day1' is a folder 5 levels down, deeper "
     "than an image folder goes (4); an image folder is PATH/<class>/<image> or PATH/<split>/<class>/<image> (split "
     "folders: train, val, test): point imagefolder: at the folder that holds the class (or split) folders"),
    ("imagefolder-unused-image", lambda c: _pretrain(c, c.recipe(data={"source": _loose_image(c)})),
     "data.source 'imagefolder:{tmp}/f': image '{tmp}/f/n01440764_val_1.JPEG' lies beside class folders, in no class "
     "and would not be used; an image folder is PATH/<class>/<image> or PATH/<split>/<class>/<image> (split folders: "
     "train, val, test): move it into a class folder or remove it"),
    ("imagefolder-name-not-utf8", lambda c: _pretrain(c, c.recipe(data={"source": _folder(c, ("green", os.fsdecode(
        b"r\xe9d")))})),
     "data.source 'imagefolder:{tmp}/f': '{tmp}/f/r\\udce9d' has a name that is not UTF-8 text (b'r\\xe9d'); rename it "
     "in UTF-8 (class names and image paths are stored as text)"),
    ("imagefolder-split-and-class-folders", lambda c: _pretrain(c, c.recipe(data={"source": _mixed_folder(c)})),
     "data.source 'imagefolder:{tmp}/f': '{tmp}/f' holds split folders (train) beside other folders (green), whose "
     "images would belong to no split; an image folder is PATH/<class>/<image> or PATH/<split>/<class>/<image> "
     "(split folders: train, val, test)"),
    ("images-corrupt-small-set", lambda c: _pretrain(c, c.recipe(**_no_eval(
        _parquet(c.tmp / "d", {"img": _images(32, {9}), "label": [i % 4 for i in range(32)]})))),
     "data.source '{tmp}/d' split 'train': 1 of <*> images seen could not be decoded, more than "
     "max_bad_fraction=0.001 allows; e.g. example 9: OSError: <*>"),
    ("parquet-truncated", lambda c: _pretrain(c, c.recipe(data={"source": str(_truncated_data(c))})),
     "data.source '{tmp}/data': {tmp}/data/test-00000-of-00001.parquet is not a readable parquet file, truncated "
     "or corrupt (Parquet magic bytes not found in footer); download or write it again"),
    ("parquet-corrupt", lambda c: _pretrain(c, c.recipe(data={"source": str(_scrambled_data(c))})),
     "data.source '{tmp}/data': {tmp}/data/train-00000-of-00001.parquet is not a readable parquet file, truncated "
     "or corrupt (<*>); download or write it again"),
    ("parquet-no-rows", lambda c: _pretrain(c, c.recipe(**_no_eval(
        _parquet(c.tmp / "d", {"img": _images(0), "label": []})))),
     "data.source '{tmp}/d': {tmp}/d/train-00000-of-00001.parquet holds no rows; remove it or write it again"),
    ("tar-truncated", lambda c: _pretrain(c, c.recipe(**_streamed(_tars(c, truncate=True)))),
     "data.source '{tmp}/w': {tmp}/w/train-00001.tar is not a whole tar file (<*> bytes, <*>): truncated or still "
     "being written; download or write it again"),
    ("tar-example-without-label", lambda c: _pretrain(c, c.recipe(**_streamed(_tars(c, no_label={(1, 3)})))),
     "data.source '{tmp}/w' split 'train': example 's00001_00003' of {tmp}/w/train-00001.tar has no label (no "
     "'cls'); every example needs one: add it or remove the example"),
    ("shards-none", lambda c: _pretrain(c, c.recipe(**_streamed(_empty(c)))),
     "data.source '{tmp}/empty': no parquet, arrow or tar files in this folder; give a folder of parquet/arrow files "
     "(the hub's layout) or of WebDataset .tar shards, a save_to_disk directory, or imagefolder:PATH for a folder of "
     "images"),
    ("batch-larger-than-data", lambda c: _pretrain(c, c.recipe(train={"batch_size": 128})),
     "train.batch_size 128 is larger than the 96 examples of {data} [train]; give at most 96 (--set "
     "train.batch_size=16, say)"),
    # -- the run directory ------------------------------------------------------------------------------
    ("out-holds-another-run", lambda c: ["pretrain", c.recipe(), "--out", c.run],
     "--out {run}: the directory already holds another run; pass --resume to continue it or choose a new --out"),
    ("out-under-a-file", lambda c: (c.tmp.joinpath("file").write_text("x"),
                                    ["pretrain", c.recipe(), "--out", c.tmp / "file" / "run"])[1],
     "--out {tmp}/file/run: cannot write there (Not a directory); choose another --out"),
    ("out-is-a-file", lambda c: (c.tmp.joinpath("file").write_text("x"),
                                 ["pretrain", c.recipe(), "--out", c.tmp / "file"])[1],
     "--out {tmp}/file: is a file, not a directory; choose another --out"),
    pytest.param("out-read-only-fs", lambda c: ["pretrain", c.recipe(), "--out", "/sys/vit-run"],
                 "--out /sys/vit-run: cannot write there (<*>); choose another --out",
                 marks=pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="no sysfs here")),
    ("resume-not-a-run", lambda c: ["pretrain", c.recipe(), "--resume", "--out", c.tmp],
     "--resume: {tmp} holds no vit run (no recipe.json); drop --resume to start a new run"),
    ("resume-other-recipe", lambda c: ["pretrain", c.recipe(optim={"lr": 0.1}), "--resume", "--out", c.run],
     "--resume: the recipe differs from the run in {run} at: optim.lr, train.checkpoint_every, train.steps; "
     "resume with the same recipe (changeable with --set: train.steps, train.epochs, train.examples); "
     "or continue it as it was, with no recipe: vit pretrain --resume --out {run}"),
    ("resume-recipe-json-torn", lambda c: (shutil.copytree(c.run, c.tmp / "r"),
                                           (c.tmp / "r/recipe.json").write_text("{"),
                                           ["pretrain", c.recipe(), "--resume", "--out", c.tmp / "r"])[2],
     "--resume: {tmp}/r/recipe.json is unreadable (Expecting property name enclosed in double quotes: line 1 "
     "column 2 (char 1)); the run cannot be checked, start a new --out"),
    ("out-locked-by-another-run", _locked,
     "--out {tmp}/new: another vit process is writing this run directory (it holds {tmp}/new/.lock); wait for it to "
     "end or choose another --out"),
    ("resume-fewer-steps", lambda c: [*_pretrain(c, c.recipe(), "train.steps=1", "train.checkpoint_every=1")[:2],
                                      "--set", "train.steps=1", "--set", "train.checkpoint_every=1", "--resume",
                                      "--out", c.run],
     "--resume: {run}/checkpoints/step-00000002.pt is at step 2, past the 1 steps this recipe asks for; a run cannot "
     "be shortened: resume with --set train.steps=2 or more, or start a new --out"),
    ("resume-planted-link", lambda c: ["pretrain", c.recipe(train={"steps": 2, "checkpoint_every": 1}), "--resume",
                                       "--out", _planted_link(c, "metrics.jsonl")],
     "{tmp}/r/metrics.jsonl: refused: it is a symbolic link, not a regular file; a run directory holds only the "
     "regular files the run wrote"),
    ("export-run-config-json-planted-link", lambda c: ["export", _planted_link(c, "config.json"), "--out", c.out],
     "{tmp}/r/config.json: refused: it is a symbolic link, not a regular file; a run directory holds only the "
     "regular files the run wrote"),
    pytest.param("device-cuda-without-gpu", lambda c: _pretrain(c, c.recipe(), "train.device=cuda"),
                 "train.device: cuda was asked for, but torch sees no CUDA GPU on this machine (<*>); use "
                 "train.device: auto or cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ("disk-full", _disk_full,
     "disk full while writing {tmp}/new/checkpoints/step-00000003.pt; nothing was replaced, earlier files are "
     "intact"),
    # -- checkpoints and --from ---------------------------------------------------------------------------
    ("from-missing", lambda c: ["eval", "--from", c.tmp / "nope.pt"],
     "--from {tmp}/nope.pt: no such file or directory; give a vit run directory or checkpoint (.pt), a timm or "
     "Hugging Face ViT (a folder with config.json, or its model.safetensors / .pth / .bin), a Google .npz, or a hub "
     "name (hf-hub:ORG/NAME, timm:ARCH.TAG)"),
    ("from-unknown-format", lambda c: (c.tmp.joinpath("w.txt").write_text("x"),
                                       ["eval", "--from", c.tmp / "w.txt"])[1],
     "--from {tmp}/w.txt: unknown checkpoint format '.txt'; accepted: .pt, .pth, .bin, .safetensors, .npz, a folder "
     "or a hub name"),
    ("from-empty-dir", lambda c: ["eval", "--from", c.tmp],
     "--from {tmp}: the directory holds no model.safetensors, pytorch_model.bin or checkpoints/ (is it a vit run, "
     "or a timm or Hugging Face model folder?)"),
    ("npz-missing-array", lambda c: ["eval", "--from", _npz(c, drop=("Transformer/encoder_norm/scale",))],
     "{tmp}/ViT.npz: missing array 'Transformer/encoder_norm/scale'; expected a vit_jax / big_vision ViT .npz "
     "(e.g. ViT-B_16.npz, an AugReg file, R50+ViT-B_16.npz)"),
    ("npz-unknown-layout", lambda c: (np.savez(c.tmp / "cnn.npz", **{"conv1/kernel": np.zeros((3, 3, 3, 8))}),
                                      ["eval", "--from", c.tmp / "cnn.npz"])[1],
     "{tmp}/cnn.npz: unknown .npz layout: no 'embedding/kernel' array (found conv1/kernel); expected a vit_jax / "
     "big_vision ViT .npz (e.g. ViT-B_16.npz, an AugReg file, R50+ViT-B_16.npz)"),
    ("npz-object-array", lambda c: ["eval", "--from", _hostile_npz(c, "head/bias", _object_npy())],
     "{tmp}/ViT.npz: refused: array 'head/bias' holds Python objects (a pickle), which vit never loads; a ViT .npz "
     "holds float arrays only"),
    ("npz-header-huge-shape", lambda c: ["eval", "--from", _hostile_npz(c, "head/bias", _npy(
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000,), }", bytes(12)))],
     "{tmp}/ViT.npz: array 'head/bias' declares shape (1000000000000,) (4000000000000 bytes of float32) but holds "
     "12 bytes; the file is damaged"),
    ("npz-zip-bomb", lambda c: ["eval", "--from", _hostile_npz(c, "head/bias", inflate=256 << 20)],
     "{tmp}/ViT.npz: array 'head/bias' declares shape (67108864,) (67108864 values), more than the whole model "
     "the file describes holds (<*>); the file is damaged or not this model's"),
    ("npz-header-malformed", lambda c: ["eval", "--from", _hostile_npz(c, "head/bias", _npy(
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (3,", bytes(12)))],
     "{tmp}/ViT.npz: member 'head/bias' has no valid .npy header (<*>); the file is damaged or not a vit_jax / "
     "big_vision ViT .npz (e.g. ViT-B_16.npz, an AugReg file, R50+ViT-B_16.npz)"),
    ("npz-shape-does-not-fit", lambda c: ["eval", "--from", _hostile_npz(
        c, "Transformer/posembed_input/pos_embedding",
        _npy(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 17, 33), }", bytes(17 * 33 * 4)))],
     "{tmp}/ViT.npz: unknown layout: the position embeddings have shape (1, 17, 33), which does not end in the "
     "width 32 of embedding/kernel"),
    ("npz-single-npy", lambda c: ((c.tmp / "w.npz").write_bytes(
        _npy(b"{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", bytes(12))), ["eval", "--from", c.tmp /
                                                                                          "w.npz"])[1],
     "{tmp}/w.npz: a single .npy array, not an .npz archive; expected a vit_jax / big_vision ViT .npz (e.g. "
     "ViT-B_16.npz, an AugReg file, R50+ViT-B_16.npz)"),
    ("hf-other-model-type", lambda c: ["eval", "--from", _hf_folder(c, "deit")],
     "{tmp}/hf/config.json: model_type 'deit' is not supported (vit reads transformers ViT checkpoints, "
     "model_type 'vit'; DeiT, Swin, BEiT and hybrids are other models)"),
    ("hub-name-offline", lambda c: ["finetune", "--from", _offline(c, "hf-hub:google/vit-base-patch16-224-in21k")],
     "--from hf-hub:google/vit-base-patch16-224-in21k: cannot fetch google/vit-base-patch16-224-in21k: the hub is "
     "unreachable (offline) and the cache has no copy; download config.json and model.safetensors from "
     "https://huggingface.co/google/vit-base-patch16-224-in21k where you have internet and give --from THAT_FOLDER"),
    ("hub-name-malformed", lambda c: ["eval", "--from", "hf-hub:google/vit/base"],
     "--from 'hf-hub:google/vit/base': not a hub name; valid: hf-hub:ORG/NAME (e.g. "
     "hf-hub:google/vit-base-patch16-224-in21k, hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k) or "
     "timm:ARCH.TAG (e.g. timm:vit_base_patch16_224.augreg_in21k)"),
    ("ckpt-truncated", lambda c: ["eval", "--from", _truncated(c.ckpt(), c.tmp / "cut.pt")],
     "{tmp}/cut.pt: corrupt or truncated checkpoint (PytorchStreamReader failed reading zip archive: failed "
     "finding central directory)"),
    ("ckpt-not-state-dict", lambda c: (torch.save([1, 2], c.tmp / "list.pt"),
                                       ["eval", "--from", c.tmp / "list.pt"])[1],
     "{tmp}/list.pt: not a state dict (expected a mapping of parameter names to tensors, got list)"),
    ("ckpt-runs-code", lambda c: ["eval", "--from", _evil_pickle(c.tmp / "evil.pt", c.tmp / MARKER)],
     "{tmp}/evil.pt: refused: the file holds Python objects that would run code when unpickled; vit only loads "
     "plain tensors (weights_only=True). Convert it to safetensors where you trust it"),
    ("ckpt-runs-code-protocol-2", lambda c: (c.tmp.joinpath("evil.pt").write_bytes(pickle.dumps(
        {"w": _Evil(c.tmp / MARKER)}, protocol=2)), ["eval", "--from", c.tmp / "evil.pt"])[1],
     "{tmp}/evil.pt: refused: the file holds Python objects that would run code when unpickled; vit only loads "
     "plain tensors (weights_only=True). Convert it to safetensors where you trust it"),
    ("ckpt-runs-code-in-torch-zip", lambda c: ["eval", "--from", _evil_zip(c)],
     "{tmp}/evil.pt: refused: the file holds Python objects that would run code when unpickled; vit only loads "
     "plain tensors (weights_only=True). Convert it to safetensors where you trust it"),
    ("from-fifo", lambda c: (os.mkfifo(c.tmp / "w.pt"), ["eval", "--from", c.tmp / "w.pt"])[1],
     "--from {tmp}/w.pt: refused: it is a FIFO (named pipe), not a regular file; give a regular file"),
    ("ckpt-integer-weights", lambda c: ["eval", c.recipe(), "--from", _integer_weights(c)],
     "{tmp}/int.pt: refused: weights must be floating-point tensors, found cls_token (int8), pos_embed (int8), "
     "patch_embed.proj.weight (int8) (+<*> more); quantised or integer checkpoints are not supported, export float "
     "weights"),
    ("ckpt-other-variant", lambda c: ["eval", c.recipe(model={"width": 64}), "--from", c.run],
     "--from {run}/model.safetensors: the checkpoint's model differs from {tmp}/r.yaml: width (recipe "
     "64, checkpoint 32); drop these keys from the recipe to use the checkpoint's"),
    ("init-from-other-variant", lambda c: _pretrain(c, c.recipe(model={"width": 64, "heads": 4},
                                                              train={"init_from": str(c.ckpt())})),
     "<*>checkpoint does not fit the model (the variants differ): checkpoint shape vs model shape: cls_token "
     "(1, 1, 32) vs (1, 1, 64), pos_embed (1, 17, 32) vs (1, 17, 64), <*> (+23 more)"),
    ("safetensors-wrong-shapes", lambda c: ["eval", "--from", _bad_shapes(c)],
     "<*>checkpoint does not fit the model (the variants differ): checkpoint shape vs model shape: pos_embed "
     "(1, 5, 48) vs (1, 17, 32)"),
    ("config-json-wrong-type", lambda c: ["eval", "--from", _config_with(c, patch="x")],
     "{tmp}/r/config.json: vit_model.patch: expected a positive whole number, got 'x'"),
    ("export-stored-norm-unknown", lambda c: ["export", _recipe_data(c, norm="weird"), "--out", c.out],
     "{tmp}/r/model.safetensors: data.norm: 'weird' is not valid; choose one of 'paper', 'imagenet'"),
    ("export-stored-std-zero", lambda c: ["export", _recipe_data(c, std=[0, 0, 0]), "--format", "hf", "--out", c.out],
     "{tmp}/r/model.safetensors: data.std: [0.0, 0.0, 0.0]: valid: positive finite numbers (a zero std divides by "
     "zero)"),
    ("export-described-res-huge", lambda c: ["export", _config_with(c, res=168508), "--out", c.out],
     "{tmp}/r/model.safetensors: model.res: 168508x168508 is larger than 16384 pixels a side: one such image is 341 "
     "GB as float32 and its activations cannot fit in memory"),
    ("config-json-invalid", lambda c: (shutil.copytree(c.run, c.tmp / "r"), (c.tmp / "r/config.json").write_text("{"),
                                       ["eval", "--from", c.tmp / "r"])[2],
     "{tmp}/r/config.json: not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
     "(char 1))"),
    ("data-mean-wrong-length", lambda c: ["eval", "--from", c.run, "--set", "data.mean=[0.5, 0.5]"],
     "--set data.mean=[0.5, 0.5]: data.mean: [0.5, 0.5] has 2 numbers; valid: one per input channel "
     "(model.in_chans 3)"),
    ("data-std-zero", lambda c: ["eval", "--from", c.run, "--set", "data.std=[0.5, 0, 0.5]"],
     "--set data.std=[0.5, 0, 0.5]: data.std: [0.5, 0.0, 0.5]: valid: positive finite numbers (a zero std divides "
     "by zero)"),
    ("data-decode-gpu-randaugment", lambda c: ["eval", "--from", c.run, "--set", "data.decode=gpu", "--set",
                                               "data.randaugment=rand-m9-mstd0.5"],
     "--set data.decode=gpu: data.decode: gpu decodes JPEGs on the run's CUDA device, but "
     "data.randaugment runs on PIL images; valid here: auto or cpu"),
    pytest.param("data-decode-gpu-without-gpu", lambda c: ["eval", "--from", c.run, "--set", "data.decode=gpu"],
                 "data.decode: gpu decodes JPEGs on a CUDA device, but this run is on cpu (torch sees no CUDA GPU); "
                 "use data.decode: auto (gpu on CUDA, else cpu) or cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
    ("ckpt-four-channels", lambda c: ["eval", "--from", _four_channels(c)],
     "{tmp}/rgba.safetensors: model.in_chans: 4 channels cannot be read from images; valid: 1 (grayscale, L) or 3 "
     "(RGB)"),
    ("ckpt-wrapper-no-tensors", lambda c: (torch.save({"state_dict": {}, "epoch": 3}, c.tmp / "last.ckpt"),
                                           ["eval", "--from", c.tmp / "last.ckpt"])[1],
     "{tmp}/last.ckpt: not a state dict: no mapping of parameter names to tensors in it or under 'state_dict', "
     "'model', 'teacher', 'module', 'student', 'model_ema', 'net' (its keys: 'state_dict', 'epoch')"),
    ("ckpt-unknown-key-layout", lambda c: (torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.bias": torch.zeros(
        10)}, c.tmp / "cnn.pth"), ["eval", "--from", c.tmp / "cnn.pth"])[1],
     "{tmp}/cnn.pth: unknown key layout: no ViT patch embedding (patch_embed.proj.weight, conv_proj.weight, ...) "
     "among the keys; first keys: conv1.weight, fc.bias; vit reads timm, torchvision and transformers ViT names, "
     "also under the prefixes module., model., _orig_mod., backbone., encoder."),
    ("hf-config-number-as-text", lambda c: ["eval", "--from", _external(c, "hf", {"num_hidden_layers": "12"})],
     "{tmp}/hf/config.json: num_hidden_layers: expected a whole number in [1, 65536], got '12'"),
    ("hf-config-hidden-size-zero", lambda c: ["eval", "--from", _external(c, "hf", {"hidden_size": 0})],
     "{tmp}/hf/config.json: hidden_size: expected a whole number in [1, 65536], got 0"),
    ("hf-config-patch-size-text", lambda c: ["eval", "--from", _external(c, "hf", {"patch_size": "16"})],
     "{tmp}/hf/config.json: patch_size: expected a size in pixels (a whole number in [1, 65536], or [height, "
     "width]), got '16'"),
    ("hf-config-id2label-keys", lambda c: ["eval", "--from", _external(c, "hf", {"id2label": {"a": "cat", "b": "dog"}})],
     "{tmp}/hf/config.json: id2label['a']: expected keys \"0\" to \"1\" (one per class) whose values are class "
     "names (text), got 'cat'"),
    ("hf-preprocessor-mean-scalar", lambda c: ["eval", "--from", _external(c, "hf", {"image_mean": 0.5},
                                                                           "preprocessor_config.json")],
     "{tmp}/hf/preprocessor_config.json: image_mean: expected a list of 1 to 64 finite numbers, one per channel, "
     "got 0.5"),
    ("timm-config-heads-text", lambda c: ["eval", "--from", _external(c, "timm", {"model_args.num_heads": "6"})],
     "{tmp}/timm/config.json: model_args.num_heads: expected a whole number in [1, 65536], got '6'"),
    ("timm-config-args-list", lambda c: ["eval", "--from", _external(c, "timm", {"model_args": ["a"]})],
     "{tmp}/timm/config.json: model_args: expected a mapping, got ['a']"),
    ("timm-config-input-size", lambda c: ["eval", "--from", _external(c, "timm", {"pretrained_cfg.input_size": 224})],
     "{tmp}/timm/config.json: pretrained_cfg.input_size: expected [channels, height, width] (three positive whole "
     "numbers), got 224"),
    # -- command options --------------------------------------------------------------------------------
    ("shots-larger-than-class", lambda c: ["fewshot", "--from", c.run, "--shots", "100", "--seeds", "1"],
     "more shots than the smallest class holds: class 'red' has 24 training images, fewer than the 100 shots "
     "asked for (4 of 4 classes have fewer than 100)"),
    ("weights-unknown", lambda c: ["eval", "--from", c.run, "--weights", "newest"],
     "--weights 'newest': valid: 'ema', 'raw', 'best' (the run's best/)"),
    ("weights-best-not-kept", lambda c: ["eval", "--from", c.run, "--weights", "best"],
     "--weights best: {run}/best holds no model; a run keeps its best evaluation there when its recipe sets "
     "train.keep_best (e.g. --set train.keep_best=top1 --set eval.every=500)"),
    ("res-option-bad", lambda c: ["eval", "--from", c.run, "--res", "big"],
     "--res big: model.res: expected a resolution such as 384 or 384x256, got 'big'"),
    ("finetune-res-option-bad", lambda c: ["finetune", "--from", c.run, "--res", "17", "--out", c.out],
     "--res 17: model.res: 17 is not divisible by the patch size 4 of <*>; nearest valid: 16 or 20"),
    ("shots-option-bad", lambda c: ["fewshot", "--from", c.run, "--shots", "0"],
     "--shots 0: fewshot.shots: each must be a whole number in [1, 100000], got [0]"),
    # -- data that the model's head does not fit ----------------------------------------------------------
    ("class-names-differ", lambda c: ["eval", "--from", c.run, "--data", _folder(c, ("cat", "dog", "blue", "grey"))],
     "data.source 'imagefolder:{tmp}/f' split 'train': its class names differ from the model's head's: 2 of 4 are "
     "not among its 4 classes ('cat', 'dog'; the model's head has 'red', 'green', 'blue', ...); fine-tune on this "
     "data first (vit finetune), or pass --ignore-labels to score by class index anyway"),
    ("head-width-no-names", lambda c: ["eval", c.recipe(), "--from", _wide_head(c)],
     "data.source '{data}' split 'test' has 4 classes but the model's head has 8, and the checkpoint has no class "
     "names to match them by; fine-tune on this data first (vit finetune), or pass --ignore-labels to score by "
     "class index anyway"),
    ("fewshot-folder-one-split", lambda c: ["fewshot", "--from", c.run, "--data", _folder(c, ("red", "grey"))],
     "data.source 'imagefolder:{tmp}/f' (splits 'train') has no held-out split for the few-shot test: give "
     "--train-split and --split (e.g. an image folder with train/ and test/ sub-folders has both)"),
    ("predict-nothing", lambda c: ["predict", "--from", c.run, c.tmp / "nope.png"],
     "no images to predict in '{tmp}/nope.png'; give image files, folders of images, or a data source "
     "(imagefolder:PATH, a parquet folder, a hub id)"),
    # Command-option ranges are Typer's (min=/max=), printed as the same one line.
    ("bench-steps-zero", lambda c: ["bench", "--steps", "0"],
     "Invalid value for '--steps': Input should be greater than or equal to 1"),
    ("bench-batch-negative", lambda c: ["bench", "--batch", "-4"],
     "Invalid value for '--batch': Input should be greater than or equal to 1"),
    ("predict-top-k-zero", lambda c: ["predict", "--from", c.run, "--top-k", "0", c.tmp],
     "Invalid value for '--top-k': Input should be greater than or equal to 1"),
    ("inspect-samples-zero", lambda c: ["inspect", c.run, "--samples", "0", "--out", c.out],
     "Invalid value for '--samples': Input should be greater than or equal to 1"),
    ("fewshot-seeds-too-many", lambda c: ["fewshot", "--from", c.run, "--seeds", "1001"],
     "Invalid value for '--seeds': Input should be less than or equal to 1000"),
    ("option-unknown", lambda c: ["eval", "--from", c.run, "--top-k", "3"], "No such option: --top-k"),
]

# -- issue 31, families 4, 8 and 9: sizes a setting multiplies, finished runs, silently wrong results -------

def _image(c: Ctx) -> Path:
    (c.tmp / "a.png").write_bytes(_png())
    return c.tmp / "a.png"


def _run_copy(c: Ctx, *, drop: tuple[str, ...] = (), junk: bool = False) -> Path:
    """A copy of the finished run with `drop` (paths inside it) deleted, and its checkpoints cut in half."""
    run = Path(shutil.copytree(c.run, c.tmp / "r"))
    for name in drop:
        shutil.rmtree(run / name) if (run / name).is_dir() else (run / name).unlink()
    for ckpt in (run / "checkpoints").glob("step-*.pt") if junk else ():
        _truncated(ckpt, ckpt)
    return run


def _damaged_results(c: Ctx) -> Path:
    """A finished run whose last checkpoint is gone and whose results.json no longer says its step."""
    run = _run_copy(c, drop=("checkpoints/step-00000002.pt",))
    (run / "results.json").write_text('{"steps": "2"}')
    return run


def _checkpoint_with(c: Ctx, change: Callable[[dict], object]) -> Path:
    """A copy of the finished run cut back to its step-2 checkpoint (not finished), that checkpoint changed."""
    run = _run_copy(c, drop=("model.safetensors", "results.json"))
    path = run / "checkpoints" / "step-00000002.pt"
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)
    return run


def _hand_edited(c: Ctx) -> Path:
    run = _run_copy(c)
    text = (run / "recipe.yaml").read_text()
    (run / "recipe.yaml").write_text(text.replace("lr: 0.003", "lr: 0.01"))
    return run


def _split_names(c: Ctx, train: list[str], test: list[str]) -> Path:
    """A parquet data set whose train and test files declare the classes with other names (or orders)."""
    import datasets
    from conftest import make_images

    folder = c.tmp / "d"
    folder.mkdir()
    for split, n, names in (("train", 32, train), ("test", 16, test)):
        images, labels = make_images(n, seed=len(split))
        features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
        ds = datasets.Dataset.from_dict({"img": [{"bytes": _png(i), "path": None} for i in range(n)],
                                         "label": labels}, features=features)
        ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    return folder


def _folder_with_bad(c: Ctx) -> str:
    """An image folder (train/ and test/, 4 classes of 8) with 3 of its 32 training images unreadable (9%)."""
    for split in ("train", "test"):
        for k, name in enumerate(("red", "green", "blue", "grey")):
            (c.tmp / "f" / split / name).mkdir(parents=True)
            for i in range(8):
                bad = split == "train" and k == 0 and i < 3
                (c.tmp / "f" / split / name / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage" if bad
                                                                       else _png(8 * k + i))
    return f"imagefolder:{c.tmp / 'f'}"


def _home(c: Ctx) -> Path:
    """A home directory (documents, hidden caches, no data files) given as a plain data.source path."""
    for folder in ("me/docs/2024", ".cache/pip/wheels", "me/photos"):
        (c.tmp / "home" / folder).mkdir(parents=True)
    (c.tmp / "home/me/docs/2024/notes.txt").write_text("x")
    (c.tmp / "home/me/photos/cat.png").write_bytes(_png())
    return c.tmp / "home"


_MASKED = {"objective": "masked_patch"}
_FINISHED = ("--resume: {tmp}/r holds a finished run (model.safetensors, results.json) and {why}; resuming would "
             "train it again and overwrite its results. Use it as it is (vit eval --from {tmp}/r), start a new --out, "
             "or delete model.safetensors and results.json to train it again")

SIZE_CASES = [
    ("mpp-bits-head-too-wide", lambda c: ["recipe", "check", c.recipe(train=_MASKED, mpp={"bits": 8})],
     "{tmp}/r.yaml: mpp.bits: mean_color with bits 8 is 2^(3 x 8) colour classes = 16777216 outputs per patch, more "
     "than the 1000000 classes a head may have (as data.num_classes; the logits of one image's masked patches alone "
     "would be <*>); valid: bits 1-6 for mean_color"),
    ("mpp-color-4x4-bits-too-many", lambda c: _pretrain(c, c.recipe(train=_MASKED), "mpp.target=color_4x4",
                                                        "mpp.bits=6"),
     "--set mpp.bits=6: mpp.bits: color_4x4 with bits 6 is 16 cells x 2^(3 x 6) colour classes = 4194304 outputs "
     "per patch, more than the 1000000 classes a head may have (as data.num_classes; the logits of one image's "
     "masked patches alone would be <*>); valid: bits 1-5 for color_4x4"),
    ("mpp-pixels-patch-too-large", lambda c: ["recipe", "check", c.recipe(
        train=_MASKED, mpp={"target": "pixels"}, model={"patch": 1024, "res": 1024})],
     "{tmp}/r.yaml: mpp.target: pixels at patch 1024 is 3 x 1024^2 pixel values = 3145728 outputs per patch, more "
     "than the 1000000 classes a head may have (as data.num_classes; <*>); use a smaller patch"),
    ("posemb-relative-high-res", lambda c: ["recipe", "check", c.recipe(model={"posemb": "relative", "res": 1024})],
     "{tmp}/r.yaml: model.posemb: relative at 1024x1024 (patch 4) needs 275 GB of relative-position logits per image "
     "over 2 blocks, more than the 16 GB vit allows; use learned, learned_2d or sincos2d, a lower model.res or a "
     "larger patch"),
    ("posemb-relative-2d-high-res", lambda c: _pretrain(c, c.recipe(model={"posemb": "relative_2d"}),
                                                        "model.res=512"),
     "{tmp}/r.yaml: model.posemb: relative_2d at 512x512 (patch 4) needs 25.6 GB of relative-position logits "
     "per image over 2 blocks, more than the 16 GB vit allows; use learned, learned_2d or sincos2d, a lower "
     "model.res or a larger patch"),
    ("eval-batch-too-large-for-memory", lambda c: ["recipe", "check", c.recipe(model={"res": 1024},
                                                                            eval={"batch_size": 65536})],
     "{tmp}/r.yaml: eval.batch_size: 65536 images at 1024x1024 need 1.65 TB of activations in each block (25.2 MB "
     "an image), more than the 128 GB vit allows; valid: at most 5086"),
    ("micro-batch-too-large-for-memory", lambda c: _pretrain(c, c.recipe(model={"res": 1024}), "train.batch_size=8192",
                                                             "train.micro_batch=8192"),
     "--set train.micro_batch=8192: train.micro_batch: 8192 images at 1024x1024 need 206 GB of activations in each "
     "block (25.2 MB an image), more than the 128 GB vit allows; valid: at most 5086"),
    ("predict-batch-huge", lambda c: ["predict", "--from", c.run, _image(c), "--batch", "99999999999999999999"],
     "Invalid value for '--batch': Input should be less than or equal to 65536"),  # Typer's range (max=)
    ("predict-batch-too-large-for-memory", lambda c: ["predict", "--from", c.run, _image(c), "--batch", "65536",
                                                      "--res", "1024"],
     "--batch 65536: eval.batch_size: 65536 images at 1024x1024 need 1.65 TB of activations in each block (25.2 MB "
     "an image), more than the 128 GB vit allows; valid: at most 5086"),
    ("inspect-samples-huge", lambda c: ["inspect", "--from", c.run, "--samples", "99999999999999999999", "--out",
                                        c.out],
     "Invalid value for '--samples': Input should be less than or equal to 65536"),  # Typer's range (max=)
    # The weights a width, depth, MLP and head multiply; the patch-by-patch tables of `vit inspect`.
    ("head-weights-too-large", lambda c: ["recipe", "check", c.recipe(
        model={"width": 8192, "heads": 64, "mlp_dim": 32768, "depth": 1}, data={"source": str(c.data),
                                                                            "num_classes": 1000000})],
     "{tmp}/r.yaml: data.num_classes: Ti/4 (width=8192, depth=1, heads=64, mlp_dim=32768) with 1000000 classes has "
     "9 G parameters, 36 GB as float32 (the head 32.8 GB), more than the 32 GB vit allows; use a smaller width, "
     "depth or mlp_dim, or fewer classes"),
    ("model-weights-too-large", lambda c: _pretrain(c, c.recipe(), "model.width=4096",
                                                    "model.mlp_dim=16384", "model.heads=32", "model.depth=256"),
     "--set model.width=4096: model.width: Ti/4 (width=4096, depth=256, heads=32, mlp_dim=16384) has <*> G "
     "parameters, <*> GB as float32, more than the 32 GB vit allows; use a smaller width, depth or mlp_dim, or fewer "
     "classes"),
    ("inspect-res-tables-too-large", lambda c: ["inspect", "--from", c.run, "--res", "1024", "--out", c.out],
     "model.res 1024x1024: vit inspect at 256x256 = 65536 patches needs 241 GB for its patch-by-patch tables "
     "(attention per layer, rollout, position-embedding similarity), more than the 16 GB it allows; valid: at most "
     "16903 patches (a lower --res)"),
    ("eval-crop-too-small", lambda c: ["eval", "--from", c.run, "--set", "data.eval_crop=0.0001"],
     "--set data.eval_crop=0.0001: data.eval_crop: 0.0001 resizes images to cover 160000 pixels a side before the "
     "centre crop of 16x16, more than the 16384 a side vit allows (one such image is 307 GB as float32); valid: at "
     "least 0.000977 (timm's crop_pct, usually 0.875 to 1)"),
    ("bench-res-option", lambda c: ["bench", "--model", "Ti/4", "--res", "8192", "--steps", "1"],
     "--res 8192: model.res: 8192x8192 at patch 4 is 4194304 patches per image, more than the 65536 vit allows: the "
     "activations cannot fit in memory (the input image alone is 0.805 GB as float32)"),
]

FINISHED_RUN_CASES = [
    ("resume-finished-checkpoints-gone", lambda c: ["pretrain", "--resume", "--out",
                                                    _run_copy(c, drop=("checkpoints",))],
     _FINISHED.replace("{why}", "no checkpoint is left in {tmp}/r/checkpoints to continue from")),
    ("resume-finished-checkpoints-emptied", lambda c: ["pretrain", "--resume", "--out", _run_copy(
        c, drop=("checkpoints/step-00000001.pt", "checkpoints/step-00000002.pt"))],
     _FINISHED.replace("{why}", "no checkpoint is left in {tmp}/r/checkpoints to continue from")),
    ("resume-finished-older-checkpoint", lambda c: ["pretrain", "--resume", "--out", _run_copy(
        c, drop=("checkpoints/step-00000002.pt",))],
     _FINISHED.replace("{why}", "its newest checkpoint {tmp}/r/checkpoints/step-00000001.pt is at step 1, before the "
                                "step 2 it finished at")),
    ("resume-finished-checkpoints-unreadable", lambda c: ["pretrain", "--resume", "--out", _run_copy(c, junk=True)],
     "{tmp}/r/checkpoints/step-00000002.pt: corrupt or truncated checkpoint (<*>)"),
    ("resume-checkpoint-weight-missing", lambda c: ["pretrain", "--resume", "--set", "train.steps=3", "--out",
                                                    _checkpoint_with(c, lambda s: s["model"].pop("norm.weight"))],
     "--resume: {tmp}/r/checkpoints/step-00000002.pt does not fit this run's model or optimiser (missing weights "
     "norm.weight); resume with the recipe it was trained with"),
    ("resume-checkpoint-optimizer-state-stray", lambda c: ["pretrain", "--resume", "--set", "train.steps=3", "--out",
                                                           _checkpoint_with(c, lambda s: s["optimizer"].update(
                                                               state={0: {"exp_avg": torch.zeros(3)}}))],
     "--resume: {tmp}/r/checkpoints/step-00000002.pt does not fit this run's model or optimiser (optimiser state "
     "for parameters this run does not train (0)); resume with the recipe it was trained with"),
    ("resume-finished-model-only", lambda c: ["pretrain", "--resume", "--out", _run_copy(
        c, drop=("checkpoints", "results.json"))],
     "--resume: {tmp}/r holds a finished run (model.safetensors) and no checkpoint is left in {tmp}/r/checkpoints to "
     "continue from; resuming would train it again and overwrite its results. Use it as it is (vit eval --from "
     "{tmp}/r), start a new --out, or delete model.safetensors to train it again"),
    ("resume-finished-results-json-damaged", lambda c: ["pretrain", "--resume", "--out", _damaged_results(c)],
     _FINISHED.replace("{why}", "its newest checkpoint {tmp}/r/checkpoints/step-00000001.pt is at step 1, before the "
                                "step 2 it finished at")),
]

SILENT_CASES = [
    ("predict-empty-input", lambda c: ["predict", "--from", c.run, ""],
     "INPUT '' is blank; give image files, folders of images or a data source (write '.' for the current folder)"),
    ("predict-blank-input-among-files", lambda c: ["predict", "--from", c.run, _image(c), " "],
     "INPUT ' ' is blank; give image files, folders of images or a data source (write '.' for the current folder)"),
    ("sweep-minival-one-image", lambda c: _pretrain(c, c.recipe(optim={"lr": [0.1, 0.01]}), "sweep.minival=0.01"),
     "sweep.minival: the minival train[99%:] of {data} holds 1 image (1% of the split), too few to choose a learning "
     "rate on (its top-1 moves in steps of 100%); a minival needs at least 10 images (10, and one per class): give a "
     "larger sweep.minival, e.g. --set sweep.minival=0.1, or more training data"),
    ("sweep-minival-fewer-than-classes", lambda c: _pretrain(c, c.recipe(optim={"lr": [0.1, 0.01]})),
     "sweep.minival: the minival train[98%:] of {data} holds 2 images (2% of the split), too few to choose a learning "
     "rate on (its top-1 moves in steps of 50%); a minival needs at least 10 images (10, and one per class): <*>"),
    ("split-class-names-reordered", lambda c: ["eval", "--from", c.run, "--data", _split_names(
        c, ["red", "green", "blue", "grey"], ["grey", "blue", "green", "red"])],
     "data.source '{tmp}/d': {tmp}/d/train-00000-of-00001.parquet names the classes of 'label' ('red', 'green', "
     "'blue', 'grey') but {tmp}/d/test-00000-of-00001.parquet names them ('grey', 'blue', 'green', 'red'); datasets "
     "reads every file with the first one's names, so labels would be scored against the wrong classes: write every "
     "split with the same class names in the same order"),
    ("split-class-names-differ", lambda c: _pretrain(c, c.recipe(data={"source": str(_split_names(
        c, ["red", "green", "blue", "grey"], ["cat", "dog", "blue", "grey"]))})),
     "data.source '{tmp}/d': {tmp}/d/train-00000-of-00001.parquet names the classes of 'label' ('red', 'green', "
     "'blue', 'grey') but {tmp}/d/test-00000-of-00001.parquet names them ('cat', 'dog', 'blue', 'grey'); <*>"),
    ("image-folder-9-percent-unreadable", lambda c: _pretrain(c, c.recipe(data={"source": _folder_with_bad(c)}),
                                                              "train.batch_size=8", "train.steps=2"),
     "data.source 'imagefolder:{tmp}/f' split 'train': <*> of <*> images seen could not be decoded, more than "
     "max_bad_fraction=0.001 allows; e.g. example <*>: <*>"),
    ("recipe-yaml-hand-edited", lambda c: ["pretrain", "--resume", "--out", _hand_edited(c)],
     "--resume: {tmp}/r/recipe.yaml was edited by hand (at: optim.lr), but a resume runs the run's recipe.json or the "
     "RECIPE given, never that file, so the edit would be ignored; to resume with it: mv {tmp}/r/recipe.yaml "
     "edited.yaml && vit pretrain edited.yaml --resume --out {tmp}/r (a resume may change the run's length, e.g. "
     "train.steps), or undo the edit"),
    ("sweep-lr-same-folder", lambda c: ["recipe", "check", c.recipe(optim={"lr": [0.001, 0.0010000001, 0.01]})],
     "{tmp}/r.yaml: optim.lr: 0.001 and 0.0010000001 would share the sweep's folder lr-0.001; give each learning "
     "rate once, differing in its first 6 digits"),
    ("data-source-home-folder", lambda c: _pretrain(c, c.recipe(data={"source": str(_home(c))})),
     "data.source '{tmp}/home': no parquet, arrow or tar files in this folder; give a folder of parquet/arrow files "
     "(the hub's layout) or of WebDataset .tar shards, a save_to_disk directory, or imagefolder:PATH for a folder of "
     "images"),
]
CASES = [*CASES, *SIZE_CASES, *FINISHED_RUN_CASES, *SILENT_CASES]

CASE_IDS = [case.values[0] if hasattr(case, "values") else case[0] for case in CASES]


def test_docs_match_the_cases():
    """docs/bad-inputs.md and the README's selection are generated from the cases (tests/catalogue.py)."""
    import catalogue

    cases = catalogue.all_cases()  # this file's and tests/test_bad_inputs_io.py's
    assert set(catalogue.INPUTS) == {catalogue.case_id(case) for case in cases}, \
        "every case needs its INPUTS line in tests/catalogue.py"
    for path, text in catalogue.expected_files(cases).items():
        assert path.read_text() == text, f"{path.name} is out of date: run python tests/catalogue.py"


# -- the harness -----------------------------------------------------------------------------------------

def snapshot(*roots: Path, skip: Path | None = None) -> dict[str, str]:
    """Every file and folder under `roots` with a hash of its content, leaving out `skip`."""
    seen = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if skip is not None and (path == skip or skip in path.parents):
                continue
            seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return seen


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def pattern(expected: str, c: Ctx) -> re.Pattern:
    """The expected line as a regex: literal text, paths substituted, "<*>" matching anything."""
    text = re.escape(expected).replace(re.escape("<*>"), ".*?")
    for name in ("tmp", "data", "run"):
        text = text.replace(re.escape("{" + name + "}"), re.escape(str(getattr(c, name))))
    return re.compile(f"^error: {text}$")


def run_case(build: Callable[[Ctx], list[str]], c: Ctx):
    """Build the case's input and run the CLI on it, from inside tmp so no default runs/ lands elsewhere."""
    args = [str(a) for a in build(c)]
    roots = (c.tmp, c.data, c.run)
    before = snapshot(*roots)
    c.monkeypatch.chdir(c.tmp)
    result = CliRunner().invoke(app, args)
    return result, before, snapshot(*roots, skip=c.out)


# Cases that fail once training has begun: their run directory stays (it holds a checkpoint, or the log of
# what was tried), as a resume needs it.
STARTED = {"images-all-corrupt", "images-corrupt-small-set", "disk-full", "image-folder-9-percent-unreadable",
           "tar-example-without-label"}


@pytest.mark.parametrize("case_id, build, expected", CASES, ids=CASE_IDS)
def test_bad_input_is_one_line_exit_2(case_id, build, expected, tmp_path, tiny_data, tiny_run, monkeypatch):
    c = Ctx(tmp_path, tiny_data, tiny_run, monkeypatch)
    start = time.monotonic()
    result, before, after = run_case(build, c)
    output = result.output
    if case_id not in STARTED:  # a start refused (for whatever reason) leaves no run directory behind
        for folder in (c.out, c.tmp / "runs"):
            assert str(folder) in before or not folder.exists(), f"{folder} left behind\n{output}"
    assert "Traceback" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, output
    lines = error_lines(output)
    assert len(lines) == 1, output
    assert pattern(expected, c).match(lines[0]), f"\n got: {lines[0]}\nwant: {expected}"
    # Nothing changed but the new run directory (left out of `after`); the case's inputs predate `before`.
    assert after == {k: v for k, v in before.items() if not k.startswith(str(c.out))}
    assert not (tmp_path / MARKER).exists()
    if case_id == "source-hub-offline":
        assert time.monotonic() - start < HUB_DEADLINE_S


def test_a_few_corrupt_images_are_skipped_with_a_warning_and_counted(tmp_path, tiny_data, tiny_run, monkeypatch,
                                                                     caplog):
    c = Ctx(tmp_path, tiny_data, tiny_run, monkeypatch)
    labels = [i % 4 for i in range(64)]
    source = _parquet(tmp_path / "d", {"img": _images(64, corrupt={5, 40}), "label": labels})
    path = c.recipe(**_no_eval(source, max_bad_fraction=0.05), train={"steps": 4})
    with caplog.at_level("WARNING", logger="vitcli.data"):
        result, _, _ = run_case(lambda c: _pretrain(c, path), c)
    assert result.exit_code == 0, result.output
    where = f"data.source '{source}' split 'train'"
    assert re.search(rf"{re.escape(where)}: skipping undecodable image, example (5|40): OSError", caplog.text)
    # Four steps of 16 are one whole epoch of 64 images: both bad ones are met and counted.
    assert f"{where}: 2 of 64 images skipped as undecodable (max_bad_fraction=0.05)" in caplog.text
    assert "Traceback" not in result.output


def test_disk_full_during_a_checkpoint_keeps_the_previous_one(tmp_path, tiny_data, tiny_run, monkeypatch):
    """A real ENOSPC: the step-3 temp file is swapped for /dev/full, which fails every write like a full disk.

    torch.save then fails with a RuntimeError ("unexpected pos ...") whose context is the OSError; the
    message must still say disk full.
    """
    c = Ctx(tmp_path, tiny_data, tiny_run, monkeypatch)
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):
        if ".step-00000003.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, fd)
            os.close(full)
        return real(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)
    path = c.recipe(train={"steps": 4, "checkpoint_every": 1})
    result, _, _ = run_case(lambda c: _pretrain(c, path), c)
    assert result.exit_code == 2, result.output
    assert error_lines(result.output) == [f"error: disk full while writing {c.out}/checkpoints/step-00000003.pt; "
                                          "nothing was replaced, earlier files are intact"]
    folder = c.out / "checkpoints"
    assert (folder / "latest").read_text() == "step-00000002.pt"
    assert torch.load(folder / "step-00000002.pt", weights_only=True)["step"] == 2
    assert not list(folder.glob(".*.tmp")), "the failed temp file must be removed"


@pytest.mark.parametrize("args, expected", [
    (["recipe", "check", "{tmp}/r.yaml"], "error: {tmp}/r.yaml: train.batch_sise: unknown key"),
    (["eval", "--from", "{tmp}/evil.pt"], "error: {tmp}/evil.pt: refused: the file holds Python objects"),
], ids=["recipe", "checkpoint"])
def test_a_real_terminal_sees_one_line_and_no_traceback(args, expected, tmp_path):
    (tmp_path / "r.yaml").write_text("train:\n  batch_sise: 8\n")
    _evil_pickle(tmp_path / "evil.pt", tmp_path / MARKER)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([*VIT, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith(expected.replace("{tmp}", str(tmp_path))), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / MARKER).exists()


def test_the_same_command_works_once_the_input_is_fixed(tmp_path, tiny_data, tiny_run, monkeypatch):
    """A run that failed at start-up (here: bad labels) leaves nothing behind, so the same --out works."""
    c = Ctx(tmp_path, tiny_data, tiny_run, monkeypatch)
    path = c.recipe(data={"num_classes": 3}, train={"steps": 2})
    result, _, _ = run_case(lambda c: _pretrain(c, path), c)
    assert result.exit_code == 2 and not c.out.exists()
    c.out.mkdir()  # and a run directory that holds only a start's files (an older vit's) is taken over
    (c.out / "recipe.yaml").write_text("# left by a start that failed\n")
    path = c.recipe(train={"steps": 2})
    result, _, _ = run_case(lambda c: _pretrain(c, path), c)
    assert result.exit_code == 0, result.output


# -- issue 31: the inputs of families 4 and 9 that end well (exit 0), as the catalogue's extra rows say -------

def _invoke(c: Ctx, *args) -> object:
    c.monkeypatch.chdir(c.tmp)
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    return result


def test_top_k_beyond_the_classes_means_every_class_in_rows_and_csv_header(tmp_path, tiny_data, tiny_run,
                                                                           monkeypatch):
    c = Ctx(tmp_path, tiny_data, tiny_run, monkeypatch)
    start = time.monotonic()
    result = _invoke(c, "predict", "--from", c.run, _image(c), "--top-k", "1000000000", "--csv", c.tmp / "p.csv",
                     "--batch", "3")
    assert time.monotonic() - start < 10, "a huge --top-k must not allocate or loop per k"
    header, row = (c.tmp / "p.csv").read_text().splitlines()
    assert header == "path,label_1,prob_1,label_2,prob_2,label_3,prob_3,label_4,prob_4"
    assert len(row.split(",")) == len(header.split(","))
    result = _invoke(c, "predict", "--from", c.run, _image(c), "--top-k", "7", "--json")
    data = json.loads(result.stdout)
    assert data["top_k"] == 4 and len(data["predictions"][0]["top"]) == 4


def test_a_run_without_config_json_is_described_by_its_recipe_json(tmp_path, tiny_data, tiny_run, monkeypatch,
                                                                    caplog):
    c = Ctx(tmp_path, tiny_data, tiny_run, monkeypatch)
    run = _run_copy(c, drop=("config.json",))
    _invoke(c, "export", run, "--format", "timm", "--out", c.tmp / "x")
    config = json.loads((c.tmp / "x" / "config.json").read_text())
    assert config["model_args"]["num_heads"] == 2  # recipe.json's heads, not width 32 // 64 -> 1
    assert "assuming" not in caplog.text  # nothing was guessed
    result = _invoke(c, "eval", "--from", run, "--json")
    assert "heads=2" in json.loads(result.stdout)["model"]


def test_inspect_never_mixes_two_models_in_one_folder(tmp_path, tiny_data, tiny_run, monkeypatch):
    c = Ctx(tmp_path, tiny_data, tiny_run, monkeypatch)
    bare = []
    for folder in ("a", "b"):  # two models outside any run, both named model.safetensors
        (c.tmp / folder).mkdir()
        for name in ("model.safetensors", "config.json"):
            shutil.copy(c.run / name, c.tmp / folder / name)
        bare.append(c.tmp / folder / "model.safetensors")

    def inspect(*args) -> Path:  # the folder written, relative to the working directory (c.tmp)
        return Path(json.loads(_invoke(c, "inspect", *args, "--json").stdout)["json"]).parent.resolve().relative_to(
            Path.cwd().resolve())

    # The run's model is named after its run; two bare files of one name get a folder each, and the same
    # file inspected again goes back to its own. (A copy of the run: its figures go to its TensorBoard log,
    # and the shared run stays as it was.)
    run = Path(shutil.copytree(c.run, c.tmp / c.run.name))
    assert inspect("--from", run / "model.safetensors") == Path("inspect") / run.name
    assert [inspect("--from", p) for p in (*bare, bare[0])] == [Path("inspect/model"), Path("inspect/model-2"),
                                                               Path("inspect/model")]
    # A new inspection removes the figures an earlier one drew that it does not draw itself.
    # in any format an earlier inspection drew it (--format pdf/svg)
    stale = [c.tmp / f"inspect/model/learning_curves.{fmt}" for fmt in ("png", "pdf", "svg")]
    for path in stale:
        path.write_bytes(b"an earlier model's curves")
    assert inspect("--from", bare[1], "--out", c.tmp / "inspect/model") == Path("inspect/model")
    assert not any(path.exists() for path in stale)
    assert json.loads((c.tmp / "inspect/model/inspection.json").read_text())["checkpoint"] == str(bare[1])

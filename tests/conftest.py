"""What tests share: a tiny generated image data set in the hub's parquet layout, tiny recipes and models,
the suite's one tiny trained run, and the helpers that run the CLI in-process and read its output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vitcli.cli import app
from vitcli.recipe.config import ModelCfg

# Tests use tiny models, where thread start-up costs more than it saves; one thread also keeps the
# suite's speed steady when the machine is shared (measured: 1.1 s vs 6 s for a tiny run under load).
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"
CLASSES = ["red", "green", "blue", "grey"]


def make_images(n: int, seed: int, size: int = 16) -> tuple[list[np.ndarray], list[int]]:
    """n small RGB images whose class is their dominant colour, plus noise (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        label = i % len(CLASSES)
        base = np.full((size, size, 3), 60, dtype=np.float32)
        if label < 3:
            base[..., label] = 200
        else:
            base[...] = 130
        img = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
        images.append(img)
        labels.append(label)
    return images, labels


def write_parquet_dataset(folder: Path, n_train: int = 96, n_test: int = 32, size: int = 16) -> Path:
    """Write train/test parquet files with an Image column `img` and a ClassLabel column `label`."""
    import datasets
    from PIL import Image

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels = make_images(n, seed, size)
        ds = datasets.Dataset.from_dict({"img": [Image.fromarray(a) for a in images], "label": labels},
                                        features=features)
        ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    return folder


def write_webdataset(folder: Path, shards: int, per_shard: int, size: int = 8, no_label: tuple = ()) -> Path:
    """WebDataset shards `train-NNNNN.tar`: per example `KEY.png` and `KEY.cls` (its class, as text), the
    layout webdataset's ShardWriter writes; examples (shard, i) in `no_label` get no `.cls` file."""
    import io
    import tarfile

    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tarfile.open(folder / f"train-{s:05d}.tar", "w") as tar:
            for i in range(per_shard):
                png = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(png, format="PNG")
                files = {"png": png.getvalue(), "cls": str((s * per_shard + i) % len(CLASSES)).encode()}
                for ext, data in files.items():
                    if ext == "cls" and (s, i) in no_label:
                        continue
                    info = tarfile.TarInfo(f"s{s:05d}_{i:05d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A local parquet data set that `datasets.load_dataset(path)` reads like a hub id."""
    return write_parquet_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture(scope="session")
def finished_run(tiny_data, tmp_path_factory) -> Path:
    """A 2-step tiny run with checkpoints at steps 1 and 2, model.safetensors and config.json (the bad-input
    catalogues run their cases against it)."""
    from vitcli import recipe
    from vitcli.engine import jobs
    from vitcli.engine.runtime.progress import Reporter

    cfg = recipe.from_data(tiny_recipe(tiny_data), "tiny", ["train.steps=2", "train.checkpoint_every=1"])
    out = tmp_path_factory.mktemp("finished") / "run"
    jobs.train(cfg, out, render=recipe.dump, log=Reporter(enabled=False))
    return out


def tiny_recipe(source: Path | str, **sections) -> dict:
    """Recipe data for a 2-block ViT at 16 px that trains in well under a second per step."""
    data = {
        "model": {"name": "Ti/4", "res": 16, "width": 32, "depth": 2, "heads": 2, "mlp_dim": 64},
        "data": {"source": str(source), "train_crop": "resize", "flip": False, "workers": 0},
        "optim": {"name": "adam", "lr": 3e-3, "weight_decay": 0.01},
        "schedule": {"warmup_steps": 2, "decay": "cosine"},
        "train": {"batch_size": 16, "steps": 12, "precision": "fp32", "log_every": 1, "checkpoint_every": 0},
        "eval": {"batch_size": 32},
        "run": {"name": "tiny"},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return data


def tiny(**kw) -> ModelCfg:
    """A 2-block, 64-wide ViT on 32px images with 8px patches (4x4 grid); keywords change any field."""
    base = dict(name="Ti/8", res=(32, 32), width=64, depth=2, heads=2)
    return ModelCfg(**{**base, **kw})


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """The suite's one tiny trained run, `<tmp>/tiny_run0/run`: 2 steps of `tiny_recipe`, checkpoints at
    steps 1 and 2, model.safetensors, config.json (4 named classes) and results.json.

    Shared by every test that needs some finished run: read it, never change it (a test that changes a
    run copies it first; tests/test_bad_inputs.py checks each of its cases leaves it as it was).
    """
    from vitcli import recipe
    from vitcli.engine import jobs
    from vitcli.engine.runtime.progress import Reporter

    cfg = recipe.from_data(tiny_recipe(source=tiny_data), "tiny", ["train.steps=2", "train.checkpoint_every=1"])
    out = tmp_path_factory.mktemp("tiny_run") / "run"
    jobs.train(cfg, out, render=recipe.dump, log=Reporter(enabled=False))
    return out


def invoke(*args):
    """Run `vit ARGS...` in this process (arguments may be paths or numbers); stdout and stderr kept apart."""
    return CliRunner().invoke(app, [str(a) for a in args])


def one_json(result) -> dict:
    """The command's stdout must be exactly one JSON object on one line (logs go to stderr)."""
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0], parse_constant=lambda c: pytest.fail(f"non-finite {c} in JSON"))


def error_line(result, code: int = 2) -> str:
    """The one `error:` line of a refused command (exit `code`, no traceback)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def shared_cifar10() -> Path:
    """The shared CIFAR-10 copy, or a clean skip when ../shared is not beside the checkout."""
    path = SHARED / "data" / "cifar10"
    if not path.is_dir():
        pytest.skip("../shared/data/cifar10 is not available")
    return path


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Every test runs from its own temporary folder, so a default `runs/...` never lands in the checkout."""
    monkeypatch.chdir(tmp_path)

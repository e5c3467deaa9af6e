"""Every figure is a real image: a PNG of the size its figure declares, with more than one colour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitcli.engine.evaluate import figures


def check_png(path, size: tuple[int, int]) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == size
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10, "a single-colour (blank) figure"
    return pixels


def test_embedding_filters(tmp_path):
    comps = torch.randn(28, 3, 4, 4)
    var = torch.linspace(0.2, 0.01, 28)
    path = figures.embedding_filters(comps, var, "patch embedding", tmp_path / "f.png")
    check_png(path, (700, 530))  # 7 x (1.1 * 4 rows + 0.9) inches at 100 dpi


def test_posemb_similarity_on_a_non_square_grid(tmp_path):
    sim = torch.rand(3, 5, 3, 5) * 2 - 1
    check_png(figures.posemb_similarity(sim, tmp_path / "p.png", "3x5 patches"), (600, 540))


def test_attention_distance(tmp_path):
    check_png(figures.attention_distance(torch.rand(4, 3) * 20, 16, tmp_path / "d.png", 45.0, 16.0), (500, 400))


def test_attention_maps_show_the_images_and_their_masks(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    maps = torch.rand(3, 8, 8)
    check_png(figures.attention_maps(images, maps, ["a", "b", "c"], tmp_path / "m.png"), (480, 390))


def test_learning_curves(tmp_path):
    rows = [{"step": s, "loss": 2.0 / s, "lr": 1e-3, "grad_norm": 1.0} for s in range(1, 30)]
    rows += [{"step": 10, "eval/top1": 0.3}, {"step": 29, "eval/top1": 0.5, "eval/ema_top1": 0.55}]
    check_png(figures.learning_curves(rows, tmp_path / "c.png", "run"), (1200, 360))


@pytest.mark.parametrize("classes", [4, 50])
def test_confusion_matrix(tmp_path, classes):
    counts = np.random.default_rng(1).integers(0, 9, (classes, classes)) + np.eye(classes, dtype=int) * 30
    side = int(100 * min(14, max(6, 0.3 * classes + 2)))
    path = figures.confusion_matrix(counts.tolist(), [f"class {i}" for i in range(classes)], tmp_path / "x.png")
    check_png(path, (side, side))

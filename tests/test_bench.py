"""`vit bench` on a tiny model: the figures it returns are present and consistent (no timing thresholds)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_recipe

from vitcli import recipe
from vitcli.engine.jobs import bench
from vitcli.engine.train.bench import matmul_peak
from vitcli.models import macs, resolve_variant


@pytest.fixture(scope="module")
def tiny_cfg():
    # The source is never read: bench times synthetic batches and stands the builtin digits in for data.
    return recipe.from_data(tiny_recipe("does/not/exist"), "test")


def test_bench_reports_throughput_mfu_and_memory(tiny_cfg, monkeypatch):
    small = lambda device, precision: matmul_peak(device, precision, n=128, seconds=0.05)  # noqa: E731
    monkeypatch.setattr("vitcli.engine.train.bench.matmul_peak", small)  # the full-size peak takes a second
    result = bench(tiny_cfg, steps=2, warmup=1, batch=4)
    assert result["batch"] == 4 and result["res"] == [16, 16] and result["precision"] == "fp32"
    assert result["device"] == "cpu" and result["steps"] == 2 and result["threads"] >= 1
    assert 0 < result["step_s_min"] <= result["step_s"]
    assert math.isclose(result["img_s"], 4 / result["step_s"])
    expected = macs(resolve_variant(tiny_cfg.model), (16, 16), 1000)  # no num_classes in the recipe: 1000
    assert result["macs_per_image"] == expected
    assert math.isclose(result["train_flops"], 6 * expected * result["img_s"])
    assert result["peak_flops"] > 0 and math.isclose(result["mfu"], result["train_flops"] / result["peak_flops"])
    assert result["peak_memory_mb"] > 0


def test_bench_overrides_model_resolution_and_precision(tiny_cfg):
    result = bench(tiny_cfg, steps=2, warmup=0, batch=2, res=(32, 32), precision="bf16", peak=False)
    assert result["res"] == [32, 32] and result["precision"] == "bf16" and result["batch"] == 2
    assert result["peak_flops"] is None and result["mfu"] is None
    assert result["macs_per_image"] == macs(resolve_variant(tiny_cfg.model), (32, 32), 1000)


def test_matmul_peak_is_a_rate():
    assert matmul_peak(torch.device("cpu"), "fp32", n=128, seconds=0.05) > 0

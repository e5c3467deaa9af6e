"""Few-shot linear evaluation: shot sampling, the closed-form ridge solver, features, the summary."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vitcli.engine.evaluate.fewshot import (
    BIAS_FEATURE,
    design_matrix,
    extract_features,
    feature_stats,
    fewshot_eval,
    ridge_fewshot,
    ridge_weights,
    sample_shots,
)
from vitcli.errors import DataError


def _labels(counts: list[int]) -> torch.Tensor:
    # Interleave classes so per-class indices are not contiguous.
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def _lstsq_ridge(x: torch.Tensor, y: torch.Tensor, l2: float) -> torch.Tensor:
    """Independent ridge solution: least squares on [X; sqrt(l2) I] W = [Y; 0]."""
    d = x.shape[1]
    a = torch.cat([x, math.sqrt(l2) * torch.eye(d, dtype=x.dtype)])
    b = torch.cat([y, torch.zeros(d, y.shape[1], dtype=y.dtype)])
    return torch.linalg.lstsq(a, b, driver="gelsd").solution


def _pm_onehot(labels: torch.Tensor, k: int) -> torch.Tensor:
    return 2.0 * torch.nn.functional.one_hot(labels, k).double() - 1.0


def test_sample_shots_exact_counts_reproducible_and_seed_dependent():
    labels = _labels([30, 12, 25, 40])
    idx = sample_shots(labels, 10, seed=3)
    assert idx.numel() == 40 and idx.unique().numel() == 40
    assert torch.bincount(labels[idx], minlength=4).tolist() == [10, 10, 10, 10]
    assert torch.equal(idx, sample_shots(labels, 10, seed=3))
    assert not torch.equal(idx, sample_shots(labels, 10, seed=4))
    # One permutation per class and seed: the 5-shot set is inside the 10-shot set.
    assert set(sample_shots(labels, 5, seed=3).tolist()) <= set(idx.tolist())


def test_sample_shots_too_few_names_class_and_count():
    labels = _labels([30, 3, 25])
    with pytest.raises(DataError, match=r"class 'cat' has 3 training images, fewer than the 4 shots"):
        sample_shots(labels, 4, seed=0, class_names=["dog", "cat", "bird"])
    with pytest.raises(DataError, match=r"class 1 has 3 training images"):
        sample_shots(labels, 4, seed=0)


def test_sample_shots_class_with_no_images_is_an_error():
    labels = _labels([5, 0, 5])
    with pytest.raises(DataError, match=r"class 'b' has 0 training images"):
        sample_shots(labels, 1, seed=0, class_names=["a", "b", "c"])
    with pytest.raises(DataError, match=r"class 3 has 0 training images"):
        sample_shots(_labels([5, 5, 5]), 1, seed=0, num_classes=4)


def _problem(n: int, d: int, k: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, d, generator=gen) * 3 + 1
    labels = torch.arange(n) % k
    mean, std = feature_stats(feats)
    return design_matrix(feats, mean, std), labels


@pytest.mark.parametrize("n,d", [(60, 12), (8, 30)])
def test_ridge_matches_lstsq_and_primal_equals_dual(n, d):
    x, labels = _problem(n, d, k=4)
    l2 = 1024.0
    expected = _lstsq_ridge(x, _pm_onehot(labels, 4), l2)
    (primal,) = ridge_weights(x, labels, 4, [l2], form="primal")
    (dual,) = ridge_weights(x, labels, 4, [l2], form="dual")
    (auto,) = ridge_weights(x, labels, 4, [l2])
    torch.testing.assert_close(primal, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dual, primal, atol=1e-6, rtol=1e-6)
    assert torch.equal(auto, primal if n >= d + 1 else dual)


def test_design_matrix_standardises_with_subset_stats_and_appends_bias():
    x, _ = _problem(50, 6, k=2)
    z = x[:, :-1]
    zeros, ones = torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)
    torch.testing.assert_close(z.mean(0), zeros, atol=1e-9, rtol=0)
    torch.testing.assert_close(z.std(0, correction=0), ones, atol=1e-5, rtol=0)
    assert torch.all(x[:, -1] == BIAS_FEATURE)


def test_several_l2_from_one_decomposition_match_separate_solves():
    x, labels = _problem(40, 10, k=5)
    l2s = [0.5, 64.0, 1024.0]
    together = ridge_weights(x, labels, 5, l2s)
    for l2, w in zip(l2s, together):
        torch.testing.assert_close(w, _lstsq_ridge(x, _pm_onehot(labels, 5), l2), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(w, ridge_weights(x, labels, 5, [l2])[0], atol=1e-9, rtol=1e-9)


def _clusters(per_class: int, k: int = 5, d: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=gen) * 10
    labels = torch.arange(k).repeat_interleave(per_class)
    return centres[labels] + 0.1 * torch.randn(len(labels), d, generator=gen), labels


def test_separable_clusters_are_classified_perfectly():
    train_x, train_y = _clusters(30)
    test_x, test_y = _clusters(20, seed=0)
    test_x = test_x + 0.05 * torch.randn(test_x.shape, generator=torch.Generator().manual_seed(9))
    accs = ridge_fewshot(train_x, train_y, test_x, test_y, 5, [1.0, 1024.0])
    assert accs == {1.0: 1.0, 1024.0: 1.0}


def test_fewshot_eval_schema():
    train_x, train_y = _clusters(30)
    test_x, test_y = _clusters(10)
    out = fewshot_eval(train_x, train_y, test_x, test_y, shots=[1, 5], seeds=3, l2_regs=[1024.0, 4.0])
    assert list(out) == ["1shot", "1shot_l2=1024", "1shot_l2=4", "5shot", "5shot_l2=1024", "5shot_l2=4"]
    assert out["5shot"] == out["5shot_l2=1024"]
    assert out["5shot"]["l2"] == 1024.0 and len(out["5shot"]["seeds"]) == 3
    assert out["5shot"]["mean"] == pytest.approx(1.0)
    json.dumps(out)
    single = fewshot_eval(train_x, train_y, test_x, test_y, shots=[5], seeds=1, l2_regs=[1024.0])
    assert list(single) == ["5shot"] and single["5shot"]["std"] == 0.0


def test_fewshot_eval_rejects_bad_data():
    train_x, train_y = _clusters(6)
    test_x, test_y = _clusters(2)
    with pytest.raises(DataError, match="labels missing .* test label 7"):
        bad_y = torch.tensor([0, 7] * 5)
        fewshot_eval(train_x, train_y, test_x, bad_y, shots=[1], seeds=1, l2_regs=[1.0])
    with pytest.raises(DataError, match="test set is empty"):
        fewshot_eval(train_x, train_y, test_x[:0], test_y[:0], shots=[1], seeds=1, l2_regs=[1.0])
    with pytest.raises(DataError, match="fewer than the 7 shots"):
        fewshot_eval(train_x, train_y, test_x, test_y, shots=[7], seeds=1, l2_regs=[1.0])
    with pytest.raises(ValueError, match="ridge regularisers must be positive"):  # the recipe layer checks users' values
        fewshot_eval(train_x, train_y, test_x, test_y, shots=[1], seeds=1, l2_regs=[-1.0])


def test_extract_features_tiny_vit_restores_train_flag():
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "vit_tiny_patch16_224",
        img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=5,
    )
    model.train()
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 32, 32, generator=gen), torch.tensor([0, 1, 2, 3])) for _ in range(2)]
    feats, labels = extract_features(model, batches, device="cpu", autocast_dtype=None)
    assert feats.shape == (8, 32) and feats.dtype == torch.float32
    assert labels.tolist() == [0, 1, 2, 3] * 2 and labels.dtype == torch.int64
    assert model.training
    # Eval mode and no randomness: the same images give the same features.
    again, _ = extract_features(model.eval(), batches[:1], device="cpu", autocast_dtype=torch.bfloat16)
    assert not model.training and again.shape == (4, 32)
    torch.testing.assert_close(again, feats[:4], atol=0.1, rtol=0.1)

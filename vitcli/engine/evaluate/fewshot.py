"""The paper's few-shot linear evaluation: closed-form ridge regression on frozen pre-logits features.

Protocol (ViT paper, appendix; same as big_vision's `evaluators/fewshot_lsr.py`):

1. Features are the pre-logits representation of the frozen model, extracted once per image.
2. For each seed s, every class gets one random permutation of its training images (a
   `torch.Generator` seeded with s, classes drawn in index order); a k-shot subset is the first k of
   each permutation, so the subsets of one seed are nested (the 5-shot set contains the 1-shot set).
3. Each feature dimension is standardised with the subset's own mean and population std
   (plus 1e-5, so constant dimensions stay finite); the test features get the same map.
4. A constant column is appended for the bias. Its value is `BIAS_FEATURE` = 100, as in big_vision:
   the bias weight *is* part of the ridge penalty, but because the column is 100 the bias itself
   b = 100 w costs lambda * b^2 / 10^4, i.e. it is almost unregularised.
5. Targets are one-vs-all in {-1, +1}^K and W = (X^T X + lambda I)^-1 X^T Y is solved in float64.
   Every lambda shares one eigendecomposition: of X^T X when n >= d (primal), else of X X^T with
   W = X^T (X X^T + lambda I)^-1 Y (dual), which is cheaper for few images of wide features.
6. The prediction is argmax of X_test W and the score is its test accuracy.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor

from vitcli.errors import DataError, RunError

BIAS_FEATURE = 100.0  # big_vision's BIAS_CONSTANT: large so the bias is almost unregularised
STD_EPS = 1e-5  # added to the std (as big_vision does) so constant feature dimensions stay finite
_TEST_CHUNK = 8192  # test rows scored at once: bounds the [rows, K] float64 score block


def _class_name(c: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= c < len(class_names):
        return repr(class_names[c])
    return str(c)


def _num_classes(labels: Tensor, num_classes: int | None) -> int:
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.numel() == 0:
        raise DataError(
            f"few-shot labels must be a non-empty 1-D integer tensor, got shape "
            f"{tuple(labels.shape)} of {labels.dtype}"
        )
    if int(labels.min()) < 0:
        raise DataError(f"few-shot label {int(labels.min())} is negative; labels are 0..K-1")
    return int(labels.max()) + 1 if num_classes is None else num_classes


def check_shots(counts: Sequence[int] | Tensor, k: int, class_names: Sequence[str] | None = None) -> None:
    """Raise a DataError naming the smallest class when any of `counts` (images per class) is below k."""
    counts = torch.as_tensor(counts)
    if int(counts.min()) < k:
        c = int(torch.argmin(counts))
        short = int((counts < k).sum())
        raise DataError(
            f"more shots than the smallest class holds: class {_class_name(c, class_names)} "
            f"has {int(counts[c])} training images, fewer than the {k} shots asked for "
            f"({short} of {len(counts)} classes have fewer than {k})"
        )


def sample_shots(
    labels: Tensor,
    k: int,
    seed: int,
    class_names: Sequence[str] | None = None,
    *,
    num_classes: int | None = None,
) -> Tensor:
    """Indices of exactly `k` training images of every class 0..K-1, drawn reproducibly from `seed`.

    K is `num_classes`, or `labels.max() + 1` when not given. Each class gets one permutation from a
    generator seeded with `seed`, and the first k are taken, so for one seed the k-shot set grows
    with k. The indices come grouped by class. A class with fewer than k (or zero) images is a
    `DataError` naming the class (its name when `class_names` is given) and its count.
    """
    if k < 1:
        raise ValueError(f"a k-shot draw needs k >= 1, got {k}")
    labels = labels.cpu()
    K = _num_classes(labels, num_classes)
    if int(labels.max()) >= K:
        raise DataError(f"few-shot label {int(labels.max())} is outside the classes 0..{K - 1}")
    counts = torch.bincount(labels, minlength=K)
    check_shots(counts, k, class_names)
    # A stable sort groups each class's indices in dataset order, so the permutation of a class
    # depends only on the seed and the data, not on how the other classes are interleaved.
    order = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(K):
        perm = torch.randperm(int(counts[c]), generator=gen)[:k]
        picks.append(order[int(starts[c]) + perm])
    return torch.cat(picks)


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Pre-logits features [N, D] float32 and labels [N] int64 (both on CPU) of every batch.

    Uses the timm API `forward_head(forward_features(x), pre_logits=True)` in eval mode, under
    autocast when `autocast_dtype` is given; the model's training flag is restored afterwards.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for images, targets in batches:
            images = images.to(device, non_blocking=True)
            cast = (
                torch.autocast(device.type, dtype=autocast_dtype)
                if autocast_dtype is not None
                else contextlib.nullcontext()
            )
            with cast:
                z = model.forward_head(model.forward_features(images), pre_logits=True)
            feats.append(z.float().cpu())
            labels.append(targets.to("cpu", torch.long))
    finally:
        model.train(was_training)
    if not feats:
        raise DataError("few-shot feature extraction got no images: the data yielded 0 batches")
    return torch.cat(feats), torch.cat(labels)


def feature_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension mean and population std + `STD_EPS` of features [n, D], in float64."""
    x = x.to(torch.float64)
    return x.mean(0), x.std(0, correction=0) + STD_EPS


def design_matrix(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Standardise features [n, D] with (mean, std) and append the bias column: [n, D + 1] float64."""
    z = (x.to(torch.float64) - mean) / std
    return torch.cat([z, z.new_full((z.shape[0], 1), BIAS_FEATURE)], dim=1)


def _targets_t_x(x: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """X^T Y for Y = 2 onehot - 1 without building Y ([n, K] float64 is 200 MB at 25k x 1000)."""
    class_sums = x.new_zeros(num_classes, x.shape[1]).index_add_(0, labels, x)
    return (2.0 * class_sums - x.sum(0)).T


def ridge_weights(
    x: Tensor,
    labels: Tensor,
    num_classes: int,
    l2_regs: Sequence[float],
    *,
    form: Literal["auto", "primal", "dual"] = "auto",
) -> list[Tensor]:
    """Ridge solutions W [d, K] of X W ~ 2 onehot(labels) - 1, one per lambda, from one eigh.

    `x` is the design matrix [n, d] (see `design_matrix`). Primal: X^T X = Q diag(e) Q^T and
    W = Q diag(1/(e + l)) Q^T X^T Y. Dual: X X^T = Q diag(e) Q^T and W = X^T Q diag(1/(e + l)) Q^T Y.
    "auto" picks the primal side when n >= d, like big_vision; both give the same W.
    """
    x = x.to(torch.float64)
    labels = labels.to(torch.long)
    n, d = x.shape
    if form == "auto":
        form = "primal" if n >= d else "dual"
    if form == "primal":
        eigs, q = torch.linalg.eigh(x.T @ x)
        lhs, rhs = q, q.T @ _targets_t_x(x, labels, num_classes)
    elif form == "dual":
        eigs, q = torch.linalg.eigh(x @ x.T)
        y = 2.0 * torch.nn.functional.one_hot(labels, num_classes).to(torch.float64) - 1.0
        lhs, rhs = x.T @ q, q.T @ y
    else:
        raise ValueError(f"form must be 'auto', 'primal' or 'dual', got {form!r}")
    return [(lhs / (eigs + float(l2))) @ rhs for l2 in l2_regs]


def _accuracy(test_x: Tensor, test_y: Tensor, w: Tensor, mean: Tensor, std: Tensor) -> float:
    # Fold the standardisation and the bias column into an affine map, so the (possibly large)
    # test set is scored chunk by chunk and never copied as a standardised float64 matrix.
    w_feat = w[:-1] / std[:, None]
    bias = BIAS_FEATURE * w[-1] - (mean / std) @ w[:-1]
    correct = 0
    for start in range(0, test_x.shape[0], _TEST_CHUNK):
        rows = test_x[start : start + _TEST_CHUNK].to(torch.float64)
        pred = torch.argmax(rows @ w_feat + bias, dim=1)
        correct += int((pred == test_y[start : start + _TEST_CHUNK]).sum())
    return correct / test_x.shape[0]


def ridge_fewshot(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    l2_regs: Sequence[float],
) -> dict[float, float]:
    """Test accuracy of the closed-form ridge classifier fitted on (train_x, train_y), per lambda.

    Features are raw (unstandardised) [n, D]; standardisation uses the training subset's statistics.
    """
    mean, std = feature_stats(train_x)
    x = design_matrix(train_x, mean, std)
    test_y = test_y.to(torch.long)
    weights = ridge_weights(x, train_y, num_classes, l2_regs)
    return {float(l2): _accuracy(test_x, test_y, w, mean, std) for l2, w in zip(l2_regs, weights)}


def _check_eval_inputs(
    train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor
) -> None:
    if test_labels.numel() == 0 or test_feats.shape[0] == 0:
        raise DataError("few-shot test set is empty: 0 test images to score")
    splits = (("train", train_feats, train_labels), ("test", test_feats, test_labels))
    for split, feats, labels in splits:
        if feats.ndim != 2 or feats.shape[0] != labels.shape[0]:
            raise DataError(
                f"few-shot {split} features of shape {tuple(feats.shape)} do not match "
                f"{labels.shape[0]} labels: expected [{labels.shape[0]}, D]"
            )
        if not torch.isfinite(feats).all():
            raise RunError(
                f"few-shot {split} features contain NaN or inf: the model output is not finite"
            )
    if train_feats.shape[1] != test_feats.shape[1]:
        raise DataError(
            f"few-shot train features have {train_feats.shape[1]} dims but test features have "
            f"{test_feats.shape[1]}"
        )


def _check_options(shots: Sequence[int], seeds: int, l2_regs: Sequence[float]) -> None:
    # The recipe layer has checked the user's values; these guard the solver's own contract.
    if not shots or any(int(k) != k or k < 1 for k in shots):
        raise ValueError(f"shot counts must be whole numbers >= 1, got {list(shots)}")
    if seeds < 1:
        raise ValueError(f"the number of random draws must be >= 1, got {seeds}")
    if not l2_regs or any(not (l2 > 0 and math.isfinite(l2)) for l2 in l2_regs):
        raise ValueError(f"ridge regularisers must be positive finite numbers, got {list(l2_regs)}")


def _summary(accs: list[float], l2: float) -> dict:
    t = torch.tensor(accs, dtype=torch.float64)
    # Sample std over seeds (0.0 with a single seed, where no spread is measurable).
    std = t.std().item() if len(accs) > 1 else 0.0
    return {"mean": t.mean().item(), "std": std, "seeds": list(accs), "l2": float(l2)}


def fewshot_eval(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    *,
    shots: Sequence[int],
    seeds: int,
    l2_regs: Sequence[float],
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> dict[str, dict]:
    """Few-shot linear accuracy for every shot count, averaged over seeds 0..seeds-1.

    Returns a flat, JSON-able dict. `"{k}shot"` holds the result for the FIRST (default) lambda:
    `{"mean": float, "std": float, "seeds": [acc per seed], "l2": float}` with accuracies in [0, 1]
    and `std` the sample std over seeds (0.0 for one seed). When several lambdas are given, every
    lambda (the first included) also has `"{k}shot_l2={lambda:g}"` with the same fields, e.g.
    `{"5shot": {...}, "5shot_l2=1024": {...}, "5shot_l2=4096": {...}}`. Keys follow `shots` order.
    K is `num_classes` or `train_labels.max() + 1`; a test label >= K is a `DataError`.
    """
    _check_options(shots, seeds, l2_regs)
    _check_eval_inputs(train_feats, train_labels, test_feats, test_labels)
    # Duplicates would collide on the same result key; keep the first occurrence's order.
    shots = list(dict.fromkeys(int(k) for k in shots))
    l2_regs = list(dict.fromkeys(float(l2) for l2 in l2_regs))
    K = _num_classes(train_labels, num_classes)
    test_labels = _checked_test_labels(test_labels, K)
    # Convert once here rather than once per (shot, seed) solve.
    test_feats = test_feats.to(torch.float64)
    accs: dict[tuple[int, float], list[float]] = {(k, l2): [] for k in shots for l2 in l2_regs}
    for seed in range(seeds):
        for k in shots:
            idx = sample_shots(train_labels, k, seed, class_names, num_classes=K)
            per_l2 = ridge_fewshot(
                train_feats[idx], train_labels[idx], test_feats, test_labels, K, l2_regs
            )
            for l2, acc in per_l2.items():
                accs[(k, l2)].append(acc)
    return _results(accs, shots, l2_regs)


def _checked_test_labels(test_labels: Tensor, K: int) -> Tensor:
    """The test labels as integers, each one of the K training classes (else a `DataError`)."""
    test_labels = test_labels.to(torch.long)
    bad = test_labels[(test_labels < 0) | (test_labels >= K)]
    if bad.numel():
        raise DataError(
            f"labels missing from the few-shot training set: test label {int(bad[0])} is not among "
            f"the training classes 0..{K - 1}"
        )
    return test_labels


def _results(accs: dict[tuple[int, float], list[float]], shots: list[int], l2_regs: list[float]) -> dict[str, dict]:
    """The accuracies per (shot count, regulariser) as `fewshot_eval` returns them: the first regulariser's
    under `{k}shot`, and every one's under `{k}shot_l2={l2:g}` when there are several."""
    out: dict[str, dict] = {}
    for k in shots:
        out[f"{k}shot"] = _summary(accs[(k, l2_regs[0])], l2_regs[0])
        if len(l2_regs) > 1:
            for l2 in l2_regs:
                out[f"{k}shot_l2={l2:g}"] = _summary(accs[(k, l2)], l2)
    return out

"""ClassificationMeter: hand-checked accuracies, loss, per-class scores and rank merging."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitcli.engine.evaluate.metrics import ClassificationMeter
from vitcli.errors import DataError

# 4 images, 6 classes. Rank of the true class: row0 1st, row1 2nd, row2 6th (last), row3 5th.
LOGITS = torch.tensor(
    [
        [9.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # label 0: top-1 hit
        [1.0, 8.0, 9.0, 2.0, 3.0, 4.0],  # label 1: 2nd -> top-5 only
        [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 5: last -> miss
        [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # label 4: 5th -> top-5 only
    ]
)
LABELS = torch.tensor([0, 1, 5, 4])


def test_hand_computed_top1_top5_and_loss():
    meter = ClassificationMeter(6)
    meter.update(LOGITS, LABELS)
    out = meter.compute()
    assert out["top1"] == pytest.approx(1 / 4)
    assert out["top5"] == pytest.approx(3 / 4)
    assert out["images"] == 4
    assert out["loss"] == pytest.approx(F.cross_entropy(LOGITS, LABELS).item(), rel=1e-6)


def test_top5_clamps_to_number_of_classes():
    meter = ClassificationMeter(2)
    meter.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]))
    out = meter.compute()
    assert out["top1"] == 0.5 and out["top5"] == 1.0


def test_per_class_top1_omits_classes_without_images():
    meter = ClassificationMeter(6)
    meter.update(LOGITS, LABELS)
    meter.update(torch.tensor([[0.0, 0.0, 0.0, 0.0, 9.0, 0.0]]), torch.tensor([4]))
    names = ["a", "b", "c", "d", "e", "f"]
    assert meter.per_class_top1(names) == {"a": 1.0, "b": 0.0, "e": 0.5, "f": 0.0}
    assert meter.per_class_top1() == {"0": 1.0, "1": 0.0, "4": 0.5, "5": 0.0}


def test_precision_and_confusion_matrix_by_hand():
    meter = ClassificationMeter(6)
    meter.update(LOGITS, LABELS)  # predictions: 0, 2, 0, 0 for labels 0, 1, 5, 4
    confusion = meter.confusion()
    assert confusion[0][0] == 1 and confusion[1][2] == 1 and confusion[5][0] == 1 and confusion[4][0] == 1
    assert sum(map(sum, confusion)) == 4
    # Class 0 was predicted 3 times, right once; class 2 once, wrongly; 1, 4, 5 had images, no predictions.
    assert meter.per_class_precision(list("abcdef")) == {"a": pytest.approx(1 / 3), "b": 0.0, "c": 0.0,
                                                         "e": 0.0, "f": 0.0}


def test_no_confusion_matrix_beyond_the_class_limit():
    from vitcli.engine.evaluate.metrics import CONFUSION_MAX_CLASSES

    meter = ClassificationMeter(CONFUSION_MAX_CLASSES + 1)
    logits = torch.zeros(2, CONFUSION_MAX_CLASSES + 1)
    logits[:, 0] = 1.0  # both predicted as class 0, one of them rightly
    meter.update(logits, torch.tensor([0, 1]))
    assert meter.confusion() is None and meter.to_tensor().numel() == 4 + 3 * (CONFUSION_MAX_CLASSES + 1)
    assert meter.per_class_precision()["0"] == 0.5


def test_tensor_round_trip_and_merge_equal_one_big_update():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 7, generator=gen)
    labels = torch.randint(0, 7, (50,), generator=gen)
    whole = ClassificationMeter(7)
    whole.update(logits, labels)

    # Two "ranks": sum their state tensors as an all-reduce would, then rebuild.
    a, b = ClassificationMeter(7), ClassificationMeter(7)
    a.update(logits[:20], labels[:20])
    b.update(logits[20:35], labels[20:35])
    b.update(logits[35:], labels[35:])
    reduced = ClassificationMeter.from_tensor(a.to_tensor() + b.to_tensor(), 7)
    merged = ClassificationMeter(7).merge(a).merge(b)
    for other in (reduced, merged):
        # Loss sums differ only by float32 per-image rounding in another summation order.
        assert other.compute() == pytest.approx(whole.compute(), rel=1e-6)
        assert other.per_class_top1() == pytest.approx(whole.per_class_top1())
        assert other.per_class_precision() == pytest.approx(whole.per_class_precision())
        assert other.confusion() == whole.confusion()
    assert whole.to_tensor().dtype == torch.float64


def test_bad_inputs_raise_data_errors():
    meter = ClassificationMeter(6)
    with pytest.raises(DataError, match="label 6 is outside the classes 0..5"):
        meter.update(LOGITS, torch.tensor([0, 1, 6, 4]))
    with pytest.raises(DataError, match="do not fit a 6-class meter"):
        meter.update(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="no images were evaluated"):
        meter.compute()
    with pytest.raises(DataError, match="does not fit 3 classes"):
        ClassificationMeter.from_tensor(torch.zeros(5), 3)

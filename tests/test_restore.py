"""`weights.restore`: the one way from a checkpoint to a model, and its record of what loading took."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vitcli.errors import CheckpointError
from vitcli.models import build_model, describe
from vitcli.recipe.config import ModelCfg
from vitcli.weights.reader import Pretrained
from vitcli.weights.restore import restore

CFG = ModelCfg(name="Ti/4", res=(16, 16), width=32, depth=2, heads=2, mlp_dim=64, representation_size=16)


def checkpoint(ema: bool = True, classes: int = 10) -> Pretrained:
    """A 10-class checkpoint with a pre-logits layer at 16 px (a 4x4 grid); its EMA copy differs."""
    torch.manual_seed(0)
    state = build_model(CFG, classes).state_dict()
    average = {k: v + 1 for k, v in state.items()} if ema else None
    return Pretrained(Path("ckpt.pt"), state, model=describe(CFG, classes), ema=average,
                      label_names=[f"c{i}" for i in range(classes)])


def test_kept_head_at_a_new_resolution_records_the_resample_and_the_weights_used():
    source, lines = checkpoint(), []
    model, done = restore(source, replace(CFG, res=(32, 32), representation_size=None), log=lines.append)
    assert done.posemb_resampled == "4x4 -> 8x8 (paper)" and lines == ["using the checkpoint's tanh pre-logits "
                                                                       "layer (representation_size 16)",
                                                                       "position embeddings resampled: 4x4 -> 8x8 "
                                                                       "(paper)"]
    assert (done.resampled.old, done.resampled.new, done.resampled.how) == ((4, 4), (8, 8), "paper")
    assert done.weights == "ema" and not done.new_head and done.not_loaded == ()
    assert (done.head_classes, done.num_classes, done.label_names) == (10, 10, source.label_names)
    assert model.representation_size == 16
    torch.testing.assert_close(model.head.weight, source.ema["head.weight"])
    _, raw = restore(source, CFG, weights="raw")
    assert raw.weights == "raw" and raw.resampled is None and raw.posemb_resampled is None
    assert restore(checkpoint(ema=False), CFG)[1].weights == "raw"  # no EMA copy: the raw weights


def test_new_head_drops_the_head_and_pre_logits_and_says_how_many_classes_changed():
    source, lines = checkpoint(), []
    model, done = restore(source, replace(CFG, representation_size=None, head_init="zero"), new_head=3,
                          weights="raw", log=lines.append)
    assert done.new_head and done.dropped_head and done.dropped_pre_logits and done.label_names is None
    assert (done.head_classes, done.num_classes) == (10, 3) and not model.head.weight.any()
    assert lines[-1] == "initialised from ckpt.pt; new zero-initialised head for 3 classes (the checkpoint's head " \
                        "had 10 classes)"
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, source.state_dict["blocks.1.mlp.fc2.weight"])


def test_a_headless_checkpoint_is_refused_only_where_a_head_is_needed():
    source = checkpoint()
    source.state_dict = {k: v for k, v in source.state_dict.items() if not k.startswith("head.")}
    with pytest.raises(CheckpointError, match=r"ckpt.pt: no classification head \(head.weight\)"):
        restore(source, CFG, weights="raw", need_head=True)
    model, done = restore(source, CFG, weights="raw")
    assert done.num_classes == 0 and done.head_classes is None and model.num_classes == 0

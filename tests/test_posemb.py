"""Position-embedding resampling and loading state dicts into a ViT (tiny models on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from timm.layers import resample_abs_pos_embed
from conftest import tiny

from vitcli.errors import CheckpointError
from vitcli.models import build_model, resample_posemb
from vitcli.weights.fit import load_weights


def posemb(grid: tuple[int, int], dim: int = 4, prefix: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(1, prefix + grid[0] * grid[1], dim, generator=gen)


def scipy_zoom(pe: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """The paper's reference: linear zoom of the (h, w, D) grid with scipy, in float64."""
    image = pe[0, 1:].double().numpy().reshape(*old, -1)
    zoomed = ndimage.zoom(image, (new[0] / old[0], new[1] / old[1], 1), order=1)
    assert zoomed.shape[:2] == new
    return torch.from_numpy(zoomed.reshape(1, new[0] * new[1], -1))


# --- resample_posemb ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["paper", "bilinear", "bicubic"])
def test_identity_at_same_grid(mode):
    pe = posemb((3, 5))
    assert torch.equal(resample_posemb(pe, (3, 5), (3, 5), mode=mode), pe)
    square = posemb((4, 4))
    assert torch.equal(resample_posemb(square, (4, 4), mode=mode), square)


@pytest.mark.parametrize("old, new", [((3, 3), (5, 7)), ((4, 6), (7, 5)), ((5, 5), (3, 3)), ((2, 3), (6, 9))])
def test_paper_mode_matches_scipy_zoom(old, new):
    pe = posemb(old, dim=6)
    out = resample_posemb(pe, new, old, mode="paper")
    assert out.shape == (1, 1 + new[0] * new[1], 6)
    torch.testing.assert_close(out[:, 1:].double(), scipy_zoom(pe, old, new), rtol=0, atol=1e-5)


def test_paper_mode_keeps_corners():
    pe = posemb((3, 3))
    out = resample_posemb(pe, (5, 7))[0, 1:].reshape(5, 7, -1)
    grid = pe[0, 1:].reshape(3, 3, -1)
    for (i, j), (a, b) in {(0, 0): (0, 0), (0, 2): (0, 6), (2, 0): (4, 0), (2, 2): (4, 6)}.items():
        torch.testing.assert_close(out[a, b], grid[i, j])


def test_prefix_tokens_untouched():
    pe = posemb((4, 4), prefix=2)
    out = resample_posemb(pe, (6, 6), num_prefix=2)
    assert torch.equal(out[:, :2], pe[:, :2])
    no_prefix = posemb((4, 4), prefix=0)
    assert resample_posemb(no_prefix, (2, 8), num_prefix=0).shape == (1, 16, 4)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("old, new", [((4, 4), (6, 8)), ((6, 6), (3, 4))])
def test_bilinear_and_bicubic_match_timms_checkpoint_loading(mode, old, new):
    # timm's checkpoint filter resamples with its defaults: align_corners=False, antialias=True.
    pe = posemb(old)
    ours = resample_posemb(pe, new, mode=mode)
    theirs = resample_abs_pos_embed(pe, list(new), list(old), num_prefix_tokens=1, interpolation=mode)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    plain = resample_abs_pos_embed(pe, list(new), list(old), num_prefix_tokens=1, interpolation=mode,
                                   antialias=False)
    if mode == "bicubic" or new < old:  # antialiasing changes bicubic always, bilinear when shrinking
        assert not torch.allclose(ours, plain)


def test_dtype_is_kept():
    out = resample_posemb(posemb((3, 3)).bfloat16(), (5, 5))
    assert out.dtype == torch.bfloat16


def test_bad_arguments():
    with pytest.raises(ValueError, match="valid: paper, bilinear, bicubic"):
        resample_posemb(posemb((3, 3)), (4, 4), mode="nearest")
    with pytest.raises(ValueError, match="pass old_grid"):
        resample_posemb(posemb((2, 3)), (4, 4))


# --- load_weights ---------------------------------------------------------------------------------


def test_load_resamples_position_embeddings():
    src = build_model(tiny(), 10)
    dst = build_model(tiny(res=(48, 48)), 10)
    lines = []
    fitted = load_weights(dst, src.state_dict(), drop_head=False, log=lines.append)
    assert lines == fitted.notes == ["position embeddings resampled: 4x4 -> 6x6 (paper)"]
    assert (fitted.resampled.old, fitted.resampled.new, fitted.resampled.how) == ((4, 4), (6, 6), "paper")
    expected = resample_posemb(src.pos_embed.detach(), (6, 6))
    torch.testing.assert_close(dst.pos_embed.detach(), expected)
    torch.testing.assert_close(dst.blocks[1].mlp.fc2.weight, src.blocks[1].mlp.fc2.weight)
    torch.testing.assert_close(dst.head.weight, src.head.weight)


def test_load_non_square_checkpoint_needs_its_grid():
    src = build_model(tiny(res=(32, 48)), 10)
    dst = build_model(tiny(res=(48, 48)), 10)
    with pytest.raises(CheckpointError, match="not a square grid"):
        load_weights(dst, src.state_dict(), drop_head=False, log=lambda _: None)
    notes = load_weights(dst, src.state_dict(), drop_head=False, old_grid=(4, 6), mode="bicubic", log=print).notes
    assert notes == ["position embeddings resampled: 4x6 -> 6x6 (bicubic)"]


def test_drop_head_keeps_fresh_head_and_drops_pre_logits():
    src = build_model(tiny(representation_size=32), 10)
    dst = build_model(tiny(head_init="zero", head_bias=0.5), 3)
    fitted = load_weights(dst, src.state_dict(), drop_head=True, log=lambda _: None)
    assert fitted.notes and "head" in fitted.notes[0]
    assert set(fitted.dropped_head) == {"head.weight", "head.bias", "pre_logits.fc.weight", "pre_logits.fc.bias"}
    assert torch.all(dst.head.weight == 0) and torch.all(dst.head.bias == 0.5)
    torch.testing.assert_close(dst.cls_token, src.cls_token)


def test_keeping_a_head_that_does_not_fit_is_an_error():
    src = build_model(tiny(representation_size=32), 10)
    dst = build_model(tiny(), 10)
    with pytest.raises(CheckpointError) as err:
        load_weights(dst, src.state_dict(), drop_head=False, log=lambda _: None)
    msg = str(err.value)
    assert "head.weight (10, 32) vs (10, 64)" in msg and "not in model: pre_logits.fc.weight" in msg


def test_shape_mismatch_lists_a_few_keys_on_one_line():
    src = build_model(tiny(width=32), 10)
    dst = build_model(tiny(), 10)
    before = dst.pos_embed.detach().clone()
    with pytest.raises(CheckpointError) as err:
        load_weights(dst, src.state_dict(), drop_head=True, log=lambda _: None)
    msg = str(err.value)
    assert "\n" not in msg and "variants differ" in msg and "checkpoint shape vs model shape" in msg
    assert "cls_token (1, 1, 32) vs (1, 1, 64)" in msg and "more)" in msg
    assert msg.count(" vs (") == 5
    assert torch.equal(dst.pos_embed, before)  # nothing was half-loaded


def test_missing_and_unexpected_keys_are_errors():
    src = build_model(tiny(), 10)
    dst = build_model(tiny(pool="gap"), 10)
    with pytest.raises(CheckpointError, match="not in model: cls_token"):
        load_weights(dst, src.state_dict(), drop_head=True, log=lambda _: None)
    partial_sd = {k: v for k, v in src.state_dict().items() if not k.startswith("blocks.1.")}
    with pytest.raises(CheckpointError, match="missing from checkpoint: blocks.1.norm1.weight"):
        load_weights(src, partial_sd, drop_head=False, log=lambda _: None)


def test_load_into_identical_model_is_silent():
    src = build_model(tiny(), 10)
    dst = build_model(tiny(), 10)
    assert load_weights(dst, src.state_dict(), drop_head=False, log=pytest.fail).notes == []
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_array_equal(dst.eval()(x).numpy(), src.eval()(x).numpy())

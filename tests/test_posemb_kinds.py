"""The position embeddings of the paper's ablation (App. D.4): build, train, save, reload, resample."""

from __future__ import annotations

import math

import pytest
import timm
import torch
from conftest import tiny

from vitcli.errors import RecipeError
from vitcli.models import build_model, describe
from vitcli.models import posemb as pe
from vitcli.weights.fit import load_weights
from vitcli.weights.serialization import read_safetensors, write_safetensors

KINDS = pe.KINDS


def images(res=(32, 32), n=2) -> torch.Tensor:
    return torch.randn(n, 3, *res, generator=torch.Generator().manual_seed(0))


def position_keys(model) -> list[str]:
    return sorted(k for k in model.state_dict() if k.startswith("pos_embed") or ".attn.rel_" in k)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pool", ["token", "gap"])
def test_every_kind_trains_saves_reloads_and_resamples(kind, pool, tmp_path):
    torch.manual_seed(0)
    cfg = tiny(posemb=kind, pool=pool)
    model = build_model(cfg, 10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.cross_entropy(model(images()).float(), torch.tensor([1, 2]))
    loss.backward()
    opt.step()
    # (The last block's patch offsets get no gradient under class-token pooling: only that token is read.)
    learned = [k for k in position_keys(model) if not (kind == "sincos2d" and k == "pos_embed")
               and not k.startswith("blocks.1.")]
    assert all(not torch.equal(before[k], model.state_dict()[k]) for k in learned)  # they train
    if kind == "sincos2d":
        assert torch.equal(before["pos_embed"], model.pos_embed)  # fixed
    write_safetensors(tmp_path / "m.safetensors", model.state_dict(), {"format": "pt"})
    saved = read_safetensors(tmp_path / "m.safetensors")
    x = images()
    same = build_model(cfg, 10).eval()
    assert load_weights(same, saved, drop_head=False, log=pytest.fail).notes == []
    with torch.no_grad():
        assert torch.equal(same(x), model.eval()(x))
    big = build_model(tiny(posemb=kind, pool=pool, res=(48, 40)), 10).eval()
    notes = load_weights(big, saved, drop_head=False, log=lambda _: None).notes
    assert notes == ([] if kind == "none" else [notes[0]])
    assert kind == "none" or notes[0].startswith("position embeddings resampled: 4x4 -> 6x5 (")
    with torch.no_grad():
        assert big(images((48, 40))).shape == (2, 10)


def test_timm_builds_the_kinds_it_can_represent_with_identical_outputs():
    x = images()
    for kind in pe.TIMM_KINDS:
        cfg = tiny(posemb=kind)
        model = build_model(cfg, 10).eval()
        desc = describe(cfg, 10)
        assert desc["posemb"] == kind
        ref = timm.create_model(desc["timm_name"], **desc["timm_kwargs"]).eval()
        ref.load_state_dict(model.state_dict(), strict=True)
        with torch.no_grad():
            assert torch.equal(ref(x), model(x)), kind


def test_learned_keeps_timm_keys():
    assert position_keys(build_model(tiny(), 10)) == ["pos_embed"]
    assert position_keys(build_model(tiny(posemb="none"), 10)) == []


def test_relative_bias_is_query_times_offset_embedding():
    """Content logits plus q . E[offset], softmax, then values: the paper's relative attention, by hand."""
    torch.manual_seed(0)
    model = build_model(tiny(posemb="relative_2d"), 10).eval()
    attn = model.blocks[0].attn
    x = torch.randn(1, 17, 64)
    b, n = 1, x.shape[1]
    q, k, v = attn.qkv(x).reshape(b, n, 3, 2, 32).permute(2, 0, 3, 1, 4).unbind(0)
    table = torch.cat([attn.rel_pos.reshape(-1, 32), attn.rel_prefix])
    grid_r, grid_c = torch.arange(16) // 4, torch.arange(16) % 4
    bias = torch.empty(b, 2, n, n)
    for i in range(n):
        for j in range(n):
            if i == 0 or j == 0:
                row = 49 + 2 if i == 0 and j == 0 else (49 if i == 0 else 50)
            else:
                dr, dc = grid_r[i - 1] - grid_r[j - 1], grid_c[i - 1] - grid_c[j - 1]
                row = (dr + 3) * 7 + (dc + 3)
            bias[..., i, j] = (q[..., i, :] * table[row]).sum(-1) * attn.scale
    weights = ((q @ k.transpose(-1, -2)) * attn.scale + bias).softmax(-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(b, n, 64))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-5)


def test_relative_index_offsets():
    idx = pe.relative_index((2, 3), num_prefix=1, two_d=False)
    assert idx.shape == (7, 7)
    assert torch.all(idx[1:, 1:].diagonal() == 5)  # offset 0 sits in the middle of 2*6-1 offsets
    assert idx[1, 6] == 0 and idx[6, 1] == 10  # largest negative and positive offsets
    assert idx[0, 3] == 11 and idx[3, 0] == 12 and idx[0, 0] == 13  # the three prefix rows
    two_d = pe.relative_index((2, 3), num_prefix=0, two_d=True)
    assert torch.all(two_d.diagonal() == 1 * 5 + 2)  # (dr, dc) = (0, 0) in a 3 x 5 table
    assert two_d[0, 5] == (0 - 1 + 1) * 5 + (0 - 2 + 2)  # patch (0,0) to patch (1,2)


def test_relative_tables_resample_over_offsets_keeping_zero_and_extremes():
    table = torch.randn(7, 4)  # offsets -3..3 along the sequence
    out = pe.resample_relative(table, (11,))
    assert out.shape == (11, 4)
    for old, new in ((0, 0), (3, 5), (6, 10)):
        torch.testing.assert_close(out[new], table[old])
    grid2d = torch.randn(3, 5, 4)
    out2d = pe.resample_relative(grid2d, (5, 9))
    torch.testing.assert_close(out2d[2, 4], grid2d[1, 2])
    assert pe.resample_relative(grid2d, (3, 5)) is grid2d


def test_learned_2d_concatenates_row_and_column_embeddings():
    model = build_model(tiny(posemb="learned_2d"), 10)
    assert model.pos_embed is None
    assert model.pos_embed_row.shape == (1, 4, 32) and model.pos_embed_col.shape == (1, 4, 32)
    table = pe.axes_table(model.pos_embed_row, model.pos_embed_col)
    torch.testing.assert_close(table[0, 2 * 4 + 3], torch.cat([model.pos_embed_row[0, 2], model.pos_embed_col[0, 3]]))


def test_sincos2d_is_fixed_and_bounded():
    model = build_model(tiny(posemb="sincos2d"), 10)
    assert "pos_embed" not in dict(model.named_parameters())
    table = model.pos_embed
    assert table.shape == (1, 17, 64) and torch.all(table[:, 0] == 0)
    assert table.abs().max() <= 1 and torch.allclose(table[0, 1:, :16].sin() * 0, torch.zeros(16, 16))
    assert math.isclose(float(table[0, 1, 16]), 1.0)  # cos(0) at patch (0, 0)


def test_kinds_skip_weight_decay_and_bad_widths_are_named():
    from vitcli.models import param_groups_no_decay

    model = build_model(tiny(posemb="relative"), 10)
    assert {"blocks.0.attn.rel_pos", "blocks.1.attn.rel_prefix"} <= param_groups_no_decay(model)
    assert "pos_embed_row" in param_groups_no_decay(build_model(tiny(posemb="learned_2d"), 10))
    with pytest.raises(RecipeError, match="model.posemb: sincos2d needs a width divisible by 4"):
        build_model(tiny(posemb="sincos2d", width=66, heads=3), 10)


def test_export_says_in_one_line_when_timm_cannot_rebuild_the_model(tmp_path):
    from types import SimpleNamespace

    from vitcli.recipe import schema
    from vitcli.recipe.config import RecipeCfg
    from vitcli.weights.run_model import save_run_model

    for kind, expect_line in (("relative", True), ("sincos2d", False)):
        cfg = RecipeCfg(model=tiny(posemb=kind))
        model = build_model(cfg.model, 10)
        setup = SimpleNamespace(ema=None, description=describe(cfg.model, 10))
        lines = []
        save_run_model(tmp_path, setup, schema.to_dict(cfg), model.state_dict(), log=lines.append)
        assert len(lines) == int(expect_line)
        if expect_line:
            assert "model.posemb relative has no timm equivalent" in lines[0] and "\n" not in lines[0]


def test_sequence_offsets_keep_their_meaning_on_another_grid():
    """1-D relative offsets are re-indexed by (row, column): one row down stays one row down."""
    old = torch.randn(2 * 16 - 1, 8)  # a 4 x 4 grid: offsets -15..15, one row down is +4
    wide = pe.resample_sequence_offsets(old, (4, 4), (4, 6))  # the same rows, wider: one row down is +6
    assert wide.shape == (47, 8)
    for new, was in ((6, 4), (-6, -4), (0, 0), (12, 8), (18, 12)):  # whole rows up or down
        torch.testing.assert_close(wide[23 + new], old[15 + was])
    big = pe.resample_sequence_offsets(old, (4, 4), (6, 6))
    as_2d = pe.resample_relative(pe.sequence_offsets_2d(old, (4, 4)), (11, 11))  # how relative_2d resamples
    torch.testing.assert_close(big[35 + 6], as_2d[5 + 1, 5])  # one row down reads row offsets, never columns
    # +1 is one to the right (6 x 5 pairs of patches) or one down and five to the left (5 x 1 pairs)
    torch.testing.assert_close(big[35 + 1], (30 * as_2d[5, 5 + 1] + 5 * as_2d[5 + 1, 5 - 5]) / 35)
    assert pe.resample_sequence_offsets(old, (4, 4), (4, 4)) is old


def test_a_relative_model_at_another_resolution_keeps_the_one_row_down_offset():
    model = build_model(tiny(posemb="relative"), 10)  # 32 px at patch 8: a 4 x 4 grid
    wider = build_model(tiny(posemb="relative", res=(32, 48)), 10)  # a 4 x 6 grid
    notes = load_weights(wider, model.state_dict(), drop_head=False, old_grid=(4, 4), log=lambda _: None).notes
    assert notes == ["position embeddings resampled: 4x4 -> 4x6 (paper, sequence offsets re-indexed by row and "
                     "column)"]
    learned, fitted = model.blocks[0].attn.rel_pos, wider.blocks[0].attn.rel_pos
    torch.testing.assert_close(fitted[23 + 6], learned[15 + 4])  # one row down: +4 then, +6 now
    stretched = pe.resample_relative(learned.detach(), (47,))  # the sequence stretched: "+3.9", a row's end
    assert not torch.allclose(stretched[23 + 6], learned[15 + 4])

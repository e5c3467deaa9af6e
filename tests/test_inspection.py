"""The numbers behind `vit inspect`, against direct computations on tiny models with hand-set weights.

Uniform attention (zero query/key weights) over a 4x4 grid of 4-pixel patches has a mean distance that a
double loop over the 256 patch pairs gives; attention that looks only at its own token (huge q = k on
distinct token embeddings, residual branches zeroed so every layer sees the same tokens) has distance 0
and a rollout that is the identity. Position-embedding similarity is checked cell by cell on a
non-square grid, and the row/column score on embeddings built from one-hot rows and columns.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny

from vitcli.recipe.config import ModelCfg
from vitcli.engine.evaluate import internals
from vitcli.models import build_model
from vitcli.models.attention import record_attention


def tiny_model(pool: str = "gap", res=(16, 16), width: int = 32, heads: int = 2, depth: int = 2, **kw):
    """The shared tiny variant at 16 px with 4px patches and an MLP of twice the width, built with 4 classes."""
    torch.manual_seed(0)
    cfg = tiny(name="Ti/4", res=res, width=width, depth=depth, heads=heads, mlp_dim=2 * width, pool=pool, **kw)
    return build_model(cfg, 4).eval()


def uniform_mean_distance(rows: int, cols: int, cell: float) -> float:
    """Mean Euclidean distance between the centres of two patches drawn uniformly (self included)."""
    cells = list(itertools.product(range(rows), range(cols)))
    total = sum(math.hypot(a[0] - b[0], a[1] - b[1]) for a in cells for b in cells)
    return cell * total / len(cells) ** 2


def self_attending(pool: str) -> torch.nn.Module:
    """Every layer's attention is (numerically) the identity: tokens are distinct random vectors, q = k
    is a large multiple of them, and the residual branches add nothing, so every layer sees the same x."""
    model = tiny_model(pool, width=64)
    with torch.no_grad():
        model.patch_embed.proj.weight.zero_()
        model.patch_embed.proj.bias.zero_()
        model.pos_embed.copy_(torch.randn_like(model.pos_embed) * 10)
        if model.cls_token is not None:
            model.cls_token.zero_()
        for block in model.blocks:
            d = model.embed_dim
            block.attn.qkv.weight.zero_()
            block.attn.qkv.weight[:d].copy_(torch.eye(d) * 30)
            block.attn.qkv.weight[d:2 * d].copy_(torch.eye(d) * 30)
            block.attn.qkv.bias.zero_()
            for layer in (block.attn.proj, block.mlp.fc2):
                layer.weight.zero_()
                layer.bias.zero_()
    return model


@pytest.mark.parametrize("pool", ["gap", "token"])
def test_uniform_attention_has_the_grids_mean_distance(pool):
    model = tiny_model(pool)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[: 2 * model.embed_dim].zero_()  # q = k = 0: every logit is 0
            block.attn.qkv.bias.zero_()
    geom = internals.geometry(model, (16, 16))
    assert geom.grid == (4, 4) and geom.cell == (4.0, 4.0) and geom.prefix == (1 if pool == "token" else 0)
    summary = internals.attention_pass(model, torch.randn(3, 3, 16, 16), geom)
    assert summary.images == 3 and summary.distance.shape == (2, 2)
    expected = uniform_mean_distance(4, 4, 4.0)
    assert expected == pytest.approx(8.032, abs=1e-3)  # about 2.01 patches of 4 px
    torch.testing.assert_close(summary.distance, torch.full((2, 2), expected), atol=1e-4, rtol=0)
    assert internals.uniform_distance(geom) == pytest.approx(expected)


@pytest.mark.parametrize("pool", ["gap", "token"])
def test_attention_to_itself_has_distance_zero_and_an_identity_rollout(pool):
    model = self_attending(pool)
    geom = internals.geometry(model, (16, 16))
    recorded = []
    with record_attention(model, lambda i, p: recorded.append(p)):
        model(torch.randn(2, 3, 16, 16))
    eye = torch.eye(geom.prefix + 16).expand(2, 2, -1, -1)
    for probs in recorded:
        torch.testing.assert_close(probs, eye, atol=1e-5, rtol=0)
    summary = internals.attention_pass(model, torch.randn(2, 3, 16, 16), geom)
    torch.testing.assert_close(summary.distance, torch.zeros(2, 2), atol=1e-4, rtol=0)
    rolled = internals.rollout(p.mean(dim=1) for p in recorded)
    torch.testing.assert_close(rolled, torch.eye(geom.prefix + 16, dtype=torch.float64).expand(2, -1, -1),
                               atol=1e-5, rtol=0)
    # The class token gathers nothing from the patches; GAP gathers each patch equally (1/16).
    expected = torch.zeros(2, 4, 4) if pool == "token" else torch.full((2, 4, 4), 1 / 16)
    torch.testing.assert_close(summary.maps, expected, atol=1e-5, rtol=0)


def test_rollout_of_identity_attention_is_the_identity():
    eye = torch.eye(5).expand(3, -1, -1)
    torch.testing.assert_close(internals.rollout([eye, eye, eye]), torch.eye(5, dtype=torch.float64).expand(3, -1, -1))


def test_rollout_adds_the_residual_and_multiplies_layers_in_order():
    a = torch.softmax(torch.randn(1, 3, 3), dim=-1)
    b = torch.softmax(torch.randn(1, 3, 3), dim=-1)
    mixed = lambda m: (m + torch.eye(3)) / 2  # rows of m sum to 1, so adding I doubles them
    torch.testing.assert_close(internals.rollout([a, b]).float(), mixed(b) @ mixed(a))


def test_recording_changes_neither_outputs_nor_keys():
    model = tiny_model("token")
    x = torch.randn(2, 3, 16, 16)
    keys = list(model.state_dict())
    before = model(x)
    seen = []
    with record_attention(model, lambda i, p: seen.append(i)) as layers:
        during = model(x)
    assert layers == 2 and seen == [0, 1]
    torch.testing.assert_close(during, before, atol=1e-5, rtol=1e-5)
    assert list(model.state_dict()) == keys
    assert all(block.attn.on_probs is None for block in model.blocks)  # the recording is undone


def test_posemb_similarity_is_the_cosine_of_every_pair_on_a_non_square_grid():
    model = tiny_model("token", res=(16, 8))
    geom = internals.geometry(model, (16, 8))
    assert geom.grid == (4, 2)
    sim = internals.posemb_similarity(model, geom)
    pos = model.pos_embed.detach()[0, 1:]  # the class token's embedding comes first
    for (i, j), (k, m) in itertools.product(itertools.product(range(4), range(2)), repeat=2):
        direct = F.cosine_similarity(pos[i * 2 + j], pos[k * 2 + m], dim=0)
        assert float(sim[i, j, k, m]) == pytest.approx(float(direct), abs=1e-5)


def test_row_column_score_of_embeddings_made_of_rows_and_columns():
    rows, cols = 3, 4
    emb = torch.cat([F.one_hot(torch.arange(rows).repeat_interleave(cols), rows),
                     F.one_hot(torch.arange(cols).repeat(rows), cols)], dim=1).float()
    emb = F.normalize(emb, dim=1)
    sim = (emb @ emb.T).reshape(rows, cols, rows, cols)
    assert internals.row_column_structure(sim) == pytest.approx(
        {"same_row": 0.5, "same_column": 0.5, "elsewhere": 0.0})


def test_embedding_filters_are_the_principal_components_of_the_patch_projection():
    model = tiny_model("gap")
    out = internals.embedding_filters(model)
    comps, var = out["components"], out["explained_variance"]
    assert out["what"] == "patch embedding" and comps.shape == (28, 3, 4, 4)
    flat = comps.reshape(28, -1).double()
    torch.testing.assert_close(flat @ flat.T, torch.eye(28, dtype=torch.float64), atol=1e-5, rtol=0)
    rows = model.patch_embed.proj.weight.detach().reshape(32, -1).double()
    rows = rows - rows.mean(dim=0)
    projected = (rows @ flat.T).square().sum(dim=0)  # variance along each component
    torch.testing.assert_close(projected / rows.square().sum(), var.double(), atol=1e-5, rtol=0)
    assert all(var[:-1] >= var[1:])


def test_a_hybrid_is_inspected_on_its_feature_map_cells():
    model = build_model(ModelCfg(name="R50+Ti/16", res=(32, 32), depth=1), 3).eval()
    geom = internals.geometry(model, (32, 32))
    assert geom.hybrid and geom.grid == (2, 2) and geom.cell == (16.0, 16.0)
    filters = internals.embedding_filters(model)
    assert filters["what"].startswith("ResNet stem") and filters["components"].shape == (28, 3, 7, 7)
    summary = internals.attention_pass(model, torch.randn(2, 3, 32, 32), geom)
    assert summary.distance.shape == (1, 3) and summary.maps.shape == (2, 2, 2)
    assert bool((summary.distance >= 0).all()) and bool((summary.distance <= 16 * math.sqrt(2) + 1e-6).all())


def test_2d_posemb_similarity_and_relative_models():
    model = tiny_model("token", posemb="learned_2d")
    geom = internals.geometry(model, (16, 16))
    sim = internals.posemb_similarity(model, geom)
    row, col = model.pos_embed_row.detach()[0], model.pos_embed_col.detach()[0]
    first, other = torch.cat([row[1], col[2]]), torch.cat([row[3], col[0]])
    assert float(sim[1, 2, 3, 0]) == pytest.approx(float(F.cosine_similarity(first, other, dim=0)), abs=1e-5)
    relative = tiny_model("gap", posemb="relative_2d")
    assert "one per offset" in internals.posemb_absent(relative)
    summary = internals.attention_pass(relative, torch.randn(2, 3, 16, 16), internals.geometry(relative, (16, 16)))
    assert summary.distance.shape == (2, 2)  # the relative bias is part of the recorded softmax
    x = torch.randn(2, 3, 16, 16)
    with record_attention(relative, lambda i, p: None):
        recorded = relative(x)
    torch.testing.assert_close(recorded, relative(x), atol=1e-5, rtol=1e-5)

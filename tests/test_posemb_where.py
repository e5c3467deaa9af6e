"""Table 8's other rows: position tables added to every block ("every_layer", one table per block) or the
one stem table added before every block ("every_layer_shared"): build, train, save, reload, resample."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny, tiny_recipe
from test_weights_formats import one_line_error

from vitcli import recipe
from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter
from vitcli.errors import RecipeError
from vitcli.models import build_model, describe
from vitcli.recipe import assembly
from vitcli.recipe.config import ModelCfg
from vitcli.weights import convert, reader
from vitcli.weights.fit import load_weights

LAYERED = [(kind, where) for kind in ("learned", "learned_2d") for where in ("every_layer", "every_layer_shared")]


def tiny3(**kw) -> ModelCfg:
    """The shared tiny variant with three blocks: two later blocks, so 'every layer' has tables of its own."""
    return tiny(depth=3, **kw)


def images(res=(32, 32)) -> torch.Tensor:
    return torch.randn(2, 3, *res, generator=torch.Generator().manual_seed(0))


def by_hand(model, x: torch.Tensor) -> torch.Tensor:
    """The blocks run one by one, each input after the first plus that block's table: what Table 8 says."""
    x = model._pos_embed(model.patch_embed(x))
    for i, block in enumerate(model.blocks):
        if i and model.posemb_where == "every_layer":
            x = x + model.pos_embed_layers[i - 1]()
        elif i:
            x = x + model.stem_table()
        x = block(x)
    return model.forward_head(model.norm(x))


@pytest.mark.parametrize("kind,where", LAYERED)
def test_tables_are_added_before_every_block(kind, where):
    torch.manual_seed(0)
    model = build_model(tiny3(posemb=kind, posemb_where=where), 10).eval()
    stem = build_model(tiny3(posemb=kind), 10).eval()
    extra = {k for k in model.state_dict()} - {k for k in stem.state_dict()}
    if where == "every_layer_shared":
        assert extra == set()  # no parameters of its own: the stem table again
    else:  # one table per block after the first, of the stem table's shape
        tables = 2 if kind == "learned" else 2 * 3  # row, column and class-token tables
        assert len(extra) == tables and all(k.startswith("pos_embed_layers.") for k in extra)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), by_hand(model, x), rtol=0, atol=0)
        stem.load_state_dict({k: v for k, v in model.state_dict().items() if k in stem.state_dict()})
        assert not torch.allclose(model(x), stem(x))  # the same weights added once give other outputs


@pytest.mark.parametrize("kind,where", LAYERED)
def test_every_table_trains_saves_reloads_and_resamples(kind, where, tiny_data, tmp_path):
    out = tmp_path / "run"
    data = tiny_recipe(tiny_data, model={"posemb": kind, "posemb_where": where}, train={"steps": 2})
    jobs.train(recipe.from_data(data, "t"), out, render=recipe.dump, log=Reporter(enabled=False))
    source = reader.read(out)
    assert source.model["posemb_where"] == where and source.recipe["model"]["posemb_where"] == where
    model = build_model(convert.model_cfg(source.model), 4).eval()
    fresh = build_model(convert.model_cfg(source.model), 4)
    tables = [k for k in source.state_dict if k.startswith("pos_embed")]
    assert all(not torch.equal(source.state_dict[k], fresh.state_dict()[k]) for k in tables)  # trained
    assert load_weights(model, source.state_dict, drop_head=False, log=pytest.fail).notes == []
    x = images((16, 16))
    again = build_model(convert.model_cfg(source.model), 4).eval()
    notes = load_weights(again, source.state_dict, drop_head=False, old_grid=(4, 4), log=pytest.fail).notes
    assert notes == []  # the same grid: nothing resampled, the outputs identical
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    big = build_model(convert.model_cfg(source.model, res=(24, 32)), 4).eval()
    notes = load_weights(big, source.state_dict, drop_head=False, log=lambda _: None).notes
    assert len(notes) == 1 and notes[0].startswith("position embeddings resampled: 4x4 -> 6x8 (paper")
    if where == "every_layer" and kind == "learned":
        torch.testing.assert_close(big.pos_embed_layers[0].table[:, :1], model.pos_embed_layers[0].table[:, :1])
    with torch.no_grad():
        assert big(images((24, 32))).shape == (2, 4)


def test_finetuning_keeps_where_the_tables_go_and_timm_refuses_them(tiny_data, tmp_path):
    out = tmp_path / "run"
    data = tiny_recipe(tiny_data, model={"posemb_where": "every_layer"}, train={"steps": 2})
    jobs.train(recipe.from_data(data, "t"), out, render=recipe.dump, log=Reporter(enabled=False))
    cfg = assembly.from_checkpoint(reader.read(out), None, [], ["train.steps=2"], assembly.FINETUNE)
    assert cfg.model.posemb_where == "every_layer"  # the checkpoint's architecture
    line = one_line_error("export", out, "--format", "timm", "--out", tmp_path / "timm")
    assert "--format timm: model.posemb_where every_layer cannot be carried" in line
    line = one_line_error("export", out, "--format", "hf", "--out", tmp_path / "hf")
    assert "--format hf: model.posemb_where every_layer cannot be carried" in line
    assert not (tmp_path / "timm").exists() and not (tmp_path / "hf").exists()
    desc = describe(tiny3(posemb_where="every_layer_shared"), 10)
    assert desc["posemb_where"] == "every_layer_shared"
    assert convert.model_cfg(desc).posemb_where == "every_layer_shared"


def test_kinds_without_a_learned_table_refuse_the_layer_rows():
    for kind in ("none", "relative", "relative_2d", "sincos2d"):
        with pytest.raises(RecipeError, match=f"model.posemb_where: every_layer adds a learned table to every "
                                              f"block, and model.posemb {kind} has none"):
            build_model(tiny3(posemb=kind, posemb_where="every_layer"), 10)


def test_layer_decay_puts_each_table_with_its_block():
    from vitcli.engine.train.optim import _layer_id

    model = build_model(tiny3(posemb="learned_2d", posemb_where="every_layer"), 10)
    ids = {name: _layer_id(name, 3) for name, _ in model.named_parameters() if name.startswith("pos_embed")}
    assert ids["pos_embed_row"] == 0 and ids["pos_embed_layers.0.row"] == ids["pos_embed_layers.0.prefix"] == 2
    assert ids["pos_embed_layers.1.col"] == _layer_id("blocks.2.attn.qkv.weight", 3) == 3


@pytest.mark.parametrize("where", ["every_layer", "every_layer_shared"])
def test_masked_patch_prediction_adds_the_tables_too(where):
    from vitcli.models.masked import sample_corruption

    torch.manual_seed(0)
    model = build_model(tiny(posemb_where=where), 10).eval()
    model.enable_masked_patch(8)
    # Corrupted patches left as they are (no [mask], no swap): the predictions read the plain forward's tokens.
    kept = sample_corruption(2, 16, 0.5, mask_frac=0.0, swap_frac=0.0, generator=torch.Generator().manual_seed(0))
    x = images()
    with torch.no_grad():
        expected = model.mpp_head(model.forward_features(x)[:, 1:][kept.selected])
        torch.testing.assert_close(model(x, corruption=kept), expected, rtol=0, atol=0)

"""Masked patch prediction (paper Section 4.6): corruption, targets, training, resume, transfer."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_recipe
from test_train import QUIET, Interrupted, assert_same, cfg_of, run_trainer, train

from vitcli.recipe.config import DataCfg, ModelCfg
from vitcli.data.transforms import norm_stats
from vitcli.engine.train.objectives import MaskedPatch
from vitcli.errors import RecipeError
from vitcli.models import build_model, masked
from vitcli.models.variants import mpp_outputs


def mpp_recipe(source, **train):
    return tiny_recipe(source, train={"objective": "masked_patch", "steps": 6, **train},
                       eval={"evaluators": []})


# --- corruption -----------------------------------------------------------------------------------


def test_corruption_fraction_and_80_10_10_split_on_a_large_batch():
    gen = torch.Generator().manual_seed(0)
    c = masked.sample_corruption(1024, 64, 0.5, 0.8, 0.1, generator=gen)
    assert torch.all(c.selected.sum(1) == 32)  # exactly half of every image's patches
    n = c.selected.sum().item()
    masked_frac, swapped_frac = c.masked.sum().item() / n, c.swapped.sum().item() / n
    assert abs(masked_frac - 0.8) < 0.01 and abs(swapped_frac - 0.1) < 0.01
    assert not torch.any(c.masked & c.swapped) and not torch.any((c.masked | c.swapped) & ~c.selected)
    flat = torch.arange(1024 * 64).view(1024, 64)
    assert not torch.any(c.source == flat)  # a swap never takes the patch's own embedding


def test_corrupt_applies_mask_swap_and_keep():
    gen = torch.Generator().manual_seed(1)
    c = masked.sample_corruption(4, 16, 0.5, 0.6, 0.3, generator=gen)
    tokens, mask = torch.randn(4, 16, 8, generator=gen), torch.randn(1, 1, 8, generator=gen)
    out = masked.corrupt(tokens, mask, c)
    assert torch.equal(out[c.masked], mask[0].expand(int(c.masked.sum()), 8))
    assert torch.equal(out[c.swapped], tokens.reshape(-1, 8)[c.source[c.swapped]])
    kept = ~(c.masked | c.swapped)
    assert torch.equal(out[kept], tokens[kept])


# --- targets --------------------------------------------------------------------------------------


def test_mean_colour_of_a_constant_patch_is_its_3_bit_class():
    # (0.30, 0.60, 0.95) -> levels (2, 4, 7) of 8 -> 2*64 + 4*8 + 7
    rgb = torch.tensor([0.30, 0.60, 0.95]).view(1, 3, 1, 1)
    pixels01 = rgb.expand(1, 3, 8, 8).clone()
    pixels01[..., 4:, :] = 0.0  # the bottom two 4x4 patches are black: class 0
    target = masked.make_target("mean_color", pixels01, pixels01, patch=4)
    assert target.tolist() == [[167, 167, 0, 0]]
    cells = masked.make_target("color_4x4", pixels01, pixels01, patch=4)
    assert cells.shape == (1, 4, 16) and torch.all(cells[0, 0] == 167) and torch.all(cells[0, 3] == 0)
    assert masked.color_class(torch.tensor([1.0, 1.0, 1.0])) == 511


def test_objective_recovers_pixels_from_normalised_inputs():
    cfg = cfg_of(tiny_recipe("builtin:digits"), "train.objective=masked_patch", "data.norm=imagenet")
    objective = MaskedPatch(cfg)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in norm_stats(DataCfg(norm="imagenet")))
    pixels01 = torch.tensor([0.30, 0.60, 0.95]).view(1, 3, 1, 1).expand(2, 3, 16, 16)
    images = (pixels01 - mean) / std
    model = build_model(cfg.model, 0)
    objective.prepare(model)
    torch.manual_seed(0)
    loss, metrics = objective.loss(model, images, torch.zeros(2, dtype=torch.long))
    assert set(metrics) == {"mpp_loss", "mpp_acc"} and loss.item() == pytest.approx(metrics["mpp_loss"].item())
    logits = torch.zeros(1, 512)
    logits[0, 167] = 1.0
    model.mpp_head.weight.data.zero_()
    model.mpp_head.bias.data.copy_(logits[0] * 50)  # always predicts class 167: every target is 167
    _, metrics = objective.loss(model, images, torch.zeros(2, dtype=torch.long))
    assert metrics["mpp_acc"].item() == 1.0


def test_head_sizes_and_bad_settings():
    assert mpp_outputs("mean_color", 16) == 512
    assert mpp_outputs("color_4x4", 16) == 16 * 512
    assert mpp_outputs("pixels", 16) == 768
    with pytest.raises(RecipeError, match="mpp.corrupt: must be in"):
        cfg_of(tiny_recipe("builtin:digits"), "mpp.corrupt=0")
    with pytest.raises(RecipeError, match="mask and random"):
        cfg_of(tiny_recipe("builtin:digits"), "mpp.mask=0.9", "mpp.random=0.2")


@pytest.mark.parametrize("target", masked.TARGETS)
def test_predictions_come_from_the_corrupted_tokens_only(target):
    model = build_model(ModelCfg(name="Ti/4", res=(16, 16), width=32, depth=2, heads=2, mlp_dim=64), 0).eval()
    model.enable_masked_patch(mpp_outputs(target, 4))
    c = masked.sample_corruption(2, 16, 0.25, device="cpu", generator=torch.Generator().manual_seed(0))
    pred = model(torch.randn(2, 3, 16, 16), corruption=c)
    assert pred.shape == (8, mpp_outputs(target, 4))


# --- training -------------------------------------------------------------------------------------


def test_mpp_run_logs_loss_and_accuracy_and_exports_a_backbone(tiny_data, tmp_path):
    cfg = cfg_of(mpp_recipe(tiny_data))
    out = tmp_path / "mpp"
    train(cfg, out)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "mpp_loss" in r]
    assert len(steps) == 6 and all(0.0 <= r["mpp_acc"] <= 1.0 for r in steps)
    assert steps[-1]["mpp_loss"] < steps[0]["mpp_loss"]
    from safetensors.torch import load_file

    exported = load_file(str(out / "model.safetensors"))
    assert not any(masked.is_pretraining_key(k) for k in exported) and "head.weight" not in exported
    ckpt = max((out / "checkpoints").iterdir())
    assert "mask_token" in torch.load(ckpt, weights_only=True)["model"]


def test_mpp_resumes_bit_for_bit(tiny_data, tmp_path):
    cfg = cfg_of(mpp_recipe(tiny_data, steps=8, seed=1), "train.ema=0.9", "mpp.target=color_4x4")
    full = run_trainer(cfg, tmp_path / "full")
    with pytest.raises(Interrupted):
        run_trainer(cfg, tmp_path / "cut", stop_at=5)
    resumed = run_trainer(cfg, tmp_path / "cut", resume=True)
    assert_same(full.setup.raw_state_dict(), resumed.setup.raw_state_dict())
    assert_same(full.setup.ema_state_dict(), resumed.setup.ema_state_dict())
    rows = lambda p: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines() if "mpp_loss" in x]
    assert rows(tmp_path / "full") == [{**r, "img_s": f["img_s"]} for r, f in
                                       zip(rows(tmp_path / "cut"), rows(tmp_path / "full"))]


def test_unlabelled_image_folder_trains(tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    cfg = cfg_of(mpp_recipe(f"imagefolder:{folder}", steps=2))
    result = train(cfg, tmp_path / "run")
    assert result["steps"] == 2


def test_finetune_and_fewshot_from_an_mpp_run(tiny_data, tmp_path):
    from vitcli.engine import jobs
    from vitcli.recipe import assembly
    from vitcli.weights import reader

    out = tmp_path / "mpp"
    train(cfg_of(mpp_recipe(tiny_data, checkpoint_every=3)), out)
    for source in (out, max((out / "checkpoints").iterdir())):  # export and raw checkpoint
        pretrained = reader.read(source)
        sets = ["train.steps=2", "schedule.warmup_steps=1", "train.batch_size=16", "data.workers=0"]
        cfg = assembly.from_checkpoint(pretrained, None, [], sets, assembly.FINETUNE)
        assert cfg.train.objective == "supervised" and cfg.model.res == (16, 16)
        result = train(cfg, tmp_path / f"ft-{source.name}")
        assert result["steps"] == 2 and "top1" in result
    few = assembly.from_checkpoint(reader.read(out), None, [], ["fewshot.shots=[1,2]", "fewshot.seeds=1"],
                                   assembly.FEWSHOT)
    results = jobs.fewshot(few, reader.read(out), log=QUIET)
    assert set(results["results"]["tiny_data0"]) == {"1shot", "2shot"}
    # vit export of a raw checkpoint leaves the masked-patch parts out, as the run's own model.safetensors does.
    from safetensors.torch import load_file

    from vitcli.weights import convert

    convert.export(reader.read(max((out / "checkpoints").iterdir())), "timm", tmp_path / "timm")
    exported = load_file(str(tmp_path / "timm" / "model.safetensors"))
    assert exported.keys() == load_file(str(out / "model.safetensors")).keys()


def test_a_run_recorded_before_these_keys_existed_still_resumes(tiny_data, tmp_path):
    cfg = cfg_of(tiny_recipe(tiny_data), "train.steps=2")
    out = tmp_path / "old"
    train(cfg, out)
    stored = json.loads((out / "recipe.json").read_text())
    del stored["mpp"], stored["train"]["objective"], stored["model"]["posemb"]  # as an older vit wrote it
    (out / "recipe.json").write_text(json.dumps(stored))
    assert train(cfg, out, resume=True)["steps"] == 2

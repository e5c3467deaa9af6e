"""`vit finetune`: every --from format, the new head, position-embedding resampling, the lr sweep,
freezing and layer-wise lr decay, and the one-line refusals of bad checkpoints and resolutions.

One tiny pretrained run (with a tanh pre-logits layer, at 16 px = a 4x4 grid) is shared by the module;
every fine-tune trains a handful of steps on the generated colour data set.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import invoke, tiny_recipe
from rich.console import Console
from safetensors.torch import load_file, save_file

from vitcli import recipe
from vitcli.recipe import assembly
from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.train import optim
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.train.model_setup import setup_model
from vitcli.errors import RecipeError, RunError
from vitcli.models import build_model, resample_posemb
from vitcli.weights import reader

TINY = {"width": 32, "depth": 2, "heads": 2, "mlp_dim": 64, "patch": 4}
# Small enough for the 96 generated images; a fine-tune recipe overrides only these.
FAST = ["train.batch_size=16", "train.steps=3", "schedule.warmup_steps=1", "train.precision=fp32",
        "train.log_every=1", "train.checkpoint_every=0", "data.workers=0"]


def sets(*items: str) -> list[str]:
    return [arg for item in (*FAST, *items) for arg in ("--set", item)]


def capture() -> tuple[Reporter, io.StringIO]:
    buffer = io.StringIO()
    return Reporter(console=Console(file=buffer, width=400)), buffer


@pytest.fixture(scope="module")
def pre(tiny_data, tmp_path_factory) -> Path:
    """A pretrained run directory: tiny ViT with representation_size 16, 4 classes, 16 px."""
    out = tmp_path_factory.mktemp("pre") / "run"
    cfg = recipe.from_data(tiny_recipe(tiny_data, model={"representation_size": 16}), "t", ["train.steps=6"])
    jobs.train(cfg, out, render=recipe.dump, log=Reporter(enabled=False))
    return out


@pytest.fixture(scope="module")
def timm_sd() -> dict[str, torch.Tensor]:
    """A timm ViT state dict with the tiny dimensions and a 10-class head."""
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, embed_dim=32,
                              depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_yaml(tiny_data, tmp_path_factory) -> Path:
    """A fine-tuning recipe naming the tiny variant, for checkpoints that do not describe themselves."""
    data = tiny_recipe(tiny_data, model={"name": "Ti/4", **TINY})
    path = tmp_path_factory.mktemp("recipes") / "tiny_ft.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def finetune_model(source_path: Path, recipe_path: Path | None, *extra: str):
    """Assemble the fine-tune recipe as `vit finetune` does, then build and initialise its model."""
    source = reader.read(source_path)
    cfg = assembly.from_checkpoint(source, recipe_path, [], [*FAST, *extra], assembly.FINETUNE)
    log, buffer = capture()
    model = setup_model(cfg, 4, Runtime.create("cpu", "fp32", 0), log, init=source).model
    return model, cfg, buffer.getvalue()


# -- --from formats -----------------------------------------------------------------------------------
def test_every_vit_format_reads_the_same_weights(pre):
    final = load_file(str(pre / "model.safetensors"))
    checkpoint_pt = next((pre / "checkpoints").glob("step-*.pt"))
    for path in (pre, pre / "model.safetensors", checkpoint_pt):
        source = reader.read(path)
        assert source.model["representation_size"] == 16 and source.model["res"] == [16, 16], path
        assert source.recipe["data"]["source"]
        assert source.state_dict.keys() == final.keys()
        for key in final:
            torch.testing.assert_close(source.state_dict[key], final[key], msg=f"{path}: {key}")


@pytest.mark.parametrize("fmt", [".pth", ".safetensors", ".bin"])
def test_timm_state_dict_loads_with_a_recipe(timm_sd, tiny_yaml, tmp_path, fmt):
    path = tmp_path / f"timm{fmt}"
    if fmt == ".safetensors":
        save_file(timm_sd, str(path))
    elif fmt == ".bin":  # DDP-style wrapper and prefixes, as other trainers save them
        torch.save({"state_dict": {f"module.{k}": v for k, v in timm_sd.items()}}, path)
    else:
        torch.save(timm_sd, path)
    model, cfg, log = finetune_model(path, tiny_yaml)
    assert cfg.train.init_from == str(path) and cfg.model.head_init == "zero"
    for key, value in timm_sd.items():
        if not key.startswith("head."):
            torch.testing.assert_close(model.state_dict()[key], value, msg=key)
    # A 10-class checkpoint fine-tuned on 4 classes is fine (the head is new), and the log says so.
    assert "new zero-initialised head for 4 classes (the checkpoint's head had 10 classes)" in log


def test_timm_state_dict_without_a_recipe_is_read_from_its_shapes(timm_sd, tiny_data, tmp_path, caplog):
    path = tmp_path / "timm.pth"
    torch.save(timm_sd, path)
    desc = reader.read(path).model
    assert (desc["width"], desc["depth"], desc["mlp_dim"], desc["patch"], desc["res"], desc["pool"],
            desc["num_classes"]) == (32, 2, 64, 4, [16, 16], "token", 10)
    # Heads only split the width: the weights cannot say, so the guess is logged and a recipe's value wins.
    assert desc["guessed"] == ["heads"] and "do not record the number of attention heads" in caplog.text
    model, cfg, _ = finetune_model(path, None, f"data.source={tiny_data}", "model.heads=2")
    assert (cfg.model.heads, cfg.model.width, cfg.model.depth) == (2, 32, 2)
    torch.testing.assert_close(model.state_dict()["blocks.1.attn.qkv.weight"], timm_sd["blocks.1.attn.qkv.weight"])


# -- head, pre-logits, position embeddings ------------------------------------------------------------
def test_head_is_new_zero_with_bias_and_pre_logits_dropped(pre):
    model, cfg, log = finetune_model(pre, None, "model.head_bias=-2.0")
    assert cfg.model.representation_size is None
    assert isinstance(model.pre_logits, torch.nn.Identity)
    assert not any(k.startswith("pre_logits.") for k in model.state_dict())
    assert model.head.weight.shape == (4, 32) and not model.head.weight.any()
    assert torch.all(model.head.bias == -2.0)
    assert "head not loaded: 4 tensors of head/pre_logits dropped" in log
    assert cfg.optim.name == "sgd" and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 0.0
    assert cfg.optim.clip_norm == 1.0 and cfg.schedule.decay == "cosine"


def test_non_square_checkpoint_resamples_from_its_own_grid(pre, tmp_path):
    # A checkpoint trained at 16x8 px (grid 4x2): its 8 positions are not a square, only the config says.
    state = load_file(str(pre / "model.safetensors"))
    state["pos_embed"] = resample_posemb(state["pos_embed"], (4, 2))
    save_file(state, str(tmp_path / "model.safetensors"))
    config = json.loads((pre / "config.json").read_text())
    config["vit_model"]["res"] = [16, 8]
    (tmp_path / "config.json").write_text(json.dumps(config))
    model, cfg, log = finetune_model(tmp_path, None, "model.res=16x16")
    assert "position embeddings resampled: 4x2 -> 4x4 (paper)" in log
    expected = resample_posemb(state["pos_embed"], (4, 4), (4, 2))
    torch.testing.assert_close(model.pos_embed.detach(), expected)


def test_cli_finetune_at_non_square_res_on_the_checkpoints_data(pre, tmp_path):
    out = tmp_path / "ft"
    result = invoke("finetune", "--from", pre, "--res", "24x16", *sets(), "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert "position embeddings resampled: 4x4 -> 6x4 (paper)" in result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["top1"] is not None
    weights = load_file(str(out / "model.safetensors"))
    assert weights["pos_embed"].shape == (1, 1 + 6 * 4, 32)
    assert weights["head.weight"].shape == (4, 32) and "pre_logits.fc.weight" not in weights
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["model"]["res"] == [24, 16] and saved["train"]["init_from"] == str(pre / "model.safetensors")
    assert saved["data"]["source"] == str(reader.read(pre).recipe["data"]["source"])


def test_new_data_keeps_the_checkpoints_pixel_normalisation(pre, tiny_yaml):
    source = reader.read(pre)
    source.recipe["data"]["norm"] = "imagenet"
    cfg = assembly.from_checkpoint(source, tiny_yaml, [], FAST, assembly.FINETUNE)
    assert cfg.data.source == yaml.safe_load(tiny_yaml.read_text())["data"]["source"]
    assert cfg.data.norm == "imagenet"


# -- the engine: new resolution, freezing, layer-wise lr decay ------------------------------------------
def test_engine_finetune_with_freeze_and_layer_decay(pre, tmp_path):
    source = reader.read(pre)
    cfg = assembly.from_checkpoint(source, None, ["model.res=24"], [
        *FAST, "optim.lr=0.1", "optim.layer_decay=0.5", "train.freeze=[patch_embed, blocks.0-0]"], assembly.FINETUNE)
    log, buffer = capture()
    result = jobs.train(cfg, tmp_path / "ft", render=recipe.dump, log=log)
    assert result["steps"] == 3
    assert "position embeddings resampled: 4x4 -> 6x6 (paper)" in buffer.getvalue()
    after, before = load_file(str(tmp_path / "ft" / "model.safetensors")), source.state_dict
    assert after["pos_embed"].shape == (1, 37, 32)
    for key in after:
        if key.startswith(("patch_embed.", "blocks.0.")):
            torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(after["blocks.1.mlp.fc1.weight"], before["blocks.1.mlp.fc1.weight"])
    assert after["head.weight"].any()

    model = build_model(cfg.model, 4)
    optim.freeze(model, cfg.train.freeze)
    optimizer = optim.build_optimizer(model, cfg.optim, 0.1)
    optim.set_lr(optimizer, 0.1)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    # depth 2: head/norm at scale 1, block 1 at 0.5, embeddings at 0.5^3; frozen ones are not optimised.
    assert lr_of[id(named["head.weight"])] == pytest.approx(0.1)
    assert lr_of[id(named["blocks.1.attn.qkv.weight"])] == pytest.approx(0.05)
    assert lr_of[id(named["pos_embed"])] == pytest.approx(0.0125)
    assert id(named["patch_embed.proj.weight"]) not in lr_of and id(named["blocks.0.norm1.weight"]) not in lr_of


# -- the lr sweep: minival, retrain on all of train, test ---------------------------------------------
SWEEP_STEPS = "train.steps=6"  # 6 x 16 = 96: the final run sees one whole epoch of the 96 training images


@pytest.fixture(scope="module")
def sweep(pre, tmp_path_factory) -> tuple[Path, Path, dict, list[Path]]:
    """A two-value sweep: lr 1e-5 barely moves the zero head, lr 0.1 learns the colours. Records which
    training examples each run's loader served, keyed by the size of the split it read, and every weights
    file read (the low-level reads of safetensors and pickles)."""
    from vitcli.weights import serialization

    folder = tmp_path_factory.mktemp("sweep")
    path = folder / "sweep.yaml"
    # 25% of the 96 training images (24) as the minival: less noisy than the 2% default of so few.
    path.write_text(yaml.safe_dump({"data": {"train_split": "train", "eval_split": "test"}, "sweep": {"minival": 0.25},
                                    "optim": {"name": "sgd", "lr": [1e-5, 0.1]}, "run": {"name": "sweep"}}))
    read: list[Path] = []

    def recording(original):
        def read_file(file, *args, **kwargs):
            read.append(Path(file))
            return original(file, *args, **kwargs)
        return read_file

    with pytest.MonkeyPatch.context() as mp:
        served = served_training_indices(mp)
        for name in ("read_safetensors", "load"):
            mp.setattr(serialization, name, recording(getattr(serialization, name)))
        result = invoke("finetune", path, "--from", pre, *sets(SWEEP_STEPS), "--out", folder / "out")
    assert result.exit_code == 0, result.output
    return path, folder / "out", served, read


def test_sweep_follows_the_papers_protocol(sweep, pre):
    _, out, served, _ = sweep
    summary = json.loads((out / "sweep.json").read_text())
    rows = {row["lr"]: row for row in summary["sweep"]}
    # The minival: the last 25% of train, as the recipe's sweep.minival says.
    assert summary["minival_fraction"] == 0.25 and summary["minival_fraction_from"] == "sweep.minival"
    assert summary["train_split"] == "train[:75%]" and summary["minival_split"] == "train[75%:]"
    assert all(row["train_examples"] == 72 and row["minival_images"] == 24 for row in rows.values())
    # Both reach top-1 1.0 on these easy colours (a head of tiny weights still ranks right): the loss decides.
    assert rows[0.1]["minival_top1"] == rows[1e-5]["minival_top1"] == 1.0 and summary["best_lr"] == 0.1
    assert rows[0.1]["minival_loss"] < rows[1e-5]["minival_loss"]
    assert summary["choice"].startswith("lr 0.1 chosen: minival top-1 100.00% tied with lr 1e-05; the lower minival")
    # The final model: lr 0.1 retrained on all 96 training images, so not the minival winner's weights.
    final = summary["final"]
    assert final["lr"] == 0.1 and final["train_split"] == "train" and final["train_examples"] == 96
    winner = (out / "lr-0.1" / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() == (out / "final" / "model.safetensors").read_bytes() != winner
    assert yaml.safe_load((out / "final" / "recipe.yaml").read_text())["data"]["train_split"] == "train"
    # What the loaders served: the two minival runs read a 72-image split, the final run all 96 images.
    assert sorted(served) == [72, 96] and len(served[72]) == 2 and served[96] == [set(range(96))]
    # The test score is the final model's on the whole test split (32 images), as `vit eval` measures it.
    assert final["test_split"] == "test" and final["test_images"] == 32
    check = invoke("eval", "--from", out, "--split", "test", "--json")
    assert check.exit_code == 0, check.output
    measured = json.loads(check.stdout.strip().splitlines()[-1])
    assert measured["images"] == 32 and measured["top1"] == pytest.approx(final["test_top1"])
    assert reader.read(out).model["res"] == [16, 16]  # the sweep directory reads as a run directory


def test_a_sweep_reads_its_checkpoint_once(sweep, pre):
    # Three runs (two learning rates and the final one) start from the checkpoint the command read.
    *_, read = sweep
    from_checkpoint = [file for file in read if file.parent == pre]
    assert from_checkpoint == [pre / "model.safetensors"], read


def test_sweep_table_shows_minival_and_the_final_test(sweep):
    from vitcli.cli.tables import sweep_table

    _, out, _, _ = sweep
    buffer = io.StringIO()
    Console(file=buffer, width=300).print(sweep_table(json.loads((out / "sweep.json").read_text())))
    text = " ".join(buffer.getvalue().split())  # the title and caption wrap at the table's width
    assert "chosen on train[75%:], 25% of train" in text and "test top-1" in text
    assert "retrained on all of train" in text and "train (96)" in text and "final" in text
    assert "the lower minival loss breaks the tie" in text and "1e-05" in text


def test_no_retrain_keeps_the_minival_winner_and_says_so(sweep, pre, tmp_path, monkeypatch):
    import shutil

    path, out, _, _ = sweep
    cheap = tmp_path / "cheap"
    for run in ("lr-1e-05", "lr-0.1"):  # the finished minival runs are shared, not trained again
        shutil.copytree(out / run, cheap / run)
    monkeypatch.setattr(jobs.lr_sweep, "train", lambda *a, **k: pytest.fail("a finished minival run was trained again"))
    result = invoke("finetune", path, "--from", pre, *sets(SWEEP_STEPS), "--out", cheap, "--no-retrain")
    assert result.exit_code == 0, result.output
    assert "not the paper's protocol" in result.output
    summary = json.loads((cheap / "sweep.json").read_text())
    assert summary["retrained"] is False and summary["final"]["train_examples"] == 72
    assert summary["final"]["train_split"] == "train[:75%]"
    assert summary["final"]["test_images"] == 32 and 0.0 <= summary["final"]["test_top1"] <= 1.0
    assert (cheap / "model.safetensors").read_bytes() == (cheap / "lr-0.1" / "model.safetensors").read_bytes()
    assert not (cheap / "final").exists()


def test_resumed_sweep_does_not_train_finished_runs_again(sweep, pre, monkeypatch):
    path, out, _, _ = sweep

    def no_training(*args, **kwargs):
        raise AssertionError("a finished sweep run was trained again")

    monkeypatch.setattr(jobs.lr_sweep, "train", no_training)
    result = invoke("finetune", path, "--from", pre, *sets(SWEEP_STEPS), "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert result.output.count("finished earlier, not trained again") == 3  # two lrs and the final run
    monkeypatch.undo()
    changed = invoke("finetune", path, "--from", pre, *sets(SWEEP_STEPS, "optim.momentum=0.5"), "--out", out)
    assert changed.exit_code == 2 and "optim.momentum" in changed.output


def test_sweep_ties_go_to_the_lower_minival_loss_and_say_so():
    from vitcli.engine.train.sweep import choose

    rows = [{"lr": 0.01, "minival_top1": 0.9, "minival_loss": 0.4}, {"lr": 0.03, "minival_top1": 0.9,
                                                                      "minival_loss": 0.3},
            {"lr": 0.1, "minival_top1": 0.5, "minival_loss": 0.1}]
    best, why = choose(rows)
    assert best["lr"] == 0.03
    assert why == ("lr 0.03 chosen: minival top-1 90.00% tied with lr 0.01; the lower minival loss breaks the tie "
                   "(0.3000 vs 0.4000)")
    rows[1]["minival_loss"] = 0.4
    best, why = choose(rows)
    assert best["lr"] == 0.01 and "loss tied with lr 0.03; the first listed wins" in why


@pytest.mark.parametrize("source, fraction", [("uoft-cs/cifar10", 0.02), ("/data/CIFAR-100", 0.02),
                                              ("timm/oxford-iiit-pet", 0.10), ("nelorth/oxford-flowers", 0.10),
                                              ("ILSVRC/imagenet-1k", 0.01), ("imagefolder:/x/my-birds", 0.02)])
def test_minival_fraction_is_the_papers_per_data_set(pre, source, fraction):
    from vitcli.engine.train.sweep import minival_splits

    # (a new source's splits are 'auto' until the engine opens it; these sources are only names here)
    items = [*FAST, f"data.source={source}", "data.train_split=train", "data.eval_split=test"]
    cfg = assembly.from_checkpoint(reader.read(pre), None, [], items, assembly.FINETUNE)
    train, minival, got, _ = minival_splits(cfg)
    keep = f"{round(100 * (1 - fraction))}%"
    assert (train, minival, got) == (f"train[:{keep}]", f"train[{keep}:]", fraction)


def test_minival_is_carved_from_a_whole_train_split_never_the_test_split(pre):
    from vitcli.engine.train.sweep import minival_splits

    def cfg(*items):
        return assembly.from_checkpoint(reader.read(pre), None, [], [*FAST, *items], assembly.FINETUNE)

    assert minival_splits(cfg())[:2] == ("train[:98%]", "train[98%:]")  # the tiny data set: not the paper's
    assert minival_splits(cfg("data.eval_split=validation"))[:2] == ("train[:98%]", "train[98%:]")
    with pytest.raises(RecipeError, match="carves its minival from whole splits"):
        minival_splits(cfg("data.train_split=train[:99%]"))
    with pytest.raises(RecipeError, match="carves its minival from whole splits"):
        minival_splits(cfg("data.train_split=train+"))
    with pytest.raises(RecipeError, match="is part of data.train_split 'train\\+validation'"):
        minival_splits(cfg("data.train_split=train+validation", "data.eval_split=validation"))
    with pytest.raises(RecipeError, match="is part of data.train_split 'train'"):
        minival_splits(cfg("data.eval_split=train[98%:]"))
    with pytest.raises(RecipeError, match="sweep.minival: must be a whole percent"):
        cfg("sweep.minival=0.025")


def served_training_indices(monkeypatch) -> dict[int, list[set[int]]]:
    """Which examples each training loader served, keyed by the size of the split it read (one set per run)."""
    from vitcli.data import sampler

    served: dict[int, list[set[int]]] = {}
    original = sampler.Batches.__iter__

    def counting(self):
        if self.sampler.shuffle:  # training loaders shuffle; evaluation ones do not
            runs = served.setdefault(self.sampler.size, [])
            if self.sampler.epoch == 0 and self.sampler.start == 0:
                runs.append(set())
            for seed, chunk in original(self):
                runs[-1].update(chunk)
                yield seed, chunk
        else:
            yield from original(self)

    monkeypatch.setattr(sampler.Batches, "__iter__", counting)
    return served


def test_sweep_on_train_validation_test_holds_out_of_both_and_retrains_on_both(pre, tmp_path, monkeypatch):
    """Flowers-102's layout: the same command as on a one-split layout; the minival is 10% of
    train+validation, and the final model is trained on every one of its images."""
    import datasets
    from conftest import CLASSES, make_images, write_parquet_dataset
    from PIL import Image

    data = write_parquet_dataset(tmp_path / "flowers102", n_train=60, n_test=32)
    images, labels = make_images(40, seed=2)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    datasets.Dataset.from_dict({"img": [Image.fromarray(a) for a in images], "label": labels},
                               features=features).to_parquet(str(data / "validation-00000-of-00001.parquet"))
    served = served_training_indices(monkeypatch)
    result = invoke("finetune", "--from", pre, "--data", data, *sets("train.batch_size=10", "train.steps=10", "optim.name=sgd"),
                    "--set", "optim.lr=[1e-5,0.1]", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert summary["minival_fraction"] == 0.10 and "Flowers-102" in summary["minival_fraction_from"]
    assert summary["minival_split"] == "train[90%:]+validation[90%:]"
    assert summary["train_split"] == "train[:90%]+validation[:90%]"
    assert all(row["minival_images"] == 10 and row["train_examples"] == 90 for row in summary["sweep"])
    final = summary["final"]
    assert final["train_split"] == "train+validation" and final["train_examples"] == 100
    assert final["test_split"] == "test" and final["test_images"] == 32
    # Every one of the 100 train+validation images went into the final model (10 steps of 10: one epoch).
    assert sorted(served) == [90, 100] and len(served[90]) == 2 and served[100] == [set(range(100))]


# -- refusals -----------------------------------------------------------------------------------------
class _Evil:
    """Unpickling this runs `Path.touch(marker)`: the shape of a malicious checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("case, says", [("truncated", "corrupt or truncated checkpoint"),
                                        ("random", "not a PyTorch checkpoint"),
                                        ("random_safetensors", "corrupt or truncated safetensors"),
                                        ("code", "refused: the file holds Python objects"),
                                        ("not_tensors", "not a state dict")])
def test_bad_checkpoints_are_refused_in_one_line(pre, tmp_path, case, says):
    marker = tmp_path / "pwned"
    good = next((pre / "checkpoints").glob("step-*.pt")).read_bytes()
    path = tmp_path / ("bad.safetensors" if case == "random_safetensors" else "bad.pt")
    if case == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif case in ("random", "random_safetensors"):
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                       dtype=torch.uint8).numpy().tobytes())
    elif case == "code":
        torch.save({"pos_embed": _Evil(marker)}, path)
        torch.load(path, weights_only=False)  # the payload is live: an unsafe load runs it
        assert marker.exists()
        marker.unlink()
    else:
        torch.save({"weights": [1, 2, 3]}, path)
    result = invoke("finetune", "--from", path)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and str(path) in lines[0], result.output
    assert says in lines[0]
    assert not marker.exists()  # the pickle's code never ran


def test_wrong_variant_is_one_line_naming_keys_and_shapes(timm_sd, tiny_yaml, tmp_path):
    path = tmp_path / "timm.pth"
    torch.save(timm_sd, path)
    result = invoke("finetune", tiny_yaml, "--from", path, *sets("model.width=64", "model.mlp_dim=128"))
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "cls_token (1, 1, 32) vs (1, 1, 64)" in error[0], result.output


def test_recipe_clashing_with_the_checkpoints_variant_is_refused(pre, tiny_data, tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tiny_data, model={"width": 64, "mlp_dim": 128})))
    result = invoke("finetune", path, "--from", pre)
    assert result.exit_code == 2
    assert "width (recipe 64, checkpoint 32); mlp_dim (recipe 128, checkpoint 64)" in result.output


def test_res_not_divisible_by_the_patch_names_the_nearest_sizes(pre):
    result = invoke("finetune", "--from", pre, "--res", "26")
    assert result.exit_code == 2
    assert "26 is not divisible by the patch size 4" in result.output and "24 or 28" in result.output
    assert "Traceback" not in result.output


def test_sweep_refuses_a_single_run_directory(pre, tmp_path):
    from vitcli.engine.jobs import run_sweep

    cfg = assembly.from_checkpoint(reader.read(pre), None, [], [*FAST, "optim.lr=[0.1,0.2]"], assembly.FINETUNE)
    with pytest.raises(RunError, match="holds a single run"):
        run_sweep(cfg, pre, resume=False, allowed=frozenset(), hint="")


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
from conftest import tiny_recipe
from rich.console import Console
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from vitcli import assembly, recipe
from vitcli.cli import app
from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.train import optim
from vitcli.engine.train.model_setup import init_model
from vitcli.errors import RunError
from vitcli.models import build_model, resample_posemb
from vitcli.weights import reader

TINY = {"width": 32, "depth": 2, "heads": 2, "mlp_dim": 64, "patch": 4}
# Small enough for the 96 generated images; a fine-tune recipe overrides only these.
FAST = ["train.batch_size=16", "train.steps=3", "schedule.warmup_steps=1", "train.precision=fp32",
        "train.log_every=1", "train.checkpoint_every=0", "data.workers=0"]
runner = CliRunner()


def invoke(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


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
    jobs.train(cfg, out, recipe.to_yaml(cfg), log=Reporter(enabled=False))
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
    cfg = assembly.from_checkpoint(source, recipe_path, [], [*FAST, *extra], finetune=True)
    model = build_model(cfg.model, 4)
    log, buffer = capture()
    init_model(model, cfg, 4, log)
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
    cfg = assembly.from_checkpoint(source, tiny_yaml, [], FAST, finetune=True)
    assert cfg.data.source == yaml.safe_load(tiny_yaml.read_text())["data"]["source"]
    assert cfg.data.norm == "imagenet"


# -- the engine: new resolution, freezing, layer-wise lr decay ------------------------------------------
def test_engine_finetune_with_freeze_and_layer_decay(pre, tmp_path):
    source = reader.read(pre)
    cfg = assembly.from_checkpoint(source, None, ["model.res=24"], [
        *FAST, "optim.lr=0.1", "optim.layer_decay=0.5", "train.freeze=[patch_embed, blocks.0-0]"], finetune=True)
    log, buffer = capture()
    result = jobs.train(cfg, tmp_path / "ft", recipe.to_yaml(cfg), log=log)
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


# -- the lr sweep -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sweep(pre, tmp_path_factory) -> tuple[Path, Path]:
    """A two-value sweep: lr 1e-5 barely moves the zero head, lr 0.1 learns the colours."""
    folder = tmp_path_factory.mktemp("sweep")
    path = folder / "sweep.yaml"
    # An explicit held-out slice of train (24 images) makes the minival less noisy than 2% of 96.
    path.write_text(yaml.safe_dump({"data": {"train_split": "train[:75%]", "eval_split": "train[75%:]"},
                                    "optim": {"name": "sgd", "lr": [1e-5, 0.1]}, "run": {"name": "sweep"}}))
    result = invoke("finetune", path, "--from", pre, *sets("train.steps=4"), "--out", folder / "out")
    assert result.exit_code == 0, result.output
    return path, folder / "out"


def test_sweep_picks_the_best_minival_lr_and_keeps_its_weights(sweep):
    _, out = sweep
    summary = json.loads((out / "sweep.json").read_text())
    rows = {row["lr"]: row for row in summary["sweep"]}
    assert summary["minival_split"] == "train[75%:]" and summary["train_split"] == "train[:75%]"
    assert rows[0.1]["minival_top1"] > rows[1e-5]["minival_top1"]
    assert summary["best_lr"] == 0.1
    assert (out / "model.safetensors").read_bytes() == (out / "lr-0.1" / "model.safetensors").read_bytes()
    assert reader.read(out).model["res"] == [16, 16]  # the sweep directory reads as a run directory


def test_resumed_sweep_does_not_train_finished_values_again(sweep, pre, monkeypatch):
    path, out = sweep

    def no_training(*args, **kwargs):
        raise AssertionError("a finished sweep value was trained again")

    monkeypatch.setattr(jobs, "train", no_training)
    result = invoke("finetune", path, "--from", pre, *sets("train.steps=4"), "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert result.output.count("finished earlier, not trained again") == 2
    monkeypatch.undo()
    changed = invoke("finetune", path, "--from", pre, *sets("train.steps=4", "optim.momentum=0.5"), "--out", out)
    assert changed.exit_code == 2 and "optim.momentum" in changed.output


def test_sweep_winner_is_reported_on_the_recipes_test_split(sweep, pre):
    from vitcli.engine.train.sweep import _evaluate_winner, sweep_table

    _, out = sweep
    cfg = assembly.from_checkpoint(reader.read(pre), None, [], FAST, finetune=True)
    result = _evaluate_winner(cfg, 0.1, out, "train[75%:]")
    assert result["eval_split"] == "test" and 0.0 <= result["eval_top1"] <= 1.0
    summary = {**json.loads((out / "sweep.json").read_text()), **result}
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(sweep_table(summary))
    assert "best" in buffer.getvalue() and "1e-05" in buffer.getvalue() and "test: top-1" in buffer.getvalue()


def test_minival_is_carved_from_train_never_the_test_split(pre):
    from vitcli.engine.train.sweep import minival_splits

    cfg = assembly.from_checkpoint(reader.read(pre), None, [], FAST, finetune=True)
    assert minival_splits(cfg) == ("train[:98%]", "train[98%:]")
    imagenet = assembly.from_checkpoint(reader.read(pre), None, [], [
        *FAST, "data.train_split=train[:99%]", "data.eval_split=validation"], finetune=True)
    assert minival_splits(imagenet) == ("train[:98%]", "train[98%:]")


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
    from vitcli.engine.train.sweep import run_sweep

    cfg = assembly.from_checkpoint(reader.read(pre), None, [], [*FAST, "optim.lr=[0.1,0.2]"], finetune=True)
    with pytest.raises(RunError, match="holds a single run"):
        run_sweep(cfg, pre, resume=False, allowed=frozenset(), hint="")

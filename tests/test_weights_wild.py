"""Checkpoints as people publish them: torchvision ViTs, Lightning- and DINO-style wrapped dicts, prefixes.

Each file is written by its own framework (torchvision's `VisionTransformer`, `torch.save` of the dicts
Lightning and DINO write); vit's logits must equal the source model's on the same batch.
"""

from __future__ import annotations

import pytest
import torch
from foreign import randomise
from test_weights_formats import max_diff, one_line_error

from vitcli.recipe import assembly
from vitcli.weights import reader
from vitcli.weights.restore import restore

torchvision = pytest.importorskip("torchvision")

BATCH = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(2))


def forward(source: reader.Pretrained, *sets: str, x: torch.Tensor = BATCH) -> torch.Tensor:
    cfg = assembly.from_checkpoint(source, None, ["data.source=builtin:digits", "eval.weights=raw"], list(sets),
                                   assembly.EVALUATE)
    model, _ = restore(source, cfg.model, weights=cfg.eval.weights)
    with torch.no_grad():
        return model.eval()(x)


def tv_vit(representation_size: int | None = None) -> torch.nn.Module:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=28, patch_size=2, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128,
                              num_classes=10, representation_size=representation_size)
    return randomise(model)


@pytest.mark.parametrize("rep", [None, 32])
def test_torchvision_vit_logits_equal(tmp_path, rep):
    src = tv_vit(rep)
    torch.save(src.state_dict(), tmp_path / "weights.pth")
    source = reader.read(tmp_path / "weights.pth")
    desc = source.model
    assert (desc["width"], desc["depth"], desc["patch"], desc["res"], desc["representation_size"]) == (
        64, 2, 2, [28, 28], rep)
    with torch.no_grad():
        assert max_diff(forward(source, "model.heads=2"), src(BATCH)) <= 1e-4


def test_a_foreign_checkpoint_is_evaluated_in_fp32_unless_asked(tmp_path, tiny_run):
    torch.save(tv_vit().state_dict(), tmp_path / "weights.pth")
    foreign = reader.read(tmp_path / "weights.pth")

    def precision(source, start, *sets) -> str:
        cfg = assembly.from_checkpoint(source, None, [], ["model.heads=2", "data.source=x", *sets], start)
        return cfg.train.precision

    assert precision(foreign, assembly.EVALUATE) == "fp32"  # as torchvision measured it
    assert precision(foreign, assembly.PREDICT) == "fp32"
    assert precision(foreign, assembly.EVALUATE, "train.precision=bf16") == "bf16"  # --set wins
    assert precision(foreign, assembly.FINETUNE) == "bf16"  # training keeps the recipe's default
    own = reader.read(tiny_run / "model.safetensors")  # a vit run keeps its recipe's precision (here fp32)
    assert own.recipe["train"]["precision"] == "fp32"
    assert precision(own, assembly.EVALUATE, "train.precision=bf16") == "bf16"
    own.recipe["train"]["precision"] = "bf16"
    assert precision(own, assembly.EVALUATE) == "bf16"


def test_lightning_checkpoint_with_model_prefix(tmp_path, caplog):
    src = tv_vit()
    state = {"model." + k: v for k, v in src.state_dict().items()}
    state["criterion.weight"] = torch.ones(10)  # a loss module's buffer: left behind, and said so
    torch.save({"state_dict": state, "epoch": 3, "global_step": 120, "optimizer_states": [{"lr": 0.1}],
                "pytorch-lightning_version": "2.4.0"}, tmp_path / "last.ckpt")
    with caplog.at_level("WARNING", logger="vitcli.weights"):
        source = reader.read(tmp_path / "last.ckpt")
    assert "read the weights under 'state_dict', the prefix 'model.', torchvision's names mapped" in caplog.text
    assert "left out 1 tensors outside it (criterion.weight)" in caplog.text
    with torch.no_grad():
        assert max_diff(forward(source, "model.heads=2"), src(BATCH)) <= 1e-4


def test_dino_teacher_backbone_of_a_timm_vit(tmp_path, caplog):
    import timm

    src = randomise(timm.create_model("vit_tiny_patch16_224", img_size=28, patch_size=2, embed_dim=64, depth=2,
                                      num_heads=2, num_classes=0))
    backbone = {"backbone." + k: v for k, v in src.state_dict().items()}
    projector = {"head.mlp.0.weight": torch.zeros(8, 64), "head.last_layer.weight": torch.zeros(16, 8)}
    student = {"module." + k: v + 1 for k, v in backbone.items()}
    torch.save({"teacher": {**backbone, **projector}, "student": student, "epoch": 100}, tmp_path / "dino.pth")
    with caplog.at_level("WARNING", logger="vitcli.weights"):
        source = reader.read(tmp_path / "dino.pth")
    assert "under 'teacher', the prefix 'backbone.'; left out 2 tensors" in caplog.text
    with torch.no_grad():
        assert max_diff(forward(source, "model.heads=2"), src(BATCH)) <= 1e-4


def test_ddp_and_compile_prefixes_on_a_plain_state_dict(tmp_path):
    src = tv_vit()
    torch.save({"module._orig_mod." + k: v for k, v in src.state_dict().items()}, tmp_path / "w.pt")
    with torch.no_grad():
        assert max_diff(forward(reader.read(tmp_path / "w.pt"), "model.heads=2"), src(BATCH)) <= 1e-4


def test_a_wrapper_holding_no_tensors_is_one_line(tmp_path):
    torch.save({"state_dict": {}, "epoch": 3}, tmp_path / "empty.ckpt")
    line = one_line_error("eval", "--from", tmp_path / "empty.ckpt")
    assert "not a state dict: no mapping of parameter names to tensors" in line and "'epoch'" in line


def test_an_unknown_key_layout_lists_the_first_keys(tmp_path):
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, tmp_path / "cnn.pth")
    line = one_line_error("eval", "--from", tmp_path / "cnn.pth")
    assert "unknown key layout" in line and "first keys: conv1.weight, fc.weight" in line


def tv_grey_vit() -> torch.nn.Module:
    """A 1-channel torchvision ViT as users make one: conv_proj replaced by a 1-input-channel conv."""
    model = tv_vit(32)
    model.conv_proj = torch.nn.Conv2d(1, 64, kernel_size=2, stride=2)
    return randomise(model, seed=3)


def test_torchvision_one_channel_vit_logits_equal(tmp_path):
    src = tv_grey_vit()
    torch.save(src.state_dict(), tmp_path / "grey.pth")
    source = reader.read(tmp_path / "grey.pth")
    assert source.model["in_chans"] == 1 and source.model["representation_size"] == 32
    grey = BATCH[:, :1]
    with torch.no_grad():
        assert max_diff(forward(source, "model.heads=2", x=grey), src(grey)) <= 1e-4


def _grey_folder(root, per_class: int = 4) -> list[tuple]:
    """test/<digit>/<i>.png: 28x28 grey noise images; returns (path, label) in the order vit reads them."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    items = []
    for label in range(10):
        folder = root / "test" / str(label)
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), mode="L").save(folder / f"{i}.png")
            items.append((folder / f"{i}.png", label))
    return items


def _fit_head(model: torch.nn.Module, batch: torch.Tensor, labels: torch.Tensor) -> None:
    """A head fitted by least squares on half the images (a trained model in a second, not a zero head whose
    every output ties): the other half are predicted as the features fall, right or wrong."""
    with torch.no_grad():
        head, model.heads.head = model.heads.head, torch.nn.Identity()
        features = torch.cat([model(batch[::2]), torch.ones(len(batch[::2]), 1)], 1)
        model.heads.head = head
        targets = torch.nn.functional.one_hot(labels[::2], 10).float() * 10
        solution = torch.linalg.lstsq(features, targets).solution
        head.weight.copy_(solution[:-1].T)
        head.bias.copy_(solution[-1])


def _eval_json(*args) -> dict:
    import json

    from typer.testing import CliRunner

    from vitcli.cli import app

    result = CliRunner().invoke(app, ["eval", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


def test_vit_eval_reproduces_the_torchvision_models_own_accuracy(tmp_path):
    """`vit eval --from weights.pth --data FOLDER --set model.heads=2 --set data.mean=[..] --set data.std=[..]`
    predicts image for image what torchvision's model does with its own pipeline (ToTensor, Normalize)."""
    from PIL import Image
    from torchvision.models import VisionTransformer
    from torchvision.transforms import v2

    torch.manual_seed(4)
    src = VisionTransformer(image_size=28, patch_size=2, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128,
                            num_classes=10, representation_size=32)
    src.conv_proj = torch.nn.Conv2d(1, 64, kernel_size=2, stride=2)
    src.eval()
    items = _grey_folder(tmp_path / "digits")
    own = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.1307], [0.3081])])
    batch = torch.stack([own(Image.open(path)) for path, _ in items])
    _fit_head(src, batch, torch.tensor([label for _, label in items]))
    torch.save(src.state_dict(), tmp_path / "grey.pth")
    with torch.no_grad():
        predicted = src(batch).argmax(1).tolist()
    confusion = [[0] * 10 for _ in range(10)]
    for (_, label), guess in zip(items, predicted):
        confusion[label][guess] += 1
    right = sum(confusion[i][i] for i in range(10))
    assert len(items) // 2 <= right < len(items)  # half fitted; the rest as they fall
    # The command as a user types it: a foreign checkpoint is evaluated in fp32, as torchvision ran it
    args = ["--from", tmp_path / "grey.pth", "--data", f"imagefolder:{tmp_path / 'digits'}", "--split", "test",
            "--set", "model.heads=2"]
    report = _eval_json(*args, "--set", "data.mean=[0.1307]", "--set", "data.std=[0.3081]")
    assert report["confusion_matrix"]["counts"] == confusion  # image for image, not only the total
    assert report["top1"] == right / len(items)
    # Without the model's own normalisation (data.norm's [-1, 1]) the same images are predicted otherwise.
    assert _eval_json(*args)["confusion_matrix"]["counts"] != confusion


# -- every ViT timm's VisionTransformer builds -------------------------------------------------------------
TIMM_TINY = {"img_size": 28, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0}
SMALL_BATCH = BATCH[:2]


@pytest.mark.parametrize(("arch", "kwargs", "expect"), [
    ("vit_tiny_patch16_224", {"global_pool": "avg", "class_token": False, "fc_norm": True}, {"fc_norm": True}),
    ("vit_tiny_patch16_224", {"init_values": 1e-5}, {"init_values": 1e-5}),
    ("vit_tiny_patch16_224", {"reg_tokens": 4}, {"reg_tokens": 4}),
    ("vit_tiny_patch16_224", {"reg_tokens": 2, "no_embed_class": True, "init_values": 0.1},
     {"reg_tokens": 2, "no_embed_class": True}),
    ("deit_tiny_distilled_patch16_224", {}, {"distilled": True}),
], ids=["mae-gap-fc-norm", "layer-scale", "registers", "deit3-registers-no-embed-class", "deit-distilled"])
def test_timm_vits_load_with_equal_logits(tmp_path, arch, kwargs, expect):
    import timm
    from safetensors.torch import save_file

    src = randomise(timm.create_model(arch, num_classes=5, **TIMM_TINY, **kwargs))
    save_file(src.state_dict(), str(tmp_path / "model.safetensors"))
    source = reader.read(tmp_path / "model.safetensors")
    assert {k: source.model.get(k) for k in expect} == expect
    with torch.no_grad():
        assert max_diff(forward(source, "model.heads=2", x=SMALL_BATCH), src(SMALL_BATCH)) <= 1e-4


def test_a_distilled_deit_finetunes_with_new_heads_and_resampled_positions(tmp_path):
    import timm
    from safetensors.torch import save_file

    from vitcli.models import build_model
    from vitcli.weights.fit import load_weights

    src = randomise(timm.create_model("deit_tiny_distilled_patch16_224", num_classes=5, **TIMM_TINY))
    save_file(src.state_dict(), str(tmp_path / "deit.safetensors"))
    source = reader.read(tmp_path / "deit.safetensors")
    cfg = assembly.from_checkpoint(source, None, ["data.source=builtin:digits"], ["model.res=32", "model.heads=2"],
                                   assembly.FINETUNE)
    assert cfg.model.distilled and cfg.model.head_init == "zero"
    model = build_model(cfg.model, 3)
    notes = load_weights(model, source.state_dict, drop_head=True, log=lambda _: None).notes
    assert any("7x7 -> 8x8" in n for n in notes) and any("head not loaded: 4 tensors" in n for n in notes)
    assert not model.head_dist.weight.detach().any()  # both heads start at zero
    assert torch.equal(model.dist_token, src.dist_token)


@pytest.mark.parametrize("kwargs", [{"reg_tokens": 2, "init_values": 0.1}, {"distilled": True}],
                         ids=["registers-layer-scale", "distilled"])
def test_timm_parts_export_to_timm_and_load_there(tmp_path, kwargs):
    import timm

    from vitcli.models import build_model, describe
    from vitcli.recipe.config import ModelCfg
    from vitcli.weights.convert import export

    cfg = ModelCfg(name="Ti/4", res=(16, 16), width=32, depth=2, heads=2, mlp_dim=64, **kwargs)
    model = randomise(build_model(cfg, 3))
    source = reader.Pretrained(tmp_path / "x", dict(model.state_dict()), model=describe(cfg, 3),
                               recipe={"data": {"norm": "paper"}})
    export(source, "timm", tmp_path / "timm")
    loaded = timm.create_model(f"local-dir:{tmp_path / 'timm'}", pretrained=True).eval()
    x = SMALL_BATCH[..., :16, :16]
    with torch.no_grad():
        assert max_diff(loaded(x), model(x)) <= 1e-5
    with pytest.raises(Exception, match="cannot be carried"):
        export(source, "hf", tmp_path / "hf")


@pytest.mark.parametrize("rep", [None, 24])
def test_export_to_torchvision_loads_there_with_equal_logits(tmp_path, rep):
    import json

    from torchvision.models import VisionTransformer

    from vitcli.models import build_model, describe
    from vitcli.recipe.config import ModelCfg
    from vitcli.weights.convert import export

    cfg = ModelCfg(name="Ti/4", res=(16, 16), width=32, depth=2, heads=2, mlp_dim=64, representation_size=rep)
    model = randomise(build_model(cfg, 3))
    source = reader.Pretrained(tmp_path / "x", dict(model.state_dict()), model=describe(cfg, 3),
                               recipe={"data": {"norm": "imagenet"}})
    export(source, "torchvision", tmp_path / "tv")
    config = json.loads((tmp_path / "tv" / "config.json").read_text())
    assert config["mean"] == [0.485, 0.456, 0.406]
    tv = VisionTransformer(**config["torchvision_VisionTransformer"])
    tv.load_state_dict(torch.load(tmp_path / "tv" / "model.pth", weights_only=True))  # strict: every key
    x = SMALL_BATCH[..., :16, :16]
    with torch.no_grad():
        assert max_diff(tv.eval()(x), model(x)) <= 1e-5
        assert max_diff(forward(reader.read(tmp_path / "tv" / "model.pth"), "model.heads=2", x=x), model(x)) <= 1e-5


def test_a_one_channel_npz_is_read_with_its_channels(tmp_path):
    from foreign import write_npz

    from vitcli.models import build_model
    from vitcli.recipe.config import ModelCfg

    src = randomise(build_model(ModelCfg(name="Ti/4", res=(16, 16), width=32, depth=2, heads=2, mlp_dim=64,
                                         in_chans=1), 5))
    source = reader.read(write_npz(src, tmp_path / "grey.npz"))
    assert source.model["in_chans"] == 1
    x = SMALL_BATCH[:, :1, :16, :16]
    with torch.no_grad():
        assert max_diff(forward(source, x=x), src(x)) <= 1e-4

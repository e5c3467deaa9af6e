"""Checkpoints as people publish them: torchvision ViTs, Lightning- and DINO-style wrapped dicts, prefixes.

Each file is written by its own framework (torchvision's `VisionTransformer`, `torch.save` of the dicts
Lightning and DINO write); vit's logits must equal the source model's on the same batch.
"""

from __future__ import annotations

import pytest
import torch
from foreign import randomise
from test_weights_formats import max_diff, one_line_error

from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter
from vitcli.recipe import assembly
from vitcli.weights import reader

torchvision = pytest.importorskip("torchvision")

BATCH = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(2))


def forward(source: reader.Pretrained, *sets: str, x: torch.Tensor = BATCH) -> torch.Tensor:
    cfg = assembly.from_checkpoint(source, None, ["data.source=builtin:digits", "eval.weights=raw"], list(sets),
                                   assembly.EVALUATE)
    model, _ = jobs.model_from(cfg, source, Reporter(enabled=False), need_head=False)
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

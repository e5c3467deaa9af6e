"""The training engine on a tiny model and generated data: learning, accumulation, resume, run directory."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from conftest import tiny_recipe
from safetensors.torch import load_file

from vitcli import recipe
from vitcli.engine import jobs
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.runtime.signals import Interrupted, StopRequest
from vitcli.engine.train.trainer import Trainer
from vitcli.errors import RunError
from vitcli.models import build_model

QUIET = Reporter(enabled=False)


def cfg_of(data: dict, *sets: str):
    return recipe.from_data(data, "test", list(sets))


def train(cfg, out, **kw):
    return jobs.train(cfg, out, render=recipe.dump, log=QUIET, **kw)


def weights(out) -> dict[str, torch.Tensor]:
    return load_file(str(out / "model.safetensors"))


def assert_same(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0.0, msg=key)


def test_loss_falls_and_run_directory_is_complete(tiny_data, tmp_path):
    cfg = cfg_of(tiny_recipe(tiny_data), "train.steps=30", "train.checkpoint_every=10")
    out = tmp_path / "run"
    result = train(cfg, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] * 0.7
    assert result["top1"] > 0.5  # four colour classes: chance is 0.25
    for name in ("recipe.yaml", "recipe.json", "metrics.jsonl", "model.safetensors", "config.json",
                 "results.json", "checkpoints/latest"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pt")) == ["step-00000020.pt", "step-00000030.pt"]
    assert recipe.load(out / "recipe.yaml") == cfg
    assert {"step", "epoch", "loss", "lr", "img_s"} <= rows[0].keys()
    assert any("eval/top1" in r for r in rows)


def test_model_safetensors_loads_into_timm(tiny_data, tmp_path):
    import timm

    out = tmp_path / "run"
    train(cfg_of(tiny_recipe(tiny_data), "train.steps=2"), out)
    config = json.loads((out / "config.json").read_text())
    model = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
    model.load_state_dict(weights(out))
    ours = build_model(recipe.from_data(tiny_recipe(tiny_data), "t").model, config["num_classes"])
    ours.load_state_dict(weights(out))
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model.eval()(x), ours.eval()(x))


def test_gradient_accumulation_matches_one_big_batch(tiny_data, tmp_path):
    # SGD: Adam's first step is lr * sign(g), which turns rounding noise in zero-gradient parameters
    # (the attention key bias) into full-size differences.
    base = tiny_recipe(tiny_data, train={"batch_size": 32, "steps": 1, "seed": 3}, optim={"name": "sgd", "lr": 0.1},
                       schedule={"warmup_steps": 0})
    train(cfg_of(base, "train.micro_batch=32"), tmp_path / "a")
    train(cfg_of(base, "train.micro_batch=8"), tmp_path / "b")
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"), atol=1e-5)


class StopAt(StopRequest):
    """Pretend a SIGTERM arrives right after optimiser step `at`."""

    def __init__(self, trainer_ref: list, at: int):
        super().__init__("resume")
        self.ref, self.at = trainer_ref, at

    @property
    def requested(self) -> bool:
        if self.ref and self.ref[0].pos.step >= self.at:
            self.signum = signal.SIGTERM
            return True
        return False


def run_trainer(cfg, out, resume=False, stop_at=None):
    from vitcli.recipe import schema
    from vitcli.engine.persistence import rundir

    rt = Runtime.create("cpu", cfg.train.precision, cfg.train.seed)
    data = schema.to_dict(cfg)
    rundir.prepare(out, recipe.dump(data), data, resume=resume, allowed=set())
    rt.seed_everything()
    trainer = Trainer(cfg, rt, out, QUIET, resume=resume, recipe_data=data)
    ref = [trainer]
    stop = StopAt(ref, stop_at) if stop_at else StopRequest("")
    trainer.run(stop)
    return trainer


@pytest.mark.parametrize("stop_at", [3, 7])
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tiny_data, tmp_path, stop_at):
    # 96 training images / batch 16 = 6 steps per epoch: step 7 resumes mid-epoch in the second epoch.
    data = tiny_recipe(tiny_data, train={"steps": 10, "seed": 1}, model={"dropout": 0.1},
                       data={"train_crop": "inception", "flip": True, "min_area": 0.5})
    cfg = cfg_of(data, "train.ema=0.9")
    full = run_trainer(cfg, tmp_path / "full")
    with pytest.raises(Interrupted):
        run_trainer(cfg, tmp_path / "cut", stop_at=stop_at)
    resumed = run_trainer(cfg, tmp_path / "cut", resume=True)
    assert_same(full.setup.raw_state_dict(), resumed.setup.raw_state_dict())
    assert_same(full.setup.ema_state_dict(), resumed.setup.ema_state_dict())
    lines = lambda p: [json.loads(x)["loss"] for x in (p / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert lines(tmp_path / "full") == lines(tmp_path / "cut")


def test_output_directory_holding_another_run_is_refused(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(cfg_of(tiny_recipe(tiny_data), "train.steps=2"), out)
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(RunError, match="already holds another run; pass --resume"):
        train(cfg_of(tiny_recipe(tiny_data), "train.steps=2", "optim.lr=0.1"), out)
    with pytest.raises(RunError, match=r"recipe differs from the run .* at: optim\.lr"):
        train(cfg_of(tiny_recipe(tiny_data), "train.steps=2", "optim.lr=0.1"), out, resume=True)
    assert sorted(p.name for p in out.rglob("*")) == before


def test_resume_may_extend_the_number_of_steps_when_asked(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(cfg_of(tiny_recipe(tiny_data), "train.steps=2"), out)
    result = train(cfg_of(tiny_recipe(tiny_data), "train.steps=4"), out, resume=True,
                   allowed_changes=frozenset({"train.steps"}))
    assert result["steps"] == 4


def test_nonfinite_loss_stops_with_a_clear_message(tiny_data, tmp_path):
    cfg = cfg_of(tiny_recipe(tiny_data), "optim.lr=1e30", "train.steps=6", "optim.clip_norm=null")
    with pytest.raises(RunError, match=r"non-finite loss or gradient at step \d+.*last good checkpoint"):
        train(cfg, tmp_path / "run")

"""run.report_to: the recipe as hyperparameters and every metric, read back with each tracker's own reader."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_recipe
from typer.testing import CliRunner

from vitcli import recipe
from vitcli.cli import app


def train(tmp_path, tiny_data, trackers: list[str], monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    body = tiny_recipe(tiny_data, train={"steps": 3}, run={"report_to": trackers})
    path = tmp_path / "tracked.yaml"
    path.write_text(recipe.to_yaml(recipe.from_data(body, "test")))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["pretrain", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_tensorboard_holds_the_recipe_as_hparams_and_no_counts_as_metrics(tmp_path, tiny_data, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = train(tmp_path, tiny_data, ["tensorboard"], monkeypatch)
    events = EventAccumulator(str(out))
    events.Reload()
    assert events.PluginTagToContent("hparams")  # the HPARAMS tab has the run
    assert "train/loss" in events.Tags()["scalars"] and "eval/images" not in events.Tags()["scalars"]


def test_mlflow_local_store_holds_params_and_metrics(tmp_path, tiny_data, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    out = train(tmp_path, tiny_data, ["mlflow"], monkeypatch)
    client = mlflow.tracking.MlflowClient((out / "mlruns").resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("vit").experiment_id])
    assert run.data.params["optim.name"] == "adam" and run.data.params["train.steps"] == "3"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
    assert "eval_top1" in run.data.metrics and run.info.status == "FINISHED"
    assert json.loads((out / ".trackers.json").read_text())["mlflow"] == run.info.run_id


def wandb_records(log) -> list:
    """The protobuf records of an offline .wandb file: wandb's own Record messages, in the LevelDB log
    framing its writer uses (wandb 0.2x+ ships no Python reader of its own any more)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, pos, block, raw, pending = log.read_bytes(), 7, 32768, [], b""  # 7: the ":W&B" file header
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            raw.append(chunk)
        elif kind in (2, 3):
            pending = (pending if kind == 3 else b"") + chunk
        elif kind == 4:
            raw.append(pending + chunk)
    records = []
    for item in raw:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(item)
        records.append(record)
    return records


def test_wandb_offline_run_holds_config_and_metrics(tmp_path, tiny_data, monkeypatch):
    pytest.importorskip("wandb")
    out = train(tmp_path, tiny_data, ["wandb"], monkeypatch)
    (log,) = (out / "wandb").glob("offline-run-*/run-*.wandb")
    config, steps = {}, []
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "history":
            items = {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            if "train/loss" in items:
                steps.append(items["_step"])
    assert config["optim.name"] == "adam" and config["train.steps"] == 3
    assert steps == [1, 2, 3]
    assert json.loads((out / ".trackers.json").read_text())["wandb"] in log.name


def test_a_tracker_whose_library_is_missing_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    result = CliRunner().invoke(app, ["recipe", "show", "demo", "--set", "run.report_to=[tensorboard,mlflow]"])
    assert result.exit_code == 2 and "pip install 'vitcli[mlflow]'" in result.stderr

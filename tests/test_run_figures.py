"""The figures of `vit inspect` and `vit eval --out` in the trackers of the run they show, read back with each
tracker's own reader (TensorBoard's EventAccumulator, MlflowClient, W&B's offline records)."""

from __future__ import annotations

import io
import json
import shutil
import sys

import pytest
from conftest import invoke, one_json, tiny_recipe
from PIL import Image
from test_trackers import wandb_records

from vitcli import files, recipe
from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter

INSPECTED = {"embedding_filters", "posemb_similarity", "attention_distance", "attention_maps", "learning_curves"}


@pytest.fixture
def run(tiny_data, tmp_path, monkeypatch) -> object:
    """A 3-step tiny run that reports to TensorBoard, MLflow (its local store) and W&B (offline), made for
    each test (an MLflow client caches a run's artifact store by run id: a copy would share the id)."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "runs" / "tracked"
    cfg = recipe.from_data(tiny_recipe(tiny_data, train={"steps": 3, "checkpoint_every": 2},
                                       run={"report_to": ["tensorboard", "mlflow", "wandb"]}), "tracked")
    jobs.train(cfg, out, render=recipe.dump, log=Reporter(enabled=False))
    return out


def images(run) -> dict[str, list]:
    """The images TensorBoard shows for the run directory, by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    return {tag: events.Images(tag) for tag in events.Tags()["images"]}


def mlflow_artifacts(run, folder: str) -> list[str]:
    import mlflow

    client = mlflow.tracking.MlflowClient((run / "mlruns").resolve().as_uri())
    run_id = json.loads((run / ".trackers.json").read_text())["mlflow"]
    return sorted(item.path for item in client.list_artifacts(run_id, folder))


def wandb_images(run) -> dict[str, dict]:
    """The images (key -> W&B's image value, with `file`: where its PNG is) of every offline session of the
    run's W&B run; each session's file is named after the run id."""
    run_id = json.loads((run / ".trackers.json").read_text())["wandb"]
    found: dict[str, dict] = {}
    for session in (run / "wandb").glob(f"offline-run-*-{run_id}*"):
        for record in wandb_records(session / f"run-{run_id}.wandb"):
            if record.WhichOneof("record_type") != "history":
                continue
            values: dict[str, dict] = {}
            for item in record.history.item:  # an image is logged as its fields: (key, field) -> value
                if len(item.nested_key) == 2:
                    values.setdefault(item.nested_key[0], {})[item.nested_key[1]] = json.loads(item.value_json)
            for key, value in values.items():
                if value.get("_type") == "image-file":
                    found[key] = {**value, "file": session / "files" / value["path"]}
    return found


def test_inspect_logs_its_figures_to_every_tracker_of_the_run(run, tmp_path):
    summary = one_json(invoke("inspect", run, "--out", tmp_path / "figs", "--samples", 8, "--json"))
    assert set(summary["figures"]) == INSPECTED and set(summary["trackers"]) == {"tensorboard", "mlflow", "wandb"}
    shown = images(run)
    assert set(shown) == {f"inspect/{name}" for name in INSPECTED}
    for name in INSPECTED:  # at the step of the model shown (the run's final one), the figure as drawn
        (event,) = shown[f"inspect/{name}"]
        with Image.open(summary["figures"][name]) as drawn:
            assert event.step == 3 and (event.width, event.height) == drawn.size
        assert event.encoded_image_string == (tmp_path / "figs" / f"{name}.png").read_bytes()
    assert mlflow_artifacts(run, "inspect") == sorted(f"inspect/{name}.png" for name in INSPECTED)
    logged = wandb_images(run)  # in the training's W&B run, resumed by its id
    assert set(logged) == {f"inspect/{name}" for name in INSPECTED}
    for value in logged.values():
        assert value["caption"] == "step 3" and value["file"].is_file()


def test_eval_out_logs_the_confusion_matrix_in_any_format(run, tmp_path):
    """A PDF goes to MLflow as written; TensorBoard and W&B show a PNG of it."""
    checkpoint = run / "checkpoints" / "step-00000002.pt"  # a checkpoint of the run: the figure is at its step
    results = one_json(invoke("eval", "--from", checkpoint, "--out", tmp_path / "ev", "--format", "pdf", "--json"))
    assert results["confusion_matrix"]["pdf"].endswith(".pdf") and set(results["trackers"]) == {
        "tensorboard", "mlflow", "wandb"}
    (event,) = images(run)["eval/confusion_matrix"]
    assert event.step == 2
    with Image.open(io.BytesIO(event.encoded_image_string)) as image:
        assert image.format == "PNG" and image.size == (event.width, event.height)
    assert mlflow_artifacts(run, "eval") == ["eval/confusion_matrix.pdf"]
    assert set(wandb_images(run)) == {"eval/confusion_matrix"}


def test_a_checkpoint_outside_a_run_and_a_run_without_trackers_log_nothing(tiny_run, tiny_data, tmp_path):
    bare = tmp_path / "exported"
    bare.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copy(tiny_run / name, bare / name)
    shutil.copy(tiny_run / "recipe.json", tmp_path / "recipe.json")  # a run's files beside it do not make a run
    quiet = tmp_path / "quiet"
    jobs.train(recipe.from_data(tiny_recipe(tiny_data, train={"steps": 2}, run={"report_to": []}), "quiet"), quiet,
               render=recipe.dump, log=Reporter(enabled=False))
    before = {p: p.stat().st_mtime_ns for p in (*tiny_run.rglob("*"), *quiet.rglob("*"))}
    for args in (["--from", bare], [quiet]):
        summary = one_json(invoke("inspect", *args, "--out", tmp_path / "figs", "--samples", 4, "--json"))
        assert "trackers" not in summary
    assert {p: p.stat().st_mtime_ns for p in (*tiny_run.rglob("*"), *quiet.rglob("*"))} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "figs", "quiet", "recipe.json"]


def test_a_missing_tracker_package_is_one_warning_naming_the_extra(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` fails as when it is not installed
    result = invoke("inspect", run, "--out", tmp_path / "figs", "--samples", 4, "--json")
    summary = one_json(result)
    assert set(summary["trackers"]) == {"tensorboard", "mlflow"}
    warned = [line for line in result.stderr.splitlines() if "wandb" in line]
    assert len(warned) == 1 and "pip install 'vitcli[wandb]'" in warned[0], result.stderr


def test_a_run_being_trained_is_left_alone(run, tmp_path):
    events = sorted(run.glob("events.out.tfevents.*"))
    with files.RunLock(run):  # as if `vit pretrain --resume` were training it
        result = invoke("inspect", run, "--out", tmp_path / "figs", "--samples", 4, "--json")
    assert "trackers" not in one_json(result) or one_json(result)["trackers"] == {}
    assert "another vit process is writing this run directory" in result.stderr
    assert "--out" not in result.stderr.split("another vit process")[1]  # not advice about this command's --out
    assert sorted(run.glob("events.out.tfevents.*")) == events


def test_figures_are_logged_at_the_step_of_the_model_they_show(tmp_path):
    from vitcli.engine.persistence.run_figures import _step

    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "best" / "results.json").write_text('{"step": 7}')
    (run / "results.json").write_text('{"steps": 9}')
    assert _step(run, run / "checkpoints" / "step-00000003.pt") == 3
    assert _step(run, run / "best" / "model.safetensors") == 7  # best/ records its own step
    assert _step(run, run / "model.safetensors") == 9  # a finished run's model: the step it ended at
    (run / "best" / "results.json").write_text('{"step": "7"}')
    assert _step(run, run / "best" / "model.safetensors") == 9  # best/ that cannot say: the run's last step

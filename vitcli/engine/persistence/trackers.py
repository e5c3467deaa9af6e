"""Experiment trackers beyond metrics.jsonl: `run.report_to` (Hugging Face Trainer's name) picks them.

- `tensorboard` (the default): the event files of `tensorboard.py`, plus the resolved recipe as
  hyperparameters through TensorBoard's hparams plugin, in the same event file.
- `mlflow`: a run in MLflow's tracking store (the one MLFLOW_TRACKING_URI names; else a local store in
  `<run>/mlruns`, so nothing is written outside the run): the recipe as params, every metric by step.
- `wandb`: a Weights & Biases run (offline unless WANDB_MODE says otherwise, files under `<run>/wandb`):
  the recipe as its config, every metric by step; `wandb sync` uploads it later.

Each tracker goes through its library's own API; a missing library is one line naming the extra to
install. Only the main process tracks. The figures of `vit inspect` and `vit eval --out` join the same
runs afterwards (`run_figures.py`).
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

from vitcli import files
from vitcli.errors import RecipeError
from vitcli.formats import printable

_EXTRAS = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}  # tracker -> (module, extra)
STATE_FILE = ".trackers.json"  # the tracker runs this run logs to, so a resumed run continues them


def flat(data: dict, prefix: str = "") -> dict[str, object]:
    """A nested recipe as dotted keys with scalar values (lists as text), as trackers' params want them. Text
    is printable (a path named in another encoding holds surrogates, which protobuf refuses mid-run)."""
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value if isinstance(value, (int, float, bool)) or value is None else printable(str(value))
    return out


def numbers(row: dict) -> dict[str, float]:
    """The finite numbers of a metrics row, named as in TensorBoard (train/... or eval/...); counts left out."""
    out = {}
    for key, value in row.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key.endswith(("images", "/steps")) or not math.isfinite(value):
            continue
        out[key if "/" in key else f"train/{key}"] = float(value)
    return out


def require(name: str) -> None:
    """Refuse in one line a tracker whose library is not installed (before any run directory is made)."""
    module, extra = _EXTRAS[name]
    try:
        __import__(module)
    except ImportError:
        raise RecipeError(f"run.report_to: {name} needs the {module} package: pip install 'vitcli[{extra}]'") from None


class MLflowTracker:
    """One MLflow run per vit run, continued on resume."""

    def __init__(self, run_dir: Path, name: str, params: dict, state: dict):
        import mlflow
        from mlflow.environment_variables import MLFLOW_TRACKING_URI

        if not MLFLOW_TRACKING_URI.is_set():  # the user's own server or store wins
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's local file store, kept in the run
            mlflow.set_tracking_uri((Path(run_dir) / "mlruns").resolve().as_uri())
        self.client = mlflow.tracking.MlflowClient()
        run_id = state.get("mlflow")
        if run_id is None:
            experiment = self.client.get_experiment_by_name("vit") or self.client.get_experiment(
                self.client.create_experiment("vit"))
            run = self.client.create_run(experiment.experiment_id, run_name=name)
            run_id = run.info.run_id
            items = list(flat(params).items())
            for begin in range(0, len(items), 100):  # MLflow takes at most 100 params a call
                self.client.log_batch(run_id, params=[mlflow.entities.Param(k, str(v)[:6000])
                                                      for k, v in items[begin:begin + 100]])
        self.run_id = state["mlflow"] = run_id

    def write(self, row: dict) -> None:
        import mlflow

        step, values = int(row.get("step", 0)), numbers(row)
        metrics = [mlflow.entities.Metric(k.replace("/", "_"), v, 0, step) for k, v in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def figures(self, group: str, step: int, paths: dict[str, Path], pngs: dict[str, bytes]) -> None:
        """The figure files as they were written (PNG, PDF or SVG) as artifacts of this run, under `group/`."""
        for path in paths.values():
            self.client.log_artifact(self.run_id, str(path), artifact_path=group)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker:
    """One W&B run per vit run (offline by default), resumed by its id."""

    def __init__(self, run_dir: Path, name: str, params: dict, state: dict):
        import wandb

        os.environ.setdefault("WANDB_MODE", "offline")  # nothing leaves the machine unless the user says so
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project="vit", name=name, id=state.get("wandb"), resume="allow", dir=str(run_dir),
                              config=flat(params))
        state["wandb"] = self.run.id

    def write(self, row: dict) -> None:
        values = numbers(row)
        if values:
            self.run.log(values, step=int(row.get("step", 0)))

    def figures(self, group: str, step: int, paths: dict[str, Path], pngs: dict[str, bytes]) -> None:
        """The figures as images of this run (their PNG renderings, whatever format was written), captioned
        with the step of the model they show. No W&B step is given: a run resumed offline counts its own,
        and `wandb sync` places them after the run's last row (an earlier step would be dropped)."""
        import wandb
        from PIL import Image

        images = {f"{group}/{name}": wandb.Image(Image.open(io.BytesIO(png)), caption=f"step {step}")
                  for name, png in pngs.items()}
        if images:
            self.run.log(images)

    def close(self) -> None:
        self.run.finish()


def open_trackers(names, run_dir: Path, name: str, params: dict) -> list:
    """The trackers other than TensorBoard (which MetricsLog writes itself), their runs continued."""
    chosen = [n for n in names if n != "tensorboard"]
    if not chosen:
        return []
    state = recorded(run_dir)
    opened = []
    for tracker in chosen:
        require(tracker)
        opened.append(TRACKERS[tracker](run_dir, name, params, state))
    files.write_json(Path(run_dir) / STATE_FILE, state)
    return opened


def recorded(run_dir: Path) -> dict:
    """The tracker runs a vit run logs to (tracker name -> run id), from its .trackers.json ({} if none)."""
    path = Path(run_dir) / STATE_FILE
    try:
        state = json.loads(files.read_bytes(path, limit=1 << 16)) if files.check_regular(path, follow=False) else {}
    except (ValueError, RecursionError):  # a damaged file: the trackers start runs afresh, as for a new run
        return {}
    return state if isinstance(state, dict) else {}


TRACKERS = {"mlflow": MLflowTracker, "wandb": WandbTracker}

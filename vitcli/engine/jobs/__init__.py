"""The engine's one door: every entry point the CLI calls, and nothing else from the engine.

Each job takes a checked `RecipeCfg` and returns a dict of results; the CLI only assembles the recipe
and prints. Eval, few-shot, predict and inspect run on a model built from a checkpoint, no training
loop. What every job does first (runtime, reporter, the data's own splits, the model) is written once,
in `preamble`. Imports point one way: the lower engine packages (train, evaluate, persistence, runtime)
never import this one.
"""

from vitcli.engine.evaluate.inspect_report import default_inspect_dir
from vitcli.engine.jobs.benchmark import bench
from vitcli.engine.jobs.evaluation import evaluate, fewshot
from vitcli.engine.jobs.inspection import inspect
from vitcli.engine.jobs.lr_sweep import run_sweep
from vitcli.engine.jobs.prediction import predict
from vitcli.engine.jobs.training import recipe_as_json, train
from vitcli.engine.persistence.rundir import default_run_dir
from vitcli.engine.runtime.process import launch_rank, launch_restarts
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.train.sweep import is_sweep

__all__ = ["Reporter", "bench", "default_inspect_dir", "default_run_dir", "evaluate", "fewshot", "inspect", "is_sweep", "launch_rank",
           "launch_restarts", "predict", "recipe_as_json", "run_sweep", "train"]

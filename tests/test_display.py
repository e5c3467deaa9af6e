"""What the user reads: the training display shows the figures of the current step from step one (also
after a resume), eval and few-shot show progress, and every command writes numbers the same way.
"""

from __future__ import annotations

import io
import json
import re

import pytest
import yaml
from conftest import invoke, tiny_recipe
from rich.console import Console

from vitcli import formats, recipe
from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter

LINE = re.compile(r"^train (\d+)/(\d+) \(\d+%\) epoch \d+/\d+ loss (\S+) lr \S+ .*elapsed \d+:\d\d")


def every_step() -> tuple[Reporter, io.StringIO]:
    """A reporter that prints a plain line at every step (interval 0), as a log file would show them."""
    buffer = io.StringIO()
    return Reporter(console=Console(file=buffer, width=300), interval=0.0), buffer


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A 6-step run logged every 3 steps and checkpointed at 3 and 6, resumed to 9 steps."""
    folder = tmp_path_factory.mktemp("display")
    cfg = recipe.from_data(tiny_recipe(tiny_data, train={"steps": 6, "log_every": 3, "checkpoint_every": 3}), "t")
    log, first = every_step()
    out = folder / "run"
    done = jobs.train(cfg, out, log=log)
    longer = recipe.from_data(tiny_recipe(tiny_data, train={"steps": 9, "log_every": 3, "checkpoint_every": 3}), "t")
    log, resumed = every_step()
    again = jobs.train(longer, out, resume=True, allowed_changes=frozenset({"train.steps"}),
                       log=log)
    return out, first.getvalue(), resumed.getvalue(), done, again


def test_the_display_shows_each_steps_own_loss_from_step_one(trained):
    out, text, _, _, _ = trained
    lines = [LINE.match(line) for line in text.splitlines()]
    shown = {int(m[1]): m[3] for m in lines if m}
    assert sorted(shown) == [1, 2, 3, 4, 5, 6]  # a line for every step: none blank before the first log step
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logged = {row["step"]: row["loss"] for row in rows if "loss" in row and row["step"] <= 6}
    assert sorted(logged) == [3, 6]
    for step, loss in logged.items():  # the display at a log step is that step's loss, not an older one
        assert shown[step] == f"{loss:.4f}"
    assert len(set(shown.values())) > 1


def test_a_resumed_run_shows_its_bar_at_once_and_counts_the_earlier_time(trained):
    _, _, text, done, again = trained
    steps = [int(m[1]) for m in map(LINE.match, text.splitlines()) if m]
    assert steps[0] == 7 and steps[-1] == 9
    assert re.search(r"^trained 9 steps in \d+:\d\d$", text, flags=re.M)
    assert again["train_s"] >= done["train_s"] > 0  # the earlier part of the run counts


def test_eval_and_fewshot_show_their_progress(trained):
    out = trained[0]
    result = invoke("eval", "--from", out)
    assert result.exit_code == 0, result.output
    assert re.search(r"^eval 32/32 \(100%\) .*img/s elapsed \d+:\d\d$", result.stderr, flags=re.M)
    result = invoke("fewshot", "--from", out, "--shots", "1,2", "--seeds", "1")
    assert result.exit_code == 0, result.output
    assert re.search(r"^features \S+ train 96/96 \(100%\) .*elapsed", result.stderr, flags=re.M)
    assert re.search(r"^features \S+ test 32/32 \(100%\)", result.stderr, flags=re.M)
    assert "solving 2 shot counts x 1 seed\n" in result.stderr  # "1 seed", never "1 seeds"
    assert "1 seed, 16 px" in result.stdout


@pytest.fixture(scope="module")
def ema_run(tiny_data, tmp_path_factory):
    cfg = recipe.from_data(tiny_recipe(tiny_data, train={"steps": 3, "ema": 0.9}), "t")
    out = tmp_path_factory.mktemp("ema") / "run"
    jobs.train(cfg, out, log=Reporter(enabled=False))
    return out


def test_the_eval_report_names_the_file_its_weights_came_from(ema_run):
    result = invoke("eval", "--from", ema_run)
    assert result.exit_code == 0, result.output
    assert f"eval of {ema_run}/model_ema.safetensors (ema weights)" in result.stdout
    raw = json.loads(invoke("eval", "--from", ema_run, "--weights", "raw", "--json").stdout)
    assert raw["checkpoint"] == f"{ema_run}/model.safetensors" and raw["weights"] == "raw"


def test_the_no_ema_note_appears_only_when_ema_was_asked_for(trained):
    out = trained[0]
    note = "the checkpoint has no EMA weights; used the raw weights"
    plain = invoke("eval", "--from", out, "--json")
    asked = invoke("eval", "--from", out, "--weights", "ema", "--json")
    assert plain.exit_code == asked.exit_code == 0
    assert note not in plain.stderr and note in asked.stderr
    assert json.loads(plain.stdout)["weights"] == json.loads(asked.stdout)["weights"] == "raw"


def test_training_results_read_like_eval_results(tiny_data, tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(tiny_recipe(tiny_data, train={"steps": 2})))
    result = invoke("pretrain", tmp_path / "r.yaml", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert re.search(r"^final eval at step 2: top1 \d+\.\d\d%, top5 \d+\.\d\d%, loss \d\.\d{4}$", result.stderr,
                     flags=re.M)
    rows = dict(re.findall(r"│ (\w+)\s+│\s+(\S+) │", result.stdout))
    assert rows["top1"].endswith("%") and rows["images"] == "32" and re.fullmatch(r"[\d,]+\.\d", rows["img_s"])
    assert re.fullmatch(r"\d+:\d\d", rows["train_s"]) and "command" not in rows  # the record is in results.json


@pytest.mark.parametrize("key, value, shown", [
    ("top1", 0.9806, "98.06%"), ("ema_top5", 1.0, "100.00%"), ("fewshot/digits/5shot", 0.5, "50.00%"),
    ("mfu", 0.3873, "38.73%"), ("images", 360.0, "360"), ("steps", 1368, "1,368"), ("loss", 0.07841, "0.0784"),
    ("img_s", 1048.7909, "1,048.8"), ("train_flops", 19485578335.7975, "19.5 GFLOP/s"),
    ("macs_per_image", 7911936.0, "7.91 MMAC"), ("step_s", 0.16431, "164.3 ms"), ("train_s", 80.4, "1:20"),
    ("wall_s", 3725, "1:02:05"), ("lr", 0.003, "3.00e-03"), ("peak_memory_mb", 921.3, "921 MB"),
    ("res", [384, 256], "384x256"), ("res", [224, 224], "224"), ("gflops", None, "-")])
def test_one_number_format_for_every_command(key, value, shown):
    assert formats.metric(key, value) == shown


def test_plurals_and_rough_durations():
    assert formats.plural(1, "step") == "1 step" and formats.plural(2, "seed") == "2 seeds"
    assert formats.plural(1, "process", "processes") == "1 process"
    assert formats.plural(8, "process", "processes") == "8 processes"
    assert formats.rough_duration(45) == "45 s" and formats.rough_duration(3 * 3600 + 300) == "3 h 05 min"


@pytest.mark.parametrize("command, present, absent", [
    ("eval", ["checkpoint's own recipe", "resampled"], ["finetune/default", "finetune's"]),
    ("fewshot", ["checkpoint's own recipe", "resampled"], ["finetune/default"]),
    ("bench", ["--model with default settings", "Resolution to time at"], ["finetune/default", "resampled"]),
    ("finetune", ["finetune/default", "resampled"], []),
    ("models", ["count tokens and GFLOPs"], ["resampled"]),
    ("pretrain", ["shipped recipe", "runs/<run.name>"], ["timestamp"]),
])
def test_each_command_explains_its_own_recipe_and_resolution(command, present, absent):
    text = " ".join(invoke(command, "--help").stdout.split())  # Rich wraps help text at any width
    for words in present:
        assert words in text, (command, words)
    for words in absent:
        assert words not in text, (command, words)

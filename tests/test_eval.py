"""`vit eval` and `vit fewshot` end to end: known predictions, JSON schemas, EMA, resampling, bad input.

One tiny run is trained once for the module (EMA on, a tanh pre-logits layer, few-shot evaluated every 2
steps); a second "checkpoint" is a timm-style state dict whose head is set by hand, so its predictions,
and with them top-1, top-5, loss and per-class accuracy, are known before evaluating.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
import yaml
from conftest import CLASSES, error_line, invoke, one_json, tiny_recipe, write_parquet_dataset

from vitcli import recipe
from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter
from vitcli.models import build_model

REP = 24  # width of the tanh pre-logits layer of the trained run (the model's width is 32)
# Head bias of the hand-made checkpoint: 8 outputs for the 4 colour classes (a wider head scored on a
# subset). Constant logits rank the outputs 1 > 5 > 2 > 3 > 4 > 7 > 0 > 6 for every image, so:
# red (0) is never in the top 5, green (1) is top-1, blue (2) and grey (3) are in the top 5 only.
BIAS = [0.0, 10.0, 8.0, 7.0, 6.0, 9.0, -1.0, 5.0]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~5x faster than oversubscribing."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """A trained run directory: EMA weights, a pre-logits layer, few-shot logged during training."""
    data = tiny_recipe(tiny_data, model={"representation_size": REP},
                       train={"ema": 0.9, "device": "cpu", "steps": 4},
                       eval={"every": 2, "evaluators": ["classification", "fewshot"]},
                       fewshot={"shots": [1, 2], "seeds": 2})
    cfg = recipe.from_data(data, "test")
    out = tmp_path_factory.mktemp("eval") / "run"
    jobs.train(cfg, out, render=recipe.dump, log=Reporter(enabled=False))
    return out


@pytest.fixture(scope="module")
def known(tiny_data, tmp_path_factory):
    """A timm-style state dict with a constant-logit head, and the recipe that names its variant."""
    folder = tmp_path_factory.mktemp("known")
    model_section = tiny_recipe(tiny_data)["model"]
    model = build_model(recipe.from_data({"model": model_section}, "t").model, len(BIAS))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(BIAS))
    torch.save(model.state_dict(), folder / "known.pth")
    spec = {"model": model_section, "data": {"source": str(tiny_data), "workers": 0},
            "train": {"precision": "fp32", "device": "cpu"}, "fewshot": {"shots": [1, 3], "seeds": 2}}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(spec))
    return folder


def test_known_predictions_give_hand_computed_metrics(known):
    # An 8-way head without class names on 4 named classes: refused, unless scored by index on purpose.
    line = error_line(invoke("eval", known / "recipe.yaml", "--from", known / "known.pth"))
    assert "has 4 classes but the model's head has 8" in line and "--ignore-labels" in line
    out = one_json(invoke("eval", known / "recipe.yaml", "--from", known / "known.pth", "--json", "--ignore-labels"))
    assert out["labels"] == "by index (--ignore-labels)"
    # 32 test images, 8 per colour: only green is top-1, green/blue/grey are in the top 5.
    assert out["images"] == 32 and out["num_classes"] == len(BIAS)
    assert out["top1"] == pytest.approx(8 / 32)
    assert out["top5"] == pytest.approx(24 / 32)
    logits = torch.tensor(BIAS)
    expected_loss = (torch.logsumexp(logits, 0) - logits[:4].mean()).item()  # equal counts per class
    assert out["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert out["per_class_top1"] == {"red": 0.0, "green": 1.0, "blue": 0.0, "grey": 0.0}
    # Every image is predicted green: green's precision is 8/32; the others, never predicted, score 0.
    assert out["per_class_precision"] == {"red": 0.0, "green": 0.25, "blue": 0.0, "grey": 0.0}
    confusion = out["confusion_matrix"]
    assert confusion["classes"][:4] == CLASSES and len(confusion["classes"]) == len(BIAS)
    expected = [[8 if p == 1 and t < 4 else 0 for p in range(len(BIAS))] for t in range(len(BIAS))]
    assert confusion["counts"] == expected
    assert out["weights"] == "raw"  # a plain state dict has no EMA copy
    assert out["posemb_resampled"] is None


def test_eval_json_schema(run):
    out = one_json(invoke("eval", "--from", run, "--json"))
    types = {"checkpoint": str, "model": str, "data": str, "split": str, "res": list, "weights": str,
             "posemb_resampled": type(None), "num_classes": int, "labels": str, "top1": float, "top5": float,
             "loss": float, "images": int, "img_s": float, "per_class_top1": dict, "per_class_precision": dict,
             "confusion_matrix": dict}
    assert out.keys() == types.keys()
    for key, kind in types.items():
        assert type(out[key]) is kind, (key, out[key])
    assert out["split"] == "test" and out["res"] == [16, 16] and out["images"] == 32
    assert set(out["per_class_top1"]) == set(CLASSES)
    assert all(0.0 <= v <= 1.0 for v in out["per_class_top1"].values())
    assert set(out["per_class_precision"]) <= set(CLASSES)
    counts = out["confusion_matrix"]["counts"]
    assert out["confusion_matrix"]["classes"] == CLASSES and sum(map(sum, counts)) == 32
    assert [sum(row) for row in counts] == [8, 8, 8, 8]  # each row is one true class's images
    # The diagonal is what per_class_top1 counts.
    assert {c: counts[i][i] / 8 for i, c in enumerate(CLASSES)} == out["per_class_top1"]


def test_eval_draws_the_confusion_matrix_with_out(run, tmp_path):
    import numpy as np
    from PIL import Image

    out = one_json(invoke("eval", "--from", run, "--out", tmp_path / "figs", "--json"))
    path = tmp_path / "figs" / "confusion_matrix.png"
    assert out["confusion_matrix"]["png"] == str(path)
    with Image.open(path) as image:
        assert image.size == (600, 600) and len(np.unique(np.asarray(image.convert("L")))) > 10
    assert all(math.isfinite(out[k]) for k in ("top1", "top5", "loss", "img_s"))


def test_ema_and_raw_weights_differ(run):
    ema = one_json(invoke("eval", "--from", run, "--json"))
    raw = one_json(invoke("eval", "--from", run, "--weights", "raw", "--json"))
    assert (ema["weights"], raw["weights"]) == ("ema", "raw")
    assert ema["loss"] != pytest.approx(raw["loss"], abs=1e-6)
    assert "--weights 'newest': valid: 'ema', 'raw', 'best'" in error_line(invoke("eval", "--from", run, "--weights",
                                                                                "newest"))
    # best is the run's best/ (train.keep_best), which this run did not keep: one line that says how
    assert "holds no model" in error_line(invoke("eval", "--from", run, "--weights", "best"))


def test_recipe_eval_weights_is_honoured_and_the_option_overrides_it(run, tmp_path):
    spec = tmp_path / "raw.yaml"
    spec.write_text(yaml.safe_dump({"eval": {"weights": "raw"}}))
    assert one_json(invoke("eval", spec, "--from", run, "--json"))["weights"] == "raw"
    assert one_json(invoke("eval", spec, "--from", run, "--weights", "ema", "--json"))["weights"] == "ema"
    assert one_json(invoke("fewshot", spec, "--from", run, "--shots", 1, "--seeds", 1, "--json"))["weights"] == "raw"


def test_eval_at_another_resolution_resamples_and_says_so(run):
    result = invoke("eval", "--from", run, "--res", 32, "--json")
    out = one_json(result)
    assert out["res"] == [32, 32] and out["posemb_resampled"] == "4x4 -> 8x8 (paper)"
    assert result.stderr.count("position embeddings resampled: 4x4 -> 8x8 (paper)") == 1


def test_eval_table_on_a_terminal(run):
    result = invoke("eval", "--from", run, "--split", "test")
    assert result.exit_code == 0, result.output
    for text in ("top-1", "top-5", "loss", "images/s", "[test]", "top-1 grey", "ema"):
        assert text in result.stdout, text


def test_fewshot_json_schema_and_pre_logits_features(run, monkeypatch):
    import vitcli.engine.evaluate.evaluators as evaluators

    seen = []
    real = evaluators.extract_features
    monkeypatch.setattr(evaluators, "extract_features",
                        lambda *a, **kw: seen.append(real(*a, **kw)) or seen[-1])
    out = one_json(invoke("fewshot", "--from", run, "--shots", "1,5", "--seeds", 3, "--json"))
    types = {"checkpoint": str, "model": str, "res": list, "weights": str, "posemb_resampled": type(None),
             "features": str, "feature_dim": int, "shots": list, "seeds": int, "l2_reg": list, "datasets": dict,
             "results": dict}
    assert out.keys() == types.keys()
    for key, kind in types.items():
        assert type(out[key]) is kind, (key, out[key])
    assert (out["features"], out["feature_dim"], out["weights"]) == ("pre_logits", REP, "ema")
    (name,) = out["results"]
    assert out["datasets"][name] == {"source": out["datasets"][name]["source"], "train_split": "train",
                                     "test_split": "test", "num_classes": 4, "train_images": 96, "test_images": 32}
    assert list(out["results"][name]) == ["1shot", "5shot"]
    for entry in out["results"][name].values():
        assert entry.keys() == {"mean", "std", "seeds", "l2"} and len(entry["seeds"]) == 3
        assert 0.0 <= entry["mean"] <= 1.0 and entry["std"] >= 0.0 and entry["l2"] == 1024.0
    # Features were extracted once per image (train, then test) and are the tanh layer's output.
    assert [f.shape for f, _ in seen] == [(96, REP), (32, REP)]
    assert all(f.abs().max() <= 1.0 for f, _ in seen)


def test_fewshot_table_one_row_per_shot_and_l2(run):
    result = invoke("fewshot", "--from", run, "--shots", "1,2", "--seeds", 2, "--set", "fewshot.l2_reg=[1024,1]")
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if re.search(r"\d+\.\d\d%", line)]
    assert len(rows) == 4  # 2 shot counts x 2 regularisers, no duplicate row for the default one
    assert "few-shot" in result.stderr  # progress goes to stderr


def test_fewshot_of_headless_plain_state_dict(known):
    out = one_json(invoke("fewshot", known / "recipe.yaml", "--from", known / "known.pth", "--json"))
    assert (out["features"], out["feature_dim"], out["weights"]) == ("token", 32, "raw")
    assert list(next(iter(out["results"].values()))) == ["1shot", "3shot"]


def test_fewshot_asking_for_a_representation_the_checkpoint_lacks(known):
    line = error_line(invoke("fewshot", known / "recipe.yaml", "--from", known / "known.pth",
                             "--set", "model.representation_size=16"))
    assert "model.representation_size 16 asks for the tanh pre-logits layer" in line
    assert "no pre-logits layer" in line


def test_recipe_representation_on_a_run_is_checked(run, tmp_path):
    spec = tmp_path / "fewshot.yaml"
    spec.write_text(yaml.safe_dump({"model": {"representation_size": 8}, "fewshot": {"shots": [1], "seeds": 1}}))
    assert "representation_size" in error_line(invoke("fewshot", spec, "--from", run))


def test_more_shots_than_the_smallest_class_holds(run):
    line = error_line(invoke("fewshot", "--from", run, "--shots", "1,30"))
    assert "class 'red' has 24 training images, fewer than the 30 shots" in line


def test_class_missing_from_fewshot_training_images(run):
    line = error_line(invoke("fewshot", "--from", run, "--shots", 1, "--set", "data.train_split=train[:3]"))
    assert "class 'grey' has 0 training images" in line


def test_eval_labels_the_head_does_not_cover(run, known, tmp_path):
    small = build_model(recipe.from_data({"model": tiny_recipe("x")["model"]}, "t").model, 3)
    torch.save(small.state_dict(), tmp_path / "three.pth")
    line = error_line(invoke("eval", known / "recipe.yaml", "--from", tmp_path / "three.pth"))
    assert "has 4 classes but the model's head has 3" in line


def test_empty_split(run, tmp_path):
    empty = write_parquet_dataset(tmp_path / "empty", n_train=8, n_test=0)
    assert re.search("is empty|holds no rows", error_line(invoke("eval", "--from", run, "--data", empty)))


def test_fewshot_runs_inside_training_and_is_logged(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    assert [r["step"] for r in evals] == [2, 4]
    for row in evals:
        shots = {k for k in row if re.fullmatch(r"eval/(ema_)?fewshot/[^/]+/[12]shot", k)}
        assert len(shots) == 4, sorted(row)  # raw and EMA weights x 1 and 2 shots
        assert all(0.0 <= row[k] <= 1.0 for k in shots)
        assert "eval/top1" in row and "eval/ema_top1" in row

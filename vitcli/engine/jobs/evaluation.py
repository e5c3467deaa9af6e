"""`vit eval` and `vit fewshot`: evaluators run on a model built from a checkpoint, no training loop."""

from __future__ import annotations

import math
from pathlib import Path

from vitcli.recipe.config import RecipeCfg
from vitcli.engine.evaluate.evaluators import ClassificationEvaluator, FewshotEvaluator, eval_split, fewshot_sets
from vitcli.engine.jobs.preamble import checkpoint_record, session, with_splits
from vitcli.engine.persistence import run_figures
from vitcli.engine.runtime.progress import Reporter
from vitcli.errors import RecipeError, RunError
from vitcli.files import write_json
from vitcli.weights import reader
from vitcli.weights.restore import restore


def evaluate(cfg: RecipeCfg, source: reader.Pretrained, *, ignore_labels: bool = False,
             out: Path | None = None, log: Reporter | None = None, fmt: str = "png", dpi: int = 100) -> dict:
    """`vit eval`: top-1/top-5, mean loss, per-class recall and precision and the confusion matrix of a
    checkpoint on the recipe's eval split; with `out`, the confusion matrix as a figure there too (and, for
    a vit run's model, in the run's trackers: `run_figures`).

    The data's classes are matched to the head's by name (`labels.align`); `ignore_labels` scores
    data label i as output i instead.
    """
    if not cfg.data.source:
        raise RecipeError("data.source: missing; give --data SOURCE or a RECIPE with data.source")
    tracked = run_figures.for_checkpoint(source.path) if out is not None else None
    with session(cfg, log) as (rt, log):
        cfg = with_splits(cfg, "eval", log.info)
        d = cfg.data
        split = d.eval_split or "test"
        model, done = restore(source, cfg.model, weights=cfg.eval.weights, need_head=True, log=log.info)
        data = eval_split(d, split, model.num_classes, source.label_names, ignore=ignore_labels, log=log.info)
        evaluator = ClassificationEvaluator(data, d, cfg.model.res, cfg.eval.batch_size, rt, progress=log,
                                            channels=cfg.model.in_chans)
        metrics = evaluator.run(model.to(rt.device))
        if not math.isfinite(metrics["loss"]):
            raise RunError(f"{source.path}: the model's outputs are not finite (mean loss {metrics['loss']}); "
                           "the weights are corrupt or the run diverged")
        results = {**checkpoint_record(cfg, model, done, data=d.source, split=split),
                   "num_classes": model.num_classes, "labels": _label_match(data, source, ignore_labels),
                   "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"],
                   "images": int(metrics["images"]), "img_s": metrics["img_s"], "per_class_top1": evaluator.per_class,
                   "per_class_precision": evaluator.per_class_precision,
                   "confusion_matrix": _confusion(evaluator, source, out, fmt, dpi, tracked)}
        if tracked and rt.is_main and results["confusion_matrix"]:  # the run's trackers get the figure too
            figure = {"confusion_matrix": results["confusion_matrix"][fmt]}
            results["trackers"] = tracked.send("eval", figure, log.warn)
        if out is not None:  # the numbers behind the figure, beside it
            results["json"] = str(out / "eval.json")
            write_json(out / "eval.json", results)
        return results


def _confusion(evaluator: ClassificationEvaluator, source: reader.Pretrained, out: Path | None, fmt: str = "png",
               dpi: int = 100, tracked: run_figures.RunFigures | None = None) -> dict | None:
    """The confusion counts with their class names (the model's own when it stores them), and the PNG."""
    if evaluator.confusion is None:
        return None
    classes = len(evaluator.confusion)
    names = source.label_names or evaluator.split.class_names or []
    names = [*names, *map(str, range(len(names), classes))][:classes]
    result = {"classes": names, "counts": evaluator.confusion}
    if out is not None:
        from vitcli.engine.evaluate import figures, inspect_report

        path = inspect_report.prepare_out(out) / "confusion_matrix.png"
        title = f"{evaluator.split.source} [{evaluator.split.split}]"
        with figures.style(fmt, dpi, keep=tracked.pngs if tracked else None):
            result[fmt] = str(figures.confusion_matrix(evaluator.confusion, names, path, title))
    return result


def _label_match(split, source: reader.Pretrained, ignore: bool) -> str:
    """How data labels were scored against the head, as the eval report says it."""
    if ignore:
        return "by index (--ignore-labels)"
    if split.label_map is not None:
        return "matched by name"
    return "by name" if source.label_names is not None and split.class_names is not None else "by index"


def fewshot(cfg: RecipeCfg, source: reader.Pretrained, *, log: Reporter | None = None) -> dict:
    """`vit fewshot`: the paper's few-shot linear evaluation of a checkpoint's frozen pre-logits features."""
    with session(cfg, log) as (rt, log):
        if not cfg.fewshot.datasets:
            cfg = with_splits(cfg, "fewshot", log.info)
        # Data first: splits, columns, labels and shots against class sizes are checked before the model.
        evaluator = FewshotEvaluator(fewshot_sets(cfg, log.info), cfg.fewshot, cfg.data, cfg.model.res, rt,
                                     log=log.info, progress=log, channels=cfg.model.in_chans)
        model, done = restore(source, cfg.model, weights=cfg.eval.weights, log=log.info)
        evaluator.run(model.to(rt.device))
        rep = model.representation_size
        return {**checkpoint_record(cfg, model, done),
                "features": "pre_logits" if rep else cfg.model.pool,
                "feature_dim": int(rep or model.embed_dim), "shots": list(cfg.fewshot.shots),
                "seeds": cfg.fewshot.seeds, "l2_reg": list(cfg.fewshot.l2_reg),
                "datasets": evaluator.describe_sets(), "results": evaluator.details}

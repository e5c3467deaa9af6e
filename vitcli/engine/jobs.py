"""The engine's entry points: train (pretrain and fine-tune), evaluate, few-shot evaluate.

Each takes a checked `RecipeCfg` and returns a dict of results; the CLI only assembles the recipe and
prints. Eval and few-shot are evaluators run on a model built from a checkpoint: no training loop.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from vitcli import __version__, files
from vitcli.recipe import schema
from vitcli.recipe.config import RecipeCfg
from vitcli.engine.datasplits import with_splits
from vitcli.engine.evaluate.evaluators import (
    ClassificationEvaluator,
    FewshotEvaluator,
    eval_split,
    fewshot_sets,
)
from vitcli.engine.persistence import rundir
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.runtime.progress import Reporter
from vitcli.engine.runtime.signals import StopRequest
from vitcli.engine.train.trainer import Trainer
from vitcli.data import load_split
from vitcli.errors import CheckpointError, DataError, RecipeError, RunError
from vitcli.models import build_model, describe
from vitcli.weights import reader
from vitcli.weights.run_model import save_run_model
from vitcli.weights.fit import load_weights


def recipe_as_json(recipe_data: dict) -> str:
    """The default text of a run's recipe.yaml when the caller renders none."""
    return json.dumps(recipe_data, indent=1) + "\n"  # JSON is YAML too: `vit recipe show` reads it


def train(cfg: RecipeCfg, out: Path, *, resume: bool = False, allowed_changes: frozenset[str] = frozenset(),
          resume_hint: str = "", log: Reporter | None = None, render: Callable[[dict], str] = recipe_as_json,
          command: str = "") -> dict:
    """Run `fit` for a recipe into run directory `out`; return the final evaluation and where things are.

    The recipe becomes plain data once, here: recipe.json, every checkpoint and config.json store that
    same dict. `render` turns it into the text of the run's recipe.yaml; the CLI passes `recipe.dump`
    (block-style YAML), since the engine never imports a YAML library.

    The results (also in `out/results.json`) say how long it took (`train_s`: training over every
    process that worked on the run, `wall_s`: this process), when (`date`, UTC), with which vit and
    `command` (what the user typed, as the caller reports it).
    """
    started, date = time.monotonic(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    rt = Runtime.create(cfg.train.device, cfg.train.precision, cfg.train.seed)
    log = log or Reporter(enabled=rt.is_main)
    cfg = with_splits(cfg, "train", log.info)  # before recipe.json: it records the splits chosen
    recipe_data = schema.to_dict(cfg)
    recipe_text = render(recipe_data)
    try:
        # One writer per run directory, for the run's whole life (the lock goes when the process does).
        with rundir.writer(out, resume=resume) if rt.is_main else contextlib.nullcontext():
            if rt.is_main:
                rundir.prepare(out, recipe_text, recipe_data, resume=resume, allowed=set(allowed_changes))
                log.info(f"run directory: {out}")
            rt.barrier()
            rt.seed_everything()
            # A resume reads and checks its checkpoint here.
            trainer = Trainer(cfg, rt, out, log, resume=resume, recipe_data=recipe_data)
            if resume and rt.is_main:
                rundir.record(out, recipe_text, recipe_data)  # only now is the resume known to be valid
            try:
                with StopRequest(resume_hint or f"--resume --out {out}") as stop:
                    results = trainer.run(stop)
            finally:
                trainer.metrics.close()  # the TensorBoard event file
            # train_examples: the size of the split trained on (a sweep reports what its final model saw).
            summary = {"out": str(out), "steps": trainer.pos.step,
                       "train_examples": trainer.train_split.num_examples, **results,
                       "train_s": round(trainer.train_seconds, 3)}
            weights = trainer.setup.raw_state_dict()  # a collective under FSDP: every rank calls it
            if rt.is_main:
                save_run_model(out, trainer.setup, recipe_data, weights, trainer.label_names, log.info)
                summary.update(wall_s=round(time.monotonic() - started, 3), date=date, vit_version=__version__,
                               command=command)
                files.write_json(out / "results.json", summary)
                log.info(f"saved {out}/model.safetensors (and results.json, metrics.jsonl, checkpoints/)")
            return summary
    finally:
        rt.close()


def model_from(cfg: RecipeCfg, source: reader.Pretrained, log: Reporter, *,
               need_head: bool = True) -> tuple[torch.nn.Module, str | None]:
    """Build the recipe's model around a checkpoint's weights, its head and tanh pre-logits layer kept.

    `eval.weights` is "ema" (the raw weights when the checkpoint has no EMA copy) or "raw". Returns the
    model and the position-embedding resampling it needed ("4x4 -> 8x8 (paper)"), or None at its own grid.
    """
    # eval.weights "ema" (the default) means the EMA weights when the checkpoint has them; a user who asked
    # for them by name hears from the CLI when there were none.
    state = source.weights(cfg.eval.weights)
    head = state.get("head.weight")
    if head is None and need_head:
        raise CheckpointError(f"{source.path}: no classification head (head.weight) in the checkpoint; "
                              "vit eval needs a trained head (use vit fewshot for headless backbones)")
    rep = state.get("pre_logits.fc.weight")
    have, want = (int(rep.shape[0]) if rep is not None else None), cfg.model.representation_size
    if want and want != have:
        found = f"a pre-logits layer of width {have}" if have else "no pre-logits layer (pre_logits.fc.*)"
        raise CheckpointError(f"{source.path}: model.representation_size {want} asks for the tanh pre-logits "
                              f"layer, but the checkpoint has {found}; drop model.representation_size from "
                              "the recipe to use the checkpoint's own representation")
    if have and not want:  # e.g. a timm state dict: the checkpoint decides, as for every other layer
        log.info(f"using the checkpoint's tanh pre-logits layer (representation_size {have})")
    model = build_model(replace(cfg.model, representation_size=have), int(head.shape[0]) if head is not None else 0)
    # load_weights logs its own notes (the resample line among them); they are only inspected here.
    try:
        notes = load_weights(model, state, drop_head=False, mode=cfg.model.posemb_resample,
                             old_grid=reader.checkpoint_grid(source), log=log.info)
    except CheckpointError as exc:  # name the file: the user may have passed several
        raise CheckpointError(f"{source.path}: {exc}") from None
    resampled = [n.split(": ", 1)[1] for n in notes if n.startswith("position embeddings resampled")]
    return model, (resampled[0] if resampled else None)


def evaluate(cfg: RecipeCfg, source: reader.Pretrained, *, ignore_labels: bool = False,
             out: Path | None = None, log: Reporter | None = None) -> dict:
    """`vit eval`: top-1/top-5, mean loss, per-class recall and precision and the confusion matrix of a
    checkpoint on the recipe's eval split; with `out`, the confusion matrix as a PNG there too.

    The data's classes are matched to the head's by name (`labels.align`); `ignore_labels` scores
    data label i as output i instead.
    """
    if not cfg.data.source:
        raise RecipeError("data.source: missing; give --data SOURCE or a RECIPE with data.source")
    rt = Runtime.create(cfg.train.device, cfg.train.precision, cfg.train.seed)
    log = log or Reporter(enabled=rt.is_main)
    try:
        cfg = with_splits(cfg, "eval", log.info)
        d = cfg.data
        split = d.eval_split or "test"
        model, resampled = model_from(cfg, source, log)
        data = eval_split(d, split, model.num_classes, source.label_names, ignore=ignore_labels, log=log.info)
        evaluator = ClassificationEvaluator(data, d, cfg.model.res, cfg.eval.batch_size, rt, progress=log)
        metrics = evaluator.run(model.to(rt.device))
        if not math.isfinite(metrics["loss"]):
            raise RunError(f"{source.path}: the model's outputs are not finite (mean loss {metrics['loss']}); "
                           "the weights are corrupt or the run diverged")
        return {"checkpoint": str(weights_file(source, _weights_used(cfg, source))),
                "model": describe(cfg.model, model.num_classes)["variant"],
                "data": d.source, "split": split, "res": list(cfg.model.res),
                "weights": _weights_used(cfg, source),
                "posemb_resampled": resampled, "num_classes": model.num_classes,
                "labels": _label_match(data, source, ignore_labels),
                "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"],
                "images": int(metrics["images"]), "img_s": metrics["img_s"], "per_class_top1": evaluator.per_class,
                "per_class_precision": evaluator.per_class_precision,
                "confusion_matrix": _confusion(evaluator, source, out)}
    finally:
        rt.close()


def _confusion(evaluator: ClassificationEvaluator, source: reader.Pretrained, out: Path | None) -> dict | None:
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
        result["png"] = str(figures.confusion_matrix(evaluator.confusion, names, path, title))
    return result


def fewshot(cfg: RecipeCfg, source: reader.Pretrained, *, log: Reporter | None = None) -> dict:
    """`vit fewshot`: the paper's few-shot linear evaluation of a checkpoint's frozen pre-logits features."""
    rt = Runtime.create(cfg.train.device, cfg.train.precision, cfg.train.seed)
    log = log or Reporter(enabled=rt.is_main)
    try:
        if not cfg.fewshot.datasets:
            cfg = with_splits(cfg, "fewshot", log.info)
        # Data first: splits, columns, labels and shots against class sizes are checked before the model.
        evaluator = FewshotEvaluator(fewshot_sets(cfg, log.info), cfg.fewshot, cfg.data, cfg.model.res, rt, log=log.info,
                                     progress=log)
        model, resampled = model_from(cfg, source, log, need_head=False)
        evaluator.run(model.to(rt.device))
        rep = model.representation_size
        return {"checkpoint": str(weights_file(source, _weights_used(cfg, source))),
                "model": describe(cfg.model, model.num_classes)["variant"],
                "res": list(cfg.model.res), "weights": _weights_used(cfg, source),
                "posemb_resampled": resampled, "features": "pre_logits" if rep else cfg.model.pool,
                "feature_dim": int(rep or model.embed_dim), "shots": list(cfg.fewshot.shots),
                "seeds": cfg.fewshot.seeds, "l2_reg": list(cfg.fewshot.l2_reg),
                "datasets": evaluator.describe_sets(), "results": evaluator.details}
    finally:
        rt.close()


def predict(cfg: RecipeCfg, source: reader.Pretrained, inputs: list[str], *, split: str | None = None,
            top_k: int = 5, batch_size: int | None = None, log: Reporter | None = None) -> dict:
    """`vit predict`: top-k class names and probabilities of every image in `inputs`.

    An input is an image file, a folder (searched recursively) or a data source (its `split`, by
    default the one `vit eval` would score). Images that do not decode are listed under "unreadable".
    """
    from vitcli.data.inputs import from_files, from_split, is_data_source
    from vitcli.data.splits import default_splits
    from vitcli.data.transforms import eval_pil_transform
    from vitcli.engine.evaluate.predict import predict as run_predict

    if top_k < 1 or (batch_size is not None and batch_size < 1):
        raise RecipeError(f"--top-k {top_k} / --batch {batch_size}: both must be at least 1")
    rt = Runtime.create(cfg.train.device, cfg.train.precision, cfg.train.seed)
    log = log or Reporter(enabled=rt.is_main)
    try:
        transform = eval_pil_transform(cfg.data, cfg.model.res)
        sources = [text for text in inputs if is_data_source(text)]
        groups, unreadable = [], []
        for text in sources:
            defaults = default_splits(text) if split is None else None
            chosen = split or defaults.held_out or defaults.only or "train"
            log.info(f"{text}: predicting split {chosen!r}")
            data = load_split(text, chosen, streaming=False)
            if data.note:
                log.info(data.note)
            groups.append(from_split(data, transform))
        files, missing = from_files([t for t in inputs if t not in sources], transform)
        unreadable += [{"path": m.name, "error": m.reason} for m in missing]
        groups.append(files)
        if not any(len(g) for g in groups):
            raise DataError(f"no images to predict in {', '.join(map(repr, inputs))}; give image files, folders "
                            "of images, or a data source (imagefolder:PATH, a parquet folder, a hub id)")
        model, resampled = model_from(cfg, source, log)
        model.to(rt.device)
        rows = []
        for group in (g for g in groups if len(g)):
            got, failed = run_predict(model, group, norm=cfg.data.norm, batch_size=batch_size or cfg.eval.batch_size,
                                      top_k=top_k, names=source.label_names, rt=rt, log=log)
            rows += got
            unreadable += failed
        return {"checkpoint": str(weights_file(source, _weights_used(cfg, source))),
                "model": describe(cfg.model, model.num_classes)["variant"],
                "res": list(cfg.model.res), "weights": _weights_used(cfg, source),
                "posemb_resampled": resampled, "label_names": source.label_names, "top_k": top_k,
                "images": len(rows), "predictions": rows, "unreadable": unreadable}
    finally:
        rt.close()


def _label_match(split, source: reader.Pretrained, ignore: bool) -> str:
    """How data labels were scored against the head, as the eval report says it."""
    if ignore:
        return "by index (--ignore-labels)"
    if split.label_map is not None:
        return "matched by name"
    return "by name" if source.label_names is not None and split.class_names is not None else "by index"


def weights_file(source: reader.Pretrained, which: str) -> Path:
    """The file the weights used came from: EMA weights of an exported model sit in model_ema.safetensors."""
    path = Path(source.path)
    ema_file = path.with_name(path.stem + "_ema.safetensors")
    return ema_file if which == "ema" and path.suffix == ".safetensors" and ema_file.is_file() else path


def _weights_used(cfg: RecipeCfg, source: reader.Pretrained) -> str:
    return "ema" if cfg.eval.weights == "ema" and source.ema is not None else "raw"


def inspect(cfg: RecipeCfg, source: reader.Pretrained, out: Path, *, run_dir: Path | None = None,
            images: list[Path] | None = None, split: str | None = None, samples: int = 64,
            log: Reporter | None = None) -> dict:
    """`vit inspect`: the paper's Figures 6 and 7 for a checkpoint, a run's learning curves, inspection.json.

    Attention distance is averaged over the first `samples` images of the split (or over `images`);
    the attention maps show `images`, or the first few images of the split.
    """
    from vitcli.engine.evaluate import inspect_report, internals

    if samples < 1:
        raise RecipeError(f"--samples {samples}: valid: a positive number of images")
    if run_dir is not None and not (Path(run_dir) / "metrics.jsonl").is_file():
        raise RunError(f"RUN {run_dir}: no metrics.jsonl there; give a vit run directory (or only --from CKPT)")
    rt = Runtime.create(cfg.train.device, "fp32", cfg.train.seed)
    log = log or Reporter(enabled=rt.is_main)
    try:
        model, resampled = model_from(cfg, source, log, need_head=False)
        model = model.to(rt.device).eval()
        geom = internals.geometry(model, cfg.model.res)
        # Every input is read before anything is written: a bad image or split leaves no half output.
        shown = inspect_report.from_files(images, cfg) if images else None
        data = None
        if cfg.data.source and (split or not images):
            if not split:  # --data names another source: its own held-out split (an 'auto' split)
                cfg = with_splits(cfg, "eval", log.info)
            data_split = split or cfg.data.eval_split or "test"
            data = inspect_report.from_split(cfg, data_split, samples)
        out = inspect_report.prepare_out(out)
        report = {"checkpoint": str(source.path), "model": describe(cfg.model, model.num_classes)["variant"],
                  "res": list(cfg.model.res), "grid": list(geom.grid), "patch_pixels": list(geom.cell),
                  "hybrid": geom.hybrid, "pool": cfg.model.pool, "posemb_resampled": resampled,
                  "weights": _weights_used(cfg, source), "figures": {}, "skipped": {}}
        if data is not None:
            report["data"] = {"source": cfg.data.source, "split": data_split}
        inspect_report.weights_figures(model, geom, out, report)
        names = source.label_names or (data.class_names if data else None)
        inspect_report.attention_figures(model, geom, data or shown, shown or data, names, out, report)
        if run_dir is not None:
            inspect_report.curves_figure(run_dir, out, report)
        report["json"] = str(inspect_report.write(report, out))
        for key, reason in report["skipped"].items():
            log.info(f"skipped {key}: {reason}")
        return report
    finally:
        rt.close()

"""Evaluators: one contract, `run(model) -> dict[str, float]`, chosen by name from the recipe.

The same objects run periodically inside training (`eval.every`), at its end, and alone for `vit eval`
and `vit fewshot` (zero training steps). Under several processes each rank evaluates its own shard and
the sums are all-reduced, so the numbers equal a single-process evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from vitcli import formats
from vitcli.recipe.config import DataCfg, FewshotCfg, RecipeCfg
from vitcli.data import SourceRef, Split, eval_loader, load_split
from vitcli.data.checks import check_labels, class_counts
from vitcli.engine.evaluate.fewshot import check_shots, extract_features, fewshot_eval
from vitcli.engine.evaluate.labels import align
from vitcli.engine.evaluate.metrics import ClassificationMeter
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.runtime.progress import Reporter, Task
from vitcli.errors import DataError


def _quiet() -> Reporter:
    return Reporter(enabled=False)


def counted(batches, task: Task, world: int, total: int | None):
    """Yield `batches`, advancing `task` by the images of every rank once each batch has been used."""
    seen = 0
    for images, labels in batches:
        yield images, labels
        seen += len(labels) * world  # the ranks' shards differ by one image at most
        task.update(min(seen, total) if total is not None else seen)


@dataclass
class ClassificationEvaluator:
    """Top-1/top-5 accuracy, mean loss, per-class recall and precision and the confusion matrix on one split."""

    split: Split
    data: DataCfg
    res: tuple[int, int]
    batch_size: int
    rt: Runtime
    name: str = "classification"
    per_class: dict[str, float] = field(default_factory=dict)  # top-1 (recall) of each class
    per_class_precision: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] | None = None  # [true][predicted] counts of the last run
    progress: Reporter = field(default_factory=_quiet)
    # model.in_chans: images are read as RGB (3) or grey (1); required, so no caller can forget it
    channels: int = field(kw_only=True)

    def __post_init__(self) -> None:
        check_labels(self.split)  # before training starts, not at its end

    @torch.no_grad()
    def run(self, model: nn.Module) -> dict[str, float]:
        """Evaluate `model` (restoring its train/eval mode afterwards)."""
        was_training = model.training
        model.eval()
        meter = ClassificationMeter(self.split.num_classes)
        start = time.perf_counter()
        total = self.split.num_examples
        with self.progress.task("eval", total) as task:
            loader = eval_loader(self.split, self.data, self.res, self.batch_size, rank=self.rt.rank,
                                 world=self.rt.world, channels=self.channels, device=self.rt.device)
            batches = lockstep(loader, model, self.rt, self.res, self.channels)
            for images, labels in counted(batches, task, self.rt.world, total):
                with self.rt.autocast():
                    logits = model(images.to(self.rt.device, non_blocking=True))
                meter.update(logits.float().cpu(), labels)
        if self.rt.distributed:
            total = meter.to_tensor().to(self.rt.device)
            dist.all_reduce(total)
            meter = ClassificationMeter.from_tensor(total.cpu(), self.split.num_classes)
        seconds = time.perf_counter() - start
        model.train(was_training)
        self.per_class = meter.per_class_top1(self.split.class_names)
        self.per_class_precision = meter.per_class_precision(self.split.class_names)
        self.confusion = meter.confusion()
        return {**meter.compute(), "img_s": meter.images / max(seconds, 1e-9)}


@dataclass
class FewshotEvaluator:
    """The paper's few-shot linear evaluation on frozen pre-logits features, on one or more data sets.

    `run` returns the mean accuracy over seeds as `fewshot/{set}/{k}shot` (plus `..._l2={l}` keys when
    several regularisers are given); the full per-seed results stay in `details` for `vit fewshot`.
    """

    sets: list[tuple[str, Split, Split]]  # (name, train split, test split)
    cfg: FewshotCfg
    data: DataCfg
    res: tuple[int, int]
    rt: Runtime
    name: str = "fewshot"
    log: Callable[[str], object] | None = None  # progress lines (vit fewshot); silent inside training
    details: dict = field(default_factory=dict)
    progress: Reporter = field(default_factory=_quiet)
    # model.in_chans: images are read as RGB (3) or grey (1); required, so no caller can forget it
    channels: int = field(kw_only=True)

    def __post_init__(self) -> None:
        # Labels and class sizes are read from the Arrow columns now: a class too small for the
        # shots asked for fails here, not after a minute of feature extraction (or a whole training run).
        for _, train, test in self.sets:
            check_labels(test)
            counts = class_counts(train)
            if counts is not None and self.cfg.shots:
                check_shots(counts, max(self.cfg.shots), train.class_names)

    def run(self, model: nn.Module) -> dict[str, float]:
        """Extract features once per data set, then solve every shot count and seed from them."""
        out: dict[str, float] = {}
        for set_name, train, test in self.sets:
            train_x, train_y = self._features(model, train, f"features {set_name} {train.split}")
            test_x, test_y = self._features(model, test, f"features {set_name} {test.split}")
            if self.log:
                self.log(f"few-shot {set_name}: {len(train_y):,} train and {len(test_y):,} test images, "
                         f"{train_x.shape[1]:,} features each; solving "
                         f"{formats.plural(len(self.cfg.shots), 'shot count')} x {formats.plural(self.cfg.seeds, 'seed')}")
            result = fewshot_eval(train_x, train_y, test_x, test_y, shots=self.cfg.shots, seeds=self.cfg.seeds,
                                  l2_regs=self.cfg.l2_reg, class_names=train.class_names,
                                  num_classes=train.num_classes)
            self.details[set_name] = result
            for key, value in result.items():
                out[f"fewshot/{set_name}/{key}"] = value["mean"]
        return out

    def describe_sets(self) -> dict[str, dict]:
        """Where each data set came from and its size, for the `vit fewshot` report."""
        return {name: {"source": train.source, "train_split": train.split, "test_split": test.split,
                       "num_classes": train.num_classes, "train_images": train.num_examples,
                       "test_images": test.num_examples} for name, train, test in self.sets}

    def _features(self, model: nn.Module, split: Split, label: str) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = torch.bfloat16 if self.rt.precision == "bf16" else None
        with self.progress.task(label, split.num_examples) as task:
            loader = eval_loader(split, self.data, self.res, self.cfg.batch_size, rank=self.rt.rank,
                                 world=self.rt.world, channels=self.channels, device=self.rt.device)
            batches = counted(lockstep(loader, model, self.rt, self.res, self.channels), task, self.rt.world,
                              split.num_examples)
            feats, labels = extract_features(model, batches, device=self.rt.device, autocast_dtype=dtype)
        if self.rt.distributed:
            parts = [None] * self.rt.world
            dist.all_gather_object(parts, (feats, labels))
            feats = torch.cat([p[0] for p in parts])
            labels = torch.cat([p[1] for p in parts])
        return feats, labels


def lockstep(loader, model: nn.Module, rt: Runtime, res: tuple[int, int], channels: int):
    """Yield the loader's batches; under FSDP2, pad shorter shards with empty batches.

    A sharded model gathers its parameters inside every forward, a collective: if one rank ran out of
    evaluation data while another still had a batch, the other would wait forever. With an uneven
    split (33 images on 2 ranks) the ranks agree each round whether anyone still has data.
    """
    from torch.distributed.tensor import DTensor

    if not rt.distributed or not any(isinstance(p, DTensor) for p in model.parameters()):
        yield from loader
        return
    batches = iter(loader)
    while True:
        batch = next(batches, None)
        more = torch.tensor([0.0 if batch is None else 1.0], device=rt.device)
        dist.all_reduce(more, op=dist.ReduceOp.MAX)
        if not more.item():
            return
        yield batch if batch is not None else (torch.zeros(0, channels, *res), torch.zeros(0, dtype=torch.int64))


_SAME_CLASSES = "give a training and an evaluation split with the same classes"


def eval_split(data: DataCfg, split: str, num_classes: int, names: Sequence[str] | None = None, *,
               ignore: bool = False, whose: str = "the model's head", hint: str | None = None, log=None) -> Split:
    """The split a `num_classes`-way classifier with class names `names` is evaluated on.

    The data's classes are matched to the head's outputs by `labels.align` (by name, or refused).
    """
    s = load_split(data.source, split, image_column=data.image_column, label_column=data.label_column,
                   num_classes=data.num_classes, streaming=data.streaming)
    if s.note and log:
        log(s.note)
    return align(s, num_classes, names, ignore=ignore, whose=whose, hint=hint, log=log)


def build_evaluators(cfg: RecipeCfg, rt: Runtime, num_classes: int, log=None,
                     label_names: Sequence[str] | None = None) -> list:
    """The evaluators a recipe asks for (`eval.evaluators`), with their data loaded once.

    The eval split's classes are matched by name to the training split's (`label_names`).
    """
    evaluators = []
    data = cfg.data
    if "classification" in cfg.eval.evaluators and data.eval_split:
        split = eval_split(data, data.eval_split, num_classes, label_names, whose="the training split",
                           hint=_SAME_CLASSES, log=log.info if log else None)
        evaluators.append(ClassificationEvaluator(split, data, cfg.model.res, cfg.eval.batch_size, rt,
                                                  progress=log or _quiet(), channels=cfg.model.in_chans))
    if "fewshot" in cfg.eval.evaluators:
        evaluators.append(FewshotEvaluator(fewshot_sets(cfg, log.info if log else None), cfg.fewshot, data,
                                           cfg.model.res, rt, progress=log or _quiet(), channels=cfg.model.in_chans))
    return evaluators


def fewshot_sets(cfg: RecipeCfg, log=None) -> list[tuple[str, Split, Split]]:
    """The few-shot data sets of a recipe: `fewshot.datasets`, or the recipe's own train/eval splits;
    `log` gets each split's note (an image folder's counts)."""
    if not cfg.fewshot.datasets:
        d = cfg.data
        name = SourceRef.parse(d.source).name
        entries = [(name, d.source, d.train_split, d.eval_split or "test", d.image_column, d.label_column)]
    else:
        entries = [(e.name, e.source, e.train_split, e.test_split, e.image_column, e.label_column)
                   for e in cfg.fewshot.datasets]
    sets = []
    for name, source, train_split, test_split, image_column, label_column in entries:
        _check_disjoint(name, train_split, test_split)
        kw = dict(image_column=image_column, label_column=label_column)
        train = load_split(source, train_split, **kw)
        # The test split's classes are matched to the training split's by name (its own ClassLabel
        # may list them differently), so a test class outside them is refused rather than
        # silently widening the classifier.
        test = load_split(source, test_split, num_classes=None if train.class_names else train.num_classes, **kw)
        for note in (train.note, test.note):
            if note and log:
                log(note)
        sets.append((name, train, align(test, train.num_classes, train.class_names, whose="the training split",
                                               hint=_SAME_CLASSES)))
    return sets


def _check_disjoint(name: str, train: str, test: str) -> None:
    # Held-out few-shot on one split must slice it both ways ("train[:90%]" / "train[90%:]"): drawing the
    # shots from the whole split would score the classifier on images it may have been fitted on.
    base = lambda s: s.partition("[")[0].strip()
    if base(train) == base(test) and (train.strip() == base(train) or test.strip() == base(test)):
        raise DataError(f"few-shot data set {name!r}: train split {train!r} and test split {test!r} overlap; "
                        f"hold out part of it, e.g. train split '{base(train)}[:90%]' and test split "
                        f"'{base(train)}[90%:]'")


def run_evaluators(evaluators: list, setup, step: int, metrics, log, final: bool, which: str = "both") -> dict:
    """Run every evaluator on the raw (and EMA) weights, log one line each and one metrics row."""
    results: dict[str, float] = {}
    for prefix, model in setup.eval_models(which):
        for evaluator in evaluators:
            for key, value in evaluator.run(model).items():
                results[f"{prefix}{key}"] = value
    if results:
        shown = ", ".join(f"{k} {formats.metric(k, v)}" for k, v in results.items()
                          if not k.endswith(("img_s", "images")))
        log.info(f"{'final ' if final else ''}eval at step {step}: {shown}")
        metrics.write({"step": step, **{f"eval/{k}": v for k, v in results.items()}})
    return results

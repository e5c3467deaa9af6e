"""`vit inspect`: a model's Figures 6 and 7 (and a run's learning curves) as PNGs, plus inspection.json.

The numbers come from `internals.py`, the drawings from `figures.py`; this module picks the images,
runs the model once over them and writes the files. Every figure that cannot be made for this model or
input is left out with a one-line reason in `skipped`, never drawn from made-up data.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from torch import nn

from vitcli import files
from vitcli.formats import plural
from vitcli.recipe.config import RecipeCfg
from vitcli.data import load_split
from vitcli.data.images import DECODE_ERRORS, decode, decode_stored, reason
from vitcli.data.transforms import eval_pil_transform, norm_stats, to_batch
from vitcli.engine.evaluate import figures, internals
from vitcli.engine.persistence.metrics_log import read_rows
from vitcli.errors import DataError, RunError, VitError

log = logging.getLogger(__name__)
SHOWN = 8  # images in the attention-map figure when they come from a data split


@dataclass
class Sample:
    """Images as the model sees them and as a person does, with a caption each."""

    batch: torch.Tensor  # normalised [n, 3, H, W]
    pixels: np.ndarray  # uint8 [n, H, W, 3] at the model's resolution (grey images shown as RGB)
    names: list[str]  # file name or "split[i]"
    labels: list[str | None]  # class name, when the data says
    class_names: list[str] | None = None  # of the split the images came from


def from_files(paths: Sequence[Path], cfg: RecipeCfg) -> Sample:
    """`--images FILE...`: each file decoded (upright, bounded: the one decoder), resized and cropped as for
    evaluation."""
    images = []
    transform = eval_pil_transform(cfg.data, cfg.model.res, cfg.model.in_chans)
    for path in paths:
        try:
            images.append(transform(decode(path)))
        except DECODE_ERRORS as exc:
            raise DataError(f"--images {path}: {reason(exc)}") from None
    return _sample(images, cfg, [Path(p).name for p in paths], [None] * len(images))


def from_split(cfg: RecipeCfg, split: str, count: int) -> Sample:
    """`count` images of a split drawn across its classes in turn, seeded (a rerun shows the same images):
    a folder sorted by class would otherwise give the first class only. A stream gives its first ones."""
    d = cfg.data
    s = load_split(d.source, split, image_column=d.image_column, label_column=d.label_column,
                   num_classes=d.num_classes, streaming=d.streaming)
    ds = s.dataset.cast_column(s.image_column, datasets.Image(decode=False))  # decoded below, bounded
    picked = list(range(count)) if s.num_examples is None else stratified(s.dataset[s.label_column], count)
    rows = itertools.islice(iter(ds), count) if s.num_examples is None else (ds[i] for i in picked)
    transform = eval_pil_transform(d, cfg.model.res, cfg.model.in_chans)
    images, labels = [], []
    for i, row in enumerate(rows):
        try:
            images.append(transform(decode_stored(row[s.image_column])))
        except DECODE_ERRORS as exc:
            raise DataError(f"{s.where}: example {i}: {reason(exc)}") from None
        label = int(row[s.label_column])
        labels.append(s.class_names[label] if s.class_names else str(label))
    sample = _sample(images, cfg, [f"{split}[{i}]" for i in picked], labels)
    sample.class_names = s.class_names
    return sample


def stratified(labels, count: int, seed: int = 0) -> list[int]:
    """Indices of `count` examples taking each class in turn (classes in label order, examples shuffled
    within a class with `seed`), so every class is shown before any is shown twice."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    queues = [list(rng.permutation(by_class[label])) for label in sorted(by_class)]
    picked: list[int] = []
    while len(picked) < count and any(queues):
        for queue in queues:
            if queue and len(picked) < count:
                picked.append(int(queue.pop(0)))
    return picked


def _sample(images: list, cfg: RecipeCfg, names: list[str], labels: list) -> Sample:
    return Sample(batch=to_batch(images, norm_stats(cfg.data, cfg.model.in_chans)),
                  pixels=np.stack([np.asarray(i.convert("RGB")) for i in images]), names=names, labels=labels)


def _note(geom: internals.Geometry) -> str:
    if geom.hybrid:
        return (f"hybrid: a patch is one cell of the ResNet feature map ({geom.grid[0]}x{geom.grid[1]} cells, "
                f"{geom.cell[0]:g} px each)")
    return f"{geom.grid[0]}x{geom.grid[1]} patches of {geom.cell[0]:g}x{geom.cell[1]:g} px"


def weights_figures(model: nn.Module, geom: internals.Geometry, out: Path, report: dict) -> None:
    """Figure 7, left and centre: what the weights alone show."""
    filters = internals.embedding_filters(model)
    note = "a hybrid's patch projection reads ResNet channels, not pixels" if geom.hybrid else ""
    report["figures"]["embedding_filters"] = str(figures.embedding_filters(
        filters["components"], filters["explained_variance"], filters["what"], out / "embedding_filters.png", note))
    report["embedding_filters"] = {"what": filters["what"],
                                   "explained_variance": filters["explained_variance"].tolist(),
                                   "components": filters["components"].tolist()}
    absent = internals.posemb_absent(model)
    if absent:
        report["skipped"]["posemb_similarity"] = absent
        return
    sim = internals.posemb_similarity(model, geom)
    report["figures"]["posemb_similarity"] = str(figures.posemb_similarity(sim, out / "posemb_similarity.png",
                                                                           _note(geom)))
    report["posemb_similarity"] = {"grid": list(geom.grid), "mean": internals.row_column_structure(sim),
                                   "matrix": sim.reshape(geom.patches, geom.patches).tolist()}


def attention_figures(model: nn.Module, geom: internals.Geometry, sample: Sample | None, shown: Sample | None,
                      class_names: list[str] | None, out: Path, report: dict) -> None:
    """Figure 7 (right) over `sample`, and Figure 6 on `shown` (the same images when not given apart)."""
    if sample is None:
        for key in ("attention_distance", "attention_maps"):
            report["skipped"][key] = "needs images: give --data SOURCE (and --split) or --images FILE..."
        return
    summary = internals.attention_pass(model, sample.batch, geom)
    height, width = sample.batch.shape[2:]
    uniform = internals.uniform_distance(geom)
    report["figures"]["attention_distance"] = str(figures.attention_distance(
        summary.distance, summary.images, out / "attention_distance.png", math.hypot(height, width), uniform,
        _note(geom)))
    report["attention_distance"] = {"images": summary.images, "from": sample.names[0].partition("[")[0],
                                    "uniform_pixels": uniform, "pixels": summary.distance.tolist(),
                                    "layer_mean": summary.distance.mean(dim=1).tolist()}
    if shown is not sample:
        summary = internals.attention_pass(model, shown.batch, geom)
    count = min(len(shown.names), SHOWN if shown is sample else len(shown.names))
    predicted = [None] * count
    if summary.logits is not None:
        predicted = [class_names[i] if class_names and i < len(class_names) else str(i)
                     for i in summary.logits[:count].argmax(dim=1).tolist()]
    titles = [f"{label or name}\n-> {pred}" if pred else (label or name)
              for name, label, pred in zip(shown.names, shown.labels, predicted)]
    report["figures"]["attention_maps"] = str(figures.attention_maps(
        shown.pixels[:count], summary.maps[:count], titles, out / "attention_maps.png",
        ("mean of the patch tokens" if not geom.pooled_by_token else "from the class token") + "; " + _note(geom)))
    report["attention_maps"] = [{"image": n, "label": lab, "predicted": p, "rollout": m.tolist()}
                                for n, lab, p, m in zip(shown.names, shown.labels, predicted, summary.maps[:count])]


def curves_figure(run_dir: Path, out: Path, report: dict) -> None:
    """The learning curves of a run directory, from its metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    rows, damaged = read_rows(path)
    if damaged:
        log.warning(f"{path}: {plural(damaged, 'damaged line')} skipped (not a metrics row: torn, junk, or a "
                    "number too large for a float); the learning curves show the other rows")
    report["figures"]["learning_curves"] = str(figures.learning_curves(rows, out / "learning_curves.png",
                                                                       Path(run_dir).name))
    report["learning_curves"] = {"metrics": str(path), "rows": len(rows), "damaged_lines": damaged}


# Every file an inspection writes; a new one removes the previous one's first, so no figure of another
# model (or of an earlier run of this one) stays beside the new inspection.json.
FIGURES = ("embedding_filters", "posemb_similarity", "attention_distance", "attention_maps", "learning_curves")
WRITTEN = (*(f"{name}.{fmt}" for name in FIGURES for fmt in figures.FORMATS), "inspection.json")
_MAX_TAKEN = 1000  # inspect/<name>-2 ... -1000: past that, --out must say where


def default_inspect_dir(name: str, checkpoint: Path) -> Path:
    """`inspect/<name>`, or the first `inspect/<name>-2`, `-3` ... that is free or holds this checkpoint's own
    inspection: two checkpoints of one name (every run's model.safetensors) never share a folder."""
    first = Path("inspect") / name
    for n in range(1, _MAX_TAKEN + 1):
        folder = first if n == 1 else first.with_name(f"{name}-{n}")
        if not os.path.lexists(folder) or _inspected(folder) == Path(checkpoint).resolve():
            return folder
    raise RunError(f"inspect/{name} ... inspect/{name}-{_MAX_TAKEN} all hold other inspections; give --out")


def _inspected(folder: Path) -> Path | None:
    """The checkpoint whose inspection `folder` holds (from its inspection.json), or None."""
    import json

    try:
        data = json.loads(files.read_bytes(folder / "inspection.json", limit=1 << 30))
        return Path(data["checkpoint"]).resolve()
    except (OSError, ValueError, KeyError, TypeError, RecursionError, VitError):
        return None


def clear_previous(out: Path) -> None:
    """Remove what an earlier inspection wrote in `out` (links as links, never their targets)."""
    for name in WRITTEN:
        path = out / name
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)


def prepare_out(out: Path) -> Path:
    """Create the output folder (resolved: a link the user made to a folder is followed); one line naming it
    when it cannot be used."""
    return files.user_dir(out, "--out")


def write(report: dict, out: Path) -> Path:
    """inspection.json: every number behind the figures."""
    path = out / "inspection.json"
    files.write_json(path, report)
    return path

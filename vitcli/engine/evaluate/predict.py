"""`vit predict`: the top-k classes of every image, with the head's class names and probabilities.

Images are prepared exactly as `vit eval` prepares its split (the same evaluation transform, the same
normalisation, the same precision), so the top-1 of a labelled folder is the label `vit eval` scores.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torch.utils.data import DataLoader

from vitcli.data.inputs import ImageInputs, collate
from vitcli.data.transforms import Stats, normalise
from vitcli.engine.runtime.process import Runtime
from vitcli.engine.runtime.progress import Reporter

_WORKERS_FROM = 256  # below this many images, starting worker processes costs more than it saves
_MAX_WORKERS = 4


@torch.no_grad()
def predict(model: nn.Module, inputs: ImageInputs, *, stats: Stats, batch_size: int, top_k: int,
            names: list[str] | None, rt: Runtime, log: Reporter) -> tuple[list[dict], list[dict]]:
    """Predictions for every image that decodes, in input order, and the ones that did not.

    Returns ([{"path", "top": [{"label", "index", "prob"}, ...]}], [{"path", "error"}]).
    """
    model.eval()
    k = max(1, min(top_k, model.num_classes))
    labels = names if names is not None and len(names) == model.num_classes else None
    loader = DataLoader(inputs, batch_size=batch_size, collate_fn=collate, num_workers=_workers(len(inputs)))
    rows: list[dict] = []
    failed: list[dict] = []
    with log.task("predict", len(inputs)) as task:
        done = 0
        for indices, pixels, bad in loader:
            failed += [{"path": inputs.names[i], "error": error} for i, error in bad]
            if pixels is not None:
                with rt.autocast():
                    logits = model(normalise(pixels, stats).to(rt.device, non_blocking=True))
                probs, top = torch.softmax(logits.float(), dim=1).topk(k, dim=1)
                rows += [_row(inputs.names[i], p, t, labels) for i, p, t in zip(indices, probs.cpu(), top.cpu())]
            done += len(indices) + len(bad)
            task.update(done, f"{len(failed)} unreadable" if failed else "")
    return rows, failed


def _row(path: str, probs: torch.Tensor, top: torch.Tensor, labels: list[str] | None) -> dict:
    return {"path": path, "top": [{"label": labels[c] if labels else str(c), "index": c, "prob": p}
                                  for c, p in zip(top.tolist(), probs.tolist())]}


def _workers(n: int) -> int:
    if n < _WORKERS_FROM:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(0, min(_MAX_WORKERS, cpus - 1))

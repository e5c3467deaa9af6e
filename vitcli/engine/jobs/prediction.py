"""`vit predict`: the top-k classes of images given as files, folders or a data source."""

from __future__ import annotations

from vitcli.recipe.config import RecipeCfg
from vitcli.data import load_split
from vitcli.engine.jobs.preamble import checkpoint_record, session
from vitcli.engine.runtime.progress import Reporter
from vitcli.errors import DataError, RecipeError
from vitcli.weights import reader
from vitcli.weights.restore import restore


def predict(cfg: RecipeCfg, source: reader.Pretrained, inputs: list[str], *, split: str | None = None,
            top_k: int = 5, log: Reporter | None = None) -> dict:
    """`vit predict`: top-k class names and probabilities of every image in `inputs`, `eval.batch_size` at once.

    An input is an image file, a folder (searched recursively) or a data source (its `split`, by
    default the one `vit eval` would score). Images that do not decode are listed under "unreadable".
    `top_k` beyond the head's classes means all of them: the results' "top_k" is the number each row has.
    """
    from vitcli.data.transforms import norm_stats
    from vitcli.engine.evaluate.predict import predict as run_predict

    if top_k < 1:
        raise RecipeError(f"--top-k {top_k}: must be at least 1 (the classes shown per image)")
    with session(cfg, log) as (rt, log):
        groups, unreadable = _image_groups(cfg, inputs, split, log)
        model, done = restore(source, cfg.model, weights=cfg.eval.weights, need_head=True, log=log.info)
        model.to(rt.device)
        top_k = min(top_k, model.num_classes)
        rows = []
        for group in (g for g in groups if len(g)):
            got, failed = run_predict(model, group, stats=norm_stats(cfg.data, cfg.model.in_chans),
                                      batch_size=cfg.eval.batch_size, top_k=top_k,
                                      names=source.label_names, rt=rt, log=log)
            rows += got
            unreadable += failed
        return {**checkpoint_record(cfg, model, done), "label_names": source.label_names,
                "top_k": top_k, "images": len(rows), "predictions": rows, "unreadable": unreadable}


def _image_groups(cfg: RecipeCfg, inputs: list[str], split: str | None, log: Reporter) -> tuple[list, list[dict]]:
    """The images to predict, one group per data source and one of the files and folders, and the files
    that could not be read; every input is opened before the model is built."""
    from vitcli.data.inputs import from_files, from_split, is_data_source
    from vitcli.data.splits import default_splits
    from vitcli.data.transforms import eval_pil_transform

    transform = eval_pil_transform(cfg.data, cfg.model.res, cfg.model.in_chans)
    sources = [text for text in inputs if is_data_source(text)]
    groups = []
    for text in sources:
        defaults = default_splits(text) if split is None else None
        chosen = split or defaults.held_out or defaults.only or "train"
        log.info(f"{text}: predicting split {chosen!r}")
        data = load_split(text, chosen, streaming=False)
        if data.note:
            log.info(data.note)
        groups.append(from_split(data, transform))
    files, missing = from_files([t for t in inputs if t not in sources], transform)
    groups.append(files)
    if not any(len(g) for g in groups):
        raise DataError(f"no images to predict in {', '.join(map(repr, inputs))}; give image files, folders "
                        "of images, or a data source (imagefolder:PATH, a parquet folder, a hub id)")
    return groups, [{"path": m.name, "error": m.reason} for m in missing]

"""`vit inspect`: the paper's Figures 6 and 7 for a checkpoint, a run's learning curves, inspection.json."""

from __future__ import annotations

from pathlib import Path

from vitcli.recipe.config import RecipeCfg
from vitcli.engine.jobs.preamble import session, with_splits
from vitcli.engine.persistence import run_figures
from vitcli.engine.runtime.progress import Reporter
from vitcli.errors import RecipeError, RunError
from vitcli.models import describe
from vitcli.weights import reader
from vitcli.weights.restore import restore


MAX_SAMPLES = 1 << 16  # images `vit inspect` averages attention over, all decoded and held at once
# The numbers are patch-by-patch tables (position-embedding similarity, each layer's attention, the rollout,
# the pixel distances): their memory grows with the square of the patches, whatever the batch.
MAX_TABLE_BYTES = 16 * 10**9


def inspect(cfg: RecipeCfg, source: reader.Pretrained, out: Path, *, run_dir: Path | None = None,
            images: list[Path] | None = None, split: str | None = None, samples: int = 64,
            log: Reporter | None = None, fmt: str = "png", dpi: int = 100) -> dict:
    """`vit inspect`: the paper's Figures 6 and 7 for a checkpoint, a run's learning curves, inspection.json.

    Attention distance is averaged over `samples` images of the split drawn across its classes (seeded,
    so a rerun shows the same ones), or over `images`; the attention maps show `images`, or the first
    few of that sample. Figures are `fmt` (png, pdf, svg) at `dpi`. The figures of a vit run's model go
    to the run's trackers too (`run.report_to`: TensorBoard images, MLflow artifacts, W&B images).
    """
    from vitcli.engine.evaluate import figures, inspect_report, internals

    if not 1 <= samples <= MAX_SAMPLES:
        raise RecipeError(f"--samples {samples}: valid: 1 to {MAX_SAMPLES} images (they are held in memory at once)")
    if run_dir is not None and not (Path(run_dir) / "metrics.jsonl").is_file():
        raise RunError(f"RUN {run_dir}: no metrics.jsonl there; give a vit run directory (or only --from CKPT)")
    tracked = run_figures.for_checkpoint(source.path)  # the run's trackers get the figures too
    with session(cfg, log, precision="fp32") as (rt, log):
        model, done = restore(source, cfg.model, weights=cfg.eval.weights, log=log.info)
        model = model.to(rt.device).eval()
        geom = internals.geometry(model, cfg.model.res)
        _check_tables(geom, model, cfg.model.res)
        # Every input is read before anything is written: a bad image or split leaves no half output.
        shown = inspect_report.from_files(images, cfg) if images else None
        cfg, data, data_split = _sample_split(cfg, images, split, samples, log)
        out = inspect_report.prepare_out(out)
        inspect_report.clear_previous(out)
        report = {"checkpoint": str(source.path), "model": describe(cfg.model, model.num_classes)["variant"],
                  "res": list(cfg.model.res), "grid": list(geom.grid), "patch_pixels": list(geom.cell),
                  "hybrid": geom.hybrid, "pool": cfg.model.pool,
                  "posemb_resampled": done.posemb_resampled, "weights": done.weights, "figures": {}, "skipped": {}}
        if data is not None:
            report["data"] = {"source": cfg.data.source, "split": data_split}
        with figures.style(fmt, dpi, keep=tracked.pngs if tracked else None):
            inspect_report.weights_figures(model, geom, out, report)
            names = source.label_names or (data.class_names if data else None)
            inspect_report.attention_figures(model, geom, data or shown, shown or data, names, out, report)
            if run_dir is not None:
                inspect_report.curves_figure(run_dir, out, report)
        if tracked and rt.is_main:  # under torchrun, one process logs
            report["trackers"] = tracked.send("inspect", report["figures"], log.warn)
        report["json"] = str(inspect_report.write(report, out))
        for key, reason in report["skipped"].items():
            log.info(f"skipped {key}: {reason}")
        return report


def _sample_split(cfg: RecipeCfg, images: list[Path] | None, split: str | None, samples: int, log: Reporter):
    """The recipe (its `auto` splits chosen), the first `samples` images of the split inspected and that
    split's name; no images and no name when there is no data source or only `images` were given."""
    from vitcli.engine.evaluate import inspect_report

    if not cfg.data.source or not (split or not images):
        return cfg, None, None
    if not split:  # --data names another source: its own held-out split (an 'auto' split)
        cfg = with_splits(cfg, "eval", log.info)
    data_split = split or cfg.data.eval_split or "test"
    return cfg, inspect_report.from_split(cfg, data_split, samples), data_split


def _check_tables(geom, model, res: tuple[int, int]) -> None:
    """Refuse, before any work, a grid whose patch-by-patch tables cannot fit in memory (MAX_TABLE_BYTES)."""
    from vitcli.formats import si

    blocks = len(getattr(model, "blocks", ())) or 1
    heads = max((int(getattr(m, "num_heads", 1)) for m in model.modules()), default=1)
    per_pair = 4 * (blocks + heads) + 40  # float32 per layer and head, float64 distances and rollout
    need = geom.patches ** 2 * per_pair
    if need > MAX_TABLE_BYTES:
        most = int((MAX_TABLE_BYTES / per_pair) ** 0.5)
        raise RecipeError(f"model.res {res[0]}x{res[1]}: vit inspect at {geom.grid[0]}x{geom.grid[1]} = "
                          f"{geom.patches} patches needs {si(need, 'B')} for its patch-by-patch tables (attention per "
                          f"layer, rollout, position-embedding similarity), more than the {si(MAX_TABLE_BYTES, 'B')} "
                          f"it allows; valid: at most {most} patches (a lower --res)")

"""What the CLI prints as tables: the model zoo, recipes, eval, few-shot and sweep results. No torch here.

Numbers read the same in every table (`vitcli.formats`): accuracies as percentages, counts whole.
"""

from __future__ import annotations

from rich.table import Table

from vitcli.recipe import schema
from vitcli.errors import RecipeError, VitError
from vitcli.cli.output import plain
from vitcli.formats import percent, plural
from vitcli.models.variants import count_params, grid, macs, seq_len, zoo


def zoo_rows(res: str) -> list[dict]:
    """One dict per zoo variant: architecture, parameters (1000-class head), tokens and GFLOPs at `res`."""
    size = schema.coerce(res, tuple[int, int], "--res", "res")
    rows, first_error = [], None
    for v in zoo():
        row = {"name": v.name, "layers": v.depth, "width": v.width, "mlp": v.mlp_dim, "heads": v.heads,
               "patch": v.patch, "params": count_params(v, num_classes=1000), "seq_len": None, "gflops": None,
               "res": list(size)}
        try:
            grid(v, size)
            row.update(seq_len=seq_len(v, size), gflops=2 * macs(v, size) / 1e9)
        except VitError as exc:  # e.g. 384 px suits patch 16 and 32 but not 14: show the row, not the cost
            first_error = first_error or exc
        rows.append(row)
    if all(r["seq_len"] is None for r in rows):
        raise RecipeError(f"--res {res}: fits no variant of the zoo ({first_error})")
    return rows


def zoo_table(rows: list[dict]) -> Table:
    """The zoo as a Rich table."""
    table = Table(title=f"ViT model zoo at {_res(rows[0]['res'])} px", header_style="bold")
    for col in ("name", "layers", "width", "MLP", "heads", "patch", "params (M)", "seq len", "GFLOPs"):
        table.add_column(col, justify="left" if col == "name" else "right", no_wrap=col == "name")
    for r in rows:
        table.add_row(r["name"], str(r["layers"]), str(r["width"]), str(r["mlp"]), str(r["heads"]), str(r["patch"]),
                      f"{r['params'] / 1e6:.1f}", str(r["seq_len"] or "-"),
                      f"{r['gflops']:.1f}" if r["gflops"] else "-")
    if any(r["gflops"] is None for r in rows):
        table.caption = "-: the resolution is not a multiple of that variant's patch size"
    return table


_PER_CLASS_SHOWN = 20  # rows of per-class accuracy in the table; --json has them all



def recipe_table(rows: list[dict], folder: str) -> Table:
    """The shipped recipes: the name every command accepts, and what each is for."""
    table = Table(title="shipped recipes (give the name, or the file, to any command)", header_style="bold",
                  caption=plain(f"files: {folder}/NAME.yaml"))
    table.add_column("name", no_wrap=True)
    table.add_column("what")
    for row in rows:
        table.add_row(plain(row["name"]), plain(row["about"]))
    return table


def _res(res: list[int]) -> str:
    return str(res[0]) if res[0] == res[1] else f"{res[0]}x{res[1]}"


def eval_table(results: dict) -> Table:
    """`vit eval` results: the summary, then per-class top-1 and precision (the weakest classes first when
    many), then where the confusion-matrix PNG went."""
    table = Table(title=plain(f"eval of {results['checkpoint']} ({results['weights']} weights)"),
                  header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("model", results["model"]), ("data", f"{results['data']} [{results['split']}]"),
            ("resolution", _res(results["res"])), ("weights", results["weights"]),
            ("position embeddings", f"resampled {results['posemb_resampled']}" if results["posemb_resampled"]
             else "as trained"),
            ("labels", results["labels"]), ("images", f"{results['images']:,}"), ("top-1", _pct(results["top1"])), ("top-5", _pct(results["top5"])),
            ("loss", f"{results['loss']:.4f}"), ("images/s", f"{results['img_s']:.1f}")]
    for name, value in rows:
        table.add_row(name, plain(str(value)))  # paths and splits hold [brackets]
    per_class = results["per_class_top1"]
    shown = per_class.items()
    if len(per_class) > _PER_CLASS_SHOWN:
        shown = sorted(shown, key=lambda item: item[1])[:_PER_CLASS_SHOWN]
        table.caption = f"the {_PER_CLASS_SHOWN} weakest of {len(per_class)} classes; --json lists all"
    table.add_section()
    for name, acc in shown:
        table.add_row(plain(f"top-1 {name}"), _pct(acc))
    precision = results.get("per_class_precision", {})
    table.add_section()
    for name, _ in shown:  # the same classes (0 for one never predicted)
        table.add_row(plain(f"precision {name}"), _pct(precision.get(name, 0.0)))
    matrix = results.get("confusion_matrix") or {}
    drawn = next((matrix[fmt] for fmt in ("png", "pdf", "svg") if fmt in matrix), None)
    if drawn:
        table.add_section()
        table.add_row("confusion matrix", plain(drawn))
    _tracker_rows(table, results)
    return table


def _tracker_rows(table: Table, results: dict) -> None:
    """Where the figures were logged besides --out: the run's trackers (run.report_to)."""
    for name, where in (results.get("trackers") or {}).items():
        table.add_row(f"logged to {name}", plain(where))


def fewshot_table(results: dict) -> Table:
    """Mean and standard deviation over seeds, one row per data set, shot count (and l2 when several)."""
    several_l2 = len(results["l2_reg"]) > 1
    title = (f"few-shot linear evaluation of {results['checkpoint']} ({results['weights']} weights, "
             f"{results['features']} features, {plural(results['seeds'], 'seed')}, {_res(results['res'])} px)")
    table = Table(title=plain(title), header_style="bold")
    for col in ("data set", "shots", "l2", "top-1 mean", "std", "per seed"):
        table.add_column(col, justify="left" if col == "data set" else "right")
    for name, per_shot in results["results"].items():
        for key, value in per_shot.items():
            if several_l2 and "_l2=" not in key:
                continue  # the bare "{k}shot" entry repeats the first l2 value's row
            seeds = " ".join(f"{100 * acc:.1f}" for acc in value["seeds"])
            table.add_row(plain(name), key.partition("shot")[0], f"{value['l2']:g}", _pct(value["mean"]),
                          f"{100 * value['std']:.2f}", seeds)
    return table


def predict_table(results: dict) -> Table:
    """`vit predict` results: one row per image, its top class and probability, then the runners-up."""
    paths = [row["path"] for row in results["predictions"]]
    base = _common_folder(paths)
    under = f" under {base}" if base else ""
    table = Table(title=plain(f"predictions of {results['checkpoint']} ({results['images']:,} image{'' if results['images'] == 1 else 's'}{under})"),
                  header_style="bold")
    for col in ("image", "top-1", "prob", f"next {results['top_k'] - 1}" if results["top_k"] > 1 else None):
        if col is not None:
            table.add_column(col, justify="right" if col == "prob" else "left")
    for row in results["predictions"]:
        first, *rest = row["top"]
        shown = row["path"][len(base):].lstrip("/") if base else row["path"]
        cells = [plain(shown), plain(first["label"]), f"{first['prob']:.3f}"]
        if results["top_k"] > 1:
            cells.append(plain(", ".join(f"{t['label']} {t['prob']:.3f}" for t in rest)))
        table.add_row(*cells)
    if results["unreadable"]:
        table.caption = f"{len(results['unreadable'])} unreadable (listed below)"
    return table


def _common_folder(paths: list[str]) -> str:
    """The folder all paths lie under ('' when none, or for one image), so table rows stay short."""
    import os

    files = [p for p in paths if os.sep in p]
    if len(files) < 2 or len(files) != len(paths):
        return ""
    try:
        return os.path.commonpath([os.path.dirname(p) for p in files])
    except ValueError:  # absolute and relative paths mixed
        return ""


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def write_predictions_csv(path, predictions: list[dict], top_k: int) -> None:
    """Predictions as CSV: path, then label/prob pairs for ranks 1..k (written atomically, or through to
    /dev/stdout). Text cells come from file names and a checkpoint's class names, so a cell that a
    spreadsheet would run as a formula (`=HYPERLINK(...)`, `+cmd|...`, `@SUM(...)`) gets a leading `'`,
    as OWASP's rule for CSV injection says; names keep their bytes whatever the locale."""
    import csv
    import io

    from vitcli.files import user_file

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["path", *(f"{kind}_{r}" for r in range(1, top_k + 1) for kind in ("label", "prob"))])
    for row in predictions:
        writer.writerow([_cell(row["path"]),
                         *(v for t in row["top"] for v in (_cell(t["label"]), f"{t['prob']:.6f}"))])
    user_file(path, text.getvalue().encode("utf-8", "surrogateescape"), "--csv")


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def inspect_summary(report: dict) -> dict:
    """`vit inspect` results without the big arrays (those stay in inspection.json)."""
    keep = ("checkpoint", "model", "res", "grid", "patch_pixels", "hybrid", "pool", "weights", "data", "figures",
            "skipped", "json", "trackers")
    summary = {k: report[k] for k in keep if k in report}
    if "embedding_filters" in report:
        f = report["embedding_filters"]
        summary["embedding_filters"] = {"what": f["what"], "explained_variance": f["explained_variance"]}
    if "posemb_similarity" in report:
        summary["posemb_similarity"] = report["posemb_similarity"]["mean"]
    if "attention_distance" in report:
        d = report["attention_distance"]
        summary["attention_distance"] = {"images": d["images"], "uniform_pixels": d["uniform_pixels"],
                                         "layer_mean": d["layer_mean"], "pixels": d["pixels"]}
    return summary


def inspect_table(summary: dict) -> Table:
    """What `vit inspect` wrote, and the numbers that answer the paper's questions at a glance."""
    table = Table(title=plain(f"inspection of {summary['checkpoint']}"), header_style="bold")
    table.add_column("item")
    table.add_column("value")
    table.add_row("model", plain(f"{summary['model']} at {_res(summary['res'])} px, "
                                  f"{summary['grid'][0]}x{summary['grid'][1]} patches"
                                  + (" (ResNet feature-map cells)" if summary["hybrid"] else "")))
    if "posemb_similarity" in summary:
        m = summary["posemb_similarity"]
        table.add_row("position embeddings", f"mean cosine similarity: same row {m['same_row']:.3f}, same column "
                                             f"{m['same_column']:.3f}, elsewhere {m['elsewhere']:.3f}")
    if "attention_distance" in summary:
        d = summary["attention_distance"]
        shown = ", ".join(f"{v:.1f}" for v in d["layer_mean"])
        table.add_row("attention distance", f"mean px per layer ({d['images']} images): {shown} "
                                            f"(uniform attention: {d['uniform_pixels']:.1f})")
    table.add_section()
    for name, path in summary["figures"].items():
        table.add_row(name, plain(path))
    table.add_row("numbers", plain(summary["json"]))
    for name, reason in summary["skipped"].items():
        table.add_row(f"skipped {name}", plain(reason))
    _tracker_rows(table, summary)
    return table


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else percent(value)


def sweep_table(summary: dict) -> Table:
    """The lr sweep as a Rich table: one row per learning rate (minival), then the final model (test)."""
    final = summary["final"]
    test = final.get("test_split") or "test"
    whole = summary.get("minival_of") or summary["train_split"].partition("[")[0]
    table = Table(title=f"lr sweep in {summary['out']} (lr-*/, final/): chosen on {summary['minival_split']}, "
                        f"{summary['minival_fraction']:.0%} of {whole}", header_style="bold")
    for col in ("lr", "trained on", "minival top-1", "minival loss", f"{test} top-1", "steps", ""):
        table.add_column(col, justify="left" if col in ("trained on", "") else "right")
    for row in summary["sweep"]:
        chosen = row["lr"] == summary["best_lr"]
        kept = chosen and not summary["retrained"]
        table.add_row(f"{row['lr']:g}", summary["train_split"], _pct(row["minival_top1"]), _num(row["minival_loss"]),
                      _pct(final.get("test_top1")) if kept else "-", str(row.get("steps", "")),
                      ("chosen, kept" if kept else "chosen") if chosen else "")
    if summary["retrained"]:
        images = final.get("train_examples")
        table.add_row(f"{final['lr']:g}", final["train_split"] + (f" ({images})" if images else ""), "-", "-",
                      _pct(final.get("test_top1")), str(final.get("steps", "")), "final")
    # A --no-retrain sweep's final row says why it is not the paper's protocol (sweep.json keeps it too).
    table.caption = summary["choice"] + (f"; retrained on all of {whole}" if summary["retrained"]
                                         else f"; --no-retrain: {final['not_retrained']}")
    return table

"""A Hugging Face model card (README.md) for every run and every export: YAML metadata that the hub and
`huggingface_hub.ModelCard` read (library, tags, datasets, metrics, model-index results), then what the
model is, what it was trained on, its results, its intended use and the command that reproduces it.

The metadata is written by `huggingface_hub.ModelCardData` itself, so it is the hub's own format.
"""

from __future__ import annotations

from pathlib import Path

from vitcli.files import atomic_write

_TASK = "image-classification"


def write_model_card(out: Path, *, name: str, model: dict | None, recipe: dict | None, results: dict | None,
                     label_names: list[str] | None, command: str | None, library: str = "timm",
                     note: str | None = None) -> Path:
    """Write `out/README.md`; every argument may be missing (a checkpoint from elsewhere describes less)."""
    text = card_text(name=name, model=model, recipe=recipe, results=results, label_names=label_names,
                     command=command, library=library, note=note)
    path = Path(out) / "README.md"
    # A name in another encoding (an --out folder named in Latin-1) holds surrogates: written escaped.
    atomic_write(path, lambda f: f.write(text.encode("utf-8", "backslashreplace")))
    return path


def card_text(*, name: str, model: dict | None, recipe: dict | None, results: dict | None,
              label_names: list[str] | None, command: str | None, library: str = "timm",
              note: str | None = None) -> str:
    """The card's text: `---` metadata `---`, then the sections."""
    data = (recipe or {}).get("data") or {}
    metadata = _metadata(name, data, results, library)
    body = [f"# {name}", "", _about(model), ""]
    if note:
        body += [note, ""]
    body += _training(recipe) + _data(data, label_names) + _results(results, data)
    body += ["## Intended use", "",
             "Research and experiments with Vision Transformers: image classification of the classes listed "
             "above, on images like those of its training data, prepared as its `config.json`'s "
             "`pretrained_cfg` says. It was evaluated only as reported here; check it on your own data "
             "before relying on it, and do not use it for decisions about people.", ""]
    if command:
        body += ["## Reproduce", "", "```bash", command, "```", "",
                 "The resolved recipe (every setting, defaults included) is the run's `recipe.yaml`.", ""]
    return f"---\n{metadata}---\n\n" + "\n".join(body)


def _metadata(name: str, data: dict, results: dict | None, library: str) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    source = data.get("source")
    hub_id = source if isinstance(source, str) and _is_hub_id(source) else None
    evals = None
    if results and isinstance(results.get("top1"), (int, float)) and source:
        evals = [EvalResult(task_type=_TASK, dataset_type=str(source), dataset_name=str(source),
                            dataset_split=str(data.get("eval_split") or "test"), metric_type="accuracy",
                            metric_name="top-1 accuracy", metric_value=float(results["top1"]))]
    card = ModelCardData(library_name=library, pipeline_tag=_TASK, model_name=name, eval_results=evals,
                         tags=[_TASK, "vision-transformer", "vit", "vitcli"], metrics=["accuracy"],
                         datasets=[hub_id] if hub_id else None)
    return card.to_yaml() + "\n"


def _is_hub_id(source: str) -> bool:
    return source.count("/") == 1 and not source.startswith((".", "/", "~")) and ":" not in source


def _about(model: dict | None) -> str:
    if not model:
        return "A Vision Transformer image classifier."
    return (f"A Vision Transformer, {model.get('variant', model.get('name'))}, {model.get('heads')} heads, patch "
            f"{model.get('patch')}, at {'x'.join(map(str, model.get('res', [])))} px with {model.get('num_classes')} "
            "classes, "
            f"{model.get('pool')} pooling, made with `vit` (vitcli) on timm's modules and key names: "
            "`timm.create_model('local-dir:PATH', pretrained=True)` loads it.")


def _training(recipe: dict | None) -> list[str]:
    if not recipe:
        return []
    train, optim, schedule = recipe.get("train") or {}, recipe.get("optim") or {}, recipe.get("schedule") or {}
    length = next((f"{train[k]} {k}" for k in ("steps", "epochs", "examples") if train.get(k)), "see recipe")
    return ["## Training", "",
            f"- optimiser: {optim.get('name')}, lr {optim.get('lr')}, weight decay {optim.get('weight_decay')}",
            f"- schedule: {schedule.get('warmup_steps')} warm-up steps, {schedule.get('decay')} decay",
            f"- batch {train.get('batch_size')}, {length}, {train.get('precision')}, seed {train.get('seed')}",
            f"- initialised from: {train.get('init_from') or 'random (trained from scratch)'}", ""]


def _data(data: dict, label_names: list[str] | None) -> list[str]:
    lines = []
    if data.get("source"):
        lines += ["## Data", "", f"- source: `{data['source']}`, trained on split `{data.get('train_split')}`, "
                  f"evaluated on `{data.get('eval_split')}`"]
    if label_names:
        shown = ", ".join(label_names[:20]) + (f", ... ({len(label_names)} in all)" if len(label_names) > 20 else "")
        lines += ([] if lines else ["## Data", ""]) + [f"- classes: {shown}"]
    return lines + [""] if lines else []


def _results(results: dict | None, data: dict) -> list[str]:
    if not results:
        return []
    rows = [(k, v) for k, v in results.items() if k in ("top1", "top5", "loss", "images", "steps")]
    if not rows:
        return []
    split = data.get("eval_split") or "its evaluation split"
    return ["## Results", "", f"On `{data.get('source')}` split `{split}`:", "", "| metric | value |", "|---|---|",
            *(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in rows), ""]

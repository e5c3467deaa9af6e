"""`vit export`: a checkpoint written in the formats other tools read (timm, transformers, ONNX).

What a format cannot hold is left out and named in one line, or, when nothing useful would remain,
refused: timm's ViT has no tanh pre-logits layer (the backbone is written without it and its head);
transformers' classifier reads the class token without the pooler, so a head on a pre-logits layer
cannot follow it (the pre-logits layer is written as the pooler of a `ViTModel`); transformers' ViT has
no GAP and no ResNet hybrid. ONNX holds the whole model. torchvision's VisionTransformer is the paper's
plain class-token ViT (its `heads.pre_logits` is the tanh layer). Everything is written into a folder
beside `out`, renamed to `out` once complete (`files.new_dir`).
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import torch

from vitcli.errors import CheckpointError, RecipeError
from vitcli.recipe.config import DataCfg, ModelCfg, RecipeCfg
from vitcli.files import atomic_write, check_regular, new_dir, read_bytes, write_json
from vitcli.models import describe
from vitcli.models.positions import not_in_timm, not_in_transformers
from vitcli.models.vit import EXTRAS, TIMM_EPS
from vitcli.weights import hf, layouts, remote
from vitcli.weights.arch import model_cfg
from vitcli.weights.model_card import write_model_card
from vitcli.weights.run_model import norm_values, timm_config
from vitcli.weights.reader import LABEL_NAMES, Pretrained
from vitcli.weights.restore import restore
from vitcli.weights.serialization import write_safetensors

FORMATS = ("timm", "hf", "onnx", "torchvision")
_PIL_BILINEAR = 2  # transformers' image processors take PIL resampling codes


def default_export_dir(text: str, source: Pretrained, fmt: str) -> Path:
    """Beside the checkpoint (`runs/demo` -> `runs/demo-hf`); in the current directory for hub names."""
    if remote.is_hub_name(text):
        return Path(f"{remote.repo_of(text)[0].replace('/', '--')}-{fmt}")
    path = Path(text)
    base = path.parent if path.is_file() and path.name in ("model.safetensors", "pytorch_model.bin") else path
    return base.parent / f"{base.stem if base.is_file() else base.name}-{fmt}"


def _model(source: Pretrained, weights: str) -> tuple[torch.nn.Module, dict, dict[str, torch.Tensor]]:
    """The model the checkpoint describes, its description and the weights to write (those the model holds)."""
    desc = source.model
    if desc is None:
        raise CheckpointError(f"{source.path}: the checkpoint does not say which model it is; export a vit run "
                              "or a checkpoint in a format that describes itself")
    # A description may leave a field null for eval, which takes it from the recipe; an export writes the
    # model as described, so every dimension must be there.
    missing = [k for k in ("res", "width", "depth", "heads", "mlp_dim", "num_classes") if desc.get(k) is None]
    if missing:
        raise CheckpointError(f"{source.path}: the model description (config.json's vit_model) gives no "
                              f"{', '.join(missing)}; export a vit run whose config.json is complete")
    model, done = restore(source, _checked(model_cfg(desc), source), weights=weights)
    if (done.num_classes, model.representation_size or None) != (desc["num_classes"],
                                                                 desc.get("representation_size") or None):
        raise CheckpointError(f"{source.path}: the weights do not fit the model the checkpoint describes (a head "
                              f"of {done.num_classes} classes and pre-logits width {model.representation_size}, "
                              f"described: {desc['num_classes']} and {desc.get('representation_size')})")
    # What the model does not hold (a raw checkpoint's masked-patch parts) is not written either.
    state = {k: v for k, v in source.weights(weights).items() if k not in done.not_loaded}
    return model.eval(), desc, state


def export(source: Pretrained, fmt: str, out: Path, *, weights: str = "ema") -> dict:
    """Write `source` as `fmt` ("timm", "hf", "onnx") into the new directory `out`; return what was written."""
    if fmt not in FORMATS:
        raise CheckpointError(f"--format {fmt!r}: valid: {', '.join(FORMATS)}")
    if weights not in ("ema", "raw"):
        raise CheckpointError(f"--weights {weights!r}: valid: 'ema', 'raw'")
    model, desc, state = _model(source, weights)
    data = _stored_data(source, desc.get("in_chans", 3))
    writer = {"timm": _timm, "hf": _hf, "onnx": _onnx, "torchvision": _torchvision}[fmt]
    library = {"timm": "timm", "hf": "transformers", "onnx": "onnx", "torchvision": "pytorch"}[fmt]
    # Written into a folder beside `out` and renamed at the end: a kill or a failure leaves no half export.
    with new_dir(out, "--out") as folder:
        files, dropped = writer(model, desc, state, source.label_names, data, folder)
        write_model_card(folder, name=out.name, model=desc, recipe=source.recipe, results=_run_results(source),
                         label_names=source.label_names, command=None, library=library,
                         note=f"Exported by `vit export --format {fmt}` from `{source.path}`"
                              + (f"; not carried: {_listed(dropped)}." if dropped else "."))
    files = [*files, "README.md"]
    return {"out": str(out), "format": fmt, "source": str(source.path),
            "weights": "ema" if weights == "ema" and source.ema is not None else "raw",
            "files": files, "not_carried": dropped}


def _listed(dropped) -> str:
    """What a writer did not carry: one sentence, or several joined (writers return either)."""
    return dropped if isinstance(dropped, str) else "; ".join(dropped)


def _checked(cfg: ModelCfg, source: Pretrained) -> ModelCfg:
    """The model a checkpoint describes, through the recipe layer's range checks before it is built: a
    described res of 168508 (a damaged config.json) is one line, not a 227 GB allocation."""
    from vitcli.recipe import ranges

    try:
        ranges.check(RecipeCfg(model=cfg), str(source.path))
    except RecipeError as exc:
        raise CheckpointError(str(exc)) from None
    return cfg


_EXPORTED_DATA = ("norm", "mean", "std", "eval_crop")  # what an export writes of the run's data section


def _stored_data(source: Pretrained, channels: int) -> DataCfg:
    """The preprocessing the run's stored recipe records, read through the recipe layer (schema and ranges)
    as every other recipe is: a damaged recipe.json or config.json (`data.norm: "weird"`, a text mean, a
    zero std) is one line naming the checkpoint, never a KeyError or a broken config in the export."""
    from vitcli import recipe

    raw = (source.recipe or {}).get("data") or {}
    fields = {key: raw[key] for key in _EXPORTED_DATA if key in raw}
    try:
        return recipe.from_data({"data": fields, "model": {"in_chans": channels}}, str(source.path)).data
    except RecipeError as exc:
        raise CheckpointError(str(exc)) from None


def _run_results(source: Pretrained) -> dict | None:
    """The final results of the vit run a checkpoint came from (its results.json), when there is one."""
    folder = source.path if source.path.is_dir() else source.path.parent
    path = folder / "results.json"
    if not check_regular(path, follow=False):
        return None
    try:
        data = json.loads(read_bytes(path, limit=1 << 20))
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return None
    top1 = data.get("top1", 0.0)
    if not (type(top1) in (int, float) and 0 <= top1 <= 1):
        # The model card would publish it as the model's accuracy: 5, true or NaN is damage, not a result.
        logging.getLogger("vitcli.weights").warning(
            f"{path}: top1 {str(top1)[:20]} is not an accuracy in [0, 1] (damaged or hand-edited); the model card "
            "reports no results")
        return None
    return data


def _headless(desc: dict, state: dict) -> tuple[dict, dict]:
    """The description and weights without the pre-logits layer and the head on it."""
    keep = {k: v for k, v in state.items() if not k.startswith(("pre_logits.", "head."))}
    return describe(model_cfg(desc, representation_size=None), 0), keep


def _timm(model, desc, state, labels, data, out: Path) -> tuple[list[str], str | None]:
    missing = not_in_timm(desc)
    if missing:
        raise CheckpointError(f"--format timm: {missing} cannot be carried: timm's ViT has no such position "
                              "embedding; export --format onnx")
    dropped = []
    if desc["representation_size"]:
        desc, state = _headless(desc, state)
        labels = None
        dropped.append("the tanh pre-logits layer and the head on it: timm's ViT has no pre-logits layer, so the "
                       "backbone is written headless (num_classes 0)")
    eps = desc.get("norm_eps", TIMM_EPS)
    if eps != TIMM_EPS:
        dropped.append(f"LayerNorm eps {eps:g}: timm's config.json cannot name it, so timm runs the model at "
                       f"{TIMM_EPS:g} (config.json's vit_model keeps {eps:g} for vit)")
    meta = {"format": "pt", "producer": "vitcli"}
    if labels is not None:
        meta[LABEL_NAMES] = json.dumps(labels)
    write_safetensors(out / "model.safetensors", state, meta)
    write_json(out / "config.json", {**timm_config(desc, data, labels), "vit_model": desc})
    return ["model.safetensors", "config.json"], "; ".join(dropped) or None


def _hf(model, desc, state, labels, data, out: Path) -> tuple[list[str], str | None]:
    if desc["pool"] != "token":
        raise CheckpointError("--format hf: a GAP model (no class token) cannot be carried: transformers' ViT "
                              "always pools the class token; export --format timm or onnx")
    if desc.get("hybrid"):
        raise CheckpointError("--format hf: the R50 hybrid cannot be carried: transformers' ViT has no ResNet "
                              "backbone; export --format timm or onnx")
    missing = not_in_transformers(desc)
    if missing:
        raise CheckpointError(f"--format hf: {missing} cannot be carried: transformers' ViT has one learned "
                              "position table, added after the stem; export --format onnx")
    extra = next((k for k in EXTRAS if k in desc), None)
    if extra is not None:
        raise CheckpointError(f"--format hf: model.{extra} cannot be carried: transformers' ViT has no such part; "
                              "export --format timm or onnx")
    dropped = None
    if desc["representation_size"] and desc["num_classes"]:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        desc, labels = {**desc, "num_classes": 0}, None
        dropped = ("the head: transformers' classifier reads the class token without the pooler, so it cannot "
                   "follow the pre-logits layer; written as a ViTModel whose pooler is the pre-logits layer")
    elif not desc["representation_size"] and not desc["num_classes"]:
        dropped = "nothing, but transformers adds a random pooler to a ViTModel without one: use last_hidden_state"
    pooler = bool(desc["representation_size"])
    tensors = hf.from_timm(state, desc["depth"], "vit." if desc["num_classes"] else "")
    write_safetensors(out / "model.safetensors", tensors, {"format": "pt"})
    write_json(out / "config.json", hf.hf_config(desc, labels, pooler))
    mean, std = norm_values(data, desc.get("in_chans", 3))
    height, width = desc["res"]
    write_json(out / "preprocessor_config.json", {
        "image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": height, "width": width},
        "resample": _PIL_BILINEAR, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": mean, "image_std": std})
    return ["model.safetensors", "config.json", "preprocessor_config.json"], dropped


def _torchvision(model, desc, state, labels, data, out: Path) -> tuple[list[str], str | None]:
    """model.pth for torchvision's VisionTransformer, and config.json with its constructor's arguments."""
    if not desc["num_classes"]:
        raise CheckpointError("--format torchvision: a headless backbone cannot be carried: torchvision's "
                              "VisionTransformer always has a head; export --format timm or onnx")
    plain = {"pool": "token", "hybrid": None, "norm_eps": TIMM_EPS}  # torchvision's LayerNorms use 1e-6
    refused = next((f"model.{k} {desc.get(k)!r}" for k, v in plain.items() if desc.get(k, v) != v), None)
    refused = refused or not_in_transformers(desc) or next((f"model.{k}" for k in EXTRAS if k in desc), None)
    if refused is not None:
        raise CheckpointError(f"--format torchvision: {refused} cannot be carried: torchvision's VisionTransformer "
                              "is the paper's plain class-token ViT; export --format timm or onnx")
    buffer = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in layouts.to_torchvision(state).items()}, buffer)
    atomic_write(out / "model.pth", lambda f: f.write(buffer.getvalue()))
    mean, std = norm_values(data, desc.get("in_chans", 3))
    height, width = desc["res"]
    write_json(out / "config.json", {
        "torchvision_VisionTransformer": {
            "image_size": height, "patch_size": desc["patch"], "num_layers": desc["depth"],
            "num_heads": desc["heads"], "hidden_dim": desc["width"], "mlp_dim": desc["mlp_dim"],
            "num_classes": desc["num_classes"], "representation_size": desc["representation_size"]},
        "in_chans": desc.get("in_chans", 3), "mean": mean, "std": std, LABEL_NAMES: labels})
    dropped = None if height == width else "nothing, but torchvision's ViT takes square images only"
    if desc.get("in_chans", 3) != 3:
        dropped = ("nothing, but torchvision builds conv_proj with 3 input channels: replace it with "
                   f"Conv2d({desc['in_chans']}, hidden_dim, patch_size, stride=patch_size) before loading")
    return ["model.pth", "config.json"], dropped


def _onnx(model, desc, state, labels, data, out: Path) -> tuple[list[str], str | None]:
    height, width = desc["res"]
    buffer = io.BytesIO()
    output = "logits" if desc["num_classes"] else "features"
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of torch.export's, which needs onnxscript
            # and took 24 s against 1.8 s here for a 2-block model; both give the same graph for a ViT.
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, desc.get("in_chans", 3), height, width),), buffer, dynamo=False,
                              input_names=["pixel_values"], output_names=[output],
                              dynamic_axes={"pixel_values": {0: "batch"}, output: {0: "batch"}})
    except (ImportError, torch.onnx.OnnxExporterError) as exc:
        raise CheckpointError(f"--format onnx needs the onnx package ({exc}); install it with "
                              "pip install 'vitcli[export]'") from None
    atomic_write(out / "model.onnx", lambda f: f.write(buffer.getvalue()))
    write_json(out / "config.json", {**timm_config(desc, data, labels), "vit_model": desc,
                                     "onnx": {"input": "pixel_values", "output": output}})
    return ["model.onnx", "config.json"], None

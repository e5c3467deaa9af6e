"""What a run leaves for other tools: final weights with timm's key names and a config.json.

The config.json is a timm hub config (architecture, model_args, pretrained_cfg, label_names), so
`timm.create_model("local-dir:RUN", pretrained=True)` and timm's inference script use a run as they
use any hub model; `vit_model` and `vit_recipe` let vit rebuild it exactly. `vit export` (convert.py)
writes the other formats from these files.
"""

from __future__ import annotations

import json
from pathlib import Path

from vitcli.recipe.config import DataCfg, norm_stats
from vitcli.files import write_json
from vitcli.models.masked import is_pretraining_key
from vitcli.models.positions import not_in_timm
from vitcli.models.vit import TIMM_EPS
from vitcli.weights.reader import LABEL_NAMES
from vitcli.weights.serialization import write_safetensors

def norm_values(data: DataCfg | dict, channels: int = 3) -> tuple[list[float], list[float]]:
    """The per-channel (mean, std) a run normalised with (`recipe.config.norm_stats`), as lists."""
    get = (lambda k, d: getattr(data, k)) if isinstance(data, DataCfg) else (lambda k, d: data.get(k, d))
    mean, std = norm_stats(get("norm", "paper"), get("mean", None), get("std", None), channels)
    return list(mean), list(std)


def pretrained_cfg(desc: dict, data: DataCfg | dict, label_names: list[str] | None) -> dict:
    """timm's pretrained_cfg of a vit model: the preprocessing that vit's own evaluation applies.

    vit evaluates by resizing to res / eval_crop (bilinear, aspect kept) and centre-cropping res,
    which is timm's crop_pct with crop_mode "center".
    """
    channels = desc.get("in_chans", 3)
    mean, std = norm_values(data, channels)
    height, width = desc["res"]
    crop = data.eval_crop if isinstance(data, DataCfg) else data.get("eval_crop", 1.0)
    cfg = {
        "input_size": [channels, height, width], "fixed_input_size": True, "interpolation": "bilinear",
        "crop_pct": crop, "crop_mode": "center", "mean": mean, "std": std,
        "num_classes": desc["num_classes"], "classifier": "head",
        "first_conv": "patch_embed.backbone.stem.conv" if desc.get("hybrid") else "patch_embed.proj",
    }
    if label_names is not None:
        cfg[LABEL_NAMES] = list(label_names)
    return cfg


def timm_config(desc: dict, data: DataCfg | dict, label_names: list[str] | None) -> dict:
    """The timm hub part of a config.json (what `timm.create_model('local-dir:...')` reads)."""
    return {
        "architecture": desc["timm_name"], "num_classes": desc["num_classes"],
        "num_features": desc["representation_size"] or desc["width"],
        "global_pool": desc["timm_kwargs"]["global_pool"], "model_args": desc["timm_kwargs"],
        "pretrained_cfg": pretrained_cfg(desc, data, label_names), LABEL_NAMES: label_names,
    }


def save_run_model(out: Path, setup, recipe_data: dict, weights: dict, label_names: list[str] | None = None,
                   log=print) -> None:
    """Final weights with timm's key names, and a config.json that rebuilds the model in timm or vit.

    `recipe_data` is the run's resolved recipe as plain data (what recipe.json holds). The head's class
    names (when the training data had them) go into both files, so a model file copied on its own still
    says what its outputs mean. A model whose position embedding timm has no equivalent for is still
    exported, for vit; `log` says so in one line.
    """
    meta = {"format": "pt", "producer": "vitcli"}
    if label_names is not None:
        meta[LABEL_NAMES] = json.dumps(label_names)
    # The backbone only: masked-patch parts ([mask], prediction head) stay in the run's checkpoints.
    backbone = lambda sd: {k: v for k, v in sd.items() if not is_pretraining_key(k)}
    write_safetensors(out / "model.safetensors", backbone(weights), meta)
    if setup.ema is not None:
        write_safetensors(out / "model_ema.safetensors", backbone(setup.ema_state_dict()), meta)
    desc = setup.description
    missing = not_in_timm(desc)
    if missing:
        log(f"export: {missing} has no timm equivalent; {out / 'config.json'} rebuilds "
            "the model in vit only (timm.create_model would miss its position tables)")
    if desc.get("norm_eps", TIMM_EPS) != TIMM_EPS:
        log(f"export: model.norm_eps {desc['norm_eps']:g} cannot be named in timm's model_args; timm.create_model "
            f"runs the model at {TIMM_EPS:g}, vit at {desc['norm_eps']:g} ({out / 'config.json'}'s vit_model)")
    write_json(out / "config.json", {
        **timm_config(desc, recipe_data.get("data") or {}, label_names), "vit_model": desc,
        "vit_recipe": recipe_data,
    })

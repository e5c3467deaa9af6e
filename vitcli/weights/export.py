"""What a run leaves for other tools: final weights with timm's key names and a config.json."""

from __future__ import annotations

import json
from pathlib import Path

from vitcli import schema
from vitcli.config import RecipeCfg
from vitcli.files import write_json
from vitcli.models.masked import is_pretraining_key
from vitcli.models.posemb import TIMM_KINDS
from vitcli.weights.reader import LABEL_NAMES
from vitcli.weights.serialization import write_safetensors


def export(out: Path, setup, cfg: RecipeCfg, weights: dict, label_names: list[str] | None = None,
           log=print) -> None:
    """Final weights with timm's key names, and a config.json that rebuilds the model in timm or vit.

    The head's class names (when the training data had them) go into both files, so a model file
    copied on its own still says what its outputs mean. A model whose position embedding timm has no
    equivalent for is still exported, for vit; `log` says so in one line.
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
    if desc.get("posemb", "learned") not in TIMM_KINDS:
        log(f"export: model.posemb {desc['posemb']} has no timm equivalent; {out / 'config.json'} rebuilds "
            "the model in vit only (timm.create_model would miss its position tables)")
    write_json(out / "config.json", {
        "architecture": desc["timm_name"], "num_classes": desc["num_classes"],
        "model_args": desc["timm_kwargs"], "vit_model": desc, "vit_recipe": schema.to_dict(cfg),
        LABEL_NAMES: label_names,
    })

"""What a run leaves for other tools: final weights with timm's key names and a config.json."""

from __future__ import annotations

from pathlib import Path

from vitcli import schema
from vitcli.config import RecipeCfg
from vitcli.files import write_json
from vitcli.weights.serialization import write_safetensors


def export(out: Path, setup, cfg: RecipeCfg, weights: dict) -> None:
    """Final weights with timm's key names, and a config.json that rebuilds the model in timm or vit."""
    meta = {"format": "pt", "producer": "vitcli"}
    write_safetensors(out / "model.safetensors", weights, meta)
    if setup.ema is not None:
        write_safetensors(out / "model_ema.safetensors", setup.ema_state_dict(), meta)
    desc = setup.description
    write_json(out / "config.json", {
        "architecture": desc["timm_name"], "num_classes": desc["num_classes"],
        "model_args": desc["timm_kwargs"], "vit_model": desc, "vit_recipe": schema.to_dict(cfg),
    })

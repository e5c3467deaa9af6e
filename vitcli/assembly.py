"""From command-line options to the recipe each command runs.

`vit finetune`, `eval` and `fewshot` may start from a checkpoint alone: the checkpoint describes its
model and the recipe it was trained with, so the recipe is assembled from (in increasing priority) the
checkpoint, the RECIPE file, the command's own options and `--set` overrides.
"""

from __future__ import annotations

from pathlib import Path

from vitcli import recipe
from vitcli.config import ModelCfg, RecipeCfg
from vitcli.errors import CheckpointError, RecipeError
from vitcli.models.variants import resolve_variant

# Model fields that define the architecture: they come from the checkpoint when it records them.
_ARCH_KEYS = ("name", "width", "depth", "heads", "mlp_dim", "patch", "pool", "representation_size", "posemb")
RECIPES = Path(__file__).resolve().parent / "recipes"  # shipped as package data: found after any install
FINETUNE_DEFAULT = RECIPES / "finetune" / "default.yaml"


# The command options that set recipe keys: an error in their value names the option, not a file.
_OPTIONS = {"model.res": "--res", "data.source": "--data", "data.eval_split": "--split", "fewshot.shots": "--shots",
            "fewshot.seeds": "--seeds"}


def recipe_overrides(res: str | None = None, extra: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Turn command options (--res, --data ...) into overrides applied before the user's own `--set`s,
    each paired with the option as typed (`--res big`) for error messages."""
    given = {"model.res": res, **(extra or {})}
    return [(f"{key}={value}", f"{_OPTIONS.get(key, key)} {str(value).strip('[]')}")
            for key, value in given.items() if value is not None]


def pretrain(path: Path, sets: list[str]) -> RecipeCfg:
    """The recipe of `vit pretrain`."""
    cfg = recipe.load(path, sets)
    require_source(cfg, str(path))
    return cfg


def require_source(cfg: RecipeCfg, origin: str) -> None:
    """Training and evaluation need data; only fine-tuning fragments may leave data.source empty."""
    if not cfg.data.source:
        raise RecipeError(f"{origin}: data.source: missing required field; give a hub id, a local directory, "
                          "imagefolder:PATH or builtin:digits (or --set data.source=...)")


def from_checkpoint(source, recipe_path: Path | None, options: list[str], sets: list[str], *,
                    finetune: bool) -> RecipeCfg:
    """Assemble the recipe of finetune/eval/fewshot from a checkpoint, an optional RECIPE and options."""
    stored = source.recipe or {}
    own_model: dict = {}  # what the RECIPE file itself says of the model, before anything is merged in
    if recipe_path is not None:
        data = recipe.read(recipe_path)
        origin = str(recipe_path)
        own_model = dict(data.get("model") or {})
    elif finetune:
        data = recipe.read(FINETUNE_DEFAULT)
        data["run"]["name"] = f"{Path(source.path).stem if source.path.is_file() else source.path.name}-finetune"
        origin = str(FINETUNE_DEFAULT)
    else:
        data, origin = {}, str(source.path)
    if not data.get("data", {}).get("source") and "data" in stored:
        data["data"] = recipe.merge(stored["data"], data.get("data", {}))
    elif "norm" in stored.get("data", {}) and "norm" not in data.get("data", {}):
        # New data, same network: pixels must be scaled as in pretraining, or every feature shifts.
        data.setdefault("data", {})["norm"] = stored["data"]["norm"]
    if not finetune:  # eval/fewshot keep the checkpoint's own settings unless the recipe says otherwise
        data = recipe.merge(_without(stored, ("data", "run")), data)
    named = any(item.partition("=")[0].strip() == "model.name" for item in sets)
    data["model"] = _model_section(source, data.get("model", {}), own_model, recipe_path, finetune, named)
    if finetune:
        data.setdefault("train", {})["init_from"] = str(source.path)
    cfg = recipe.from_data(data, origin, [*options, *sets])
    if finetune or not cfg.fewshot.datasets:  # a few-shot recipe's data sets name their own sources
        require_source(cfg, origin)
    return cfg


def _model_section(source, model: dict, own: dict, recipe_path: Path | None, finetune: bool, named: bool) -> dict:
    """The recipe's model section: the architecture from the checkpoint when it records one."""
    desc = source.model
    if desc is None:
        if "name" not in model and not named:
            raise RecipeError(f"--from {source.path}: the checkpoint does not say which variant it is; "
                              "give a RECIPE with model.name or --set model.name=... (e.g. 'B/16')")
        merged = dict(model)
    else:
        clash = _clashes(own, desc, finetune)
        if clash:
            raise CheckpointError(f"--from {source.path}: the checkpoint's model differs from {recipe_path}: "
                                  f"{'; '.join(clash)}; drop these keys from the recipe to use the checkpoint's")
        merged = _checkpoint_arch(desc, model)
    if finetune:
        # The paper's transfer: drop the pretraining head and its tanh pre-logits layer; the new head
        # starts at zero (timm state dicts included, whatever the recipe's base said for pretraining).
        merged["representation_size"] = None
        merged.setdefault("head_init", "zero")
    return merged


def _clashes(own: dict, desc: dict, finetune: bool) -> list[str]:
    """Architecture keys the RECIPE file sets differently from the checkpoint, as 'key (recipe x, checkpoint y)'.

    Variants are compared by their dimensions, so 'B/16' and 'vit_base_patch16_224' agree.
    """
    out = []
    dims = ("width", "depth", "heads", "mlp_dim", "patch")
    if own.get("name") is not None or any(own.get(k) is not None for k in dims):
        mine = resolve_variant(ModelCfg(name=own.get("name") or desc.get("name") or desc["variant"],
                                        **{k: own.get(k) for k in dims}))
        out += [f"{k} (recipe {getattr(mine, k)!r}, checkpoint {desc.get(k)!r})" for k in dims
                if k in desc and k not in desc.get("guessed", ()) and getattr(mine, k) != desc[k]]
    for key in ("pool", "representation_size", "posemb"):
        if finetune and key == "representation_size":
            continue  # fine-tuning drops the pre-logits layer whatever the checkpoint had
        if own.get(key) is not None and key in desc and own[key] != desc[key]:
            out.append(f"{key} (recipe {own[key]!r}, checkpoint {desc[key]!r})")
    return out


def _checkpoint_arch(desc: dict, model: dict) -> dict:
    """The recipe's model section with the checkpoint's architecture written over it."""
    # A dimension the weights could not record (the heads of a bare state dict) is the recipe's, if it says.
    arch = {k: desc.get(k) for k in _ARCH_KEYS if k in desc and not (k in desc.get("guessed", ()) and model.get(k))}
    arch["name"] = desc.get("name", desc.get("variant"))
    merged = {**model, **arch}
    merged.setdefault("res", desc.get("res"))
    return merged


def _without(data: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in data.items() if k not in keys}


"""The recipe each command runs: one ordered merge of layers, the precedence written once (`PRECEDENCE`).

`vit finetune`, `eval` and `fewshot` may start from a checkpoint alone: the checkpoint describes its
model and the recipe it was trained with. What a command takes from that checkpoint is data (a `Start`
policy per command), not `if mode ==` branches.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from vitcli import files, recipe
from vitcli.recipe.config import AUTO, EvalCfg, ModelCfg, RecipeCfg
from vitcli.data.ref import SourceRef
from vitcli.errors import CheckpointError, RecipeError, RunError, VitError
from vitcli.recipe import schema
from vitcli.models.variants import resolve_variant
from vitcli.recipe.shipped import SHIPPED

# Lowest priority first; each layer's keys win over every layer above it in this list. The dict layers
# are deep-merged (mappings merge, lists are replaced); `options` and `sets` are overrides (`recipe.Override`,
# or a --set's KEY=VALUE text) applied in order on the merged data, each checked against the schema and
# named in its own error.
PRECEDENCE = (
    "defaults",      # every field's default (config.py), then the command's own defaults (a zero head)
    "checkpoint",    # the --from checkpoint's stored recipe: the sections the command carries over
    "source",        # data other than the checkpoint's starts from its own defaults: splits `auto`
    "recipe",        # the RECIPE file, or the command's default recipe when none is given
    "architecture",  # the checkpoint's architecture; a RECIPE that contradicts it is refused, not overridden
    "command",       # what the command fixes: finetune's train.init_from and dropped pre-logits layer
    "options",       # the command's own options: --res, --data, --split, --shots, --seeds, --weights
    "sets",          # --set KEY=VALUE, in the order given
)

# Model fields that define the architecture: they come from the checkpoint when it records them.
_ARCH_KEYS = ("name", "width", "depth", "heads", "mlp_dim", "patch", "pool", "representation_size", "posemb",
              "posemb_where", "norm_eps", "in_chans", "fc_norm", "init_values", "reg_tokens", "no_embed_class",
              "distilled")
FINETUNE_DEFAULT = SHIPPED / "finetune" / "default.yaml"
PRETRAIN_DEFAULT = SHIPPED / "pretrain" / "default.yaml"


@dataclass(frozen=True)
class Layers:
    """One command's recipe, layer by layer (see `PRECEDENCE`)."""

    defaults: dict = field(default_factory=dict)
    checkpoint: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    architecture: dict = field(default_factory=dict)
    command: dict = field(default_factory=dict)
    options: tuple[str | recipe.Override, ...] = ()
    sets: tuple[str | recipe.Override, ...] = ()


def resolve(layers: Layers, origin: str) -> RecipeCfg:
    """Merge the layers in `PRECEDENCE` order into one checked config; `origin` prefixes its errors."""
    data: dict = {}
    items: list[str | recipe.Override] = []
    for name in PRECEDENCE:
        layer = getattr(layers, name)
        if isinstance(layer, dict):
            data = recipe.merge(data, layer)
        else:
            items += layer
    return recipe.from_data(data, origin, items)


@dataclass(frozen=True)
class Start:
    """What a command takes from the checkpoint it starts from."""

    carried: tuple[str, ...]  # sections of the stored recipe taken over as they were (data: `carried_data`)
    new_head: bool  # the paper's transfer: no head, no tanh pre-logits layer, a zero-initialised new head
    trains_from_it: bool  # train.init_from is the checkpoint
    default_recipe: Path | None = None  # the recipe used when no RECIPE is given
    default_name: str = ""  # run.name suffix with the default recipe: "<checkpoint>-<suffix>"
    data_in_fewshot_sets: bool = False  # fewshot.datasets name their own sources, so data.source may be empty
    needs_data: bool = True  # False: the command reads no data set of the recipe's (vit predict, vit inspect)

    def defaults(self) -> dict:
        return {"model": {"head_init": "zero"}} if self.new_head else {}

    def fixed(self, checkpoint: Path) -> dict:
        """The `command` layer: keys the command sets whatever the RECIPE says (--set still wins)."""
        out: dict = {}
        if self.new_head:
            out["model"] = {"representation_size": None}
        if self.trains_from_it:
            out["train"] = {"init_from": str(checkpoint)}
        return out


_ALL_BUT_DATA_AND_RUN = ("model", "optim", "schedule", "train", "eval", "fewshot")
FINETUNE = Start(carried=(), new_head=True, trains_from_it=True, default_recipe=FINETUNE_DEFAULT,
                 default_name="finetune")
# Eval and few-shot keep the checkpoint's own settings unless the RECIPE says otherwise.
EVALUATE = Start(carried=_ALL_BUT_DATA_AND_RUN, new_head=False, trains_from_it=False, data_in_fewshot_sets=True)
FEWSHOT = EVALUATE
PREDICT = dataclasses.replace(EVALUATE, needs_data=False)
# vit inspect draws the weight figures of any checkpoint; only its attention figures need images.
INSPECT = PREDICT


def carried_data(stored: dict | None, new_source: str | None) -> dict:
    """THE DATA CARRY RULE: what the checkpoint's data section contributes.

    Without a new data source (from the RECIPE, the command's --data or --set data.source) the command
    runs on the checkpoint's own data: every data key left unset comes from the checkpoint. With one,
    only the checkpoint's pixel normalisation (data.norm, data.mean, data.std) carries over, since the same network needs pixels scaled
    as in its training or every feature shifts; split expressions and columns belong to the old data.
    """
    if not stored:
        return {}
    if new_source is None:
        return dict(stored)
    return {key: stored[key] for key in ("norm", "mean", "std") if key in stored}


# The command options that set recipe keys: an error in their value names the option, not a file.
_OPTIONS = {"model.res": "--res", "model.name": "--model", "train.steps": "--steps", "train.epochs": "--epochs",
            "data.source": "--data", "data.eval_split": "--split",
            "data.train_split": "--train-split", "fewshot.shots": "--shots", "fewshot.seeds": "--seeds",
            "eval.weights": "--weights", "eval.batch_size": "--batch"}


def source_defaults(new_source: str | None) -> dict:
    """The `source` layer: a new data source's splits are chosen from its own split names (`auto`),
    by the engine when it opens the source; the RECIPE, --split and --set still name them."""
    return {} if new_source is None else {"data": {"train_split": AUTO, "eval_split": AUTO}}


def named_source(given: dict, items: tuple[str | recipe.Override, ...] | list[str | recipe.Override]) -> str | None:
    """The data.source that a RECIPE's data section or overrides set (the last one wins), or None."""
    source = given.get("source") or None
    for item in items:
        key, value = recipe.given_key(item) or ("", "")
        if key == "data.source":
            source = str(value).strip() or None
    return source


def _names_key(items, key: str) -> bool:
    """Whether any of the overrides sets `key`."""
    return any(_key(item) == key for item in items)


def recipe_overrides(res: str | None = None, extra: dict[str, object] | None = None,
                     weights: str | None = None) -> tuple[recipe.Override, ...]:
    """The `options` layer: command options (--res, --data, --weights ...) as overrides applied before the
    user's own `--set`s, each with its value as the option gave it and named as typed (`--res big`)."""
    if weights is not None:
        valid = typing.get_args(typing.get_type_hints(EvalCfg)["weights"])
        if weights not in valid:
            raise RecipeError(f"--weights {weights!r}: valid: {', '.join(map(repr, valid))}")
    given = {"model.res": res, **(extra or {}), "eval.weights": weights}
    return tuple(recipe.Override.option(key, value, f"{_OPTIONS.get(key, key)} {_shown(value)}")
                 for key, value in given.items() if value is not None)


def _shown(value: object) -> str:
    """An option's value as the user typed it: --shots 1,5 (a list), --no-retrain's false as it was."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def pretrain(path: Path | None, options: tuple[recipe.Override, ...] | list[recipe.Override],
             sets: list[str]) -> RecipeCfg:
    """The recipe of `vit pretrain [RECIPE] [--data S] [--model M] ...`: defaults < a new source's `auto`
    splits < RECIPE (pretrain/default without one) < options < --set.

    A source given on the command line replaces the RECIPE's together with its split expressions and
    columns, which belong to the old data (its splits become `auto`, the new source's own); `--model`
    replaces the RECIPE's architecture (its width, depth ... overrides go with its name).
    """
    given = recipe.read(path or PRETRAIN_DEFAULT)
    origin = str(path or PRETRAIN_DEFAULT)
    data = dict(given.get("data") or {})
    new_source = named_source({}, (*options, *sets))
    if new_source is not None and new_source != data.get("source"):
        given["data"] = {k: v for k, v in data.items() if k not in _DATA_OF_SOURCE}
    else:
        new_source = None
    if any(_key(item) == "model.name" for item in options):
        given["model"] = {k: v for k, v in (given.get("model") or {}).items() if k not in _DIMS}
    if path is None:
        given["run"]["name"] = data_name(new_source or "") or "pretrain"
    cfg = resolve(Layers(source=source_defaults(new_source), recipe=given, options=tuple(options),
                         sets=tuple(sets)), origin)
    if path is None and not cfg.data.source:
        raise RecipeError(f"{origin}: data.source: missing; give --data SOURCE (a hub id, a local directory, "
                          "imagefolder:PATH or builtin:digits) or a RECIPE")
    require_source(cfg, origin)
    return cfg


# What a data section says about its own source: replaced with it (splits `auto`, columns detected).
_DATA_OF_SOURCE = ("source", "train_split", "eval_split", "image_column", "label_column", "num_classes")
_DIMS = ("width", "depth", "heads", "mlp_dim", "patch")


def _key(item: str | recipe.Override) -> str:
    """The dotted key an override sets ('' when it is not KEY=VALUE: resolving it says so)."""
    return (recipe.given_key(item) or ("",))[0]


def data_name(source: str) -> str:
    """A run name from a data source: its last path part ('imagefolder:~/photos/' -> 'photos')."""
    return re.sub(r"[^\w.-]+", "-", SourceRef.parse(source).name).strip("-.")


def resumed(out: Path, sets: list[str]) -> RecipeCfg:
    """The recipe of `vit pretrain --resume --out RUN` without a RECIPE: the run's own < --set."""
    saved = Path(out) / "recipe.json"
    # A run's own files are read as the run directory's rules say: regular files only, never a link.
    if not files.check_regular(saved, follow=False, who="--resume: "):
        raise RunError(f"--resume: {out} holds no vit run (no recipe.json); give the RECIPE to start a new run")
    try:
        stored = json.loads(files.read_bytes(saved, limit=1 << 20))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunError(f"--resume: {saved} is unreadable ({exc}); give the RECIPE to continue the run") from None
    if not isinstance(stored, dict):
        raise RunError(f"--resume: {saved} is not a recipe (a JSON object); give the RECIPE to continue the run")
    # The stored recipe is the resolved one, so it sits where a RECIPE would: above every default.
    return resolve(Layers(recipe=stored, sets=tuple(sets)), str(saved))


def check_run_recipe(out: Path, cfg: RecipeCfg) -> None:
    """Refuse a resume that would ignore a hand edit of the run's recipe.yaml.

    A resume runs the run's recipe.json or the RECIPE given, never recipe.yaml (which the run writes for
    people). An edit that changes what the file means (not a comment) and that this resume does not
    carry would be kept on disk and silently not used.
    """
    path = Path(out) / "recipe.yaml"
    try:
        ran = resumed(out, [])
    except VitError:
        return  # no run or a damaged one: the engine's resume check names it
    if not files.check_regular(path, follow=False, who="--resume: "):
        return
    on_disk, ran, now = (schema.to_dict(c) for c in (resolve(Layers(recipe=recipe.read(path)), str(path)), ran, cfg))
    edited = schema.diff(ran, on_disk)
    if edited and schema.diff(on_disk, now):
        raise RunError(f"--resume: {path} was edited by hand (at: {', '.join(edited[:6])}), but a resume runs the "
                       f"run's recipe.json or the RECIPE given, never that file, so the edit would be ignored; to "
                       f"resume with it: mv {path} edited.yaml && vit pretrain edited.yaml --resume --out {out} "
                       "(a resume may change the run's length, e.g. train.steps), or undo the edit")


def require_source(cfg: RecipeCfg, origin: str) -> None:
    """Training and evaluation need data; only fine-tuning fragments may leave data.source empty."""
    if not cfg.data.source:
        raise RecipeError(f"{origin}: data.source: missing required field; give a hub id, a local directory, "
                          "imagefolder:PATH or builtin:digits (or --set data.source=...)")


def source_name(path: Path) -> str:
    """What a run started from `path` is named after: the run directory its weights came from, else the file.

    `--from runs/demo` reads runs/demo/model.safetensors (or checkpoints/step-N.pt): the run is 'demo'. Bytes
    of a folder named in another encoding (surrogates: no run.name may hold them) become '-'.
    """
    name = path.stem if path.is_file() else path.name
    for folder in (path, *list(path.parents)[:2]):
        if (folder / "recipe.json").is_file():
            name = folder.name
            break
    return re.sub("[\udc80-\udcff]+", "-", name)


def from_checkpoint(source, recipe_path: Path | None, options: tuple[str | recipe.Override, ...] | list[str],
                    sets: list[str], start: Start) -> RecipeCfg:
    """Assemble the recipe of finetune/eval/fewshot/inspect from a checkpoint, an optional RECIPE and options."""
    stored = source.recipe or {}
    own: dict = {}  # what the RECIPE file itself says of the model (its bases included): checked, not merged
    if recipe_path is not None:
        given, origin = recipe.read(recipe_path), str(recipe_path)
        own = dict(given.get("model") or {})
    elif start.default_recipe is not None:
        given, origin = recipe.read(start.default_recipe), str(start.default_recipe)
        given["run"]["name"] = f"{source_name(Path(source.path))}-{start.default_name}"
    else:
        given, origin = {}, str(source.path)
    checkpoint = {key: stored[key] for key in start.carried if key in stored}
    if not stored and not start.trains_from_it:
        # A checkpoint from another framework (torchvision, timm, transformers, big_vision) records no recipe:
        # its arithmetic is the fp32 its authors measured it in, so eval/fewshot/predict reproduce their
        # numbers image for image (bf16 autocast moves near ties). A RECIPE or --set train.precision still wins.
        checkpoint["train"] = {"precision": "fp32"}
    new_source = named_source(given.get("data") or {}, (*options, *sets))
    data = carried_data(stored.get("data"), new_source)
    if data:
        checkpoint["data"] = data
    named = (any("name" in (layer.get("model") or {}) for layer in (checkpoint, given))
             or _names_key((*options, *sets), "model.name"))
    layers = Layers(defaults=start.defaults(), checkpoint=_with_res(checkpoint, source.model),
                    source=source_defaults(new_source), recipe=given,
                    architecture=_architecture(source, own, recipe.merge(checkpoint, given).get("model") or {},
                                               recipe_path, start, named),
                    command=start.fixed(source.path), options=tuple(options), sets=tuple(sets))
    cfg = resolve(layers, origin)
    if start.needs_data and not (start.data_in_fewshot_sets and cfg.fewshot.datasets):
        require_source(cfg, origin)
    return cfg


def _with_res(checkpoint: dict, desc: dict | None) -> dict:
    """The checkpoint layer with the resolution the checkpoint was trained at, unless it says one already."""
    if desc is None or desc.get("res") is None:
        return checkpoint
    model = {"res": desc["res"], **(checkpoint.get("model") or {})}
    return {**checkpoint, "model": model}


def _architecture(source, own: dict, below: dict, recipe_path: Path | None, start: Start, named: bool) -> dict:
    """The `architecture` layer: the checkpoint's variant, after refusing a RECIPE that contradicts it.

    `below` is the model section of the layers under this one: a dimension the weights could not record
    (`guessed`, e.g. the heads of a bare state dict) is left to it when it says one.
    """
    desc = source.model
    if desc is None:
        if not named:
            raise RecipeError(f"--from {source.path}: the checkpoint does not say which variant it is; "
                              "give a RECIPE with model.name or --set model.name=... (e.g. 'B/16')")
        return {}
    clash = _clashes(own, desc, start.new_head)
    if clash:
        raise CheckpointError(f"--from {source.path}: the checkpoint's model differs from {recipe_path}: "
                              f"{'; '.join(clash)}; drop these keys from the recipe to use the checkpoint's")
    guessed = desc.get("guessed", ())
    arch = {k: desc.get(k) for k in _ARCH_KEYS if k in desc and not (k in guessed and below.get(k))}
    arch["name"] = desc.get("name", desc.get("variant"))
    return {"model": arch}


def _clashes(own: dict, desc: dict, new_head: bool) -> list[str]:
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
    for key in ("pool", "representation_size", "posemb", "posemb_where", "norm_eps"):
        if new_head and key == "representation_size":
            continue  # a new head drops the pre-logits layer whatever the checkpoint had
        if own.get(key) is not None and key in desc and own[key] != desc[key]:
            out.append(f"{key} (recipe {own[key]!r}, checkpoint {desc[key]!r})")
    return out

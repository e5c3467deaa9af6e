"""Read the weights a user points `--from` at, in every format a ViT checkpoint comes in.

vit's own runs and checkpoints, timm state dicts and hub folders, Hugging Face `transformers` ViTs
(hf.py), Google's .npz (npz.py) and hub names (remote.py). Every format ends as a `Pretrained`: a
plain state dict with timm's key names plus what the file says about itself (model description,
recipe, EMA weights, class names); what it does not say is read off the tensor shapes (arch.py).
Nothing here can execute code from the file: pickles load with `weights_only=True`, safetensors and
.npz (`allow_pickle=False`) hold only arrays, JSON is data.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from vitcli import files
from vitcli.errors import CheckpointError
from vitcli.weights import layouts, serialization

LABEL_NAMES = "label_names"  # key of the head's class names in checkpoints, safetensors metadata, config.json
LATEST = "latest"  # the file in a run's checkpoints/ that names the newest complete checkpoint
# The layout of a vit training checkpoint (engine/persistence/checkpoints.py writes it); a newer one is refused.
FORMAT_VERSION = 1
_STEP_FILE = re.compile(r"step-(\d{8,12})\.pt")  # what checkpoints.save names a checkpoint, and nothing else


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint file named as `checkpoints.save` names them (`step-00001000.pt`), else None."""
    found = _STEP_FILE.fullmatch(name)
    return int(found.group(1)) if found else None
_log = logging.getLogger("vitcli.weights")


@dataclass
class Pretrained:
    """Weights and self-description read from one `--from` path."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    model: dict | None = None  # the model description (`vitcli.models.describe`), when the file has one
    recipe: dict | None = None  # the resolved recipe of the run that made it, when known
    ema: dict[str, torch.Tensor] | None = None
    label_names: list[str] | None = None  # the head's class names, in output order, when known

    def weights(self, which: str) -> dict[str, torch.Tensor]:
        """The EMA weights when asked for and present, else the raw ones."""
        return self.ema if which == "ema" and self.ema is not None else self.state_dict


_FOLDER_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_INDEX = ".safetensors.index.json"  # transformers' sharded weights: a weight_map of tensor -> shard file


def read(source: str | Path) -> Pretrained:
    """Read `source` in whichever supported format it is; errors name it and what is accepted.

    `source` is a local path or a hub name (`hf-hub:ORG/NAME`, `timm:ARCH.TAG`), fetched into the cache.
    """
    return _names_fit_head(_read(source))


def _names_fit_head(source: Pretrained) -> Pretrained:
    """Class names are the head's only when there is one per output: names of another count (a damaged
    config, another head's id2label or label_names) are dropped here, once, with a warning, so no command
    shows them beside predictions they do not describe."""
    head = source.state_dict.get("head.weight")
    names = source.label_names
    if names is not None and head is not None and head.ndim == 2 and len(names) != head.shape[0]:
        _log.warning(f"{source.path}: {len(names)} class names for a head of {head.shape[0]} outputs; the names "
                     "belong to another head or are damaged, so they are ignored and classes are shown by index")
        source.label_names = None
    return source


def _read(source: str | Path) -> Pretrained:
    from vitcli.weights import remote

    text = str(source)
    path = remote.local_path(text) or remote.fetch(text)
    if path.is_dir():
        return _read_dir(path)
    files.check_regular(path, follow=True, error=CheckpointError, who="--from ")  # a FIFO would block
    if path.name.endswith(_INDEX):
        return _read_shards(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return _read_pickle(path)
    if path.suffix == ".npz":
        from vitcli.weights.npz import read_npz

        # The paper's checkpoints were trained on pixels in [-1, 1]: that is the data.norm they need.
        return Pretrained(path, **read_npz(path), recipe={"data": {"norm": "paper"}})
    raise CheckpointError(f"--from {path}: unknown checkpoint format '{path.suffix}'; accepted: .pt, .pth, .bin, "
                          ".safetensors, .npz, a folder or a hub name")


def _in_run(folder: Path) -> bool:
    """Whether `folder` is a vit run directory, inside which nothing is followed (a planted link is
    refused); a model folder from a hub (huggingface_hub's cache links its files to blobs) is the user's
    to point at, links included."""
    return os.path.lexists(folder / "checkpoints") or os.path.lexists(folder / "recipe.yaml")


def _read_dir(folder: Path) -> Pretrained:
    run = _in_run(folder)
    for name in _FOLDER_WEIGHTS:
        if files.check_regular(folder / name, follow=not run, error=CheckpointError, who="--from "):
            reader = {".safetensors": _read_safetensors, ".json": _read_shards, ".bin": _read_pickle}
            return reader[Path(name).suffix](folder / name)
    last = latest(folder)
    if last is not None:
        return _read_pickle(last)
    raise CheckpointError(f"--from {folder}: the directory holds no model.safetensors, pytorch_model.bin or "
                          "checkpoints/ (is it a vit run, or a timm or Hugging Face model folder?)")


def json_beside(path: Path, name: str) -> dict | None:
    """A JSON object stored beside a weights file (config.json, preprocessor_config.json), or None."""
    file = path.with_name(name)
    follow = not _in_run(file.parent)  # config.json or recipe.json of a run: a link there is refused
    if not files.check_regular(file, follow=follow, error=CheckpointError):
        return None
    try:
        data = json.loads(files.read_bytes(file, follow=follow, limit=16 << 20, error=CheckpointError))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{file}: refused: JSON nested too deeply to be a model config") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object (a model config), got {type(data).__name__}")
    return data


def _read_safetensors(path: Path) -> Pretrained:
    tensors = check_dtypes(serialization.read_safetensors(path), path)
    names = _label_names(serialization.safetensors_metadata(path).get(LABEL_NAMES), path)
    return _describe(path, tensors, names)


def _read_shards(index: Path) -> Pretrained:
    """Sharded safetensors: every shard the index names (beside it, by plain file name), merged."""
    weight_map = (json_beside(index, index.name) or {}).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: expected a weight_map of tensor names to shard files")
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(set(map(str, weight_map.values()))):
        if Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise CheckpointError(f"{index}: shard {shard!r} is not a .safetensors file beside the index")
        if not files.check_regular(index.with_name(shard), follow=True, error=CheckpointError):
            raise CheckpointError(f"{index}: shard {shard} is missing; download every shard it names")
        tensors.update(check_dtypes(serialization.read_safetensors(index.with_name(shard)), index.with_name(shard)))
    return _describe(index, tensors)


def _describe(path: Path, tensors: dict[str, torch.Tensor], names: list[str] | None = None, *,
              wrapper: str | None = None) -> Pretrained:
    """A state dict read from `path`, with what the config.json beside it (if any) says about it.

    `wrapper`: the key of the checkpoint object the state dict was found under (layouts.unwrap).
    """
    from vitcli.weights import arch, external, hf

    config_path = path.with_name("config.json")
    config = json_beside(path, "config.json")
    if config is None and path.name == "model.safetensors" and (run := json_beside(path, "recipe.json")) is not None:
        config, config_path = {"vit_recipe": run}, path.with_name("recipe.json")  # a run whose config.json is gone
    if config is not None and hf.is_hf_config(config):
        preprocessor = path.with_name("preprocessor_config.json")
        return Pretrained(path, **hf.read_hf(
            tensors, external.hf_config(config, str(config_path)),
            external.hf_preprocessor(json_beside(path, preprocessor.name), str(preprocessor)), str(path)))
    foreign = config is None or not ({"vit_model", "vit_recipe"} & config.keys())  # no config or another tool's
    if foreign:
        tensors = layouts.normalise(tensors, path, wrapper)
    if config is not None and "architecture" in config and "vit_model" not in config:
        fields = arch.from_timm_config(tensors, external.timm_config(config, str(config_path)), str(path))
        fields["label_names"] = names or fields["label_names"]
        return Pretrained(path, tensors, **fields)
    if foreign:
        return Pretrained(path, tensors, model=arch.from_state_dict(tensors, str(path)), label_names=names)
    model, recipe = _model_desc(config, "vit_model", config_path), _recipe(config, "vit_recipe", config_path)
    if model is None:  # what the shapes cannot say (the heads, a non-square grid) is the run's recipe's to say
        model = arch.from_state_dict(tensors, str(path), **arch.from_recipe((recipe or {}).get("model")))
    names = names or _label_names(config.get(LABEL_NAMES), config_path)
    ema_path = path.with_name(path.stem + "_ema.safetensors")
    ema = (check_dtypes(serialization.read_safetensors(ema_path), ema_path)
           if files.check_regular(ema_path, follow=not _in_run(path.parent), error=CheckpointError) else None)
    return Pretrained(path, tensors, model=model, recipe=recipe, ema=ema, label_names=names)


def _label_names(value, where: Path) -> list[str] | None:
    """Class names as stored: a list of strings, or (safetensors metadata) that list as JSON text."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CheckpointError(f"{where}: {LABEL_NAMES} must be a list of class names (strings)")
    return value


def check_format(version, path: Path, who: str = "") -> None:
    """Refuse a vit checkpoint written in a newer format than this vit reads, naming both versions."""
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CheckpointError(f"{who}{path} has checkpoint format {version}, newer than this vit reads "
                              f"({FORMAT_VERSION}); upgrade vit to read it")


def _read_pickle(path: Path) -> Pretrained:
    data = serialization.load(path)
    if isinstance(data, dict) and "format_version" in data and "model" in data:
        check_format(data["format_version"], path)
        return Pretrained(path, _tensors(data, "model", path), model=_model_desc(data, "model_config", path),
                          recipe=_recipe(data, "recipe", path),
                          ema=_tensors(data, "ema", path) if data.get("ema") is not None else None,
                          label_names=_label_names(data.get(LABEL_NAMES), path))
    sd, wrapper = layouts.unwrap(data, path)
    return _describe(path, check_dtypes(sd, path), wrapper=wrapper)


def _mapping(data: dict, key: str, path: Path) -> dict | None:
    """data[key] when it is a mapping (or absent/null); any other type is a one-line error."""
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise CheckpointError(f"{path}: {key}: expected a mapping, got {type(value).__name__}; the file is "
                              "damaged or not written by vit")
    return value


def _recipe(data: dict, key: str, path: Path) -> dict | None:
    """A stored recipe: a mapping of sections, each a mapping (the recipe layer checks their keys)."""
    value = _mapping(data, key, path)
    for section, fields in (value or {}).items():
        if fields is not None and not isinstance(fields, dict):
            raise CheckpointError(f"{path}: {key}.{section}: expected a mapping, got {type(fields).__name__}; the "
                                  "file is damaged or not written by vit")
    return value


# What a vit model description holds, by type (`vitcli.models.describe`): checked on read, so a damaged
# or hand-made file is one line here rather than a TypeError deep in resampling or variant parsing.
_DESC_TYPES = {"name": str, "variant": str, "pool": str, "timm_name": str, "patch": int, "width": int, "depth": int,
               "heads": int, "mlp_dim": int, "num_classes": int, "representation_size": int, "in_chans": int,
               "reg_tokens": int, "fc_norm": bool, "no_embed_class": bool, "distilled": bool, "init_values": float}


def _typed(field: str, kind: type, value) -> bool:
    if kind is bool or kind is str:
        return type(value) is kind
    if kind is float:
        return type(value) in (int, float) and math.isfinite(value) and value > 0
    return type(value) is int and value >= (0 if field in ("num_classes", "reg_tokens") else 1)


def _model_desc(data: dict, key: str, path: Path) -> dict | None:
    """data[key] as a model description whose known fields have their types (null allowed), else one line."""
    desc = _mapping(data, key, path)
    for field, kind in _DESC_TYPES.items():
        value = (desc or {}).get(field)
        if value is None or _typed(field, kind, value):
            continue
        want = {str: "text", bool: "true or false", float: "a positive number"}.get(kind, "a positive whole number")
        raise CheckpointError(f"{path}: {key}.{field}: expected {want}, got {value!r}"[:300])
    res = (desc or {}).get("res")
    sides = [res] if not isinstance(res, list) else res
    if res is not None and not (len(sides) in (1, 2) and all(type(v) is int and v > 0 for v in sides)):
        raise CheckpointError(f"{path}: {key}.res: expected a resolution (a positive whole number or [height, "
                              f"width]), got {res!r}"[:300])
    if res is not None:  # one form past the reader: [height, width]
        desc = {**desc, "res": [sides[0], sides[-1]]}
    return desc


def _tensors(data: dict, key: str, path: Path) -> dict[str, torch.Tensor]:
    """data[key] as a state dict of floating-point tensors, or a one-line error naming the key."""
    value = data.get(key)
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in value.items()):
        raise CheckpointError(f"{path}: {key}: expected a mapping of parameter names to tensors, got "
                              f"{type(value).__name__}; the file is damaged or not written by vit")
    return check_dtypes(value, path)


def check_dtypes(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Refuse weights that are not real floating-point numbers (int, bool, complex): loading them into a
    float model would cast silently and truncate (an int8 copy of a model scores like chance)."""
    bad = [f"{k} ({str(v.dtype).removeprefix('torch.')})" for k, v in state.items()
           if not v.is_floating_point() and not (k.endswith("num_batches_tracked") and not v.is_complex())]
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        raise CheckpointError(f"{path}: refused: weights must be floating-point tensors, found {', '.join(bad[:3])}"
                              f"{more}; quantised or integer checkpoints are not supported, export float weights")
    return state


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None.

    `latest` names it; when that pointer is missing, names a file that is gone or is not a plain
    `step-NNNNNNNN.pt` name inside `checkpoints/` (a path such as `../../x.pt`, an absolute path, binary
    junk), the highest-numbered `step-*.pt` is taken instead, and a bad pointer is reported in one
    warning line: every such file is complete, because it only appears by rename. Nothing inside the run
    directory is followed when it is a symbolic link.
    """
    folder = files.real_dir(Path(run_dir) / "checkpoints")
    if not folder.is_dir():
        return None
    pointer = folder / LATEST
    if files.check_regular(pointer, follow=False):
        with files.open_read(pointer, follow=False, error=CheckpointError) as handle:
            raw = handle.read(257)
        name = raw.decode("ascii", "replace").strip() if len(raw) <= 256 else raw[:40].decode("ascii", "replace")
        if _STEP_FILE.fullmatch(name) and files.check_regular(folder / name, follow=False):
            return folder / name
        if not _STEP_FILE.fullmatch(name):
            _log.warning(f"{pointer} does not name a checkpoint file in {folder} ({name[:40]!r}); using the "
                         "highest-numbered step-*.pt instead")
    steps = [p for p in folder.iterdir() if _STEP_FILE.fullmatch(p.name) and not p.is_symlink() and p.is_file()]
    return max(steps, key=lambda p: checkpoint_step(p.name)) if steps else None

"""Hub names for `--from`: `hf-hub:ORG/NAME[@REVISION]` and `timm:ARCH.TAG`, fetched into the normal cache.

The download is huggingface_hub's own `hf_hub_download` (so the files land in, and are served from,
the cache every other tool uses). `timm:` names resolve through timm's registry of pretrained tags to
the hub repository timm publishes them in. When the hub cannot be reached (a 3-second probe, or
HF_HUB_OFFLINE=1) the same calls run offline: a cached copy is used, otherwise one line says where
to download the files and how to point `--from` at them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vitcli import files, hub
from vitcli.errors import CheckpointError, did_you_mean

HF_PREFIX, TIMM_PREFIX = "hf-hub:", "timm:"
_REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_OPTIONAL = ("preprocessor_config.json",)
_VALID = ("valid: hf-hub:ORG/NAME (e.g. hf-hub:google/vit-base-patch16-224-in21k, "
          "hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k) or timm:ARCH.TAG "
          "(e.g. timm:vit_base_patch16_224.augreg_in21k)")


ACCEPTED = ("give a vit run directory or checkpoint (.pt), a timm or Hugging Face ViT (a folder with config.json, "
            "or its model.safetensors / .pth / .bin), a Google .npz, or a hub name (hf-hub:ORG/NAME, timm:ARCH.TAG)")


def is_hub_name(text: str) -> bool:
    """Whether a `--from` value names a hub model rather than a local path."""
    return text.startswith((HF_PREFIX, TIMM_PREFIX))


def local_path(text: str) -> Path | None:
    """The local path a `--from` names (None for a hub name), refused in one line when nothing is there.

    It needs neither torch nor the hub, so the CLI runs it before either loads: a mistyped path fails at once.
    """
    files.check_path(text, "--from", CheckpointError)
    if is_hub_name(text):
        return None
    path = Path(text)
    if not path.exists():
        raise CheckpointError(f"--from {path}: no such file or directory; {ACCEPTED}")
    return path


def repo_of(name: str) -> tuple[str, str | None]:
    """(repository id, revision) of a hub name; malformed names are one line with the valid forms."""
    if name.startswith(TIMM_PREFIX):
        return _timm_repo(name), None
    repo, _, revision = name.removeprefix(HF_PREFIX).partition("@")
    if not _REPO_RE.match(repo) or ".." in repo or (revision == "" and "@" in name):
        raise CheckpointError(f"--from {name!r}: not a hub name; {_VALID}")
    return repo, revision or None


def _timm_repo(name: str) -> str:
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    spec = name.removeprefix(TIMM_PREFIX)
    arch, tag = split_model_name_tag(spec)
    if not arch or not timm.is_model(arch):
        hint = did_you_mean(arch, timm.list_models("vit_*"))
        raise CheckpointError(f"--from {name!r}: timm has no model {arch!r}{hint}; {_VALID}")
    try:
        cfg = get_pretrained_cfg(spec)
    except RuntimeError:  # timm: "Invalid pretrained tag (x) for arch."
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{arch}.*")][:6]
        raise CheckpointError(f"--from {name!r}: timm publishes no weights {tag!r} for {arch}; "
                              f"valid tags: {', '.join(tags) or 'none'}")
    return cfg.hf_hub_id


def fetch(name: str) -> Path:
    """Download (or find in the cache) config.json and the weights of a hub model; return their folder."""
    from huggingface_hub.errors import HfHubHTTPError

    repo, revision = repo_of(name)
    offline = hub.offline_requested() or not hub.reachable()
    try:
        if offline:
            with hub.offline_mode():
                return _download(repo, revision)
        return _download(repo, revision)
    except (OSError, HfHubHTTPError, ValueError) as exc:  # OSError: no connection, not in the cache
        where = f"https://huggingface.co/{repo}" + (f"/tree/{revision}" if revision else "")
        why = "the hub is unreachable (offline) and the cache has no copy" if offline else (
            f"the hub has no such model or file ({type(exc).__name__})")
        raise CheckpointError(f"--from {name}: cannot fetch {repo}: {why}; download config.json and "
                              f"model.safetensors from {where} where you have internet and give --from "
                              "THAT_FOLDER") from None


def _download(repo: str, revision: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    config = Path(hf_hub_download(repo, "config.json", revision=revision))
    for filename in _WEIGHTS:
        try:
            weights = Path(hf_hub_download(repo, filename, revision=revision))
            if filename.endswith(".index.json"):  # sharded: fetch every shard it names
                for shard in sorted(set(json.loads(weights.read_text()).get("weight_map", {}).values())):
                    hf_hub_download(repo, str(shard), revision=revision)
            break
        except EntryNotFoundError:  # offline, a file absent from the cache is this error too
            if filename == _WEIGHTS[-1]:
                raise
    for filename in _OPTIONAL:
        try:
            hf_hub_download(repo, filename, revision=revision)
        except EntryNotFoundError:
            pass
    return config.parent

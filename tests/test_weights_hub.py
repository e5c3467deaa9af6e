"""Hub names for --from (hf-hub:ORG/NAME, timm:ARCH.TAG) without a network: resolution, the cache that
huggingface_hub itself serves offline, and the one-line errors for malformed names and an unreachable hub.
"""

from __future__ import annotations

import pytest
import torch
from foreign import randomise
from test_weights_formats import BATCH, max_diff, one_line_error, vit_forward

from vitcli import hub
from vitcli.errors import CheckpointError
from vitcli.weights import reader, remote


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty huggingface_hub cache and a hub that does not answer the probe."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "reachable", lambda timeout=hub.PROBE_TIMEOUT_S: False)
    return tmp_path / "hub"


@pytest.mark.parametrize(("name", "repo"), [
    ("hf-hub:google/vit-base-patch16-224-in21k", ("google/vit-base-patch16-224-in21k", None)),
    ("hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k@main",
     ("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", "main")),
    ("timm:vit_base_patch16_224.augreg_in21k", ("timm/vit_base_patch16_224.augreg_in21k", None)),
    ("timm:vit_base_patch16_224", ("timm/vit_base_patch16_224.augreg2_in21k_ft_in1k", None)),  # timm's default tag
])
def test_hub_names_resolve_to_repositories(name, repo):
    assert remote.repo_of(name) == repo


@pytest.mark.parametrize(("name", "says"), [
    ("hf-hub:", "not a hub name"),
    ("hf-hub:vit-base", "not a hub name"),
    ("hf-hub:a/b/c", "not a hub name"),
    ("hf-hub:google/vit@", "not a hub name"),
    ("hf-hub:../etc/passwd", "not a hub name"),
    ("timm:vit_bsae_patch16_224", "timm has no model 'vit_bsae_patch16_224' (did you mean 'vit_base_patch16_224'?)"),
    ("timm:vit_base_patch16_224.nope", "timm publishes no weights 'nope' for vit_base_patch16_224; valid tags:"),
])
def test_malformed_hub_name_is_one_line(offline_cache, name, says):
    line = one_line_error("fewshot", "--from", name)
    assert says in line and line.startswith(f"error: --from {name!r}")


@pytest.mark.parametrize("name", ["hf-hub:google/vit-base-patch16-224-in21k", "timm:vit_base_patch16_224.augreg_in21k"])
def test_hub_name_offline_says_where_to_download(offline_cache, name):
    repo = remote.repo_of(name)[0]
    line = one_line_error("finetune", "--from", name)
    assert f"cannot fetch {repo}: the hub is unreachable (offline) and the cache has no copy" in line
    assert f"from https://huggingface.co/{repo} where you have internet and give --from THAT_FOLDER" in line


def test_hub_name_offline_is_served_from_the_cache(offline_cache, tmp_path):
    """huggingface_hub's cache layout: refs/main names the snapshot that holds the files."""
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    image_size=16, patch_size=4, layer_norm_eps=1e-6, num_labels=2)
    hf = randomise(transformers.ViTForImageClassification(config))
    repo = offline_cache / "models--acme--tiny-vit"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    hf.save_pretrained(repo / "snapshots" / ("0" * 40))
    source = reader.read("hf-hub:acme/tiny-vit")
    assert source.path == repo / "snapshots" / ("0" * 40) / "model.safetensors"
    with torch.no_grad():
        assert max_diff(vit_forward(source), hf(pixel_values=BATCH).logits) <= 1e-4
    (repo / "snapshots" / ("0" * 40) / "model.safetensors").unlink()  # config cached, weights not
    with pytest.raises(CheckpointError, match="cannot fetch acme/tiny-vit"):
        reader.read("hf-hub:acme/tiny-vit")

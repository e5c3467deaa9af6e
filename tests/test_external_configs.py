"""External configs are read through one typed schema: cases by family, and a property test.

Each folder is written by its own framework (transformers' `save_pretrained`, timm's `save_for_hf`,
vit's own export); then its config.json (and preprocessor_config.json) is rewritten with drawn values
in the fields the readers use, nested sections included. Reading it and building the model it
describes must either work or end in one `VitError` line naming the file; never another exception.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from foreign import randomise

from vitcli.errors import VitError
from vitcli.recipe import assembly
from vitcli.weights import reader

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

HF_FIELDS = ["model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "patch_size", "image_size", "num_channels", "hidden_act", "qkv_bias", "pooler_act", "layer_norm_eps",
             "id2label", "label2id", "architectures"]
PREPROCESSOR_FIELDS = ["image_mean", "image_std", "do_normalize", "size"]
TIMM_FIELDS = ["architecture", "model_args", "pretrained_cfg", "label_names", "num_classes",
               "model_args.num_heads", "model_args.img_size", "model_args.in_chans", "model_args.embed_dim",
               "pretrained_cfg.input_size", "pretrained_cfg.mean", "pretrained_cfg.std", "pretrained_cfg.label_names"]
VIT_FIELDS = ["vit_model", "vit_recipe", "label_names", "vit_model.patch", "vit_model.res", "vit_model.heads",
              "vit_model.posemb", "vit_model.pool", "vit_model.width", "vit_model.name", "vit_model.hybrid",
              "vit_model.representation_size", "vit_model.num_classes", "vit_recipe.data", "vit_recipe.model"]


def _hf_folder(folder: Path) -> Path:
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=16, patch_size=4, layer_norm_eps=1e-6,
                                 id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    randomise(transformers.ViTForImageClassification(cfg)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "ViTImageProcessor", "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return folder


def _timm_folder(folder: Path) -> Path:
    import timm
    from timm.models._hub import save_for_hf

    src = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                            mlp_ratio=2.0, num_classes=3)
    save_for_hf(randomise(src), folder, safe_serialization=True, model_config={"label_names": ["a", "b", "c"]})
    return folder


def _vit_folder(folder: Path) -> Path:
    from vitcli.models import build_model, describe
    from vitcli.recipe.config import ModelCfg
    from vitcli.weights.convert import export

    cfg = ModelCfg(name="Ti/4", res=(16, 16), width=32, depth=2, heads=2, mlp_dim=64)
    model = randomise(build_model(cfg, 2))
    source = reader.Pretrained(folder / "x", dict(model.state_dict()), model=describe(cfg, 2),
                               recipe={"data": {"norm": "paper"}}, label_names=["a", "b"])
    export(source, "timm", folder / "out")
    return folder / "out"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("external")
    made = {"hf": _hf_folder(root / "hf"), "timm": _timm_folder(root / "timm"), "vit": _vit_folder(root / "vit")}
    return {kind: folder for kind, folder in made.items()}


def load(folder: Path) -> None:
    """What `vit eval --from FOLDER` does before it needs data: read, assemble the recipe, build the model."""
    from vitcli.weights.restore import restore

    source = reader.read(folder)
    cfg = assembly.from_checkpoint(source, None, ["data.source=builtin:digits"], [], assembly.EVALUATE)
    restore(source, cfg.model, weights=cfg.eval.weights)


def load_or_one_line(folder: Path) -> str | None:
    """None when the folder loads; the error line when it is refused (anything else fails the test)."""
    try:
        load(folder)
    except VitError as exc:
        text = str(exc)
        assert "\n" not in text and text.strip(), repr(text)
        return text
    return None


def _set(config: dict, field: str, value) -> None:
    *parents, key = field.split(".")
    node = config
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[key] = value


# -- the cases of issue 31, family 1 (and family 9's config cases) ---------------------------------------
HF_CASES = [
    ({"num_hidden_layers": "12"}, "config.json: num_hidden_layers: expected a whole number in [1, 65536], got '12'"),
    ({"patch_size": None, "hidden_size": 0}, "config.json: hidden_size: expected a whole number in [1, 65536], got 0"),
    ({"patch_size": "16"}, "config.json: patch_size: expected a size in pixels"),
    ({"layer_norm_eps": "abc"}, "config.json: layer_norm_eps: expected a LayerNorm epsilon in (0, 0.1]"),
    ({"id2label": ["cat", "dog"]}, "config.json: id2label: expected a mapping of class indices to names"),
    ({"id2label": {"cat": "cat", "dog": "dog"}}, "config.json: id2label['cat']: expected keys \"0\" to \"1\""),
    ({"image_size": [16, "a"]}, "config.json: image_size: expected a size in pixels"),
    ({"hidden_size": 64}, "config.json hidden_size 64 does not match the weights (32)"),
    ({"num_attention_heads": 3}, "num_attention_heads"),
    ({"qkv_bias": "yes"}, "config.json: qkv_bias: expected true or false, got 'yes'"),
]
PRE_CASES = [
    ({"image_mean": "a"}, "preprocessor_config.json: image_mean: expected a list of 1 to 64 finite numbers"),
    ({"image_mean": 0.5}, "preprocessor_config.json: image_mean: expected a list of 1 to 64 finite numbers"),
    ({"image_std": [0.5, 0, 0.5]}, "preprocessor_config.json: image_std: expected a list of 1 to 64 positive"),
]
TIMM_CASES = [
    ({"model_args": {"num_heads": "6"}}, "config.json: model_args.num_heads: expected a whole number"),
    ({"model_args": {"img_size": [16]}, "pretrained_cfg": {}}, None),  # one side means a square
    ({"model_args": ["a"]}, "config.json: model_args: expected a mapping, got ['a']"),
    ({"pretrained_cfg": ["a"]}, "config.json: pretrained_cfg: expected a mapping, got ['a']"),
    ({"pretrained_cfg": {"input_size": ["a", 16, 16]}}, "config.json: pretrained_cfg.input_size: expected "
                                                        "[channels, height, width]"),
    ({"pretrained_cfg": {"mean": [0.5, 0.5]}, "label_names": None}, None),
    ({"label_names": "abc"}, "config.json: label_names: expected a list of class names (strings), got 'abc'"),
]


def _rewrite(src: Path, dst: Path, changes: dict, name: str = "config.json") -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    config = json.loads((dst / name).read_text())
    for field, value in changes.items():
        _set(config, field, value)
    (dst / name).write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize(("kind", "name", "changes", "expected"),
                         [("hf", "config.json", c, e) for c, e in HF_CASES]
                         + [("hf", "preprocessor_config.json", c, e) for c, e in PRE_CASES]
                         + [("timm", "config.json", c, e) for c, e in TIMM_CASES])
def test_a_wrong_field_is_one_line_naming_file_field_and_value(folders, tmp_path, kind, name, changes, expected):
    folder = _rewrite(folders[kind], tmp_path / "m", changes, name)
    error = load_or_one_line(folder)
    if expected is None:
        assert error is None
    else:
        assert error is not None and expected in error, error


def test_the_folders_load_as_written(folders):
    for folder in folders.values():
        assert load_or_one_line(folder) is None


_edges = st.sampled_from([-1, 0, 1, 2, 3, 4, 16, 32, 64, 2**31, 10**30, 0.5, 1e-6, 1e-12, float("nan"),
                          float("inf"), -0.0, True, False, None, "", "16", "abc", "vit", "gelu", "tanh", "token"])
_scalars = st.one_of(_edges, _edges, st.integers(min_value=-(10**20), max_value=10**20),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.booleans())
_values = st.one_of(_scalars, _scalars, st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(["0", "1", "2", "a", "num_heads", "mean"]) | st.text(
        max_size=6), inner, max_size=3)), max_leaves=10))
_drawn = st.one_of(
    st.tuples(st.just("hf"), st.just("config.json"), st.lists(st.tuples(st.sampled_from(HF_FIELDS), _values),
                                                               min_size=1, max_size=3)),
    st.tuples(st.just("hf"), st.just("preprocessor_config.json"),
              st.lists(st.tuples(st.sampled_from(PREPROCESSOR_FIELDS), _values), min_size=1, max_size=2)),
    st.tuples(st.just("timm"), st.just("config.json"),
              st.lists(st.tuples(st.sampled_from(TIMM_FIELDS), _values), min_size=1, max_size=3)),
    st.tuples(st.just("vit"), st.just("config.json"),
              st.lists(st.tuples(st.sampled_from(VIT_FIELDS), _values), min_size=1, max_size=3)),
)


# derandomize: CI draws the same cases every run (as tests/test_recipe_fuzz.py does); a case a random run
# once found stays as an @example.
@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(drawn=_drawn)
def test_every_drawn_config_loads_or_is_refused_in_one_line(folders, tmp_path, drawn):
    kind, name, changes = drawn
    folder = _rewrite(folders[kind], tmp_path / "m", dict(changes), name)
    with torch.no_grad():
        load_or_one_line(folder)


_VIT_RECIPE_FIELDS = ["vit_recipe.data.norm", "vit_recipe.data.mean", "vit_recipe.data.std", "vit_recipe.data.eval_crop",
                      "vit_recipe.data", "vit_recipe.model", "vit_recipe.model.res", "vit_recipe.model.heads",
                      "label_names", "vit_model.heads", "vit_model.res", "vit_model.num_classes"]


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@example(changes=[("vit_model.res", None)])  # found by a random run: a null res reached tuple(None)
@given(changes=st.lists(st.tuples(st.sampled_from(_VIT_RECIPE_FIELDS), _values), min_size=1, max_size=3))
def test_every_drawn_vit_config_exports_or_is_refused_in_one_line(folders, tmp_path, changes):
    """`vit export` reads what a vit config.json stores (the run's recipe, its model) beyond what eval reads:
    the preprocessing it writes into the exported config. Either it exports or it is one VitError line."""
    from vitcli.weights.convert import export

    folder = _rewrite(folders["vit"], tmp_path / "m", dict(changes))
    out = tmp_path / "exp"
    shutil.rmtree(out, ignore_errors=True)
    try:
        with torch.no_grad():
            export(reader.read(folder), "timm", out, weights="raw")
    except VitError as exc:
        assert "\n" not in str(exc) and str(exc).strip(), repr(str(exc))

"""`vit inspect` end to end on a tiny trained run: the files it writes, their numbers, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import CLASSES, error_line, invoke, one_json, tiny_recipe
from PIL import Image

from vitcli import recipe
from vitcli.engine import jobs
from vitcli.engine.runtime.progress import Reporter

FIGURES = ("embedding_filters", "posemb_similarity", "attention_distance", "attention_maps")


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """A 4-step class-token run of the tiny recipe, evaluated every 2 steps."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = recipe.from_data(tiny_recipe(tiny_data, train={"steps": 4, "device": "cpu"},
                                       data={"eval_split": "test"}, eval={"every": 2}), "test")
    out = tmp_path_factory.mktemp("inspect") / "run"
    jobs.train(cfg, out, render=recipe.dump, log=Reporter(enabled=False))
    torch.set_num_threads(before)
    return out


def test_inspect_a_run_writes_every_figure_and_the_numbers(run, tmp_path):
    summary = one_json(invoke("inspect", run, "--out", tmp_path / "figs", "--samples", 20, "--json"))
    assert set(summary["figures"]) == {*FIGURES, "learning_curves"} and summary["skipped"] == {}
    for path in summary["figures"].values():
        with Image.open(path) as image:
            assert image.format == "PNG" and len(np.unique(np.asarray(image.convert("L")))) > 10
    assert summary["grid"] == [4, 4] and summary["patch_pixels"] == [4.0, 4.0] and summary["pool"] == "token"
    numbers = json.loads((tmp_path / "figs" / "inspection.json").read_text())
    assert numbers["attention_distance"]["images"] == 20  # --samples of the checkpoint's eval split
    distance = np.array(numbers["attention_distance"]["pixels"])
    assert distance.shape == (2, 2) and ((distance > 0) & (distance < 16 * 2 ** 0.5)).all()
    sim = np.array(numbers["posemb_similarity"]["matrix"])
    assert sim.shape == (16, 16) and np.allclose(np.diag(sim), 1.0, atol=1e-5) and np.allclose(sim, sim.T)
    assert len(numbers["embedding_filters"]["components"]) == 28
    maps = numbers["attention_maps"]
    # drawn across the classes (seeded), not the split's first 8: every class is shown, no image twice
    assert len(maps) == 8 and {m["label"] for m in maps} == set(CLASSES)
    assert len({m["image"] for m in maps}) == 8 and all(m["image"].startswith("test[") for m in maps)
    assert maps[0]["predicted"] in CLASSES and np.array(maps[0]["rollout"]).shape == (4, 4)
    assert numbers["learning_curves"]["rows"] >= 4  # 4 training rows and 2 evaluations


def test_inspect_own_images_at_another_resolution(run, tmp_path):
    paths = []
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.full((20, 28, 3), colour, dtype=np.uint8)).save(path)
        paths.append(path)
    summary = one_json(invoke("inspect", "--from", run / "model.safetensors", "--images", paths[0], "--images",
                              paths[1], "--res", 32, "--out", tmp_path / "figs", "--json"))
    assert "learning_curves" not in summary["figures"]  # a file has no metrics.jsonl
    assert summary["grid"] == [8, 8] and summary["res"] == [32, 32]
    numbers = json.loads((tmp_path / "figs" / "inspection.json").read_text())
    assert numbers["posemb_resampled"] == "4x4 -> 8x8 (paper)"
    assert [m["image"] for m in numbers["attention_maps"]] == ["img0.png", "img1.png"]
    assert numbers["attention_distance"]["images"] == 2  # only the given images: no --data, no --split
    with Image.open(summary["figures"]["attention_maps"]) as image:
        assert image.size == (320, 390)


@pytest.mark.parametrize("args, message", [
    ((), "give a RUN directory or --from"),
    (("--from", "missing.pt"), "--from missing.pt: no such file"),
])
def test_bad_inspect_input_is_one_line(args, message):
    assert message in error_line(invoke("inspect", *args))


def test_an_unreadable_image_is_one_line(run, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    line = error_line(invoke("inspect", "--from", run, "--images", bad, "--out", tmp_path / "figs"))
    assert f"--images {bad}: not an image in a format vit reads (" in line


def test_a_folder_that_is_not_a_run_is_one_line(run, tmp_path):
    line = error_line(invoke("inspect", tmp_path, "--from", run / "model.safetensors", "--out", tmp_path / "f"))
    assert "no metrics.jsonl there" in line and not (tmp_path / "f").exists()


def test_weights_alone_give_the_weight_figures_and_say_what_needs_images(tmp_path):
    from vitcli.recipe.config import ModelCfg
    from vitcli.models import build_model

    model = build_model(ModelCfg(name="Ti/4", res=(16, 16), width=32, depth=2, heads=2, mlp_dim=64), 4)
    torch.save(model.state_dict(), tmp_path / "plain.pth")  # a timm state dict: no recipe, no data
    sets = ["model.name=Ti/4", "model.res=16", "model.width=32", "model.depth=2", "model.heads=2", "model.mlp_dim=64"]
    args = [a for item in sets for a in ("--set", item)]
    summary = one_json(invoke("inspect", "--from", tmp_path / "plain.pth", *args, "--out", tmp_path / "f", "--json"))
    assert set(summary["figures"]) == {"embedding_filters", "posemb_similarity"}
    assert set(summary["skipped"]) == {"attention_distance", "attention_maps"}
    assert "--images" in summary["skipped"]["attention_maps"]


def test_another_data_source_is_sampled_from_its_own_held_out_split(run, tiny_data, tmp_path):
    summary = one_json(invoke("inspect", "--from", run, "--data", tiny_data, "--samples", 5, "--out", tmp_path / "f",
                              "--json"))
    assert summary["data"] == {"source": str(tiny_data), "split": "test"}
    assert summary["attention_distance"]["images"] == 5


def test_images_given_to_inspect_are_decoded_upright_as_every_command_decodes_them(tmp_path):
    """--images goes through data/images.py like predict and the loaders: EXIF orientation applied."""
    from PIL import Image

    from vitcli.engine.evaluate.inspect_report import from_files

    pixels = np.zeros((16, 32, 3), dtype=np.uint8)
    pixels[:, :16, 0] = 255  # left half red, right half blue
    pixels[:, 16:, 2] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    image.save(tmp_path / "tagged.jpg", exif=exif, quality=95)
    image.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.jpg", quality=95)
    cfg = recipe.from_data(tiny_recipe("x"), "test")
    tagged, upright = (from_files([tmp_path / name], cfg).pixels[0] for name in ("tagged.jpg", "upright.jpg"))
    assert np.abs(tagged.astype(int) - upright.astype(int)).max() < 40  # JPEG noise, not a quarter turn

"""`data.SourceRef`: every data-source string is read by one parser."""

from __future__ import annotations

from pathlib import Path

import pytest

from vitcli.data import SourceRef
from vitcli.recipe import transfer


@pytest.mark.parametrize("text, kind, target, name", [
    ("builtin:digits", "builtin", "digits", "digits"),
    ("imagefolder:~/photos/", "imagefolder", "~/photos/", "photos"),
    ("uoft-cs/cifar10", "hub", "uoft-cs/cifar10", "cifar10"),
    ("cifar10", "hub", "cifar10", "cifar10"),
    ("../shared/data/cifar10/", "local", "../shared/data/cifar10/", "cifar10"),
    ("a/b/c", "local", "a/b/c", "c"),  # more than owner/name: a path, so a typo is a missing path
    ("~/data", "local", "~/data", "data"),
    ("C:\\data\\pets", "local", "C:\\data\\pets", "pets"),
])
def test_parse(text, kind, target, name):
    ref = SourceRef.parse(text)
    assert (ref.kind, ref.target, ref.name, str(ref)) == (kind, target, name, text)


def test_an_existing_folder_named_like_a_hub_id_is_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert SourceRef.parse("org/name").kind == "local" and SourceRef.parse("org/other").kind == "hub"
    assert SourceRef.parse("imagefolder:~/x").path == Path("~/x").expanduser()


def test_resolved_takes_explicit_relative_paths_from_the_recipe_folder(tmp_path):
    folder = tmp_path / "recipes"
    assert SourceRef.parse("./data").resolved(folder).text == str(folder / "data")
    assert SourceRef.parse("imagefolder:../photos").resolved(folder).text == f"imagefolder:{tmp_path / 'photos'}"
    for text in ("org/name", "builtin:digits", "/abs/path", "imagefolder:photos"):
        assert SourceRef.parse(text).resolved(folder).text == text


def test_the_papers_data_sets_are_recognised_by_the_sources_name():
    for text in ("uoft-cs/cifar10", "../shared/data/cifar10/", "imagefolder:/x/CIFAR-10", "C:\\data\\cifar10"):
        assert transfer.lookup(text).name == "CIFAR-10", text

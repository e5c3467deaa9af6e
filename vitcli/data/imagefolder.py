"""`imagefolder:PATH` as torchvision and timm mean it: class folders, optionally under split folders.

    PATH/<class>/<image>                  one split, 'train'
    PATH/<split>/<class>/<image>          split folders named train, val, validation, test, ... (any case;
                                          the split is the lower-case name)

Images in sub-folders of a class folder belong to that class (torchvision's ImageFolder). Every image
file found is used exactly once; one that would not be (beside class folders, beside split folders,
deeper than `MAX_DEPTH`) is refused in one line, never dropped. A folder of images without class
folders is an unlabelled split (self-supervised training reads it). Files that are not images are
skipped and counted. File names play no part: `datasets`' own imagefolder builder assigns files to
splits by words in their names (`n01440764_val_123.JPEG` lands in 'validation'), which loses images.

Rows of a split are interleaved across classes (each class spread evenly over the split), so that a
percentage slice such as `train[98%:]` holds every class in proportion, not the last class alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vitcli.data.images import image_suffixes
from vitcli.data.ref import SourceRef
from vitcli.errors import DataError
from vitcli.formats import plural

# Folder names (any case) that make a top-level folder a split rather than a class.
SPLIT_FOLDERS = ("train", "training", "val", "valid", "validation", "test", "testing", "eval")
MAX_DEPTH = 4  # folder levels below PATH: <split>/<class>/ plus two levels of sub-folders in a class
_LAYOUT = "an image folder is PATH/<class>/<image> or PATH/<split>/<class>/<image> (split folders: train, val, test)"


@dataclass
class Group:
    """The images of one split: (path, class name or None when the split has no class folders)."""

    images: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return bool(self.images) and self.images[0][1] is not None


@dataclass
class Listing:
    """What an image folder holds: its splits' images, its classes (every split's, sorted), files skipped."""

    source: str
    splits: dict[str, Group]
    classes: list[str]
    skipped: list[str]  # files that are not images (hidden files aside)


def folder_of(source: str) -> Path:
    """The directory an `imagefolder:PATH` source names; a one-line DataError when it is none."""
    folder = SourceRef.parse(source).path
    if not folder.is_dir():
        raise DataError(f"data.source {source!r}: {str(folder)!r} is not a directory of class folders")
    return folder


def scan(source: str) -> Listing:
    """List an image folder: every image assigned to a split and class, or a one-line DataError."""
    folder = folder_of(source)
    walk = _Walk(source, image_suffixes())
    dirs, images = walk.entries(folder, 0)
    split_dirs = [d for d in dirs if d.name.lower() in SPLIT_FOLDERS]
    if split_dirs and len(split_dirs) < len(dirs):
        other = next(d for d in dirs if d not in split_dirs)
        raise DataError(f"data.source {source!r}: {str(folder)!r} holds split folders ({split_dirs[0].name}) beside "
                        f"other folders ({other.name}), whose images would belong to no split; {_LAYOUT}")
    if split_dirs:
        if images:
            raise walk.unused(images[0], "beside the split folders")
        if len({d.name.lower() for d in split_dirs}) < len(split_dirs):
            raise DataError(f"data.source {source!r}: {str(folder)!r} holds split folders whose names differ only in "
                            f"case ({', '.join(d.name for d in split_dirs)}); merge them")
        splits = {d.name.lower(): walk.split(d, 1) for d in split_dirs}  # 'Train/' is the split 'train'
    else:
        splits = {"train": walk.split(folder, 0, dirs, images)}
    for name, group in splits.items():
        if not group.images:
            raise DataError(f"data.source {source!r}: the split folder {name!r} holds no images; add images in "
                            "class folders or remove it")
    classes = sorted({c for g in splits.values() for _, c in g.images if c is not None})
    return Listing(source, splits, classes, walk.skipped)


class _Walk:
    """One bounded walk of an image folder: sorted, hidden entries skipped, no deeper than MAX_DEPTH."""

    def __init__(self, source: str, suffixes: frozenset[str]):
        self.source, self.suffixes, self.skipped = source, suffixes, []

    def entries(self, path: Path, depth: int) -> tuple[list[Path], list[Path]]:
        """(sub-folders, image files) of `path`, sorted; other files are counted as skipped."""
        try:
            found = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as e:
            raise DataError(f"data.source {self.source!r}: cannot list {str(path)!r} ({e.strerror})") from None
        dirs, images = [], []
        for entry in (e for e in found if not e.name.startswith(".")):
            if not _utf8(entry.path):  # a name in another encoding: the data set stores paths as UTF-8 text
                raise DataError(f"data.source {self.source!r}: {entry.path!r} has a name that is not UTF-8 text "
                                f"({os.fsencode(entry.name)!r}); rename it in UTF-8 (class names and image paths "
                                "are stored as text)")
            if entry.is_dir():
                if depth + 1 > MAX_DEPTH:
                    raise DataError(f"data.source {self.source!r}: {entry.path!r} is a folder {depth + 1} levels "
                                    f"down, deeper than an image folder goes ({MAX_DEPTH}); {_LAYOUT}: point "
                                    "imagefolder: at the folder that holds the class (or split) folders")
                dirs.append(Path(entry.path))
            elif os.path.splitext(entry.name)[1].lower() in self.suffixes:
                images.append(Path(entry.path))
            else:
                self.skipped.append(entry.path)
        return dirs, images

    def split(self, path: Path, depth: int, dirs=None, images=None) -> Group:
        """The images of one split folder: one class per sub-folder, or unlabelled without any."""
        if dirs is None:
            dirs, images = self.entries(path, depth)
        if not dirs:
            return Group([(str(p), None) for p in images])
        if images:
            raise self.unused(images[0], "beside class folders, in no class")
        group = Group()
        for class_dir in dirs:
            found = self.below(class_dir, depth + 1)
            if not found:
                raise DataError(f"data.source {self.source!r}: class folder {str(class_dir)!r} holds no images; add "
                                "images or remove the folder")
            group.images += [(p, class_dir.name) for p in found]
        return group

    def below(self, path: Path, depth: int) -> list[str]:
        """Every image under a class folder, sub-folders included."""
        dirs, images = self.entries(path, depth)
        found = [str(p) for p in images]
        for sub in dirs:
            found += self.below(sub, depth + 1)
        return found

    def unused(self, image: Path, where: str) -> DataError:
        return DataError(f"data.source {self.source!r}: image {str(image)!r} lies {where} and would not be used; "
                         f"{_LAYOUT}: move it into a class folder or remove it")


def _utf8(text: str) -> bool:
    """Whether a name read from disk is text: bytes that are not UTF-8 come back as surrogates."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def interleaved(group: Group, classes: list[str]) -> list[tuple[str, str | None]]:
    """A split's images ordered so that each class is spread evenly: image j of a class of n sits at j/n."""
    by_class: dict[str | None, list[str]] = {}
    for path, name in group.images:
        by_class.setdefault(name, []).append(path)
    index = {name: i for i, name in enumerate(classes)}
    keyed = [((j + 0.5) / len(paths), index.get(name, 0), path, name)
             for name, paths in by_class.items() for j, path in enumerate(paths)]
    return [(path, name) for _, _, path, name in sorted(keyed)]


def to_datasets(listing: Listing):
    """The listing as a `datasets.DatasetDict`: an Image column `image` and a ClassLabel column `label`
    (left out for an unlabelled split), the same class names in every split."""
    import datasets

    parts = {}
    for name, group in listing.splits.items():
        rows = interleaved(group, listing.classes)
        if group.labelled:
            features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=listing.classes)})
            data = {"image": [p for p, _ in rows], "label": [c for _, c in rows]}
        else:
            features = datasets.Features({"image": datasets.Image()})
            data = {"image": [p for p, _ in rows]}
        parts[name] = datasets.Dataset.from_dict(data, features=features, split=name)
    return datasets.DatasetDict(parts)


SHOWN_CLASSES = 20  # a count line names at most this many classes (ImageNet has 1,000)


def counts(listing: Listing, names: list[str]) -> str:
    """One line: how many images the named splits hold, per class, and how many files were skipped."""
    line = "; ".join(_split_counts(listing, name) for name in names) or f"{listing.source}"
    if listing.skipped:
        line += f"; {plural(len(listing.skipped), 'file')} that are not images skipped (e.g. {listing.skipped[0]})"
    return line


def _split_counts(listing: Listing, split: str) -> str:
    group = listing.splits[split]
    head = f"{listing.source} [{split}]: {plural(len(group.images), 'image')}"
    if not group.labelled:
        return f"{head}, no class folders (unlabelled)"
    per: dict[str, int] = {}
    for _, name in group.images:
        per[name] = per.get(name, 0) + 1
    shown = ", ".join(f"{name} {per[name]:,}" for name in list(per)[:SHOWN_CLASSES])
    more = f", ... ({len(per) - SHOWN_CLASSES} more, {min(per.values())}-{max(per.values())} each)" \
        if len(per) > SHOWN_CLASSES else ""
    return f"{head} in {plural(len(per), 'class', 'classes')} ({shown}{more})"

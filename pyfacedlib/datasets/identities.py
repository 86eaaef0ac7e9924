"""Identity folders (root/Name/*.jpg), image listings, and identity-disjoint splits."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def _excluder(exclude: Iterable[str | os.PathLike]):
    """A test `skip(path)`: True for a path at or under one of `exclude` (compared as given, made
    absolute, and with symbolic links in the folders above resolved; a link inside an excluded folder
    is excluded even when it points outside)."""
    roots = {os.path.abspath(e) for e in exclude} | {os.path.realpath(e) for e in exclude}
    if not roots:
        return lambda path: False
    folders: dict[str, str] = {}

    def under(path: str) -> bool:
        return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)

    def skip(path: Path) -> bool:
        parent = str(path.parent)
        if parent not in folders:
            folders[parent] = os.path.realpath(parent)
        return under(os.path.abspath(path)) or under(os.path.join(folders[parent], path.name))

    return skip


def list_files(inputs: Iterable[str | os.PathLike], suffixes: Sequence[str] = IMAGE_SUFFIXES,
               exclude: Iterable[str | os.PathLike] = ()) -> list[str]:
    """Files as given, and every file with one of `suffixes` under the folders given (recursively,
    sorted; hidden files and folders skipped), without repeats. FileNotFoundError for a missing input.

    exclude: paths (files or folders) whose subtrees are never read from a folder given, such as a
    command's own outputs inside its input (cluster ~/Pictures ~/Pictures/clusters must not read its
    links as photos on the next run); a file named in `inputs` itself is kept."""
    skip = _excluder(exclude)
    files: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += [str(p) for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in suffixes
                      and not any(part.startswith(".") for part in p.relative_to(path).parts) and not skip(p)]
        elif path.exists():
            files.append(str(path))
        else:
            raise FileNotFoundError(f"input not found: {path}")
    return list(dict.fromkeys(files))


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder` (recursively, hidden entries skipped), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    return [Path(p) for p in list_files([root])]


def labelled_files(root: str | os.PathLike, labelled: bool = True, suffixes: Sequence[str] = IMAGE_SUFFIXES,
                   exclude: Iterable[str | os.PathLike] = ()) -> dict[str, str | None]:
    """The one rule from files to people: image path -> the person it shows, for everything under `root`.

    - root/Name/**/x.jpg -> "Name": the first folder under root names the person, however deep the
      photo lies below it (root/Name/2019/x.jpg is Name's);
    - root/Name.jpg -> "Name" when `labelled` (face_recognition's convention: one photo of a person
      named by the file), None otherwise (export and cluster read loose photos as unlabelled);
    - a file given as `root` -> None.
    Hidden files and folders are skipped, and whatever lies at or under a path of `exclude` (a
    command's outputs: list_files); paths are sorted. FileNotFoundError when root is missing.
    Fine-tuning, evaluation, enrolment, exports and the CLI all read folders through this function.
    """
    path = Path(root)
    files = list_files([path], suffixes, exclude)
    if not path.is_dir():
        return {file: None for file in files}
    people: dict[str, str | None] = {}
    for file in files:
        parts = Path(file).relative_to(path).parts
        people[file] = parts[0] if len(parts) > 1 else (Path(file).stem if labelled else None)
    return people


def labelled_inputs(inputs: Iterable[str | os.PathLike], labelled: bool = False,
                    suffixes: Sequence[str] = IMAGE_SUFFIXES,
                    exclude: Iterable[str | os.PathLike] = ()) -> dict[str, str | None]:
    """labelled_files over several inputs (folders and files), in order, the first label of a file kept;
    `exclude` as list_files."""
    exclude = list(exclude)
    people: dict[str, str | None] = {}
    for item in inputs:
        for file, person in labelled_files(item, labelled, suffixes, exclude).items():
            people.setdefault(file, person)
    return people


@dataclass
class IdentityDataset:
    """Images grouped by identity: root/Name/*.jpg."""

    root: Path
    paths: list[str]
    labels: list[str]

    @property
    def identities(self) -> list[str]:
        """Identity names, sorted."""
        return sorted(set(self.labels))

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, identities: Iterable[str]) -> IdentityDataset:
        """Only the images of `identities`."""
        keep = set(identities)
        pairs = [(p, label) for p, label in zip(self.paths, self.labels) if label in keep]
        return IdentityDataset(self.root, [p for p, _ in pairs], [label for _, label in pairs])

    def with_min_images(self, minimum: int) -> IdentityDataset:
        """Only identities that have at least `minimum` images."""
        counts: dict[str, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        return self.subset(name for name, n in counts.items() if n >= minimum)


def identity_folders(root: str | os.PathLike) -> IdentityDataset:
    """The people under `root` (datasets.labelled_files' rule: root/Name/**/x.jpg and root/Name.jpg).
    Raises NotADirectoryError / ValueError when there are no images."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"dataset folder not found: {root}")
    people = labelled_files(root, labelled=True)
    paths = list(people)
    labels = [str(people[p]) for p in paths]
    if not paths:
        raise ValueError(f"no images found in identity folders under {root} (expected root/Name/*.jpg)")
    return IdentityDataset(root, paths, labels)


def identity_split(identities: Sequence[str], fractions: Sequence[float], seed: int = 0) -> list[list[str]]:
    """Splits identities (not images) into disjoint groups of the given fractions."""
    if abs(sum(fractions) - 1) > 1e-9 or any(f < 0 for f in fractions):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    order = [identities[i] for i in np.random.default_rng(seed).permutation(len(identities))]
    bounds = np.round(np.cumsum([0, *fractions]) * len(order)).astype(int)
    return [sorted(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]



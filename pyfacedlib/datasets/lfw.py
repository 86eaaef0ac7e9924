"""The LFW protocol files: pairs (10 folds or the dev split), people, image paths."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Pair:
    """One LFW pair: two images, same person or not, and its fold."""

    name1: str
    index1: int
    name2: str
    index2: int
    same: bool
    fold: int


def lfw_image(lfw_images: str | os.PathLike, name: str, index: int) -> str:
    """Path of LFW image `index` (1-based) of `name`: root/Name/Name_0001.jpg."""
    return str(Path(lfw_images) / name / f"{name}_{index:04d}.jpg")


def _parse_pair(fields: list[str], fold: int, where: str) -> Pair:
    if len(fields) == 3:
        return Pair(fields[0], int(fields[1]), fields[0], int(fields[2]), True, fold)
    if len(fields) == 4:
        return Pair(fields[0], int(fields[1]), fields[2], int(fields[3]), False, fold)
    raise ValueError(f"{where}: expected 'name i j' or 'name1 i name2 j', got {' '.join(fields)!r}")


def read_lfw_pairs(path: str | os.PathLike) -> list[Pair]:
    """pairs.txt (header 'folds n': each fold n same then n different pairs) or
    pairsDevTrain/DevTest.txt (header 'n': n same then n different; one fold)."""
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    header = [int(v) for v in lines[0]]
    folds, per_fold = (1, header[0]) if len(header) == 1 else (header[0], header[1])
    body = lines[1:]
    if len(body) != folds * 2 * per_fold:
        raise ValueError(f"{path}: header says {folds} folds x 2 x {per_fold} pairs, found {len(body)} lines")
    pairs = []
    for i, fields in enumerate(body):
        pair = _parse_pair(fields, i // (2 * per_fold), f"{path}:{i + 2}")
        if pair.same != ((i % (2 * per_fold)) < per_fold):
            raise ValueError(f"{path}:{i + 2}: pair type does not match its position in the fold")
        pairs.append(pair)
    return pairs


def pair_images(pairs: Sequence[Pair], lfw_images: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(unique image paths, index of each pair's first image, index of its second image): every
    image once, so it is aligned and embedded once however many pairs use it."""
    a = [lfw_image(lfw_images, p.name1, p.index1) for p in pairs]
    b = [lfw_image(lfw_images, p.name2, p.index2) for p in pairs]
    unique = list(dict.fromkeys(a + b))
    index = {s: i for i, s in enumerate(unique)}
    return unique, np.array([index[s] for s in a], dtype=np.int64), np.array([index[s] for s in b], dtype=np.int64)


def read_lfw_people(path: str | os.PathLike) -> list[list[tuple[str, int]]]:
    """people.txt (10 folds) or peopleDevTrain/DevTest.txt (one set): per fold, (name, image count)."""
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(lines) > 1 and len(lines[1]) == 1:  # people.txt: folds, then per fold a count and its names
        folds, i, out = int(lines[0][0]), 1, []
        for _ in range(folds):
            count = int(lines[i][0])
            out.append([(n, int(c)) for n, c in lines[i + 1:i + 1 + count]])
            i += 1 + count
        return out
    count = int(lines[0][0])
    people = [(n, int(c)) for n, c in lines[1:]]
    if len(people) != count:
        raise ValueError(f"{path}: header says {count} people, found {len(people)}")
    return [people]



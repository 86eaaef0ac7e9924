"""The bad-input matrix (docs/reliability.md, "Bad-input matrix"): every verb that reads user inputs,
given a missing path, an empty folder, files named .jpg that are not images (random bytes, a
truncated JPEG, text, EPS), a 150-MP image, grayscale / 16-bit / RGBA PNGs (good inputs: they work),
a video without frames, a --model that is not a model, a gallery made with another model: the
documented exit code, a one-line error naming the input (no traceback), and in batch verbs the other
inputs done, the bad ones listed (`PATH: ERROR why`, exit 3).

The command line runs in-process (pyfacedlib.cli.main); the inputs are built once, from 3 LFW photos."""
from __future__ import annotations

import json
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pyfacedlib.cli import main

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
BAD = ("random.jpg", "truncated.jpg", "notes.jpg", "figure.jpg", "panorama.png")  # bytes, cut JPEG, text, EPS, 150 MP
GOOD = ("ann.jpg", "gray.png", "g16.png", "rgba.png")                              # Ann's folder: one face each


@dataclass
class Inputs:
    missing: Path      # does not exist
    empty: Path        # an empty folder
    photos: Path       # identity folders: Ann/ (GOOD), Bob/ (2 photos), Bad/ (BAD)
    bad_only: Path     # a folder holding BAD only
    known: Path        # flat enrolment folder: Ann.jpg, Bob.jpg, Cid.jpg
    gallery: Path      # enrolled from `known` with the shipped model
    not_model: Path    # a text file named .dat
    other_model: Path  # a valid affine model, not the shipped one (its last layer scaled)
    no_frames: Path    # an .avi holding no frame

    def bad(self, name: str) -> Path:
        return self.photos / "Bad" / name

    def good(self, name: str) -> Path:
        return self.photos / "Ann" / name

    def readable(self) -> list[Path]:
        return [self.good(n) for n in GOOD] + sorted((self.photos / "Bob").iterdir())


def _sparse_png(path: Path, width: int, height: int) -> None:
    """A one-colour grayscale PNG written a row at a time (150 MP in ~150 KB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * width
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def inputs(lfw_sample, tmp_path_factory) -> Inputs:
    import cv2
    from PIL import Image

    import pyfacedlib as pfd
    from pyfacedlib._native import core
    from pyfacedlib.gallery import Gallery

    root = tmp_path_factory.mktemp("matrix")
    first, second, third = lfw_sample[:3]
    ann, bob, bad = root / "photos" / "Ann", root / "photos" / "Bob", root / "photos" / "Bad"
    for folder in (ann, bob, bad, root / "empty", root / "bad_only", root / "known"):
        folder.mkdir(parents=True)
    shutil.copy(first, ann / "ann.jpg")
    rgb = pfd.load_image(first)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    Image.fromarray(gray, "L").save(ann / "gray.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(ann / "g16.png")  # mode I;16
    Image.fromarray(np.dstack([rgb, np.full(gray.shape, 255, np.uint8)]), "RGBA").save(ann / "rgba.png")
    shutil.copy(second, bob / "bob.jpg")
    shutil.copy(third, bob / "bob2.jpg")
    (bad / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    data = first.read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (bad / "notes.jpg").write_text("not a photo\n")
    (bad / "figure.jpg").write_bytes(EPS)
    _sparse_png(bad / "panorama.png", 15000, 10000)
    for name in BAD:
        shutil.copy(bad / name, root / "bad_only" / name)
    for name, photo in (("Ann", first), ("Bob", second), ("Cid", third)):
        shutil.copy(photo, root / "known" / f"{name}.jpg")
    gallery = root / "people.parquet"
    Gallery.build(root / "known", progress=False).save(gallery)
    not_model = root / "model.dat"
    not_model.write_text("not a model\n")
    other_model = root / "other_model.dat"
    other_model.write_bytes(core.scaled_descriptor_net(str(pfd.models.path("dlib_face_recognition_resnet_model_v1")),
                                                       1.01))
    no_frames = root / "no_frames.avi"
    cv2.VideoWriter(str(no_frames), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48)).release()
    if not no_frames.exists():
        no_frames.write_bytes(b"")
    return Inputs(root / "missing", root / "empty", root / "photos", root / "bad_only", root / "known", gallery,
                  not_model, other_model, no_frames)


@pytest.fixture(autouse=True)
def _chip_cache(tmp_path_factory, monkeypatch):
    """evaluate and finetune align through the chip cache: a private one."""
    monkeypatch.setenv("PYFACEDLIB_CACHE", str(tmp_path_factory.getbasetemp() / "matrix-chips"))


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def failed(result: tuple[int, str, str], verb: str, *names: object) -> str:
    """Exit 1 with one error line `pyfacedlib VERB: ...` naming `names`; returns that line."""
    code, _, err = result
    lines = [line for line in err.splitlines() if line.startswith(f"pyfacedlib {verb}: ")]
    assert code == 1 and len(lines) == 1, (code, err)
    assert all(str(name) in lines[0] for name in names), lines[0]
    return lines[0]


def bad_only(i: Inputs) -> list[Path]:
    return [i.bad_only / name for name in BAD]


def listed(err: str, *paths: Path) -> None:
    """Each of `paths` listed on stderr as `PATH: ERROR why`; nothing else is."""
    errors = []
    for line in err.splitlines():
        if ": ERROR " in line:
            source = line.split(": ERROR ")[0]
            errors.append(source.rsplit("]", 1)[-1] if "]" in source else source)  # after a progress bar's text
    errors.sort()
    assert errors == sorted(map(str, paths)), err


# ---- missing path, empty folder -------------------------------------------------------------

def _paths_cases(i: Inputs, path: Path, tmp: Path) -> dict[str, list]:
    return {
        "embed": ["embed", path, "--quiet"],
        "embed-parquet": ["embed", path, "--out", tmp / "a.parquet"],
        "enrol": ["enrol", path, tmp / "g.parquet"],
        "identify": ["identify", i.gallery, path],
        "search": ["search", i.gallery, path],
        "cluster": ["cluster", path, tmp / "clusters"],
        "export": ["export", path, "--out", tmp / "e.parquet"],
        "evaluate": ["evaluate", path, "--out", tmp / "eval"],
        "finetune": ["finetune", path, tmp / "tuned"],
        "convert": ["convert", "--to", "bn", path, tmp / "bn.dat"],
        "convert-onnx": ["convert", "--to", "onnx", path, tmp / "m.onnx"],
        "index": ["index", path, tmp / "i.npz"],
    }


VERBS = ["embed", "embed-parquet", "enrol", "identify", "search", "cluster", "export", "evaluate", "finetune",
         "convert", "convert-onnx", "index"]


@pytest.mark.parametrize("verb", VERBS)
def test_a_missing_path_fails_naming_it(verb, inputs, tmp_path, capsys):
    result = run(capsys, *_paths_cases(inputs, inputs.missing, tmp_path)[verb])
    if verb == "identify":  # identify lists an input it cannot read, and the others are done (below)
        assert result[0] == 1
        listed(result[2], inputs.missing)
        return
    failed(result, verb.split("-")[0], inputs.missing)


@pytest.mark.parametrize("verb", VERBS)
def test_an_empty_folder_fails_naming_it(verb, inputs, tmp_path, capsys):
    failed(run(capsys, *_paths_cases(inputs, inputs.empty, tmp_path)[verb]), verb.split("-")[0], inputs.empty)


@pytest.mark.parametrize("verb", ["embed", "embed-parquet", "export"])
def test_a_missing_path_among_others_stops_embed_and_export(verb, inputs, tmp_path, capsys):
    photo = inputs.good("ann.jpg")
    argv = {"embed": ["embed", photo, inputs.missing, "--quiet"],
            "embed-parquet": ["embed", photo, inputs.missing, "--out", tmp_path / "a.parquet"],
            "export": ["export", photo, inputs.missing, "--out", tmp_path / "e.parquet"]}[verb]
    failed(run(capsys, *argv), verb.split("-")[0], inputs.missing)
    assert not (tmp_path / "a.parquet").exists() and not (tmp_path / "e.parquet").exists()


def test_identify_lists_a_missing_input_and_does_the_others(inputs, capsys):
    code, out, err = run(capsys, "identify", inputs.gallery, inputs.missing, inputs.known / "Bob.jpg")
    assert code == 3
    listed(err, inputs.missing)
    assert ",Bob," in out


# ---- bad files among good ones: listed, the rest done, exit 3; only bad ones: exit 1 --------------------------

def _faces_by_source(table) -> dict[str, int]:
    found: dict[str, int] = {}
    for source, face in zip(table.source_path, table.face):
        found[source] = found.get(source, 0) + int(face >= 0)
    return found


def test_embed_lists_each_bad_file_and_embeds_the_good_ones(inputs, tmp_path, capsys):
    code, _, err = run(capsys, "embed", inputs.photos, "--quiet", "--out", tmp_path / "d.json")
    assert code == 3
    listed(err, *(inputs.bad(n) for n in BAD))
    assert "above the limit" in next(line for line in err.splitlines() if line.startswith(str(inputs.bad(BAD[4]))))
    records = json.loads((tmp_path / "d.json").read_text())
    assert {r["image"] for r in records} == set(map(str, inputs.readable()))
    code, _, err = run(capsys, "embed", inputs.bad_only, "--quiet")
    assert code == 1
    listed(err, *bad_only(inputs))


def test_embed_parquet_lists_each_bad_file_and_embeds_the_good_ones(inputs, tmp_path, capsys):
    from pyfacedlib.facetable import FaceTable

    code, _, err = run(capsys, "embed", inputs.photos, "--out", tmp_path / "a.parquet", "--workers", "2")
    assert code == 3
    listed(err, *(inputs.bad(n) for n in BAD))
    found = _faces_by_source(FaceTable.read_parquet(tmp_path / "a.parquet"))
    assert all(found[str(p)] >= 1 for p in inputs.readable()) and all(found[str(inputs.bad(n))] == 0 for n in BAD)
    code, _, err = run(capsys, "embed", inputs.bad_only, "--out", tmp_path / "b.parquet")
    assert code == 1
    listed(err, *bad_only(inputs))


def test_enrol_lists_each_bad_file_and_enrols_the_good_ones(inputs, tmp_path, capsys):
    from pyfacedlib.gallery import Gallery

    code, _, err = run(capsys, "enrol", inputs.photos, tmp_path / "g.parquet")
    assert code == 3
    listed(err, *(inputs.bad(n) for n in BAD))
    gallery = Gallery.load(tmp_path / "g.parquet")
    enrolled = {gallery.table.source_path[i] for i in np.flatnonzero(gallery.table.enrolled)}
    assert enrolled == set(map(str, inputs.readable())) and list(gallery.identities) == ["Ann", "Bob"]
    code, _, err = run(capsys, "enrol", inputs.bad_only, tmp_path / "none.parquet")
    assert code == 1
    listed(err, *bad_only(inputs))


def test_identify_lists_each_bad_file_and_identifies_the_good_ones(inputs, tmp_path, capsys):
    import csv
    import io

    code, out, err = run(capsys, "identify", inputs.gallery, inputs.photos, inputs.no_frames)
    assert code == 3
    listed(err, *(inputs.bad(n) for n in BAD), inputs.no_frames)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["path"] for r in rows if r["identity"] == "Ann"} >= {str(inputs.good(n)) for n in GOOD}
    assert {r["path"] for r in rows} == set(map(str, inputs.readable()))
    code, _, err = run(capsys, "identify", inputs.gallery, inputs.bad_only)
    assert code == 1
    listed(err, *bad_only(inputs))
    code, _, err = run(capsys, "identify", inputs.gallery, inputs.no_frames)  # a video without frames
    assert code == 1 and ("has no frames" in err or "cannot open video" in err), err
    listed(err, inputs.no_frames)


@pytest.mark.parametrize("name", BAD)
def test_search_with_a_bad_query_fails_naming_it(name, inputs, capsys):
    failed(run(capsys, "search", inputs.gallery, inputs.bad(name)), "search", inputs.bad(name))


@pytest.mark.parametrize("name", GOOD[1:])
def test_grayscale_16_bit_and_rgba_queries_work(name, inputs, capsys):
    code, out, _ = run(capsys, "search", inputs.gallery, inputs.good(name), "--k", "1")
    assert code == 0 and out.splitlines()[1].split(",")[7] == "Ann", out


@pytest.mark.parametrize("verb", ["cluster", "export"])
def test_cluster_and_export_list_each_bad_file_and_do_the_good_ones(verb, inputs, tmp_path, capsys):
    from pyfacedlib.facetable import FaceTable

    table = tmp_path / "out" / "faces.parquet"
    argv = (["cluster", inputs.photos, table.parent] if verb == "cluster"
            else ["export", inputs.photos, "--out", table])
    code, _, err = run(capsys, *argv)
    assert code == 3
    listed(err, *(inputs.bad(n) for n in BAD))
    found = _faces_by_source(FaceTable.read_parquet(table))
    assert all(found[str(p)] >= 1 for p in inputs.readable())
    argv = (["cluster", inputs.bad_only, tmp_path / "none"] if verb == "cluster"
            else ["export", inputs.bad_only, "--out", tmp_path / "none.parquet"])
    code, _, err = run(capsys, *argv)
    assert code == 1
    listed(err, *bad_only(inputs))


def test_evaluate_lists_each_bad_file_and_evaluates_the_good_ones(inputs, tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", inputs.photos, "--out", tmp_path / "eval")
    assert code == 3
    listed(err, *(inputs.bad(n) for n in BAD))
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["faces"] == len(inputs.readable()) and report["identities"] == 2
    shutil.copytree(inputs.bad_only, tmp_path / "only_bad" / "Bad")  # no readable photo: no pairs to evaluate
    failed(run(capsys, "evaluate", tmp_path / "only_bad", "--out", tmp_path / "eval2"), "evaluate")


# ---- a --model that is not a model; a gallery of another model ---------------------------------------------

@pytest.mark.parametrize("verb", ["embed", "embed-onnx", "embed-parquet", "enrol", "identify", "search", "cluster",
                                  "export", "evaluate", "finetune", "convert", "convert-onnx"])
def test_a_model_option_that_is_not_a_model_fails_naming_it(verb, inputs, tmp_path, capsys):
    photo, model = inputs.good("ann.jpg"), inputs.not_model
    argv = {
        "embed": ["embed", photo, "--model", model],
        "embed-parquet": ["embed", photo, "--out", tmp_path / "a.parquet", "--model", model],
        "enrol": ["enrol", inputs.known, tmp_path / "g.parquet", "--model", model],
        "identify": ["identify", inputs.gallery, photo, "--model", model],
        "search": ["search", inputs.gallery, photo, "--model", model],
        "cluster": ["cluster", inputs.known, tmp_path / "c", "--model", model],
        "export": ["export", photo, "--out", tmp_path / "e.parquet", "--model", model],
        "evaluate": ["evaluate", inputs.photos, "--out", tmp_path / "eval", "--model", model],
        "finetune": ["finetune", inputs.photos, tmp_path / "tuned", "--base-model", model],
        "convert": ["convert", "--to", "bn", model, tmp_path / "bn.dat"],
        "embed-onnx": ["embed", photo, "--backend", "onnx", "--model", model],
        "convert-onnx": ["convert", "--to", "onnx", model, tmp_path / "m.onnx"],
    }[verb]
    failed(run(capsys, *argv), verb.split("-")[0], model)


@pytest.mark.parametrize("verb", ["identify", "search", "enrol"])
def test_a_gallery_of_another_model_fails_naming_both(verb, inputs, tmp_path, capsys):
    photo, model = inputs.good("ann.jpg"), inputs.other_model
    argv = {"identify": ["identify", inputs.gallery, photo, "--model", model],
            "search": ["search", inputs.gallery, photo, "--model", model],
            "enrol": ["enrol", inputs.known, inputs.gallery, "--model", model]}[verb]  # syncing an existing gallery
    line = failed(run(capsys, *argv), verb, model, inputs.gallery)
    assert "cannot be compared" in line


def test_index_of_a_file_that_is_not_a_table_fails_naming_it(inputs, tmp_path, capsys):
    failed(run(capsys, "index", inputs.bad("notes.jpg"), tmp_path / "i.npz"), "index", inputs.bad("notes.jpg"))

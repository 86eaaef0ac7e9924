"""Face quality (pyfacedlib.quality) on real faces: its range, that it falls when a photo loses
resolution, and where it is used — Face.quality, the face table, identify's CSV, enrolment's
min_quality (listed, never a person's only face)."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pyfacedlib as pfd
from pyfacedlib import quality
from pyfacedlib.align import AlignmentSettings, find_faces
from pyfacedlib.cli import main
from pyfacedlib.gallery import Gallery, GalleryConfig


def _people(lfw_dir: Path, minimum: int, count: int) -> list[Path]:
    people = [p for p in sorted(lfw_dir.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= minimum]
    return people[3:3 + count]


def _shrunk(path: Path, out: Path, factor: float) -> Path:
    """The photo scaled down by `factor` (bilinear): a low-resolution copy of the same face."""
    image = Image.open(path).convert("RGB")
    image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.BILINEAR).save(out)
    return out


@pytest.fixture(scope="module")
def photos(lfw_dir: Path) -> list[Path]:
    return [sorted(p.glob("*.jpg"))[0] for p in _people(lfw_dir, 2, 12)]


def test_quality_is_a_probability_and_falls_with_resolution(photos: list[Path], tmp_path: Path, embedder):
    full, small = [], []
    for i, path in enumerate(photos):
        big_faces = embedder.embed_image(path)
        small_faces = embedder.embed_image(_shrunk(path, tmp_path / f"{i}.png", 0.4))
        if big_faces and small_faces:
            full.append(big_faces[0].quality)
            small.append(small_faces[0].quality)
    full_q, small_q = np.array(full), np.array(small)
    assert len(full_q) >= 8
    assert np.all((full_q >= 0) & (full_q <= 1)) and np.all((small_q >= 0) & (small_q <= 1))
    # the same faces at 40 % of their resolution: lower quality for most, and lower on average
    assert (small_q < full_q).mean() >= 0.75 and small_q.mean() < full_q.mean() - 0.05


def test_face_quality_matches_features_and_refuses_other_detectors(photos: list[Path], embedder):
    rgb = pfd.load_image(photos[0])
    found = find_faces(rgb, AlignmentSettings.for_photos())
    descriptors = embedder.embed_chips(found.chips)
    q = quality.face_quality(found.scores, found.boxes, found.chips, descriptors)
    assert q.shape == (len(found.boxes),) and q.dtype == np.float32
    assert np.allclose(q, [f.quality for f in embedder.embed_image(photos[0])])
    # without descriptors (another model, jitter): the other fitted variant, still a probability
    plain = quality.face_quality(found.scores, found.boxes, found.chips)
    assert 0 <= plain[0] <= 1 and plain[0] != q[0]
    jittered = embedder.embed_image(photos[0], num_jitters=3)
    assert np.isclose(jittered[0].quality, plain[0])
    # fitted on HOG detector scores: the CNN detector's confidence is another scale -> not computed
    assert np.isnan(quality.face_quality(found.scores, found.boxes, found.chips, descriptors, detector="cnn")).all()
    assert quality.face_quality([], np.zeros((0, 4)), np.zeros((0, 150, 150, 3), np.uint8)).shape == (0,)


def test_a_fine_tuned_model_uses_the_variant_without_descriptors(photos: list[Path], tmp_path: Path, embedder):
    model = tmp_path / "scaled.dat"  # as a fine-tune's export: descriptors rescaled
    model.write_bytes(pfd._native.core.scaled_descriptor_net(pfd.models.path("dlib_face_recognition_resnet_model_v1"),
                                                             1.1))
    other = pfd.FaceEmbedder(model)
    assert embedder.shipped_model and not other.shipped_model
    rgb = pfd.load_image(photos[0])
    found = find_faces(rgb, AlignmentSettings.for_photos())
    assert np.isclose(other.embed_image(photos[0])[0].quality,
                      quality.face_quality(found.scores, found.boxes, found.chips)[0])


def test_face_table_and_identify_csv_carry_quality(photos: list[Path], tmp_path: Path):
    known = tmp_path / "known"
    for path in photos[:3]:
        (known / path.parent.name).mkdir(parents=True)
        shutil.copy(path, known / path.parent.name / path.name)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (90, 90, 90)).save(blank)
    gallery = Gallery.build(known, progress=False)
    assert np.isfinite(gallery.table.quality).all()
    gallery.save(tmp_path / "g.parquet")
    assert np.allclose(Gallery.load(tmp_path / "g.parquet").table.quality, gallery.table.quality)
    out = tmp_path / "who.csv"
    assert main(["identify", str(tmp_path / "g.parquet"), str(photos[0]), str(blank), "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    by_path = {r["path"]: r for r in rows}
    assert 0 <= float(by_path[str(photos[0])]["quality"]) <= 1
    assert by_path[str(blank)]["identity"] == "no_faces_found" and by_path[str(blank)]["quality"] == ""


def test_min_quality_skips_low_faces_but_never_a_persons_only_face(lfw_dir: Path, tmp_path: Path):
    people = _people(lfw_dir, 3, 2)
    root = tmp_path / "known"
    for person in people:
        (root / person.name).mkdir(parents=True)
        for path in sorted(person.glob("*.jpg"))[:2]:
            shutil.copy(path, root / person.name / path.name)
    # the first person also has a tiny copy of a photo; the second has only a tiny one of its third
    first, second = people
    _shrunk(sorted(first.glob("*.jpg"))[2], root / first.name / "tiny.png", 0.4)
    for path in (root / second.name).iterdir():
        path.unlink()
    _shrunk(sorted(second.glob("*.jpg"))[2], root / second.name / "tiny.png", 0.4)
    plain = Gallery.build(root, progress=False, config=GalleryConfig(min_quality=0))
    table = plain.table
    tiny_first = table.source_path.index(str(root / first.name / "tiny.png"))
    full_first = [i for i, s in enumerate(table.source_path) if first.name in s and "tiny" not in s]
    assert plain.skipped == {}
    threshold = float(table.quality[tiny_first]) + 1e-3
    assert all(table.quality[i] > threshold for i in full_first), "the tiny copy must score below the originals"
    strict = Gallery.build(root, progress=False, config=GalleryConfig(min_quality=threshold))
    skipped = strict.skipped
    assert list(skipped) == [str(root / first.name / "tiny.png")]
    assert skipped[str(root / first.name / "tiny.png")].startswith("face quality ")
    assert sorted(strict.identities) == sorted([first.name, second.name])  # the second keeps its only face
    assert len(strict) == len(plain) - 1
    # every face below the bar: each person keeps exactly one face, their best
    everyone_low = Gallery.build(root, progress=False, config=GalleryConfig(min_quality=0.99))
    assert len(everyone_low) == 2 and sorted(everyone_low.identities) == sorted([first.name, second.name])
    low_table = everyone_low.table
    first_rows = [i for i, name in enumerate(low_table.identity) if name == first.name]
    assert [i for i in first_rows if low_table.enrolled[i]] == [max(first_rows, key=lambda i: low_table.quality[i])]
    # the rule travels with the gallery file
    strict.save(tmp_path / "g.parquet")
    assert Gallery.load(tmp_path / "g.parquet").config.min_quality == threshold
    with pytest.raises(ValueError, match="min_quality"):
        GalleryConfig(min_quality=1.5)

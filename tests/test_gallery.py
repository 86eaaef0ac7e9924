"""Galleries on real faces: enrol, identify (with "unknown"), search, sync, save/load, video, rules."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib.errors import GalleryError, NoFaceFoundError
from pyfacedlib.evaluate import distance_matrix
from pyfacedlib.gallery import UNKNOWN, Gallery, GalleryConfig, enrolment_photos


def _people_with(lfw_dir: Path, minimum: int) -> list[Path]:
    return [p for p in sorted(lfw_dir.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= minimum]


@pytest.fixture(scope="module")
def lfw_people(lfw_dir: Path) -> dict:
    """4 enrolled LFW people (3 photos each), their other photos as probes, 4 people never enrolled."""
    people = _people_with(lfw_dir, 6)
    known, strangers = people[:40:10], people[5:45:10]
    return {
        "enrol": {p.name: sorted(p.glob("*.jpg"))[:3] for p in known},
        "probes": [(f, p.name) for p in known for f in sorted(p.glob("*.jpg"))[3:5]],
        "unknown": [sorted(p.glob("*.jpg"))[0] for p in strangers],
    }


@pytest.fixture(scope="module")
def enrol_root(lfw_people: dict, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("known")
    for name, files in lfw_people["enrol"].items():
        (root / name).mkdir()
        for f in files:
            shutil.copy(f, root / name / f.name)
    return root


@pytest.fixture(scope="module")
def gallery(enrol_root: Path) -> Gallery:
    return Gallery.build(enrol_root, progress=False)


def test_build_enrols_every_photo(gallery: Gallery, lfw_people: dict):
    assert sorted(gallery.identities) == sorted(lfw_people["enrol"])
    assert len(gallery) == 12 and not gallery.skipped
    t = gallery.table
    assert all(len(s) == 64 for s in t.sha256)
    assert t.model_id == pfd._system.file_sha256(pfd.models.path("dlib_face_recognition_resnet_model_v1"))
    assert t.settings_hash == gallery.settings.key()
    assert gallery.last_sync.summary().startswith("12 added")


def test_identify_names_known_people_and_rejects_strangers(gallery: Gallery, lfw_people: dict):
    assert gallery.calibration.source == "calibrated"
    for path, name in lfw_people["probes"]:
        matches = gallery.identify(path)
        assert matches, path
        best = min(matches, key=lambda m: m.distance)
        assert best.identity == name, (path, best)
        assert 0 <= best.confidence <= 1
        left, top, right, bottom = best.box
        assert right > left and bottom > top
        assert [c for c, _ in best.candidates][0] == name
    strangers = [m.identity for path in lfw_people["unknown"] for m in gallery.identify(path)]
    assert strangers.count(UNKNOWN) >= len(strangers) - 1


def test_identify_equals_a_numpy_brute_force(gallery: Gallery, lfw_people: dict):
    embedder = pfd.FaceEmbedder()
    for path, _ in lfw_people["probes"][:4] + [(p, "") for p in lfw_people["unknown"][:2]]:
        faces = embedder.embed_image(path)
        matches = gallery.identify(path, k=3)
        assert len(matches) == len(faces)
        for face, match in zip(faces, matches):
            d = distance_matrix(face.descriptor[None], gallery.descriptors)[0]
            per_person = {name: d[gallery.labels == name].min() for name in gallery.identities}
            ranked = sorted(per_person.items(), key=lambda kv: kv[1])
            expected = ranked[0][0] if ranked[0][1] <= gallery.threshold else UNKNOWN
            assert match.identity == expected
            assert match.distance == pytest.approx(ranked[0][1], abs=1e-5)
            assert [c for c, _ in match.candidates] == [c for c, _ in ranked[:3]]
            np.testing.assert_allclose([v for _, v in match.candidates], [v for _, v in ranked[:3]], atol=1e-5)
            assert tuple(face.box) == match.box


def test_classifiers_and_threshold_override(gallery: Gallery, lfw_people: dict):
    for rule in ("knn", "svm"):
        for path, name in lfw_people["probes"][::2]:
            best = min(gallery.identify(path, classifier=rule), key=lambda m: m.distance)
            assert best.identity == name, rule
    path = lfw_people["probes"][0][0]
    assert gallery.identify(path, threshold=0.01)[0].identity == UNKNOWN  # the distance rule still rejects
    assert gallery.identify(path, classifier="svm", threshold=0.01)[0].identity == UNKNOWN
    with pytest.raises(ValueError, match="classifier"):
        gallery.identify(path, classifier="forest")


def test_threshold_calibration_rules(gallery: Gallery):
    c = gallery.calibration
    config = gallery.config
    assert config.threshold_floor <= c.threshold <= config.threshold_ceiling
    raw = np.quantile(c.impostor_distances, config.target_fpir)
    assert c.threshold == pytest.approx(np.clip(raw, config.threshold_floor, config.threshold_ceiling))
    assert c.impostor_samples == len(gallery) and c.genuine_samples == len(gallery)
    assert np.all(np.diff(c.impostor_distances) >= 0)
    # confidence: 1 - fraction of impostor distances below d
    assert c.confidence(0.0) == 1.0 and c.confidence(10.0) == 0.0
    gallery.threshold = 0.5
    assert gallery.threshold == 0.5 and gallery.calibration.source == "user"
    gallery.threshold = None
    assert gallery.calibration.source == "calibrated"
    with pytest.raises(ValueError, match="threshold"):
        gallery.threshold = -1
    one = Gallery.from_descriptors(gallery.descriptors[:3], ["a"] * 3)
    assert one.calibration.source == "fallback" and one.threshold == 0.6
    assert np.isnan(one.calibration.confidence(0.3))


def test_save_load_round_trip_is_plain_parquet(gallery: Gallery, tmp_path: Path):
    import pyarrow.parquet as pq

    from pyfacedlib.facetable import schema

    path = tmp_path / "people.parquet"
    gallery.save(path)
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == schema()
    assert table.num_rows == len(gallery.table)
    loaded = Gallery.load(path)
    np.testing.assert_array_equal(loaded.descriptors, gallery.descriptors)
    assert list(loaded.labels) == list(gallery.labels)
    assert loaded.threshold == gallery.threshold and loaded.settings == gallery.settings
    assert loaded.root == gallery.root
    gallery.threshold = 0.45
    gallery.save(path)
    assert Gallery.load(path).threshold == 0.45
    gallery.threshold = None
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary left behind


def test_a_gallery_refuses_another_model(gallery: Gallery, tmp_path: Path):
    path = tmp_path / "g.parquet"
    gallery.save(path)
    other = tmp_path / "other_model.dat"
    data = bytearray(Path(pfd.models.path("dlib_face_recognition_resnet_model_v1")).read_bytes())
    data[-1] ^= 1
    other.write_bytes(bytes(data))
    with pytest.raises(GalleryError, match="not the model"):
        Gallery.load(path, model=other)
    with pytest.raises(GalleryError, match="not a pyfacedlib"):
        import pyarrow.parquet as pq

        from pyfacedlib.facetable import FaceTable

        bare = FaceTable().to_arrow().replace_schema_metadata({})
        pq.write_table(bare, tmp_path / "bare.parquet")
        Gallery.load(tmp_path / "bare.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="Parquet"):
        Gallery.load(tmp_path / "junk.parquet")


def test_sync_adds_removes_replaces_and_reuses(enrol_root: Path, lfw_people: dict, tmp_path: Path):
    root = tmp_path / "known"
    shutil.copytree(enrol_root, root)
    g = Gallery.build(root, progress=False)
    names = sorted(lfw_people["enrol"])
    first, second = names[0], names[1]
    probe = next(p for p, n in lfw_people["probes"] if n == first)
    shutil.copy(probe, root / first / "new.jpg")                        # added
    removed = sorted((root / second).glob("*.jpg"))[0]
    removed.unlink()                                                     # removed
    replaced = sorted((root / second).glob("*.jpg"))[0]
    shutil.copy(next(p for p, n in lfw_people["probes"] if n == second), replaced)  # changed bytes
    moved = sorted((root / names[2]).glob("*.jpg"))[0]
    (root / names[2] / "sub").mkdir()
    moved.rename(root / names[2] / "sub" / moved.name)                   # moved: reused, not re-embedded
    report = g.sync(progress=False)
    assert sorted(report.added) == sorted([str(root / first / "new.jpg"), str(root / names[2] / "sub" / moved.name)])
    assert sorted(report.removed) == sorted([str(removed), str(moved)])
    assert report.changed == [str(replaced)]
    assert report.reused == 1 and report.unchanged == 12 - 3
    assert len(g) == 12 and set(g.table.source_path) == set(enrolment_photos(root))
    fresh = Gallery.build(root, progress=False)
    order = np.argsort(fresh.table.source_path)
    np.testing.assert_allclose(g.descriptors[np.argsort([g.table.source_path[i] for i in g._enrolled])],
                               fresh.descriptors[order], atol=1e-6)
    again = g.sync(progress=False)
    assert not again.added and not again.removed and not again.changed and again.unchanged == 12


def test_enrolment_rules_no_face_several_faces_unreadable(johns_dir: Path, tmp_path: Path):
    from PIL import Image

    root = tmp_path / "known"
    salley = sorted((johns_dir / "John_Salley").glob("*.jpg"))
    savage = sorted((johns_dir / "John_Savage").glob("*.jpg"))
    (root / "John_Salley").mkdir(parents=True)
    for f in salley[:2]:
        shutil.copy(f, root / "John_Salley" / f.name)
    shutil.copy(savage[0], root / "John_Savage.jpg")                     # flat: the stem names the person
    Image.new("RGB", (200, 200), (128, 128, 128)).save(root / "John_Salley" / "blank.jpg")
    (root / "John_Salley" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    big, small = Image.open(salley[2]), Image.open(salley[3]).resize((75, 75))
    canvas = Image.new("RGB", (340, 200), (255, 255, 255))
    canvas.paste(big, (0, 25))
    canvas.paste(small, (200, 60))
    canvas = canvas.resize((680, 400))
    canvas.save(root / "John_Salley" / "with_a_small_face.png")
    pair = Image.new("RGB", (300, 150), (255, 255, 255))
    pair.paste(Image.open(salley[4]), (0, 0))
    pair.paste(Image.open(savage[1]), (150, 0))
    pair.save(root / "John_Salley" / "two_equal_faces.png")
    g = Gallery.build(root, progress=False)
    skipped = g.skipped
    assert skipped[str(root / "John_Salley" / "blank.jpg")] == "no face found"
    assert skipped[str(root / "John_Salley" / "broken.jpg")].startswith("unreadable")
    assert "none clearly the largest" in skipped[str(root / "John_Salley" / "two_equal_faces.png")]
    assert str(root / "John_Salley" / "with_a_small_face.png") not in skipped
    assert sorted(g.identities) == ["John_Salley", "John_Savage"]
    assert len(g) == 4  # 2 Salley chips, the largest face of the composite, Savage
    strict = Gallery.build(root, progress=False, config=GalleryConfig(multiple_faces="skip"))
    assert "multiple_faces='skip'" in strict.skipped[str(root / "John_Salley" / "with_a_small_face.png")]
    assert len(strict) == 3


def test_search_matches_brute_force(gallery: Gallery, lfw_people: dict):
    query = lfw_people["probes"][0][0]
    face = max(pfd.FaceEmbedder().embed_image(query), key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    hits = gallery.search(query, k=5)
    d = distance_matrix(face.descriptor[None], gallery.table.embedding[gallery.table.has_face])[0]
    np.testing.assert_allclose([h.distance for h in hits], np.sort(d)[:5], atol=1e-5)
    assert hits[0].identity == lfw_people["probes"][0][1]
    by_descriptor = gallery.search(face.descriptor, k=5, max_distance=0.5)
    assert [h.source for h in by_descriptor] == [h.source for h in hits if h.distance <= 0.5]
    with pytest.raises(NoFaceFoundError):
        gallery.search(np.full((120, 120, 3), 90, np.uint8))


def _write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, frames[0].shape[1::-1])
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_video_frames_are_identified_with_frame_numbers_and_times(gallery: Gallery, lfw_people: dict, tmp_path: Path):
    (a, name_a), (b, name_b) = lfw_people["probes"][0], lfw_people["probes"][2]
    frames = [pfd.load_image(a)] * 5 + [pfd.load_image(b)] * 5
    video = tmp_path / "clip.avi"
    _write_video(video, frames)
    matches = gallery.identify(video, every=2)
    assert [m.frame for m in matches] == [0, 2, 4, 6, 8]
    assert [m.identity for m in matches] == [name_a] * 3 + [name_b] * 2
    np.testing.assert_allclose([m.timestamp for m in matches], [0.0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)
    results = list(gallery.identify_many([a, str(video), tmp_path / "missing.jpg"], every=5))
    assert [(r.frame, len(r.matches)) for r in results] == [(None, 1), (0, 1), (5, 1), (None, 0)]
    assert results[-1].error
    with pytest.raises(pfd.ImageError, match="not found"):
        gallery.identify(tmp_path / "missing.mp4")


def test_empty_or_missing_enrolment_folder(tmp_path: Path):
    with pytest.raises(ValueError, match="no photos"):
        Gallery.build(tmp_path, progress=False)
    with pytest.raises(NotADirectoryError):
        Gallery.build(tmp_path / "missing", progress=False)


def test_from_descriptors_validates(gallery: Gallery):
    with pytest.raises(ValueError, match="128"):
        Gallery.from_descriptors(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="identity"):
        Gallery.from_descriptors(gallery.descriptors[:2], ["a"])


def test_a_camera_that_cannot_open_is_an_image_error():
    from pyfacedlib.photos import video_frames

    with pytest.raises(pfd.ImageError, match="camera 57"):
        next(video_frames(57))  # no camera 57 on any test machine


def test_load_restores_what_save_stored_instead_of_recomputing(gallery: Gallery, lfw_people: dict, tmp_path: Path,
                                                               monkeypatch):
    import pyfacedlib.gallery as gallery_module

    path = tmp_path / "people.parquet"
    gallery.save(path)
    saved = gallery.calibration

    def must_not_run(*args, **kwargs):
        raise AssertionError("load recomputed what save stored")

    monkeypatch.setattr(Gallery, "_calibrate", must_not_run)
    monkeypatch.setattr(Gallery, "_enrolled_rows", must_not_run)
    monkeypatch.setattr(gallery_module, "file_sha256", must_not_run)  # the model keeps its size and mtime
    loaded = Gallery.load(path)
    c = loaded.calibration
    assert (c.threshold, c.source, c.estimated_fpir, c.estimated_tpir) == (saved.threshold, saved.source,
                                                                          saved.estimated_fpir, saved.estimated_tpir)
    np.testing.assert_array_equal(c.impostor_distances, saved.impostor_distances)
    np.testing.assert_array_equal(loaded.table.enrolled, gallery.table.enrolled)
    probe, name = lfw_people["probes"][0]
    assert min(loaded.identify(probe), key=lambda m: m.distance).identity == name  # the model, trusted unhashed
    monkeypatch.undo()
    gallery.threshold = 0.45  # a user's threshold comes back with the calibration's evidence
    gallery.save(path)
    gallery.threshold = None
    monkeypatch.setattr(Gallery, "_calibrate", must_not_run)
    user = Gallery.load(path).calibration
    assert (user.threshold, user.source) == (0.45, "user") and len(user.impostor_distances) == len(gallery)


def test_a_changed_model_file_is_hashed_and_a_different_one_named(gallery: Gallery, tmp_path: Path, monkeypatch):
    import os

    import pyfacedlib.gallery as gallery_module

    model = tmp_path / "model.dat"
    shutil.copy(pfd.models.path("dlib_face_recognition_resnet_model_v1"), model)
    g = Gallery.from_descriptors(gallery.descriptors, gallery.labels, model=model)
    path = tmp_path / "g.parquet"
    g.save(path)
    hashed = []
    real = gallery_module.file_sha256
    monkeypatch.setattr(gallery_module, "file_sha256", lambda p: hashed.append(str(p)) or real(p))
    assert Gallery.load(path).embedder.model_path == str(model) and hashed == []
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes, hashed once
    assert Gallery.load(path).embedder.model_path == str(model) and hashed == [str(model)]
    data = bytearray(model.read_bytes())
    data[-1] ^= 1
    model.write_bytes(bytes(data))
    # (the shipped model, the same bytes as the original, would otherwise stand in for it)
    monkeypatch.setattr(pfd.models, "path", lambda name: str(tmp_path / "no-shipped-model.dat"))
    with pytest.raises(GalleryError, match="not the model") as error:
        _ = Gallery.load(path).embedder
    assert str(model) in str(error.value) and str(path) in str(error.value)


def test_an_old_gallery_file_still_loads(gallery: Gallery, tmp_path: Path, monkeypatch):
    import pyarrow.parquet as pq

    from pyfacedlib.facetable import FaceTable

    path = tmp_path / "old.parquet"
    gallery.save(path)
    table = FaceTable.read_parquet(path)  # as the previous version wrote it: no stored evidence, enrolment, stamp
    old = {k: v for k, v in table.metadata.items() if k not in ("gallery_format", "model", "enrolment", "format")}
    old["calibration"] = gallery.calibration.summary()
    table.metadata = old
    table.enrolled = np.zeros(len(table), bool)
    pq.write_table(table.to_arrow(), path)
    calls = []
    real = Gallery._calibrate
    monkeypatch.setattr(Gallery, "_calibrate", lambda self, *a: calls.append(1) or real(self, *a))
    loaded = Gallery.load(path)
    assert loaded.threshold == gallery.threshold and calls == [1]  # calibrated as when built
    np.testing.assert_array_equal(loaded.table.enrolled, gallery.table.enrolled)
    assert list(loaded.labels) == list(gallery.labels)


def test_gallery_config_fields_carry_cli_metadata():
    import dataclasses

    from pyfacedlib.gallery import CLASSIFIERS, MULTIPLE_FACES
    from pyfacedlib.index import KINDS

    fields = {f.name: f for f in dataclasses.fields(GalleryConfig)}
    assert all(f.metadata.get("help") for f in fields.values())
    assert fields["multiple_faces"].metadata["choices"] == MULTIPLE_FACES
    assert fields["classifier"].metadata["choices"] == CLASSIFIERS
    assert fields["index"].metadata["choices"] == KINDS
    assert GalleryConfig() == GalleryConfig(**{name: f.default for name, f in fields.items()})

"""Clustering, exports and evaluation on the user's own folders (real faces: dlib-johns)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib.cli import main
from pyfacedlib.evaluate import pairwise_precision_recall


@pytest.fixture(scope="module")
def johns_descriptors(johns) -> tuple[np.ndarray, np.ndarray]:
    chips, labels = johns
    return pfd.FaceEmbedder().embed_chips(chips), labels


@pytest.mark.parametrize("method", ["chinese_whispers", "dbscan"])
def test_cluster_finds_the_five_johns(johns_descriptors, method):
    descriptors, labels = johns_descriptors
    clusters = pfd.cluster(descriptors, threshold=0.5, method=method)
    assert pairwise_precision_recall(labels, clusters) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert sorted(set(clusters.tolist())) == [0, 1, 2, 3, 4]
    sizes = np.bincount(clusters)
    assert list(sizes) == sorted(sizes, reverse=True)  # numbered largest first


def test_default_threshold_follows_the_set_size(johns_descriptors):
    """threshold=None: dlib's 0.5 up to ~500 faces, lower as the set grows (fewer links between
    different people, whose number grows with the square of the set), never below 0.34."""
    from pyfacedlib.clustering import DLIB_CLUSTER_THRESHOLD, auto_threshold

    sizes = [1, 2, 55, 480, 500, 1000, 2000, 5000, 13233, 10**5, 10**7]
    chosen = [auto_threshold(n) for n in sizes]
    assert chosen[:5] == [DLIB_CLUSTER_THRESHOLD] * 5 and chosen == sorted(chosen, reverse=True)
    assert 0.46 <= auto_threshold(2000) < 0.47 and 0.41 <= auto_threshold(13233) < 0.42 and chosen[-1] == 0.34
    descriptors, labels = johns_descriptors  # 55 faces: the default is dlib's recipe
    assert (pfd.cluster(descriptors) == pfd.cluster(descriptors, threshold=0.5)).all()
    # 1,000 faces in pairs 0.49 apart, the pairs far from each other: linked at 0.5, not at the default
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(500, 128)) * 10
    step = rng.normal(size=(500, 128))
    step *= 0.49 / np.linalg.norm(step, axis=1, keepdims=True)
    faces = np.concatenate([centres, centres + step])
    assert pfd.cluster(faces, threshold=0.5).max() == 499
    assert (pfd.cluster(faces) == -1).all()  # auto_threshold(1000) = 0.48: every face alone


def test_cluster_noise_and_bad_input(johns_descriptors):
    descriptors, _ = johns_descriptors
    odd = np.concatenate([descriptors, -descriptors[:1]])  # a face far from everyone
    labels = pfd.cluster(odd, min_size=2)
    assert labels[-1] == -1 and (labels[:-1] >= 0).all()
    assert (pfd.cluster(descriptors, min_size=12) == -1).all()  # every cluster has 11 faces
    assert len(pfd.cluster(np.zeros((0, 128)))) == 0
    with pytest.raises(ValueError, match="method"):
        pfd.cluster(descriptors, method="kmeans")
    with pytest.raises(ValueError, match="128"):
        pfd.cluster(descriptors[:, :10])
    with pytest.raises(ValueError, match="NaN"):
        pfd.cluster(np.full((2, 128), np.nan))


def _flat_copy(johns_dir: Path, target: Path) -> dict[str, str]:
    target.mkdir()
    truth = {}
    for f in sorted(johns_dir.glob("*/*.jpg")):
        name = f"{f.parent.name[:6]}_{f.name}"
        shutil.copy(f, target / name)
        truth[name] = f.parent.name
    return truth


def test_cli_cluster_round_trip(johns_dir: Path, tmp_path: Path, capsys):
    truth = _flat_copy(johns_dir, tmp_path / "photos")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["cluster", str(tmp_path / "photos"), str(out)]) == 3  # done; broken.jpg listed as unreadable
    printed = capsys.readouterr().out
    assert "5 clusters" in printed and "1 unreadable" in printed
    with open(out / "clusters.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "face", "cluster"] and len(rows) == 55
    found = [int(r["cluster"]) for r in rows]
    people = [truth[Path(r["path"]).name] for r in rows]
    assert pairwise_precision_recall(people, found)["f1"] == 1.0
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in folders] == [f"cluster_{i:03d}" for i in range(5)]
    assert all(len(list(p.iterdir())) == 11 and all(q.is_symlink() for q in p.iterdir()) for p in folders)
    # a second run with another threshold re-uses the faces (faces.parquet) and replaces the folders
    assert main(["cluster", str(tmp_path / "photos"), str(out), "--threshold", "0.1"]) == 3
    captured = capsys.readouterr()
    assert "0 added" in captured.err and "56 unchanged" in captured.err
    clusters = int(captured.out.splitlines()[1].split()[0])  # "N clusters (...)"
    assert clusters < 5 and len([p for p in out.iterdir() if p.is_dir()]) == clusters  # old folders gone


def test_cli_export_parquet_and_npy(johns_dir: Path, tmp_path: Path, capsys):
    import pyarrow.parquet as pq

    root = tmp_path / "people"
    shutil.copytree(johns_dir, root)
    (root / "John_Simm" / "broken.jpg").write_bytes(b"\xff\xd8")
    out = tmp_path / "faces.parquet"
    assert main(["export", str(root), "--out", str(out)]) == 3  # the broken file: listed, the rest written
    assert "broken.jpg: ERROR" in capsys.readouterr().err
    table = pq.read_table(out)
    assert table.num_rows == 56
    faces = table.filter(pq.ParquetFile(out).read().column("face").to_numpy() >= 0)
    assert faces.num_rows == 55 and table.schema.field("embedding").type.list_size == 128
    assert sorted(set(faces.column("identity").to_pylist())) == sorted(p.name for p in johns_dir.iterdir())
    assert all(len(s) == 64 for s in faces.column("sha256").to_pylist())
    embedding = np.stack(faces.column("embedding").to_numpy(zero_copy_only=False))
    assert embedding.shape == (55, 128) and embedding.dtype == np.float32
    assert main(["export", str(root), "--out", str(out)]) == 3  # re-run: nothing embedded again
    assert "0 added (0 reused), 0 changed, 0 removed, 56 unchanged" in capsys.readouterr().err
    npy = tmp_path / "npy" / "embeddings.npy"
    (root / "John_Simm" / "broken.jpg").unlink()
    assert main(["export", str(root), "--out", str(npy)]) == 0
    vectors = np.load(npy)
    labels, strings = np.load(npy.parent / "labels.npy"), np.load(npy.parent / "label_strings.npy")
    assert vectors.shape == (55, 128) and labels.shape == (55,) and strings.shape == (55,)
    assert len(set(labels.tolist())) == 5 and strings[labels == 0][0] == sorted(strings)[0]
    np.testing.assert_allclose(np.sort(vectors[:, 0]), np.sort(embedding[:, 0]), atol=1e-6)
    # labels.npy beside FILE.npy belong to one export: re-exporting it is fine, another FILE.npy is refused
    capsys.readouterr()
    assert main(["export", str(root), "--out", str(npy)]) == 0
    labels_before = (npy.parent / "labels.npy").read_bytes()
    assert main(["export", str(root), "--out", str(npy.parent / "other.npy")]) == 2
    err = capsys.readouterr().err
    assert "labels.npy" in err and "label_strings.npy" in err and "other.npy" in err
    assert (npy.parent / "labels.npy").read_bytes() == labels_before and not (npy.parent / "other.npy").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    np.save(foreign / "labels.npy", np.zeros(3, np.int64))     # not written by an export: never overwritten
    assert main(["export", str(root), "--out", str(foreign / "e.npy")]) == 2
    assert "labels.npy" in capsys.readouterr().err and np.load(foreign / "labels.npy").shape == (3,)


def test_cluster_output_inside_its_input_is_never_read(johns_dir: Path, tmp_path: Path, capsys):
    """cluster ~/Pictures ~/Pictures/clusters: the second run must not read the first run's links."""
    photos = tmp_path / "photos"
    _flat_copy(johns_dir, photos)
    out = photos / "clusters"
    assert main(["cluster", str(photos), str(out)]) == 0
    first = (out / "clusters.csv").read_text()
    assert any(p.is_symlink() for p in out.rglob("*.jpg"))
    capsys.readouterr()
    assert main(["cluster", str(photos), str(out)]) == 0
    captured = capsys.readouterr()
    assert (out / "clusters.csv").read_text() == first and len(first.splitlines()) == 56
    assert "0 added" in captured.err and "55 unchanged" in captured.err and "55 faces" in captured.out
    assert main(["cluster", str(photos), str(photos)]) == 2         # OUT_DIR = INPUT_DIR: refused
    from pyfacedlib.datasets import labelled_inputs, list_files

    assert len(list_files([photos], exclude=[out])) == 55 and len(list_files([photos])) == 110
    assert len(labelled_inputs([photos], exclude=[out / "clusters.csv", out])) == 55


def test_evaluate_folders_report(johns_dir: Path, tmp_path: Path, capsys):
    model = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    report = pfd.evaluate_folders(johns_dir, model=[None, model], out=tmp_path / "eval", progress=False)
    assert report["identities"] == 5 and report["faces"] == 55
    assert report["same_pairs"] == 5 * 55 and report["different_pairs"] == 5 * 55
    first, second = report["models"].values()
    for key in ("accuracy_mean", "best_threshold", "threshold_at_far_1e_2", "threshold_at_far_1e_3", "auc", "eer",
                "val_at_far_1e_3"):
        assert key in first and first[key] == second[key]  # the same model twice: the same numbers
    assert first["accuracy_mean"] > 0.95 and 0.3 < first["best_threshold"] < 0.8
    written = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(written["models"]) == set(report["models"])
    assert (tmp_path / "eval" / "roc.png").stat().st_size > 0
    g = pfd.Gallery.from_descriptors(np.eye(2, 128, dtype=np.float32), ["a", "b"])
    g.threshold = first["best_threshold"]  # a threshold for these people, handed to a gallery
    assert g.threshold == first["best_threshold"] and g.calibration.source == "user"
    assert main(["evaluate", str(johns_dir), "--out", str(tmp_path / "cli")]) == 0
    assert "best threshold" in capsys.readouterr().out and (tmp_path / "cli" / "report.md").exists()


def test_evaluate_folders_needs_pairs(johns_dir: Path, tmp_path: Path):
    one_each = tmp_path / "one_each"
    for person in sorted(johns_dir.iterdir()):
        (one_each / person.name).mkdir(parents=True)
        shutil.copy(sorted(person.glob("*.jpg"))[0], one_each / person.name)
    with pytest.raises(ValueError, match="one image"):
        pfd.evaluate_folders(one_each, progress=False)
    single = tmp_path / "single"
    shutil.copytree(johns_dir / "John_Simm", single / "John_Simm")
    with pytest.raises(ValueError, match="two identities"):
        pfd.evaluate_folders(single, progress=False)

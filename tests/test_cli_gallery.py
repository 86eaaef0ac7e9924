"""CLI round trips: enrol -> identify (CSV) -> search, sync through enrol, bad inputs."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pyfacedlib.cli import main
from pyfacedlib.gallery import Gallery

COLUMNS = ["path", "frame", "face", "left", "top", "right", "bottom", "identity", "distance", "confidence",
           "quality"]


@pytest.fixture(scope="module")
def known(lfw_dir: Path, tmp_path_factory) -> tuple[Path, list[tuple[Path, str]]]:
    """Flat known folder (face_recognition's convention: Name.jpg), and probes with their names."""
    people = [p for p in sorted(lfw_dir.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= 4][:60:15]
    root = tmp_path_factory.mktemp("known_flat")
    probes = []
    for person in people:
        files = sorted(person.glob("*.jpg"))
        shutil.copy(files[0], root / f"{person.name}.jpg")
        probes += [(files[2], person.name), (files[3], person.name)]
    return root, probes


def _rows(text: str) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == COLUMNS
    return list(reader)


def test_enrol_identify_search_round_trip(known, tmp_path: Path, capsys):
    root, probes = known
    gallery = tmp_path / "people.parquet"
    assert main(["enrol", str(root), str(gallery)]) == 0
    out = capsys.readouterr().out
    assert "4 added" in out and "4 people" in out and gallery.is_file()

    check = tmp_path / "check"
    check.mkdir()
    for path, _ in probes:
        shutil.copy(path, check / path.name)
    (check / "broken.jpg").write_bytes(b"\xff\xd8broken")
    blank = check / "blank.png"
    from PIL import Image

    Image.new("RGB", (120, 90), (30, 30, 30)).save(blank)
    csv_path = tmp_path / "out" / "who.csv"
    code = main(["identify", str(gallery), str(check), "--csv", str(csv_path)])
    err = capsys.readouterr().err
    assert code == 3 and "broken.jpg: ERROR" in err and "1 unreadable" in err  # counted, listed, the rest done
    assert not csv_path.with_name("who.csv.part").exists()
    rows = _rows(csv_path.read_text())
    names = {Path(p).name: n for p, n in probes}
    best: dict[str, dict] = {}
    for row in rows:
        name = Path(row["path"]).name
        if row["identity"] == "no_faces_found":
            assert name == "blank.png" and row["face"] == "" and row["distance"] == ""
            continue
        assert row["frame"] == "" and int(row["right"]) > int(row["left"])
        if name not in best or float(row["distance"]) < float(best[name]["distance"]):
            best[name] = row
    assert {n for n, r in best.items() if r["identity"] == names[n]} == set(names)

    probe = probes[0][0]
    assert main(["search", str(gallery), str(probe), "--k", "2"]) == 0
    hits = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [h["rank"] for h in hits] == ["1", "2"] and hits[0]["identity"] == probes[0][1]
    assert float(hits[0]["distance"]) <= float(hits[1]["distance"])
    assert main(["search", str(gallery), str(blank)]) == 1  # failed: the one input gave nothing to search for
    assert "pyfacedlib search: " in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["search", str(gallery), str(check / "broken.jpg")]) == 1  # an unreadable query: failed too
    assert "broken.jpg" in capsys.readouterr().err


def test_enrol_syncs_an_existing_gallery_and_keeps_its_settings(known, tmp_path: Path, capsys):
    root, probes = known
    mine = tmp_path / "known"
    shutil.copytree(root, mine)
    gallery = tmp_path / "g.parquet"
    assert main(["enrol", str(mine), str(gallery)]) == 0
    before = Gallery.load(gallery)
    shutil.copy(probes[0][0], mine / f"{probes[0][1]}_2.jpg")   # a new person named by the stem
    sorted(mine.glob("*.jpg"))[-1].unlink()
    capsys.readouterr()
    assert main(["enrol", str(mine), str(gallery)]) == 0
    out = capsys.readouterr().out
    assert "1 added" in out and "1 removed" in out and "3 unchanged" in out
    after = Gallery.load(gallery)
    assert len(after) == len(before)
    assert main(["enrol", str(mine), str(gallery), "--upsample", "0"]) == 2
    assert "other alignment settings" in capsys.readouterr().err
    np.testing.assert_array_equal(Gallery.load(gallery).descriptors, after.descriptors)  # untouched


def test_identify_video_rows_have_frames(known, tmp_path: Path, capsys):
    import cv2

    import pyfacedlib as pfd

    root, probes = known
    gallery = tmp_path / "g.parquet"
    assert main(["enrol", str(root), str(gallery)]) == 0
    video = tmp_path / "clip.avi"
    frame = pfd.load_image(probes[0][0])
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, frame.shape[1::-1])
    for _ in range(6):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    capsys.readouterr()
    assert main(["identify", str(gallery), str(video), "--every", "3"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [r["frame"] for r in rows if r["identity"] == probes[0][1]] == ["0", "3"]


def test_missing_gallery_is_a_clear_error(tmp_path: Path, capsys):
    assert main(["identify", str(tmp_path / "none.parquet"), "x.jpg"]) == 1
    err = capsys.readouterr().err
    assert "none.parquet" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_gallery_with_bad_metadata_names_the_file(known, tmp_path: Path, capsys):
    from pyfacedlib.facetable import FaceTable

    root, probes = known
    gallery = tmp_path / "g.parquet"
    assert main(["enrol", str(root), str(gallery)]) == 0
    table = FaceTable.read_parquet(gallery)
    table.metadata["settings"] = {**table.metadata["settings"], "no_such_setting": 1}
    bad = tmp_path / "bad.parquet"
    table.write_parquet(bad)
    capsys.readouterr()
    assert main(["identify", str(bad), str(probes[0][0])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pyfacedlib identify: ") and str(bad) in err and "no_such_setting" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def _video(path: Path, image: Path, frames: int) -> Path:
    import cv2

    import pyfacedlib as pfd

    rgb = pfd.load_image(image)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, rgb.shape[1::-1])
    for _ in range(frames):
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_truncated_video_is_reported_not_a_silent_success(known, tmp_path: Path, capsys):
    from pyfacedlib.errors import ImageError
    from pyfacedlib.photos import video_frames

    root, probes = known
    gallery = tmp_path / "g.parquet"
    assert main(["enrol", str(root), str(gallery)]) == 0
    video = _video(tmp_path / "clip.avi", probes[0][0], 30)
    data = video.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])            # the header still says 30 frames
    assert len(list(video_frames(video))) == 30        # the whole video: no complaint
    read = []
    with pytest.raises(ImageError, match=r"ended at frame \d+ of 30"):
        for item in video_frames(cut):
            read.append(item[0])
    assert 5 < len(read) < 30 and read == list(range(len(read)))  # every frame before the end came first
    capsys.readouterr()
    assert main(["identify", str(gallery), str(cut), "--every", "3"]) == 3
    captured = capsys.readouterr()
    assert "cut.avi: ERROR" in captured.err and "of 30" in captured.err
    frames = [r["frame"] for r in _rows(captured.out) if r["identity"] == probes[0][1]]
    assert frames and frames == [str(i) for i in range(0, 3 * len(frames), 3)]  # the frames read are kept
    assert main(["identify", str(gallery), str(video), "--every", "3"]) == 0


def test_identify_csv_keeps_its_rows_on_ctrl_c(known, tmp_path: Path, capsys):
    """identify --csv writes rows to FILE.part as they are found; SIGINT renames it to FILE (exit 130)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import pyfacedlib as pfd

    root, probes = known
    gallery = tmp_path / "g.parquet"
    assert main(["enrol", str(root), str(gallery)]) == 0
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(600):
        os.link(probes[i % len(probes)][0], photos / f"p{i:04d}.jpg")
    out = tmp_path / "who.csv"
    part = tmp_path / "who.csv.part"
    # SIGINT's default handler set explicitly: a test runner started in the background may pass SIGINT on ignored
    launcher = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "sys.path.insert(0, sys.argv.pop(1)); from pyfacedlib.cli import main; sys.exit(main(sys.argv[1:]))")
    child = subprocess.Popen([sys.executable, "-I", "-c", launcher, str(Path(pfd.__file__).resolve().parents[1]),
                              "identify", str(gallery), str(photos), "--csv", str(out), "--threads", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and child.poll() is None and (
            not part.exists() or len(part.read_text().splitlines()) < 3):
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=180)
    assert child.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err and f"in {out}" in err
    assert out.exists() and not part.exists()
    rows = _rows(out.read_text())
    assert 2 <= len(rows) < 600                                   # interrupted half way, the rows found kept
    assert f"kept the {len(rows)} rows" in err
    for row in rows:                                              # every row whole
        assert row["confidence"] and float(row["distance"]) >= 0 and int(row["right"]) > int(row["left"])


def test_every_embedding_verb_runs_the_onnx_backend(known, tmp_path: Path, capsys, monkeypatch):
    """--backend onnx on enrol, identify, search, cluster, export and evaluate: the same people,
    clusters and distances as the folded pass (the graph is exported once into the cache)."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        from conftest import skip_or_fail

        skip_or_fail("onnxruntime (a test dependency) is not installed")
    monkeypatch.setenv("PYFACEDLIB_ONNX_CACHE", str(tmp_path / "onnx-cache"))
    root, probes = known
    check = tmp_path / "check"
    check.mkdir()
    for path, _ in probes:
        shutil.copy(path, check / path.name)
    people = tmp_path / "people"
    for path, person in probes:
        (people / person).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, people / person / path.name)
    runs = {}
    for name, extra in (("folded", []), ("onnx", ["--backend", "onnx", "--onnx-providers", "CPUExecutionProvider"])):
        out = tmp_path / name
        assert main(["enrol", str(root), str(out / "g.parquet"), *extra]) == 0
        assert main(["identify", str(out / "g.parquet"), str(check), "--csv", str(out / "who.csv"), *extra]) == 0
        assert main(["search", str(out / "g.parquet"), str(probes[0][0]), "--csv", str(out / "hits.csv"), *extra]) == 0
        assert main(["cluster", str(check), str(out / "clusters"), *extra]) == 0
        assert main(["export", str(check), "--out", str(out / "faces.npy"), *extra]) == 0
        assert main(["evaluate", str(people), "--out", str(out / "eval"), *extra]) == 0
        capsys.readouterr()
        runs[name] = out
    assert list((tmp_path / "onnx-cache").glob("*.onnx"))  # the onnx runs used onnxruntime
    a, b = (list(csv.DictReader(io.StringIO((runs[n] / "who.csv").read_text()))) for n in ("folded", "onnx"))
    assert [r["identity"] for r in a] == [r["identity"] for r in b]
    assert max(abs(float(x["distance"]) - float(y["distance"])) for x, y in zip(a, b, strict=True)) <= 2e-4
    a, b = (list(csv.DictReader(io.StringIO((runs[n] / "hits.csv").read_text()))) for n in ("folded", "onnx"))
    assert [r["identity"] for r in a] == [r["identity"] for r in b]
    a, b = ((runs[n] / "clusters" / "clusters.csv").read_text() for n in ("folded", "onnx"))
    assert a == b
    assert np.abs(np.load(runs["folded"] / "faces.npy") - np.load(runs["onnx"] / "faces.npy")).max() <= 1e-4
    a, b = (json.loads((runs[n] / "eval" / "report.json").read_text())["models"] for n in ("folded", "onnx"))
    assert [m["backend"] for m in b.values()] == ["onnx"] and [m["backend"] for m in a.values()] == ["folded"]
    assert [(m["accuracy_mean"], m["accuracy_at_0_6"]) for m in a.values()] == [
        (m["accuracy_mean"], m["accuracy_at_0_6"]) for m in b.values()]

"""CLI round trips: enrol -> identify (CSV) -> search, sync through enrol, bad inputs."""
from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from pyfacedlib.cli import main
from pyfacedlib.gallery import Gallery

COLUMNS = ["path", "frame", "face", "left", "top", "right", "bottom", "identity", "distance", "confidence"]


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
    assert code == 1 and "broken.jpg: ERROR" in err and "1 unreadable" in err  # counted, listed, the rest done
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
    assert main(["search", str(gallery), str(blank)]) == 1
    assert "no_faces_found" in capsys.readouterr().err


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
    assert main(["identify", str(tmp_path / "none.parquet"), "x.jpg"]) == 2
    assert "none.parquet" in capsys.readouterr().err

import json

import numpy as np

from pyfacedlib.cli import main


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "dlib_version" in out and "20.0.1" in out and "OpenBLAS" in out


def test_embed_to_npy_and_json(lfw_sample, tmp_path, capsys, embedder):
    image = str(lfw_sample[0])
    assert main(["embed", image, "--out", str(tmp_path / "d.npy")]) == 0
    printed = capsys.readouterr().out
    descriptors = np.load(tmp_path / "d.npy")
    assert descriptors.shape[1] == 128 and len(descriptors) >= 1
    assert np.abs(descriptors[0] - embedder.embed_image(image)[0].descriptor).max() < 1e-6
    assert "face 0" in printed
    assert main(["embed", image, "--quiet", "--out", str(tmp_path / "d.json")]) == 0
    records = json.loads((tmp_path / "d.json").read_text())
    assert records[0]["image"] == image and len(records[0]["descriptor"]) == 128
    assert len(records[0]["landmarks"]) == 5


def test_embed_reports_unreadable_files(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    assert main(["embed", str(bad)]) == 1
    assert "bad.jpg" in capsys.readouterr().err


def test_bad_model_exit_code(tmp_path, capsys):
    bad = tmp_path / "m.dat"
    bad.write_bytes(b"garbage")
    assert main(["embed", "x.jpg", "--model", str(bad)]) == 2
    assert "m.dat" in capsys.readouterr().err


def test_embed_takes_folders_and_refuses_archive_options_without_parquet(lfw_sample, tmp_path, capsys):
    import shutil

    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for path in lfw_sample[:2]:
        shutil.copy(path, folder)
    assert main(["embed", str(tmp_path / "photos"), "--quiet", "--out", str(tmp_path / "d.npy")]) == 0
    assert len(np.load(tmp_path / "d.npy")) >= 2
    assert main(["embed", str(folder), "--engine", "ray", "--out", str(tmp_path / "d.npy")]) == 2
    assert "OUT.parquet" in capsys.readouterr().err
    assert main(["embed", str(tmp_path / "missing")]) == 2

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


def test_embed_reports_unreadable_files(lfw_sample, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    assert main(["embed", str(bad)]) == 1                            # nothing readable: failed
    assert "bad.jpg" in capsys.readouterr().err
    assert main(["embed", str(bad), str(lfw_sample[0]), "--quiet"]) == 3  # done, one input listed as unreadable
    assert "bad.jpg: ERROR" in capsys.readouterr().err


def _one_error_line(err: str, verb: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"pyfacedlib {verb}: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_model_exit_code(tmp_path, capsys):
    bad = tmp_path / "m.dat"
    bad.write_bytes(b"garbage")
    assert main(["embed", "x.jpg", "--model", str(bad)]) == 1  # a runtime failure, not a usage error
    assert "m.dat" in _one_error_line(capsys.readouterr().err, "embed")


def test_errors_are_one_line_with_exit_codes_and_debug_shows_the_traceback(lfw_sample, tmp_path, capsys):
    """DeviceError (no CUDA here), a bad option value, --debug, and the documented codes in --help."""
    import pytest

    from pyfacedlib._native import cuda_module, cuda_status

    image = str(lfw_sample[0])
    if cuda_module() is None or not cuda_status()["devices"]:
        assert main(["embed", image, "--device", "cuda"]) == 1
        assert "device='cuda'" in _one_error_line(capsys.readouterr().err, "embed")
        assert main(["--debug", "embed", image, "--device", "cuda"]) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "DeviceError" in err and "pyfacedlib embed: device='cuda'" in err
        assert main(["embed", image, "--device", "cuda", "--debug"]) == 1  # after the verb too
        assert "Traceback" in capsys.readouterr().err
    assert main(["embed", image, "--upsample", "9"]) == 2  # a value the library refuses: usage
    assert "upsample" in _one_error_line(capsys.readouterr().err, "embed")
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes" in out and "130" in out and all(f"  {code}    " in out for code in "0123")


def test_import_error_and_interrupt_exit_codes(monkeypatch, tmp_path, capsys):
    import pyfacedlib.cli as cli

    def missing(args):
        raise ModuleNotFoundError("No module named 'faiss'", name="faiss")

    monkeypatch.setattr(cli, "_cmd_info", missing)
    assert main(["info"]) == 1
    assert "pip install 'pyfacedlib[search]'" in _one_error_line(capsys.readouterr().err, "info")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_info", interrupted)
    assert main(["info"]) == 130
    assert "interrupted" in _one_error_line(capsys.readouterr().err, "info")

    def bug(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(cli, "_cmd_info", bug)
    assert main(["info"]) == 1
    assert "TypeError: unsupported operand" in _one_error_line(capsys.readouterr().err, "info")


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
    assert main(["embed", str(tmp_path / "missing")]) == 1
    assert "missing" in _one_error_line(capsys.readouterr().err, "embed")


def test_options_are_generated_from_the_config_dataclasses():
    """Every CLI-visible field of a config dataclass is an option of the verbs that use it, with the
    library's default in its help; nothing restates a default (the parsed namespace holds only what
    was given, so the library's defaults apply)."""
    import dataclasses

    import pyfacedlib as pfd
    from pyfacedlib.archive import ArchiveConfig
    from pyfacedlib.cli import build_parser, given
    from pyfacedlib.index import IndexSettings

    parser = build_parser()
    verbs = {name: action for action in parser._subparsers._group_actions for name, action in action.choices.items()}
    forward = pfd.EmbedderSettings  # --backend, --onnx-providers on every verb that embeds
    uses = {"embed": [pfd.AlignmentSettings, ArchiveConfig, forward],
            "enrol": [pfd.AlignmentSettings, pfd.GalleryConfig, forward], "identify": [forward],
            "search": [forward], "cluster": [pfd.AlignmentSettings, pfd.ClusterSettings, forward],
            "export": [pfd.AlignmentSettings, forward],
            "index": [IndexSettings], "finetune": [pfd.FinetuneConfig], "bench-lfw": [pfd.AlignmentSettings, forward],
            "evaluate": [pfd.AlignmentSettings, forward]}
    for verb, configs in uses.items():
        dests = {a.dest for a in verbs[verb]._actions}
        for config in configs:
            for f in dataclasses.fields(config):
                if f.metadata.get("cli", True):
                    assert f.name in dests, f"{verb} lacks an option for {config.__name__}.{f.name}"
    # given options reach the config; absent ones are absent (the library's default applies)
    args = parser.parse_args(["embed", "x", "--out", "o.parquet", "--embed-gpus", "1", "--stages", "split",
                              "--part-size", "7", "--no-exif"])
    assert given(args, ArchiveConfig) == {"embed_gpus": 1.0, "stages": "split", "images_per_part": 7}
    assert given(args, pfd.AlignmentSettings) == {"exif_orientation": False}
    assert ArchiveConfig(**given(args, ArchiveConfig)).split_stages
    args = parser.parse_args(["cluster", "in", "out"])
    assert given(args, pfd.ClusterSettings) == {} and pfd.ClusterSettings().threshold == pfd.cluster.__defaults__[0]
    help_text = verbs["cluster"].format_help()
    assert f"(default: {pfd.ClusterSettings().min_size})" in help_text and "auto_threshold" in help_text
    # photos never get a guessed face: the photo verbs offer no centred-box fallback
    assert verbs["export"].parse_args(["x", "--out", "o.npy", "--fallback", "cnn"]).fallback == "cnn"
    import pytest

    with pytest.raises(SystemExit):
        verbs["export"].parse_args(["x", "--out", "o.npy", "--fallback", "center"])


def test_an_option_the_branch_would_ignore_is_an_error(lfw_sample, tmp_path, capsys):
    image = str(lfw_sample[0])
    # archive options without an archive; embedder options with an archive
    assert main(["embed", image, "--stages", "split"]) == 2
    assert "--stages" in capsys.readouterr().err
    assert main(["embed", image, "--out", str(tmp_path / "a.parquet"), "--device", "cpu"]) == 2
    assert "--device" in capsys.readouterr().err
    assert main(["embed", image, "--out", str(tmp_path / "a.parquet"), "--num-jitters", "3"]) == 2
    assert not (tmp_path / "a.parquet").exists()
    assert main(["convert", "--to", "affine", "a.dat", "b.dat", "--calibrate", str(tmp_path)]) == 2
    assert "--calibrate" in capsys.readouterr().err


def test_embed_npy_runs_the_threaded_photo_pipeline(lfw_sample, tmp_path, monkeypatch, embedder):
    """embed --out X.npy goes through pyfacedlib.photos.embed_photos (threads, batches), with jitter."""
    import pyfacedlib.photos as photos

    calls = []
    original = photos.embed_photos
    monkeypatch.setattr(photos, "embed_photos", lambda *a, **k: calls.append(k) or original(*a, **k))
    images = [str(p) for p in lfw_sample[:3]]
    assert main(["embed", *images, "--quiet", "--threads", "2", "--out", str(tmp_path / "d.npy")]) == 0
    assert calls and calls[0]["workers"] == 2
    expected = np.concatenate([[f.descriptor for f in embedder.embed_image(p)] for p in images])
    np.testing.assert_allclose(np.load(tmp_path / "d.npy"), expected, atol=1e-6)
    assert main(["embed", images[0], "--quiet", "--num-jitters", "3", "--out", str(tmp_path / "j.npy")]) == 0
    jittered = np.load(tmp_path / "j.npy")[0]
    np.testing.assert_allclose(jittered, embedder.embed_image(images[0], num_jitters=3)[0].descriptor, atol=1e-5)

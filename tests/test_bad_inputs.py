"""Bad model files and bad images get clear Python exceptions, never a crash."""

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib import ModelFormatError

FACE = "dlib_face_recognition_resnet_model_v1"


@pytest.fixture(scope="module")
def face_model_bytes():
    with open(pfd.models.path(FACE), "rb") as f:
        return f.read()


def test_missing_and_empty_model_files(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot open"):
        pfd.FaceEmbedder(model=tmp_path / "nope.dat")
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    with pytest.raises(ModelFormatError, match="empty"):
        pfd.FaceEmbedder(model=empty)


def test_random_bytes_and_truncations_of_the_real_model(tmp_path, face_model_bytes):
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.dat"
    cases = [rng.integers(0, 256, 1000, dtype=np.uint8).tobytes(), b"not a model at all\n"]
    cases += [face_model_bytes[:n] for n in (1, 10, 100, 5000, len(face_model_bytes) // 2, len(face_model_bytes) - 1)]
    cases.append(face_model_bytes + b"trailing garbage")
    for data in cases:
        bad.write_bytes(data)
        with pytest.raises(ModelFormatError) as info:
            pfd.FaceEmbedder(model=bad)
        assert str(bad) in str(info.value)
        assert "face recognition network" in str(info.value)


def test_other_dlib_files_are_rejected_by_kind():
    with pytest.raises(ModelFormatError, match="face recognition network"):
        pfd.FaceEmbedder(model=pfd.models.path("shape_predictor_5_face_landmarks"))
    with pytest.raises(ModelFormatError, match="face recognition network"):
        pfd.FaceEmbedder(model=pfd.models.path("mmod_human_face_detector"))
    image = np.zeros((60, 60, 3), np.uint8)
    with pytest.raises(ModelFormatError, match="shape predictor"):
        pfd.align.landmarks(image, [0, 0, 50, 50], model=pfd.models.path("mmod_human_face_detector"))
    with pytest.raises(ModelFormatError, match="CNN face detector"):
        pfd.align.detect(image, detector="cnn", model=pfd.models.path("shape_predictor_5_face_landmarks"))


def test_model_lookup_errors(tmp_path, monkeypatch, face_model_bytes):
    with pytest.raises(KeyError, match="unknown model"):
        pfd.models.path("no_such_model")
    # A corrupted copy in PYFACEDLIB_MODELS is caught by the manifest's sha256.
    corrupt = bytearray(face_model_bytes)
    corrupt[1000] ^= 0xFF
    (tmp_path / "dlib_face_recognition_resnet_model_v1.dat").write_bytes(bytes(corrupt))
    monkeypatch.setenv("PYFACEDLIB_MODELS", str(tmp_path))
    with pytest.raises(ModelFormatError, match="sha256"):
        pfd.models.path(FACE)


def test_missing_model_says_how_to_get_it(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "face_recognition_models" else real_find_spec(name, *a))
    monkeypatch.setenv("PYFACEDLIB_MODELS", str(tmp_path))
    with pytest.raises(pfd.ModelNotFoundError, match="pip install face_recognition_models"):
        pfd.models.path(FACE)


@pytest.mark.parametrize("chips, error", [
    (np.zeros((2, 150, 150, 3), np.float32), TypeError),
    (np.zeros((2, 150, 150, 3), np.uint16), TypeError),
    (np.zeros((2, 160, 160, 3), np.uint8), ValueError),
    (np.zeros((150, 150), np.uint8), ValueError),
    (np.zeros((2, 150, 150, 4), np.uint8), ValueError),
    ([[0] * 3] * 150, TypeError),
    ("chip.png", TypeError),
])
def test_bad_chips(embedder, chips, error):
    with pytest.raises(error):
        embedder.embed_chips(chips)


def test_bad_arguments(embedder):
    chips = np.zeros((1, 150, 150, 3), np.uint8)
    with pytest.raises(ValueError):
        embedder.embed_chips(chips, num_jitters=-1)
    with pytest.raises(ValueError):
        pfd.FaceEmbedder(threads=0)
    with pytest.raises(ValueError):
        pfd.align.detect(np.zeros((50, 50, 3), np.uint8), detector="sift")
    with pytest.raises(ValueError):
        pfd.align.detect(np.zeros((50, 50, 3), np.uint8), upsample=-1)
    with pytest.raises(ValueError):
        pfd.align.extract_chip(np.zeros((50, 50, 3), np.uint8), np.zeros((4, 2)))
    with pytest.raises(ValueError):
        pfd.align.landmarks(np.zeros((50, 50, 3), np.uint8), [10, 10, 5, 5])


@pytest.mark.parametrize("image, error", [
    (np.zeros((40, 40, 3), np.float64), TypeError),
    (np.zeros((40, 40, 3), np.uint16), TypeError),
    (np.zeros((40, 40, 2), np.uint8), ValueError),
    (np.zeros((40, 40, 3, 1), np.uint8), ValueError),
    (np.zeros((0, 40, 3), np.uint8), ValueError),
    (np.zeros(10, np.uint8), ValueError),
    (12345, TypeError),
    (None, TypeError),
])
def test_bad_images(embedder, image, error):
    with pytest.raises(error):
        embedder.embed_image(image)


def test_bad_image_files(tmp_path, embedder):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not a jpeg")
    with pytest.raises(pfd.ImageError, match="notes.jpg"):
        embedder.embed_image(not_image)
    with pytest.raises(pfd.ImageError, match="not found"):
        embedder.embed_image(tmp_path / "missing.jpg")


def test_image_conversions(tmp_path):
    from PIL import Image

    gray = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 256
    Image.fromarray(gray.astype(np.uint8), "L").save(tmp_path / "g.png")
    Image.fromarray(np.dstack([gray] * 4).astype(np.uint8), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray((gray * 257).astype(np.uint16)).save(tmp_path / "g16.png")
    for name in ("g.png", "rgba.png", "g16.png"):
        rgb = pfd.load_image(tmp_path / name)
        assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8, name
        assert np.array_equal(rgb[:, :, 0], gray.astype(np.uint8)), name
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 1] = 7
    assert pfd.as_rgb(rgba).shape == (10, 12, 3) and pfd.as_rgb(rgba)[0, 0, 1] == 7
    assert pfd.as_rgb(np.zeros((10, 12, 1), np.uint8)).shape == (10, 12, 3)


def test_no_face_gives_an_empty_list(embedder):
    assert embedder.embed_image(np.full((120, 120, 3), 128, np.uint8)) == []

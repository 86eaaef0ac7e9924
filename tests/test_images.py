"""Images as people have them: PIL objects, OpenCV (BGR) frames, phone photos with EXIF orientation,
large photos (detection on a scaled copy)."""
from __future__ import annotations

import numpy as np
import pytest

import pyfacedlib as pfd


@pytest.fixture(scope="module")
def face_photo(lfw_sample):
    """One real LFW photo (250x250 RGB) with one face HOG finds."""
    for path in lfw_sample:
        image = pfd.load_image(path)
        if len(pfd.align.detect(image)) == 1:
            return image
    pytest.fail("no LFW sample image with exactly one detected face")


def test_pil_images_are_accepted_like_arrays(embedder, face_photo):
    from PIL import Image

    expected = embedder.embed_image(face_photo)
    for mode in ("RGB", "RGBA"):
        got = embedder.embed_image(Image.fromarray(face_photo).convert(mode))
        assert len(got) == len(expected) == 1
        assert np.array_equal(got[0].box, expected[0].box)
        assert np.abs(got[0].descriptor - expected[0].descriptor).max() == 0
    gray = Image.fromarray(face_photo).convert("L")
    assert pfd.as_rgb(gray).shape == face_photo.shape
    with pytest.raises(pfd.ImageError):
        pfd.as_rgb(Image.new("F", (4, 4)))


def test_opencv_bgr_frames_go_through_from_bgr(embedder, face_photo):
    bgr = np.ascontiguousarray(face_photo[:, :, ::-1])
    assert np.array_equal(pfd.from_bgr(bgr), face_photo)
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])
    assert np.array_equal(pfd.from_bgr(bgra), face_photo)
    right = embedder.embed_image(pfd.from_bgr(bgr))[0].descriptor
    assert np.abs(right - embedder.embed_image(face_photo)[0].descriptor).max() == 0
    # what from_bgr prevents: the frame taken as RGB gives another descriptor
    swapped = embedder.embed_image(bgr)
    assert not swapped or np.abs(swapped[0].descriptor - right).max() > 1e-3
    with pytest.raises(TypeError):
        pfd.from_bgr([[1, 2, 3]])


# EXIF Orientation tag -> how the stored pixels are turned from upright (np.rot90 quarter turns)
@pytest.mark.parametrize("orientation, quarter_turns", [(6, 1), (8, -1), (3, 2)])
def test_exif_orientation_is_applied_when_reading_files(tmp_path, embedder, face_photo, orientation, quarter_turns):
    from PIL import Image

    # the pixels stored sideways, with the tag that tells a viewer how to turn them upright
    stored = np.rot90(face_photo, quarter_turns)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"phone_{orientation}.jpg"
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif, quality=95)

    upright = pfd.load_image(path)
    assert upright.shape == face_photo.shape
    assert np.abs(upright.astype(int) - face_photo).mean() < 4  # JPEG noise only
    assert pfd.load_image(path, exif_orientation=False).shape == stored.shape
    assert len(embedder.embed_image(path)) == 1
    with Image.open(path) as img:  # a PIL image with the tag is turned upright as well
        assert pfd.as_rgb(img).shape == face_photo.shape


def test_detection_scale_rule():
    scale = pfd.align.detection_scale
    assert scale((250, 250), 1) == 2.0            # small images: dlib's own scan
    assert scale((720, 1280), 1) == 2.0
    assert scale((3000, 4000), 1) == pytest.approx(80 / 150)
    assert scale((3000, 4000), 1, min_face_size=0) == 2.0
    assert scale((3000, 4000), 0, min_face_size=40) == 1.0   # never finer than dlib's own
    with pytest.raises(ValueError):
        scale((100, 100), 1, min_face_size=-1)


def test_large_photo_finds_the_faces_full_resolution_finds(lfw_sample):
    # a 12-MP "group photo": 12 real LFW photos blown up 4x on a 4000x3000 canvas (faces ~400 px)
    from PIL import Image

    canvas = np.full((3000, 4000, 3), 90, np.uint8)
    placed = 0
    for i, path in enumerate(lfw_sample[:12]):
        tile = np.asarray(Image.fromarray(pfd.load_image(path)).resize((1000, 1000), Image.BILINEAR))
        y, x = divmod(i, 4)
        canvas[y * 1000:(y + 1) * 1000, x * 1000:(x + 1) * 1000] = tile
        placed += 1
    fast = pfd.align.detect(canvas)                          # default: scaled copy
    full = pfd.align.detect(canvas, upsample=0, min_face_size=0)   # dlib's own scan, no upsampling
    assert len(full) >= placed - 1
    # every face the full-resolution scan finds is found on the scaled copy (IoU >= 0.5)
    for box in full:
        overlaps = [_iou(box, other) for other in fast]
        assert overlaps and max(overlaps) >= 0.5, box


def _iou(a, b) -> float:
    left, top = max(a[0], b[0]), max(a[1], b[1])
    right, bottom = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def test_a_folder_given_as_a_model_is_a_model_format_error(tmp_path):
    with pytest.raises(pfd.ModelFormatError, match="not a file"):
        pfd.FaceEmbedder(model=tmp_path)
    with pytest.raises(pfd.ModelFormatError, match="not a file"):
        pfd.align.landmarks(np.zeros((60, 60, 3), np.uint8), [0, 0, 50, 50], model=str(tmp_path))


def test_decompression_bomb_is_an_image_error(tmp_path):
    from PIL import Image

    import pyfacedlib as pfd
    from pyfacedlib.chipcache import AlignmentSettings
    from pyfacedlib.photos import detect_photo

    bomb = tmp_path / "bomb.png"
    Image.new("L", (20000, 20000)).save(bomb)  # 400 MP of zeros, a few hundred KB on disk
    with pytest.raises(pfd.ImageError, match="exceeds limit"):
        pfd.load_image(bomb)
    assert "exceeds limit" in detect_photo(str(bomb), AlignmentSettings(), hash_files=True).error  # a row, not a crash

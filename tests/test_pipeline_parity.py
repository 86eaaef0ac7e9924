"""The whole pipeline (detect -> landmarks -> chip -> descriptor) against dlib's own binding, on LFW."""
import numpy as np
import pytest

import pyfacedlib as pfd


def _dlib_faces(dlib_bin, image, upsample=1):
    detector = dlib_bin.get_frontal_face_detector()
    predictor = dlib_bin.shape_predictor(pfd.models.path("shape_predictor_5_face_landmarks"))
    model = dlib_bin.face_recognition_model_v1(pfd.models.path("dlib_face_recognition_resnet_model_v1"))
    out = []
    for rect in detector(image, upsample):
        shape = predictor(image, rect)
        out.append({
            "box": [rect.left(), rect.top(), rect.right(), rect.bottom()],
            "landmarks": [[p.x, p.y] for p in shape.parts()],
            "chip": dlib_bin.get_face_chip(image, shape, 150, 0.25),
            "descriptor": np.array(model.compute_face_descriptor(image, shape)),
        })
    return out


def test_lfw_pipeline_matches_dlib(lfw_sample, dlib_bin, embedder):
    assert len(lfw_sample) >= 20
    faces_checked = 0
    for path in lfw_sample:
        image = pfd.load_image(path, exif_orientation=False)
        ours = embedder.embed_image(image)
        ref = _dlib_faces(dlib_bin, image)
        assert len(ours) == len(ref), path
        for mine, theirs in zip(ours, ref):
            assert mine.box.tolist() == theirs["box"], path
            assert mine.landmarks.tolist() == theirs["landmarks"], path
            assert np.array_equal(mine.chip, theirs["chip"]), path
            assert np.abs(mine.descriptor - theirs["descriptor"]).max() <= 1e-5, path
            faces_checked += 1
    assert faces_checked >= 20


def test_embed_image_accepts_a_path_and_a_grayscale_array(lfw_sample, embedder):
    path = lfw_sample[0]
    from_path = embedder.embed_image(str(path))
    assert len(from_path) >= 1
    face = from_path[0]
    assert face.box.shape == (4,) and face.landmarks.shape == (5, 2)
    assert face.chip.shape == (150, 150, 3) and face.descriptor.shape == (128,)
    gray = pfd.load_image(path, exif_orientation=False).mean(axis=2).round().astype(np.uint8)
    assert len(embedder.embed_image(gray)) >= 1


def test_align_functions_match_dlib(lfw_sample, dlib_bin):
    image = pfd.load_image(lfw_sample[1], exif_orientation=False)
    boxes, scores = pfd.align.detect(image, upsample=0, return_scores=True)
    rects, ref_scores, _ = dlib_bin.get_frontal_face_detector().run(image, 0)
    assert boxes.tolist() == [[r.left(), r.top(), r.right(), r.bottom()] for r in rects]
    assert np.allclose(scores, ref_scores)
    for size, padding in [(150, 0.25), (200, 0.0), (80, 0.5)]:
        points = pfd.align.landmarks(image, boxes[0])
        shape = dlib_bin.shape_predictor(pfd.models.path("shape_predictor_5_face_landmarks"))(
            image, dlib_bin.rectangle(*boxes[0].tolist()))
        chip = pfd.align.extract_chip(image, points, size=size, padding=padding)
        assert np.array_equal(chip, dlib_bin.get_face_chip(image, shape, size, padding))


@pytest.mark.slow
def test_cnn_detector_matches_dlib(lfw_sample, dlib_bin):
    cnn = dlib_bin.cnn_face_detection_model_v1(pfd.models.path("mmod_human_face_detector"))
    for path in lfw_sample[:3]:
        image = pfd.load_image(path, exif_orientation=False)
        boxes, confidences = pfd.align.detect(image, detector="cnn", upsample=0, return_scores=True)
        ref = cnn(image, 0)
        assert boxes.tolist() == [[d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()] for d in ref]
        assert np.allclose(confidences, [d.confidence for d in ref], atol=1e-4)


@pytest.mark.parametrize("upsample, size", [(0, (1200, 1600)), (1, (600, 800))])
def test_hog_on_large_images_matches_dlib(dlib_bin, lfw_sample, upsample, size):
    # >= 1 MP as scanned: the multi-threaded scan (cpp/alignment.cpp) must give dlib's own detections
    from PIL import Image

    rows, cols = size
    tile = rows // 3
    canvas = np.full((rows, cols, 3), 100, np.uint8)
    for i, path in enumerate(lfw_sample[:12]):
        y, x = divmod(i, cols // tile)
        if (y + 1) * tile > rows:
            break
        image = pfd.load_image(path, exif_orientation=False)
        canvas[y * tile:(y + 1) * tile, x * tile:(x + 1) * tile] = np.asarray(
            Image.fromarray(image).resize((tile, tile), Image.Resampling.BILINEAR))
    assert rows * cols * 4 ** upsample >= 1_000_000
    boxes, scores = pfd.align.detect(canvas, upsample=upsample, min_face_size=0, return_scores=True)
    dets, dlib_scores, _ = dlib_bin.get_frontal_face_detector().run(canvas, upsample, 0.0)
    expected = np.array([[d.left(), d.top(), d.right(), d.bottom()] for d in dets], np.int64).reshape(-1, 4)
    assert len(expected) >= 6
    assert np.array_equal(boxes, expected)
    assert np.allclose(scores, dlib_scores, atol=1e-6)

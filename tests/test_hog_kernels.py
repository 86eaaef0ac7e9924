"""The HOG scan compiled twice (portable, AVX2) and chosen at run time: same boxes, dlib's scores."""
from pathlib import Path

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib._native import core

HAS_AVX2 = pfd.build_info()["hog_kernel"].startswith("avx2")


def test_build_info_names_the_hog_kernel():
    choice = pfd.build_info()["hog_kernel"]
    assert choice.split(":")[0] in ("avx2", "portable") and ":" in choice
    assert core.HogFaceDetector().kernel == choice.split(":")[0]
    assert core.HogFaceDetector("portable").kernel == "portable"


def test_an_avx2_cpu_gets_the_avx2_kernel():
    """On a CPU with AVX2 the installed package must carry and load its AVX2 module (a build or
    packaging slip would otherwise only make detection slower)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or " avx2" not in cpuinfo.read_text():
        pytest.skip("this CPU has no AVX2 (or no /proc/cpuinfo)")
    assert HAS_AVX2, pfd.build_info()["hog_kernel"]


def test_unknown_kernel_is_a_value_error():
    with pytest.raises(ValueError, match="HOG kernel must be"):
        core.HogFaceDetector("avx512")


@pytest.mark.skipif(not HAS_AVX2, reason=f"this CPU or build has no AVX2 HOG kernel: {pfd.build_info()['hog_kernel']}")
def test_avx2_kernel_gives_dlib_bins_boxes_and_scores(lfw_sample, dlib_bin):
    """dlib-bin's wheel is built with AVX: the AVX2 kernel matches it bit for bit; the portable one
    finds the same boxes with scores within 1e-6 (SSE2 sums in another order)."""
    portable, avx2 = core.HogFaceDetector("portable"), core.HogFaceDetector("avx2")
    detector = dlib_bin.get_frontal_face_detector()
    faces = 0
    for path in lfw_sample:
        image = pfd.load_image(path, exif_orientation=False)
        for upsample in (0, 1):
            boxes, scores = avx2.detect(image, upsample)
            rects, dlib_scores, _ = detector.run(image, upsample, 0.0)
            np.testing.assert_array_equal(boxes, np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects],
                                                          np.int64).reshape(-1, 4))
            np.testing.assert_array_equal(scores, np.asarray(dlib_scores))
            portable_boxes, portable_scores = portable.detect(image, upsample)
            np.testing.assert_array_equal(portable_boxes, boxes)
            np.testing.assert_allclose(portable_scores, scores, rtol=0, atol=1e-6)
            faces += len(boxes)
    assert faces > 0

"""The HOG scan compiled twice (portable, AVX2) and chosen at run time: same boxes, dlib's scores."""
import os
import threading
import time
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


# --- scan threads: one process-wide budget, not hardware_concurrency() threads per call ---

def _large_canvas(lfw_sample) -> np.ndarray:
    """A 1200x1600 canvas of 12 LFW faces: >= 1 MP, so a scan may run on several threads."""
    from PIL import Image

    rows, cols, tile = 1200, 1600, 400
    canvas = np.full((rows, cols, 3), 100, np.uint8)
    for i, path in enumerate(lfw_sample[:12]):
        y, x = divmod(i, cols // tile)
        image = pfd.load_image(path, exif_orientation=False)
        canvas[y * tile:(y + 1) * tile, x * tile:(x + 1) * tile] = np.asarray(
            Image.fromarray(image).resize((tile, tile), Image.Resampling.BILINEAR))
    return canvas


def _process_threads() -> int:
    """The kernel's count of this process's threads (native ones included)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


@pytest.fixture
def scan_budget():
    """Sets the scan-thread budget for a test; the default (the process's CPUs) afterwards."""
    yield core.set_hog_scan_thread_budget
    core.set_hog_scan_thread_budget(0)


def test_scan_thread_budget_is_the_cpus_this_process_may_run_on(scan_budget):
    """The default budget follows the affinity mask (not hardware_concurrency): a thread pinned to
    one CPU gets a budget of one."""
    from pyfacedlib._system import available_cpus

    assert core.hog_scan_threads()["budget"] == available_cpus()
    allowed = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(allowed)})  # this thread only (Linux: pid 0 = the calling thread)
        assert core.hog_scan_threads()["budget"] == 1
    finally:
        os.sched_setaffinity(0, allowed)
    scan_budget(3)
    assert core.hog_scan_threads()["budget"] == 3
    with pytest.raises(ValueError, match="budget"):
        core.set_hog_scan_thread_budget(-1)
    assert core.hog_scan_threads()["budget"] == 3


def _scan_concurrently(detectors, canvas, repeats: int = 2) -> tuple[int, list]:
    """Every detector scans the canvas `repeats` times, each in its own Python thread, all started
    at once; returns (the most threads the process ran beyond the callers meanwhile, sampled from
    /proc/self/status every millisecond, the callers' (boxes, scores))."""
    callers = len(detectors)
    start = threading.Barrier(callers + 1)
    results: list = [None] * callers
    samples: list[int] = []
    scanning = threading.Event()

    def scan(i: int) -> None:
        start.wait()
        results[i] = [detectors[i].detect(canvas, 0) for _ in range(repeats)]

    def sample() -> None:
        while scanning.is_set():
            samples.append(_process_threads())
            time.sleep(0.001)

    workers = [threading.Thread(target=scan, args=(i,)) for i in range(callers)]
    for w in workers:
        w.start()
    sampler = threading.Thread(target=sample)
    scanning.set()
    sampler.start()
    time.sleep(0.05)
    baseline = _process_threads()  # the callers (waiting) and the sampler are all alive by now
    core.hog_scan_threads(reset_peak=True)
    start.wait()
    for w in workers:
        w.join()
    scanning.clear()
    sampler.join()
    return max(samples) - baseline, [r for found in results for r in found]


@pytest.mark.parametrize("kernel", ["portable"] + (["avx2"] if HAS_AVX2 else []))
def test_concurrent_scans_stay_within_the_thread_budget(lfw_sample, scan_budget, kernel):
    """Four threads scanning a large image at once with a budget of 2: at most one helper thread
    runs beside the callers (helpers only while fewer threads than the budget scan; the old scan
    started CPUs - 1 helpers per call, N x (CPUs - 1) in all); a lone scan with the same budget does
    use its helper; and every scan returns the single-threaded scan's boxes and scores bit for bit."""
    canvas = _large_canvas(lfw_sample)
    scan_budget(1)  # single-threaded: dlib's own detector(img) on the caller's thread
    core.hog_scan_threads(reset_peak=True)
    serial_boxes, serial_scores = core.HogFaceDetector(kernel).detect(canvas, 0)
    assert len(serial_boxes) >= 6 and core.hog_scan_threads()["peak"] == 1

    scan_budget(2)
    core.hog_scan_threads(reset_peak=True)
    boxes, scores = core.HogFaceDetector(kernel).detect(canvas, 0)
    assert core.hog_scan_threads()["peak"] == 2  # the lone scan took the one free helper
    np.testing.assert_array_equal(boxes, serial_boxes)
    np.testing.assert_array_equal(scores, serial_scores)

    callers = 4
    helpers, results = _scan_concurrently([core.HogFaceDetector(kernel) for _ in range(callers)], canvas)
    assert helpers <= 1, f"{helpers} helper threads ran at once with a budget of 2"
    stats = core.hog_scan_threads()
    assert 2 <= stats["peak"] <= callers + 1 and stats["in_use"] == 0
    for b, s in results:
        np.testing.assert_array_equal(b, serial_boxes)
        np.testing.assert_array_equal(s, serial_scores)


def test_scans_with_the_default_budget_never_exceed_the_cpus(lfw_sample):
    """With the default budget (the CPUs this process may run on), four concurrent large scans run
    at most CPUs - 1 helper threads between them, and give every thread back."""
    from pyfacedlib._system import available_cpus

    cpus = available_cpus()
    helpers, results = _scan_concurrently([core.HogFaceDetector() for _ in range(4)], _large_canvas(lfw_sample), 1)
    assert helpers <= cpus - 1, f"{helpers} helper threads on {cpus} CPUs"
    stats = core.hog_scan_threads()
    assert stats["budget"] == cpus and 1 <= stats["peak"] <= 4 + cpus - 1 and stats["in_use"] == 0
    assert all(np.array_equal(b, results[0][0]) for b, _ in results)

"""The native boundary: every _core entry point, called with wrong dtypes, shapes, layouts, empty
arrays and out-of-range values, raises a Python exception — in a child process, so a crash fails
the test instead of killing the run."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyfacedlib as pfd
from pyfacedlib._native import core

CHILD = Path(__file__).with_name("_core_boundary_child.py")

# Entry points that take no array and no value that reaches native code unchecked; everything
# else in _core must appear in the child's table (checked below).
NO_UNTRUSTED_INPUT = {"build_info", "cuda_runtime", "training_conv_kernel", "FaceEmbedderCore.threads",
                      "FaceEmbedderCore.multiply_adds_per_face", "FaceEmbedderCore.folded_ops",
                      "BnCalibrator.statistics", "BnCalibrator.faces",
                      "LandmarkPredictor.num_parts", "FaceTrainer.step", "FaceTrainer.learning_rate",
                      "FaceTrainer.embedder", "FaceTrainer.affine_bytes", "FaceTrainer.bn_bytes",
                      "FaceTrainer.checkpoint", "FaceTrainer.parameters", "HogFaceDetector",
                      "HogFaceDetector.kernel", "MarginLoss.scale", "MarginLoss.angular_margin",
                      "FaceTrainer.class_centres", "MarginLoss.cosine_margin"}


def core_entry_points() -> set[str]:
    names = set()
    for name, value in vars(core).items():
        if name.startswith("_") or not callable(value):
            continue
        if inspect.isclass(value) and not issubclass(value, BaseException):
            names.add(name)
            names.update(f"{name}.{attr}" for attr in vars(value) if not attr.startswith("_"))
        else:
            names.add(name)
    return names


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    bn_path = tmp_path_factory.mktemp("boundary") / "bn.dat"
    pfd.convert_affine_to_bn(pfd.models.path("dlib_face_recognition_resnet_model_v1"), bn_path)
    # the child imports the same pyfacedlib as this process (installed, or built in place)
    env = {**os.environ, "PYTHONPATH": str(Path(pfd.__file__).resolve().parents[1])}
    run = subprocess.run([sys.executable, str(CHILD), str(bn_path)], capture_output=True, text=True, timeout=600,
                         env=env)
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert run.returncode == 0 and lines and lines[-1] == {"done": True}, (
        f"the child died (exit {run.returncode}) after {lines[-1] if lines else 'nothing'}:\n{run.stderr[-3000:]}")
    return lines[:-1]


def test_every_entry_point_is_exercised(outcomes):
    exercised = {o["entry"].split("[")[0] for o in outcomes}
    classes = {e.split(".")[0] for e in exercised}  # constructors are exercised through their classes
    missing = sorted(core_entry_points() - exercised - classes - NO_UNTRUSTED_INPUT)
    assert not missing, f"_core entry points the boundary test does not call: {missing}"


EXPECTED = {"dtype": TypeError, "big_endian": TypeError, "list": TypeError, "none": TypeError,
            "shape": ValueError, "ndim": ValueError, "non_contiguous": ValueError}


def test_bad_arrays_raise_the_right_python_exceptions(outcomes):
    wrong = []
    for o in outcomes:
        if o["case"] in EXPECTED:
            expected = EXPECTED[o["case"]].__name__
            if not o["outcome"].startswith(expected):
                wrong.append(f"{o['entry']} / {o['case']}: expected {expected}, got {o['outcome']}")
    assert not wrong, "\n".join(wrong)


def test_empty_arrays_and_bad_values_never_crash(outcomes):
    allowed = ("ok", "ValueError", "TypeError", "ModelFormatError")
    for o in outcomes:
        if o["case"] == "empty":
            assert o["outcome"].startswith(allowed), o
    values = [o for o in outcomes if o["case"] == "value"]
    assert values and all(o["outcome"].startswith(("ValueError", "TypeError", "ModelFormatError")) for o in values), \
        [o for o in values if not o["outcome"].startswith(("ValueError", "TypeError", "ModelFormatError"))]


def test_messages_name_the_argument(outcomes):
    for o in outcomes:
        if o["case"] in ("dtype", "shape", "non_contiguous") and o["entry"] != "chinese_whispers":
            argument = o["entry"].split("[")[1].rstrip("]") if "[" in o["entry"] else None
            if argument:
                assert argument in o["outcome"], o

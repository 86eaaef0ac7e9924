"""Corrupted model files: every cut of the file's first 4,096 bytes, 200 random truncations and
200 bit flips of the real .dat. Each must raise ModelFormatError naming the file (or, for a flip
inside a weight, load as a valid different model); none may crash or hang the interpreter, which
is why the loop runs in a child process with a time limit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pyfacedlib as pfd


@pytest.mark.slow
def test_corrupted_model_files_never_crash(tmp_path):
    script = Path(__file__).with_name("fuzz_model_files.py")
    model = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    # the child imports the same pyfacedlib as this process (installed or an in-place build)
    package_parent = str(Path(pfd.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(script), model, str(tmp_path), "4096", "200"],
                         capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert run.returncode == 0, f"the loader crashed (exit {run.returncode}): {run.stderr[-2000:]}"
    counts = json.loads(run.stdout.strip().splitlines()[-1])
    assert counts["wrong_exception"] == []
    assert counts["cases"] == 4096 + 400
    assert counts["rejected"] >= 4096 + 200  # all truncations; flips inside float data may stay valid

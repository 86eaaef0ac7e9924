"""Fault injection: every long verb, killed at chosen moments, then run again, ends exactly where an
uninterrupted run ends — the same rows, the same model bytes, no temporary files, no duplicates.

The moments are named fault points (pyfacedlib/_faults.py), set through PYFACEDLIB_FAULT in a child
process: after N photos, just before a file is renamed into place (during a write), during a
fine-tuning export; SIGKILL (nothing can be cleaned up) at each, and SIGINT (Ctrl-C) once per verb.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib.facetable import FaceTable

PACKAGE_PARENT = str(Path(pfd.__file__).resolve().parents[1])
KILLED = -signal.SIGKILL
INTERRUPTED = (130, -signal.SIGINT)


def run_cli(argv: list[str], fault: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`pyfacedlib ARGV` in a child process importing this very pyfacedlib, with a fault point set."""
    # SIGINT's default handler set explicitly: a test runner started in the background may pass SIGINT on ignored
    code = (f"import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"sys.path.insert(0, {PACKAGE_PARENT!r}); from pyfacedlib.cli import main; sys.exit(main({argv!r}))")
    env = {k: v for k, v in os.environ.items() if k != "PYFACEDLIB_FAULT"}
    if fault:
        env["PYFACEDLIB_FAULT"] = fault
    return subprocess.run([sys.executable, "-I", "-c", code], env=env, capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def leftovers(folder: Path) -> list[Path]:
    """Temporary files a run may leave when killed: atomic writes' .NAME.*.tmp, parts, .part files."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".part")]


def rows(path: Path) -> dict[tuple[str, int], np.ndarray]:
    """(photo, face) -> embedding of a face table (a file or an archive folder); fails on duplicates."""
    table = FaceTable.read_parquet(path)
    keys = [(Path(s).name, int(f)) for s, f in zip(table.source_path, table.face)]
    assert len(keys) == len(set(keys)), f"duplicate rows in {path}"
    return dict(zip(keys, table.embedding))


def same_rows(a: Path, b: Path) -> None:
    first, second = rows(a), rows(b)
    assert first.keys() == second.keys()
    for key, value in first.items():
        np.testing.assert_allclose(second[key], value, atol=1e-5, equal_nan=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, lfw_dir) -> Path:
    """12 LFW photos of 4 people, as identity folders (PEOPLE/Name/x.jpg)."""
    root = tmp_path_factory.mktemp("faults") / "people"
    people = [p for p in sorted(lfw_dir.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= 3][:4]
    for person in people:
        (root / person.name).mkdir(parents=True)
        for image in sorted(person.glob("*.jpg"))[:3]:
            shutil.copy(image, root / person.name / image.name)
    return root


# verb -> (arguments given the photos and an output folder, what to compare, what a re-run adds,
#          the moments to stop it: after N photos, during a write (just before the rename), SIGINT)
def _export(photos: Path, out: Path) -> list[str]:
    return ["export", str(photos), "--out", str(out / "faces.parquet")]


def _archive(photos: Path, out: Path) -> list[str]:
    return ["embed", str(photos), "--out", str(out / "faces.parquet"), "--images-per-part", "4"]


def _cluster(photos: Path, out: Path) -> list[str]:
    return ["cluster", str(photos), str(out / "clusters")]


def _enrol(photos: Path, out: Path) -> list[str]:
    return ["enrol", str(photos), str(out / "gallery.parquet")]


VERBS = {  # export and enrol write one file (at the end): "photo:11" is the moment just before it
    "export": (_export, "faces.parquet", [], ["photo:5", "photo:11", "write:1", "photo:3:SIGINT"]),
    "archive": (_archive, "faces.parquet", ["--resume"], ["photo:5", "write:1", "write:2", "photo:3:SIGINT"]),
    "cluster": (_cluster, "clusters/faces.parquet", [], ["photo:5", "write:1", "write:2", "photo:3:SIGINT"]),
    "enrol": (_enrol, "gallery.parquet", [], ["photo:5", "photo:11", "write:1", "photo:3:SIGINT"]),
}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_killed_verb_run_again_ends_where_an_uninterrupted_run_ends(verb, photos, tmp_path):
    arguments, result, again, faults = VERBS[verb]
    reference = tmp_path / "reference"
    done = run_cli(arguments(photos, reference))
    assert done.returncode == 0, done.stderr
    for fault in faults:
        out = tmp_path / fault.replace(":", "_")
        stopped = run_cli(arguments(photos, out), fault=fault)
        expected = INTERRUPTED if fault.endswith("SIGINT") else (KILLED,)
        assert stopped.returncode in expected, f"{verb} {fault}: exit {stopped.returncode}\n{stopped.stderr}"
        resumed = run_cli(arguments(photos, out) + (again if (out / result).exists() else []))
        assert resumed.returncode == 0, f"{verb} after {fault}: {resumed.stderr}"
        same_rows(reference / result, out / result)
        assert not leftovers(out), f"{verb} after {fault} left {leftovers(out)}"
        if verb == "cluster":
            listed = [sorted((folder / "clusters" / "clusters.csv").read_text().splitlines())
                      for folder in (reference, out)]
            assert len(listed[0]) == len(listed[1])


def test_a_killed_finetune_run_again_gives_the_same_model(tmp_path, johns_dir):
    def argv(out: Path) -> list[str]:
        return ["finetune", str(johns_dir), str(out), "--strategy", "head", "--steps", "30", "--checkpoint-every", "10",
                "--val-every", "10", "--no-progress", "--cache-dir", str(tmp_path / "cache")]

    reference = tmp_path / "reference"
    done = run_cli(argv(reference))
    assert done.returncode == 0, done.stderr
    model = (reference / "finetuned_affine.dat").read_bytes()
    for fault in ["step:15", "write:3", "export:1", "step:12:SIGINT"]:
        out = tmp_path / fault.replace(":", "_")
        stopped = run_cli(argv(out), fault=fault)
        expected = INTERRUPTED if fault.endswith("SIGINT") else (KILLED,)
        assert stopped.returncode in expected, f"finetune {fault}: exit {stopped.returncode}\n{stopped.stderr}"
        resumed = run_cli(argv(out))
        assert resumed.returncode == 0, f"finetune after {fault}: {resumed.stderr}"
        assert (out / "finetuned_affine.dat").read_bytes() == model, f"another model after {fault}"
        assert not leftovers(out), f"finetune after {fault} left {leftovers(out)}"

"""Archives: the files -> Parquet pipeline, local and on a local Ray; resume after kill -9; index."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib.align import AlignmentSettings
from pyfacedlib.archive import ArchiveConfig, embed_archive
from pyfacedlib.facetable import SCHEMA_VERSION_KEY, schema
from pyfacedlib.photos import embed_photos

# the pyfacedlib this test imported (a checkout built in place, or the installed package)
PACKAGE_PARENT = Path(pfd.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo_dir(lfw_dir: Path, tmp_path_factory) -> Path:
    """24 LFW photos in nested folders, a copy of one (same bytes), a blank image and a broken file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("archive")
    people = [p for p in sorted(lfw_dir.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= 2][::100][:12]
    for person in people:
        (root / person.name[0] / person.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(person.glob("*.jpg"))[:2]:
            shutil.copy(f, root / person.name[0] / person.name / f.name)
    first = next(root.rglob("*.jpg"))
    shutil.copy(first, root / "copy_of_first.jpg")
    Image.new("RGB", (160, 120), (20, 80, 20)).save(root / "blank.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


def _rows(out: Path):
    import pyarrow.parquet as pq

    table = pq.read_table(out).sort_by([("source_path", "ascending"), ("face", "ascending")])
    return table


def test_local_archive_rows_match_the_photo_pipeline(photo_dir: Path, tmp_path: Path):
    import pyarrow.parquet as pq

    out = tmp_path / "faces.parquet"
    report = embed_archive([photo_dir], out, config=ArchiveConfig(images_per_part=7), progress=False)
    files = sorted(str(p) for p in photo_dir.rglob("*") if p.is_file())
    assert report.images == len(files) == 27 and report.processed == 27 and report.duplicates == 1
    assert set(report.unreadable) == {str(photo_dir / "broken.jpg")} and report.without_face == 1
    assert report.parts_written == 4 and len(list(out.glob("part-*.parquet"))) == 4
    table = _rows(out)
    assert set(table.column_names) >= {"source_path", "sha256", "face", "box", "score", "landmarks", "embedding",
                                       "model_id", "settings_hash", "error"}
    assert table.schema.field("embedding").type.list_size == 128
    sources = table.column("source_path").to_pylist()
    assert set(sources) == set(files)  # the copy keeps its own rows
    broken = sources.index(str(photo_dir / "broken.jpg"))
    assert table.column("face")[broken].as_py() == -1 and table.column("error")[broken].as_py()
    assert table.column("embedding")[broken].as_py() is None
    # one schema, its version in every part; a missing value is null (pandas: isna), never ""
    assert table.schema.remove_metadata() == schema()
    assert all(pq.read_schema(part).metadata[SCHEMA_VERSION_KEY] == b"2" for part in out.glob("part-*.parquet"))
    frame = table.to_pandas()
    good = frame.face >= 0
    assert good.sum() == report.faces and frame.error.isna()[good].all() and frame.error_kind.isna()[good].all()
    assert frame.identity.isna().all()
    # quality: a number in [0, 1] for every face, null for the rows without one
    assert frame.quality.isna().equals(~good) and frame.quality[good].between(0, 1).all()
    assert table.column("error_kind")[broken].as_py() == "unreadable"
    assert frame.error.isna().sum() == len(frame) - 1  # the blank image: no face, no error
    # the same descriptors as the photo pipeline (galleries, exports) gives
    settings = AlignmentSettings(fallback="none")
    photos = list(embed_photos(files, pfd.FaceEmbedder(), settings))
    reference = {(p.source, i): p.descriptors[i] for p in photos for i in range(len(p))}
    reference_quality = {(p.source, i): p.quality[i] for p in photos for i in range(len(p))}
    for row in table.filter(table.column("face").to_numpy() >= 0).to_pylist():
        np.testing.assert_allclose(row["embedding"], reference[(row["source_path"], row["face"])], atol=1e-5)
        assert abs(row["quality"] - reference_quality[(row["source_path"], row["face"])]) < 1e-6
    gallery = pfd.Gallery.load(out)  # an archive is a searchable gallery (no identities)
    hit = gallery.search(reference[next(iter(reference))], k=1)[0]
    assert hit.distance < 1e-5


def test_existing_output_needs_resume(photo_dir: Path, tmp_path: Path):
    out = tmp_path / "faces.parquet"
    embed_archive([photo_dir / "blank.png"], out, progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        embed_archive([photo_dir], out, progress=False)
    with pytest.raises(ValueError, match="other alignment settings"):
        embed_archive([photo_dir], out, settings=AlignmentSettings(fallback="none", upsample=0),
                      config=ArchiveConfig(resume=True), progress=False)


def test_kill_9_then_resume_completes_without_duplicates(photo_dir: Path, tmp_path: Path):
    out = tmp_path / "faces.parquet"
    # the CLI in a fresh interpreter that imports exactly this pyfacedlib
    launcher = "import sys; sys.path.insert(0, sys.argv.pop(1)); from pyfacedlib.cli import main; sys.exit(main(sys.argv[1:]))"  # noqa: E501
    command = [sys.executable, "-I", "-c", launcher, str(PACKAGE_PARENT), "embed", str(photo_dir), "--out", str(out),
               "--part-size", "1", "--workers", "1", "--resume"]
    env = dict(os.environ)
    # the child at the lowest priority, one photo a part: on a loaded machine the parent's polling
    # must still see the second part appear before the child has written them all (it had not,
    # once under two benchmarks, once with two photos a part and the faster embedding)
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=lambda: os.nice(19))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("part-*.parquet"))) < 2:
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    parts_before = len(list(out.glob("part-*.parquet")))
    assert parts_before >= 2
    from pyfacedlib._system import file_sha256

    in_output = set(_rows(out).column("sha256").to_pylist())
    files = [p for p in photo_dir.rglob("*") if p.is_file()]
    done_before = sum(file_sha256(p) in in_output for p in files)  # a copy of a file in the output counts as done
    assert done_before < len(files), "the run finished before it could be killed"
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 3, result.stderr  # 3: done, the broken file is listed
    assert f"{done_before} already in" in result.stdout and f"{len(files) - done_before} processed" in result.stdout
    table = _rows(out)
    keys = list(zip(table.column("source_path").to_pylist(), table.column("face").to_pylist()))
    assert len(keys) == len(set(keys))                       # no duplicates
    assert set(table.column("sha256").to_pylist()) == {file_sha256(p) for p in files}  # every file's bytes, once
    assert set(table.column("source_path").to_pylist()) <= {str(p) for p in files}
    assert not list(out.glob(".*"))                          # no half-written part left


def test_index_command_and_search_with_it(photo_dir: Path, tmp_path: Path, capsys):
    from pyfacedlib.cli import main

    out = tmp_path / "faces.parquet"
    embed_archive([photo_dir], out, progress=False)
    assert main(["index", str(out), str(tmp_path / "faces.npz"), "--kind", "exact"]) == 0
    query = str(next(photo_dir.rglob("*/*/*.jpg")))
    capsys.readouterr()
    assert main(["search", str(out), query, "--index", str(tmp_path / "faces.npz"), "--k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("rank,path") and float(lines[1].split(",")[-1]) < 1e-4
    other = tmp_path / "other.parquet"
    embed_archive([photo_dir / "A"] if (photo_dir / "A").exists() else [query], other, progress=False)
    assert main(["search", str(other), query, "--index", str(tmp_path / "faces.npz")]) == 1  # failed: another index
    assert "rebuild" in capsys.readouterr().err


@pytest.fixture(scope="module")
def local_ray():
    from conftest import skip_or_fail

    try:
        import ray
    except ImportError:
        skip_or_fail("ray is not installed (pip install '.[ray]'; the test extra includes it)")
    from pyfacedlib.archive_ray import start_local_ray

    start_local_ray(3)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_archive(photo_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "local.parquet"
    embed_archive([photo_dir], out, progress=False)
    return out


@pytest.mark.parametrize("stages, backend", [("fused", None), ("split", None), ("split", "onnx")],
                         ids=["fused", "split", "split-onnx"])
def test_ray_engine_gives_the_local_rows(local_ray, photo_dir: Path, local_archive: Path, tmp_path: Path, stages: str,
                                         backend: str | None):
    """The Ray engine's rows are the local engine's (the onnx backend: the embedding actors run
    onnxruntime, descriptors within 1e-5 of the folded pass's)."""
    import pyarrow.parquet as pq

    if backend == "onnx" and importlib.util.find_spec("onnxruntime") is None:
        from conftest import skip_or_fail

        skip_or_fail("onnxruntime (a test dependency) is not installed")
    report = embed_archive([photo_dir], tmp_path / "ray.parquet", progress=False,
                           config=ArchiveConfig(engine="ray", workers=2, images_per_part=10, images_per_task=8,
                                                stages=stages, backend=backend))
    assert (report.processed, report.duplicates, len(report.unreadable), report.without_face) == (27, 1, 1, 1)
    a, b = _rows(local_archive), _rows(tmp_path / "ray.parquet")
    assert report.faces == sum(f >= 0 for f in a.column("face").to_pylist())
    # the same schema (no chip column, no Ray tensor type leaked) and the same rows
    assert b.schema.remove_metadata() == schema() == a.schema.remove_metadata()
    for part in (tmp_path / "ray.parquet").glob("part-*.parquet"):
        meta = pq.read_schema(part).metadata
        assert meta[SCHEMA_VERSION_KEY] == b"2" and b"pyfacedlib.batch" not in meta
    for column in schema().names:
        if column not in ("embedding", "quality"):
            assert a.column(column).to_pylist() == b.column(column).to_pylist(), column
    qa, qb = (np.array(t.column("quality").to_pylist(), dtype=float) for t in (a, b))
    np.testing.assert_allclose(qa, qb, atol=1e-5)  # computed from the descriptors (NaN rows included)
    assert np.isfinite(qb).sum() == report.faces
    ea = [v for v in a.column("embedding").to_pylist() if v is not None]
    eb = [v for v in b.column("embedding").to_pylist() if v is not None]
    np.testing.assert_allclose(np.array(ea), np.array(eb), atol=1e-5)
    # models load once per actor: every batch was served by one of the 2 detection actors (and, split,
    # the one embedding actor): long-lived instances, not a fresh object per batch
    assert report.actors["detector"] <= 2 and report.actors["detection_batches"] >= 27 // 8
    assert report.actors["embedder"] == (1 if stages == "split" else report.actors["detector"])
    resumed = embed_archive([photo_dir], tmp_path / "ray.parquet", progress=False,
                            config=ArchiveConfig(engine="ray", workers=2, resume=True, stages=stages))
    assert resumed.processed == 0 and resumed.already_done == 27


def test_config_fields_carry_their_cli_help():
    from dataclasses import fields

    from pyfacedlib.archive import ENGINES, STAGES

    for f in fields(ArchiveConfig):
        assert f.metadata.get("help"), f.name
    choices = {f.name: f.metadata.get("choices") for f in fields(ArchiveConfig) if f.metadata.get("choices")}
    assert choices == {"engine": ENGINES, "stages": STAGES}
    assert {"embed_gpus", "embed_actors", "embed_cpus", "stages", "images_per_part"} <= {
        f.name for f in fields(ArchiveConfig) if f.metadata.get("cli", True)}
    assert ArchiveConfig(stages="split", embed_gpus=0).split_stages and ArchiveConfig(embed_gpus=1).split_stages
    with pytest.raises(ValueError, match="stages"):
        ArchiveConfig(stages="both")


def test_ray_names_moved_but_still_import():
    import pyfacedlib.archive as archive
    import pyfacedlib.archive_ray as archive_ray

    for name in ("RayDetector", "RayEmbedder", "RayDetectAndEmbed", "start_local_ray"):
        with pytest.warns(DeprecationWarning, match="archive_ray"):
            assert getattr(archive, name) is getattr(archive_ray, name)
    with pytest.raises(AttributeError):
        archive.no_such_name  # noqa: B018


def test_resume_upgrades_version_1_parts_and_refuses_newer_ones(photo_dir: Path, tmp_path: Path):
    """An archive written by pyfacedlib 1 ("" for missing, no version key) resumes: its parts are
    converted in place; a part of a newer schema version stops the run with both versions named."""
    import pyarrow.parquet as pq

    from pyfacedlib.facetable import FaceTable

    sys.path.insert(0, str(Path(__file__).parent))
    from test_facetable import _as_version_1

    out = tmp_path / "faces.parquet"
    few = [photo_dir / "blank.png", photo_dir / "broken.jpg", next(photo_dir.rglob("*/*/*.jpg"))]
    embed_archive(few, out, progress=False)
    (part,) = out.glob("part-*.parquet")
    pq.write_table(_as_version_1(pq.read_table(part)), part)
    assert SCHEMA_VERSION_KEY not in pq.read_schema(part).metadata
    assert "" in pq.read_table(part)["error"].to_pylist()
    table = FaceTable.read_parquet(out)  # read as it is: nulls
    assert table.error.count(None) == 2 and table.error_kind.count("unreadable") == 1
    new = sorted(photo_dir.rglob("*/*/*.jpg"))[-1]
    assert new != few[2]
    report = embed_archive([*few, new], out, progress=False,
                           config=ArchiveConfig(resume=True))
    assert report.already_done == 3 and report.processed == 1
    assert all(pq.read_schema(p).metadata[SCHEMA_VERSION_KEY] == b"2" for p in out.glob("part-*.parquet"))
    frame = pq.read_table(out).to_pandas()  # plain pyarrow over the folder: one schema, nulls
    assert frame.source_path.nunique() == 4 and frame.error.isna().sum() == len(frame) - 1
    assert frame.error_kind.notna().sum() == 1
    newer = pq.read_table(part)
    pq.write_table(newer.replace_schema_metadata({**newer.schema.metadata, SCHEMA_VERSION_KEY: b"3"}), part)
    with pytest.raises(ValueError, match=rf"{part.name}.*version 3 .*version 2"):
        embed_archive(few, out, progress=False, config=ArchiveConfig(resume=True))


def test_resume_retries_transient_errors_and_keeps_a_live_runs_temporaries(photo_dir: Path, tmp_path: Path):
    """A file whose row is a transient error (out of memory, an I/O error) is tried again on resume
    and its error row replaced; a temporary part of a run that still writes is left alone, one of a
    killed run removed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pyfacedlib import _atomic, models
    from pyfacedlib._system import file_sha256
    from pyfacedlib.facetable import photo_batch
    from pyfacedlib.photos import PhotoFaces

    first, second = sorted(photo_dir.rglob("*/*/*.jpg"))[:2]
    out = tmp_path / "faces.parquet"
    out.mkdir()
    settings = AlignmentSettings.for_photos()
    model_id = file_sha256(models.path(models.FACE_RECOGNITION))
    hiccup = PhotoFaces(str(first), file_sha256(first), error=f"[Errno 5] Input/output error: '{first}'",
                        error_kind="transient")
    pq.write_table(pa.Table.from_batches([photo_batch([hiccup], model_id, settings.key())]),
                   out / "part-earlier-000000.parquet")
    host = _atomic._host()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live_tmp = out / f".part-live-000003.parquet.{host}~{os.getpid()}.abcd.tmp"
    dead_tmp = out / f".part-killed-000001.parquet.{host}~{dead.pid}.efgh.tmp"
    for tmp in (live_tmp, dead_tmp):
        tmp.write_bytes(b"half a part")
    report = embed_archive([first, second], out, settings=settings, progress=False,
                           config=ArchiveConfig(resume=True))
    assert report.already_done == 0 and report.processed == 2 and not report.unreadable
    table = _rows(out)
    assert set(table.column("source_path").to_pylist()) == {str(first), str(second)}
    assert table.column("error").null_count == table.num_rows          # the error row is gone
    assert min(table.column("face").to_pylist()) >= 0
    assert live_tmp.exists() and not dead_tmp.exists()
    again = embed_archive([first, second], out, settings=settings, progress=False, config=ArchiveConfig(resume=True))
    assert again.already_done == 2 and again.processed == 0
    # a file that failed transiently on two runs keeps the later error row only
    from pyfacedlib.archive import _drop_retried

    twice = tmp_path / "twice.parquet"
    twice.mkdir()
    for run in ("20260101000000-1-aaaa", "20260102000000-2-bbbb"):
        pq.write_table(pa.Table.from_batches([photo_batch([hiccup], model_id, settings.key())]),
                       twice / f"part-{run}-000000.parquet")
    assert _drop_retried(twice) == 1
    assert [p.name for p in twice.glob("part-*.parquet")] == ["part-20260102000000-2-bbbb-000000.parquet"]

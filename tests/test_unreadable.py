"""Nothing lost, nothing silent: a photo that cannot be read (permission denied, gone since it was
listed) is listed with the reason and the batch goes on; decoders see real image formats only, and
images within a size limit; a killed writer's temporaries are cleaned, a live one's never."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib.align import AlignmentSettings
from pyfacedlib.facetable import FaceTable, update_table

PACKAGE_PARENT = Path(pfd.__file__).resolve().parents[1]
NOBODY = 65534


def test_a_file_gone_since_listed_is_an_error_row_and_the_rest_go_on(lfw_sample, tmp_path: Path):
    from pyfacedlib._system import file_sha256

    good = [str(shutil.copy(p, tmp_path / f"good{i}.jpg")) for i, p in enumerate(lfw_sample[:2])]
    gone = str(tmp_path / "deleted_after_listing.jpg")
    embedder = pfd.FaceEmbedder()
    settings = AlignmentSettings.for_photos()
    empty = FaceTable(model_id=file_sha256(embedder.model_path), settings_hash=settings.key())
    files = {good[0]: "Ann", gone: "Bob", good[1]: None}
    table, changes = update_table(empty, files, embedder, settings, workers=2)
    assert list(dict.fromkeys(table.source_path)) == list(files)  # in order, none lost
    row = table.source_path.index(gone)
    assert table.face[row] == -1 and table.error_kind[row] == "unreadable" and table.sha256[row] is None
    assert "No such file" in table.error[row] and gone in table.error[row]
    assert all(table.face[i] >= 0 for i, s in enumerate(table.source_path) if s != gone)
    assert set(changes.unreadable) == {gone} and "1 unreadable" in changes.summary()
    # the file is back: the next update reads it (an error row is never taken for its bytes)
    shutil.copy(lfw_sample[2], gone)
    again, changes = update_table(table, files, embedder, settings, workers=2)
    assert not changes.unreadable and changes.changed == [gone] and changes.unchanged == 2
    assert all(again.face[i] >= 0 for i, s in enumerate(again.source_path) if s == gone)


def test_transient_error_rows_are_tried_again(lfw_sample, tmp_path: Path):
    from pyfacedlib._system import file_sha256
    from pyfacedlib.photos import PhotoFaces

    photo = str(shutil.copy(lfw_sample[0], tmp_path / "a.jpg"))
    embedder = pfd.FaceEmbedder()
    settings = AlignmentSettings.for_photos()
    failed = PhotoFaces(photo, file_sha256(photo), error=f"[Errno 5] Input/output error: '{photo}'",
                        error_kind="transient")
    previous = FaceTable.from_photos([failed], file_sha256(embedder.model_path), settings.key())
    table, changes = update_table(previous, {photo: None}, embedder, settings)
    assert changes.unchanged == 0 and table.error == [None] and table.face[0] == 0


CHILD = textwrap.dedent("""
    # runs as root, imports and warms everything, then reads the photos as user nobody (effective
    # uid: a root process reads files it has no permission for)
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    import concurrent.futures, tqdm, pyarrow, pyarrow.compute, pyarrow.parquet  # noqa: F401
    import pyfacedlib as pfd
    from pyfacedlib._system import file_sha256
    from pyfacedlib.align import AlignmentSettings
    from pyfacedlib.archive import ArchiveConfig, embed_archive
    from pyfacedlib.chipcache import ChipCache
    from pyfacedlib.facetable import FaceTable, update_table

    folder, locked = sys.argv[2], sys.argv[3]
    files = sorted(os.path.join(folder, "photos", f) for f in os.listdir(os.path.join(folder, "photos")))
    embedder = pfd.FaceEmbedder()
    photos = AlignmentSettings.for_photos()
    empty = FaceTable(model_id=file_sha256(embedder.model_path), settings_hash=photos.key())
    good = [f for f in files if f != locked]
    update_table(empty, {good[0]: None}, embedder, photos, workers=2)                   # warm up as root
    ChipCache(os.path.join(folder, "warm"), AlignmentSettings()).faces(good[:1], workers=1, progress=False)
    embed_archive([good[0]], os.path.join(folder, "warm.parquet"), progress=False)
    # the models, where user nobody can read them (an installed venv may sit in a folder only root enters)
    import shutil
    models = os.path.join(folder, "models")
    os.makedirs(models)
    for name in ("shape_predictor_5_face_landmarks", "mmod_human_face_detector",
                 "dlib_face_recognition_resnet_model_v1"):
        os.chmod(shutil.copy(pfd.models.path(name), models), 0o644)
    os.chmod(models, 0o755)
    os.environ["PYFACEDLIB_MODELS"] = models
    os.setegid(65534)
    os.seteuid(65534)
    try:
        open(locked, "rb")
        sys.exit("the locked file is readable: the test cannot run")
    except PermissionError:
        pass
    table, changes = update_table(empty, {f: None for f in files}, embedder, photos, workers=2)
    faces = ChipCache(os.path.join(folder, "cache"), AlignmentSettings()).faces(files, workers=1, progress=False)
    report = embed_archive([os.path.join(folder, "photos")], os.path.join(folder, "out.parquet"), progress=False,
                           config=ArchiveConfig(workers=2))
    print(json.dumps({
        "table": [[s, int(f), e, k] for s, f, e, k in zip(table.source_path, table.face, table.error,
                                                          table.error_kind)],
        "unreadable": changes.unreadable, "chips": faces.sources, "skipped": faces.skipped,
        "archive": {"processed": report.processed, "unreadable": report.unreadable, "faces": report.faces}}))
""")


def test_permission_denied_as_another_user_is_listed_and_the_batch_goes_on(lfw_sample):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to user nobody")
    folder = Path(tempfile.mkdtemp(prefix="pfd-unreadable-", dir="/tmp"))
    try:
        os.chmod(folder, 0o777)
        (folder / "photos").mkdir(mode=0o755)
        os.chmod(folder / "photos", 0o755)
        copies = [str(shutil.copy(p, folder / "photos" / f"{i}.jpg")) for i, p in enumerate(lfw_sample[:3])]
        for path in copies:
            os.chmod(path, 0o644)
        locked = copies[1]
        os.chmod(locked, 0)
        result = subprocess.run([sys.executable, "-I", "-c", CHILD, str(PACKAGE_PARENT), str(folder), locked],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        got = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    good = [c for c in copies if c != locked]
    # export / cluster / enrol (update_table): an error row for it, faces for the others
    rows = {s: (f, e, k) for s, f, e, k in got["table"]}
    assert set(rows) == set(copies)
    face, error, kind = rows[locked]
    assert face == -1 and "Permission denied" in error and locked in error and kind == "unreadable"
    assert all(rows[g][0] >= 0 and rows[g][1] is None for g in good)
    assert list(got["unreadable"]) == [locked]
    # fine-tuning's chip cache: skipped with the reason, the others aligned
    assert sorted(got["chips"]) == sorted(good)
    assert list(got["skipped"]) == [locked] and "Permission denied" in got["skipped"][locked]
    # the archive: listed, the others processed
    assert got["archive"]["processed"] == 3 and list(got["archive"]["unreadable"]) == [locked]


# ---- decoders see image formats only, and images within the size limit ----

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"


def test_a_jpg_that_is_really_eps_never_reaches_ghostscript(tmp_path: Path, monkeypatch):
    from PIL import EpsImagePlugin

    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(self) or 1 / 0)
    fake = tmp_path / "holiday.jpg"
    fake.write_bytes(EPS)
    with pytest.raises(pfd.ImageError, match="holiday.jpg"):
        pfd.load_image(fake)
    assert not opened, "the EPS decoder (Ghostscript) was tried"


def _sparse_png(path: Path, width: int, height: int) -> None:
    """A grayscale PNG of one colour, written a row at a time (150 MP in ~150 KB, without 150 MB in memory)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * width
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)))
        data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
        f.write(chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("huge") / "panorama.png"
    _sparse_png(path, 15000, 10000)
    return path


def test_a_150_megapixel_image_is_refused_by_default(huge_png: Path):
    from pyfacedlib.chipcache import ChipCache

    with pytest.raises(pfd.ImageError, match=r"panorama\.png is 15000x10000 = 150\.0 MP, above the limit of 89\.5 MP"):
        pfd.load_image(huge_png)
    assert AlignmentSettings().max_image_pixels <= 89_478_485
    # the limit decides which photos are refused, not how faces are aligned: caches and tables stay valid
    assert AlignmentSettings(max_image_pixels=200_000_000).key() == AlignmentSettings().key()
    # a batch lists it (chip cache: fine-tuning), without decoding it
    faces = ChipCache(huge_png.parent / "cache", AlignmentSettings()).faces([str(huge_png)], workers=1,
                                                                           progress=False)
    assert "max_image_pixels" in faces.skipped[str(huge_png)]


def test_a_150_megapixel_image_with_the_limit_raised_stays_under_3_gb(huge_png: Path):
    child = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        import pyfacedlib as pfd
        from pyfacedlib.align import AlignmentSettings, find_faces
        settings = AlignmentSettings.for_photos(max_image_pixels=200_000_000)
        image = pfd.load_image(sys.argv[2], max_pixels=settings.max_image_pixels)
        assert image.shape == (10000, 15000, 3), image.shape
        print(len(find_faces(image, settings).boxes))
    """)
    # the peak of that child alone: RUSAGE_CHILDREN of a process whose only child it is
    measure = ("import resource, subprocess, sys; "
               "subprocess.run([sys.executable, '-I', '-c', sys.argv[1], *sys.argv[2:]], check=True); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-I", "-c", measure, child, str(PACKAGE_PARENT), str(huge_png)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    faces, peak_kb = (int(v) for v in result.stdout.split())
    assert faces == 0
    assert peak_kb < 3 * 1024 * 1024, f"peak RSS {peak_kb / 1024:.0f} MB"
    assert time.perf_counter() - started < 60


def test_16_bit_images_convert_without_a_float64_copy(tmp_path: Path):
    import tracemalloc

    from PIL import Image

    values = (np.arange(2000 * 1000, dtype=np.uint32) % 65536).astype(np.uint16).reshape(1000, 2000)
    path = tmp_path / "depth.png"
    Image.fromarray(values).save(path)  # mode I;16
    tracemalloc.start()
    try:
        rgb = pfd.load_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = np.round(values.astype(np.float64) * (255.0 / 65535)).astype(np.uint8)
    assert rgb.dtype == np.uint8 and np.array_equal(rgb[:, :, 0], expected) and np.array_equal(rgb[:, :, 2], expected)
    assert peak < 8 * values.size, f"{peak / values.size:.1f} bytes a pixel at the peak"


def test_banded_resizes_of_concurrent_callers_share_the_cpus(monkeypatch):
    """N photo-pipeline threads each resizing a large photo run at most CPUs resize threads in total,
    not N x CPUs."""
    from PIL import Image

    from pyfacedlib import align
    from pyfacedlib._system import available_cpus

    cpus = available_cpus()
    if cpus < 2:
        pytest.skip("one CPU: the resize is never banded")
    running, peak, lock = [0], [0], threading.Lock()
    resize = Image.Image.resize

    def counted(self, *args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            time.sleep(0.02)
            return resize(self, *args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(Image.Image, "resize", counted)
    image = np.zeros((256 * cpus * 2, 512, 3), np.uint8)
    expected = resize(Image.fromarray(image), (256, 128 * cpus * 2), Image.Resampling.BILINEAR)
    threads = [threading.Thread(target=lambda: align._resized(image, 0.5)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= cpus, f"{peak[0]} resizes at once on {cpus} CPUs"
    assert np.array_equal(align._resized(image, 0.5), np.asarray(expected))


# ---- temporaries of killed writers ----

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_atomic_writes_clean_a_killed_writers_temporaries_never_a_live_ones(tmp_path: Path):
    from pyfacedlib import _atomic

    target = tmp_path / "gallery.parquet"
    host = _atomic._host()
    dead = tmp_path / f".gallery.parquet.{host}~{_dead_pid()}.abc123.tmp"
    live = tmp_path / f".gallery.parquet.{host}~{os.getpid()}.def456.tmp"
    other = tmp_path / f".other.parquet.{host}~{_dead_pid()}.ghi789.tmp"
    for path in (dead, live, other):
        path.write_bytes(b"half written")
    _atomic.write_text(target, "done")
    assert target.read_text() == "done"
    assert not dead.exists() and live.exists() and other.exists()
    old = time.time() - _atomic.STALE_AFTER_S - 60  # very old: removed whoever wrote it
    os.utime(live, (old, old))
    assert _atomic.remove_stale_temporaries(target) == [live]

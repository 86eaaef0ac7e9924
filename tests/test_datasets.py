"""Dataset readers, splits, degradations and the aligned-chip cache, on real LFW files."""
import shutil
from pathlib import Path

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib import datasets
from pyfacedlib.chipcache import AlignmentSettings, ChipCache


@pytest.fixture(scope="module")
def lfw_root(lfw_dir):
    return lfw_dir.parent


def test_lfw_protocol_files(lfw_root):
    pairs = datasets.read_lfw_pairs(lfw_root / "pairs.txt")
    assert len(pairs) == 6000
    assert sorted({p.fold for p in pairs}) == list(range(10))
    for fold in range(10):
        in_fold = [p for p in pairs if p.fold == fold]
        assert sum(p.same for p in in_fold) == 300 and len(in_fold) == 600
    assert pairs[0] == datasets.Pair("Abel_Pacheco", 1, "Abel_Pacheco", 4, True, 0)
    dev_test = datasets.read_lfw_pairs(lfw_root / "pairsDevTest.txt")
    assert len(dev_test) == 1000 and sum(p.same for p in dev_test) == 500
    people = datasets.read_lfw_people(lfw_root / "people.txt")
    assert len(people) == 10 and people[0][0] == ("Abdel_Madi_Shabneh", 1)
    dev_train = datasets.read_lfw_people(lfw_root / "peopleDevTrain.txt")[0]
    dev_test_people = datasets.read_lfw_people(lfw_root / "peopleDevTest.txt")[0]
    assert len(dev_train) == 4038
    assert not {n for n, _ in dev_train} & {n for n, _ in dev_test_people}  # identity-disjoint
    assert Path(datasets.lfw_image(lfw_root / "lfw-deepfunneled", "Abel_Pacheco", 4)).exists()


def test_bad_pairs_file(tmp_path):
    bad = tmp_path / "pairs.txt"
    bad.write_text("1\t2\nA\t1\t2\n")
    with pytest.raises(ValueError, match="header says"):
        datasets.read_lfw_pairs(bad)


def test_identity_folders_and_splits(tmp_path, lfw_dir):
    for name in ("Aaron_Peirsol", "Abdullah_Gul", "Abel_Pacheco"):
        shutil.copytree(lfw_dir / name, tmp_path / name)
    (tmp_path / "Empty_Person").mkdir()
    ds = datasets.identity_folders(tmp_path)
    assert ds.identities == ["Aaron_Peirsol", "Abdullah_Gul", "Abel_Pacheco"]
    assert ds.with_min_images(5).identities == ["Abdullah_Gul"]  # 4, 19 and 4 images
    a, b = datasets.identity_split(ds.identities, [0.5, 0.5], seed=1)
    assert not set(a) & set(b) and sorted(a + b) == ds.identities
    with pytest.raises(ValueError, match="no images"):
        datasets.identity_folders(tmp_path / "Empty_Person")
    with pytest.raises(NotADirectoryError):
        datasets.identity_folders(tmp_path / "missing")


def test_degrade():
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
    low = datasets.degrade(chips, "lowres:16")
    assert low.shape == chips.shape and low.dtype == np.uint8
    assert np.abs(np.diff(low.astype(int), axis=2)).mean() < np.abs(np.diff(chips.astype(int), axis=2)).mean() / 3
    gray = datasets.degrade(chips, "gray")
    assert np.array_equal(gray[..., 0], gray[..., 2])
    with pytest.raises(ValueError):
        datasets.degrade(chips, "blur")


def test_chip_cache(tmp_path, lfw_sample):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    sources = []
    for i, path in enumerate(lfw_sample[:4]):
        sources.append(str(shutil.copy(path, images / f"face{i}.jpg")))
    gray = images / "gray.png"
    Image.open(lfw_sample[4]).convert("L").save(gray)
    rgba = images / "rgba.png"
    Image.open(lfw_sample[5]).convert("RGBA").save(rgba)
    blank = images / "blank.png"
    Image.fromarray(np.full((250, 250, 3), 127, np.uint8)).save(blank)
    broken = images / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    sources += [str(gray), str(rgba), str(blank), str(broken)]

    cache = ChipCache(tmp_path / "cache", AlignmentSettings(fallback="center"))
    chipset = cache.faces(sources, workers=2, progress=False)
    statuses = [r.status for r in chipset.records]
    assert statuses == ["detected"] * 6 + ["fallback"]
    assert chipset.fallbacks == [str(blank)] and list(chipset.skipped) == [str(broken)]
    assert chipset.sources == sources[:7] and len(chipset) == 7
    # the cached chip is exactly the aligned chip
    image = pfd.load_image(sources[0])
    boxes = pfd.align.detect(image)
    box = boxes[pfd.align.nearest_to_center(boxes, image.shape)]
    assert np.array_equal(chipset.chips[0], pfd.align.extract_chip(image, pfd.align.landmarks(image, box)))
    assert chipset.records[0].box == box.tolist()

    manifest = cache.manifest_path
    stamp = manifest.stat().st_mtime_ns
    again = ChipCache(tmp_path / "cache", cache.settings).faces(sources, workers=1, progress=False)
    assert manifest.stat().st_mtime_ns == stamp  # nothing re-aligned
    assert np.array_equal(again.chips, chipset.chips)

    moved = tmp_path / "moved"
    shutil.copytree(images, moved)  # the same files elsewhere: found by sha256, not aligned again
    moved_sources = [str(moved / Path(s).name) for s in sources]
    relocated = ChipCache(tmp_path / "cache", cache.settings).faces(moved_sources, workers=1, progress=False)
    assert manifest.stat().st_mtime_ns == stamp and np.array_equal(relocated.chips, chipset.chips)
    assert relocated.sources == moved_sources[:7] and list(relocated.skipped) == [str(moved / "broken.jpg")]

    shutil.copy(lfw_sample[6], sources[1])  # source changed -> rebuilt
    changed = ChipCache(tmp_path / "cache", cache.settings).faces(sources, workers=1, progress=False)
    assert manifest.stat().st_mtime_ns != stamp
    assert not np.array_equal(changed.chips[1], chipset.chips[1])

    strict = ChipCache(tmp_path / "cache", AlignmentSettings(fallback="none"))
    assert strict.folder != cache.folder
    assert strict.faces(sources, workers=1, progress=False).skipped[str(blank)] == "no face detected"
    with pytest.raises(ValueError):
        AlignmentSettings(fallback="guess")

    # the one way in: a folder given to load_faces (conversion, fine-tuning) is aligned by this cache,
    # labelled by datasets.labelled_files (loose photos root/Name.jpg: Name), skips listed
    loaded = pfd.load_faces(images, cache_dir=tmp_path / "cache", settings=cache.settings)
    order = [loaded.sources.index(source) for source in changed.sources]
    assert np.array_equal(loaded.chips[order], changed.chips)
    assert loaded.labels.tolist() == [Path(source).stem for source in loaded.sources]
    assert list(loaded.skipped) == [str(broken)]


def test_one_rule_from_folders_to_people(tmp_path):
    """datasets.labelled_files: root/Name/**/x.jpg -> Name (however deep); root/Name.jpg -> Name when
    labelled, None when not; a file given alone -> None. Every reader of folders agrees on it."""
    from pyfacedlib.chipcache import load_faces
    from pyfacedlib.gallery import enrolment_photos

    root = tmp_path / "people"
    for relative in ("Ada/a.jpg", "Ada/2019/b.jpg", "Ada/2019/trip/c.png", "Bob/d.jpg", "Cy.jpg", ".hidden/e.jpg",
                     "Bob/.f.jpg", "Bob/notes.txt"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"x")
    expected = {str(root / "Ada/2019/b.jpg"): "Ada", str(root / "Ada/2019/trip/c.png"): "Ada",
                str(root / "Ada/a.jpg"): "Ada", str(root / "Bob/d.jpg"): "Bob", str(root / "Cy.jpg"): "Cy"}
    assert datasets.labelled_files(root) == expected
    assert datasets.labelled_files(root, labelled=False) == {**expected, str(root / "Cy.jpg"): None}
    assert datasets.labelled_files(root / "Cy.jpg") == {str(root / "Cy.jpg"): None}
    assert datasets.labelled_inputs([root / "Cy.jpg", root]) == {str(root / "Cy.jpg"): None,
                                                                 **{k: v for k, v in expected.items() if "Cy" not in k}}
    # the readers: identity folders (fine-tuning, evaluate), enrolment
    ds = datasets.identity_folders(root)
    assert dict(zip(ds.paths, ds.labels)) == expected
    assert enrolment_photos(root) == expected
    with pytest.raises(FileNotFoundError):
        datasets.labelled_files(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        load_faces(root / "Cy.jpg")


def test_cnn_fallback_finds_what_hog_misses(tmp_path, lfw_dir):
    missed_by_hog = str(lfw_dir / "James_Jones" / "James_Jones_0001.jpg")
    assert len(pfd.align.detect(missed_by_hog)) == 0
    chipset = ChipCache(tmp_path / "cache").faces([missed_by_hog], workers=1, progress=False)
    assert chipset.records[0].status == "detected_cnn" and chipset.cnn_rescued == [missed_by_hog]
    center = ChipCache(tmp_path / "cache", AlignmentSettings(fallback="center"))
    assert center.faces([missed_by_hog], workers=1, progress=False).fallbacks == [missed_by_hog]

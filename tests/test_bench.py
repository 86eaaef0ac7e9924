"""The LFW benchmark protocol end to end on one real fold of pairs.txt (600 pairs)."""
import json

import pytest

from pyfacedlib.bench import bench_lfw
from pyfacedlib.cli import main


@pytest.fixture(scope="module")
def one_fold(tmp_path_factory, lfw_dir):
    lines = (lfw_dir.parent / "pairs.txt").read_text().splitlines()
    path = tmp_path_factory.mktemp("pairs") / "pairs_fold1.txt"
    path.write_text("1\t300\n" + "\n".join(lines[1:601]) + "\n")
    return path


@pytest.mark.slow
def test_bench_on_one_fold(tmp_path, lfw_dir, one_fold):
    out = tmp_path / "bench"
    report = bench_lfw(lfw_dir.parent, one_fold, models=[None], out=out, cache_dir=tmp_path / "cache",
                       progress=False)
    assert report["lfw_variant"] == "LFW deep-funneled"
    assert report["pairs_total"] == 600 and report["pairs_used"] == 600
    shipped = report["models"]["shipped"]
    for key in ("accuracy_mean", "accuracy_std", "accuracy_at_0_6", "val_at_far_1e_3", "auc", "eer",
                "detection_failures", "seconds"):
        assert key in shipped
    assert shipped["accuracy_mean"] > 0.97 and shipped["auc"] > 0.99
    assert len(shipped["fold_thresholds"]) == 10
    saved = json.loads((out / "report.json").read_text())
    assert saved["models"]["shipped"]["accuracy_mean"] == shipped["accuracy_mean"]
    assert "| shipped |" in (out / "report.md").read_text()
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"

    # strict: pairs with an undetected face are dropped and counted (cache reused for the rest)
    strict = bench_lfw(lfw_dir.parent, one_fold, out=tmp_path / "strict", strict=True,
                       cache_dir=tmp_path / "cache", progress=False)
    assert strict["pairs_used"] + strict["pairs_dropped"] == 600
    assert (strict["pairs_dropped"] > 0) == (report["detection"]["missed_by_detector"] > 0)


def test_missing_lfw_says_how_to_get_it(tmp_path, capsys):
    assert main(["bench-lfw", "--lfw-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "LFW not found" in err and "pairs.txt" in err

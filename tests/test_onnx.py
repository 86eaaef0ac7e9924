"""ONNX export and the onnxruntime backend: the graph's contract (checker, names, types, dynamic batch,
metadata), parity with dlib's own binding on real chips (the shipped model and fine-tuned metric-loss
and CosFace models, batch 1 and a large batch), a bn source through its affine form,
FaceEmbedder(backend="onnx") with its cache and errors, the CLI, and the docs' runtime example."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import skip_or_fail

import pyfacedlib as pfd
from pyfacedlib import datasets
from pyfacedlib.errors import DeviceError

PARITY = 1e-4  # the bound on |onnxruntime - dlib| per descriptor value

try:
    import onnx
    import onnxruntime
except ImportError:  # pragma: no cover - test dependencies
    onnx = onnxruntime = None


@pytest.fixture(scope="module", autouse=True)
def _needs_onnx():
    if onnx is None or onnxruntime is None:
        skip_or_fail("onnx and onnxruntime (test dependencies) are not installed")


@pytest.fixture(scope="module")
def lfw_chips(lfw_dir: Path) -> np.ndarray:
    """48 aligned LFW chips: the first image of every 100th identity folder, first face of each."""
    people = sorted(p for p in lfw_dir.iterdir() if p.is_dir())
    chips = []
    for person in people[::100]:
        found = pfd.align.find_faces(pfd.load_image(sorted(person.glob("*.jpg"))[0]),
                                     pfd.AlignmentSettings.for_photos())
        if len(found.chips):
            chips.append(found.chips[0])
        if len(chips) == 48:
            break
    assert len(chips) == 48
    return np.stack(chips)


@pytest.fixture(scope="module")
def models(tmp_path_factory, johns) -> dict[str, str]:
    """The shipped model and two fine-tuned exports (whole net, a few steps on degraded johns: every
    layer's weights moved): loss_metric and CosFace."""
    chips, labels = johns
    chips = datasets.degrade(chips, "lowres:10")
    out = {"shipped": pfd.models.path(pfd.models.FACE_RECOGNITION)}
    for loss in ("metric", "cosface"):
        result = pfd.finetune((chips, labels), tmp_path_factory.mktemp(loss), strategy="all", loss=loss, steps=2,
                              progress=False)
        out[loss] = result.affine_model
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, models) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    return {name: pfd.convert_to_onnx(path, folder / f"{name}.onnx") for name, path in models.items()}


def _session(path: Path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_graph_contract_and_metadata(exported, models):
    model = onnx.load(str(exported["shipped"]))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version <= 10 and [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (chips,), (descriptors,) = model.graph.input, model.graph.output
    assert chips.name == "chips" and chips.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in chips.type.tensor_type.shape.dim] == ["N", 150, 150, 3]
    assert descriptors.name == "descriptors" and descriptors.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in descriptors.type.tensor_type.shape.dim] == ["N", 128]
    props = {p.key: p.value for p in model.metadata_props}
    assert props["source_sha256"] == pfd._system.file_sha256(models["shipped"])
    assert props["pyfacedlib_version"] == pfd.__version__ and props["source_kind"] == "affine"
    ops = [n.op_type for n in model.graph.node]
    # 29 convolutions with the affine layers folded in (no BatchNormalization, no Mul/Add per layer),
    # one max-pool, the down-sampling skips' avg-pools, zero-padding where add_prev's shapes differ
    assert ops.count("Conv") == 29 and "BatchNormalization" not in ops and ops.count("Mul") == 0
    assert ops.count("MaxPool") == 1 and ops.count("AveragePool") >= 4 and ops.count("Pad") >= 1
    assert ops.count("MatMul") == 1 and ops.count("GlobalAveragePool") == 1
    for opset in (13, 21):  # the range onnxruntime 1.20+ reads
        other = pfd.convert_to_onnx(models["shipped"], exported["shipped"].with_name(f"o{opset}.onnx"), opset=opset)
        onnx.checker.check_model(onnx.load(str(other)), full_check=True)
    with pytest.raises(ValueError, match="opset"):
        pfd.convert_to_onnx(models["shipped"], exported["shipped"].with_name("bad.onnx"), opset=9)


@pytest.mark.parametrize("name", ["shipped", "metric", "cosface"])
def test_onnxruntime_matches_dlib_at_batch_1_and_103(name, exported, models, johns, lfw_chips, dlib_bin):
    chips = np.concatenate([johns[0], lfw_chips])  # 55 johns + 48 LFW chips
    reference = np.array(dlib_bin.face_recognition_model_v1(models[name]).compute_face_descriptor(list(chips)),
                         np.float32)
    session = _session(exported[name])
    whole = session.run(["descriptors"], {"chips": chips})[0]
    ones = np.concatenate([session.run(["descriptors"], {"chips": chips[i:i + 1]})[0] for i in (0, 54, 55, 102)])
    worst = max(np.abs(whole - reference).max(), np.abs(ones - reference[[0, 54, 55, 102]]).max())
    print(f"\n{name}: max |onnxruntime - dlib| = {worst:.2e} over {len(chips)} chips (batch {len(chips)} and 1)")
    assert worst <= PARITY
    if name != "shipped":  # a fine-tuned model really differs from the shipped one
        shipped = _session(exported["shipped"]).run(["descriptors"], {"chips": chips[:8]})[0]
        assert np.abs(whole[:8] - shipped).max() > 1e-3


def test_bn_source_is_exported_through_its_exact_affine_form(tmp_path, johns):
    shipped = pfd.models.path(pfd.models.FACE_RECOGNITION)
    pfd.convert_affine_to_bn(shipped, tmp_path / "bn.dat")
    path = pfd.convert_to_onnx(tmp_path / "bn.dat", tmp_path / "bn.onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["source_kind"] == "bn"
    ours = _session(path).run(["descriptors"], {"chips": johns[0]})[0]
    worst = np.abs(ours - pfd.FaceEmbedder(shipped, backend="dlib").embed_chips(johns[0])).max()
    print(f"\nbn source: max |onnxruntime - dlib's pass of the affine model| = {worst:.2e} over {len(ours)} chips")
    assert worst <= PARITY
    (tmp_path / "text.dat").write_text("not a model")
    with pytest.raises(pfd.ModelFormatError):
        pfd.convert_to_onnx(tmp_path / "text.dat", tmp_path / "text.onnx")
    assert not (tmp_path / "text.onnx").exists()


def test_onnx_backend_caches_its_graph_and_matches_the_folded_pass(tmp_path, monkeypatch, johns, embedder):
    monkeypatch.setenv("PYFACEDLIB_ONNX_CACHE", str(tmp_path / "cache"))
    chips = johns[0][:20]
    onnx_embedder = pfd.FaceEmbedder(backend="onnx", threads=2)
    cached = list((tmp_path / "cache").glob("*.onnx"))
    assert len(cached) == 1 and onnx_embedder.backend == "onnx" and onnx_embedder.device == "cpu"
    assert onnx_embedder.onnx_providers == ["CPUExecutionProvider"] and onnx_embedder.conv_kernel is None
    assert np.abs(onnx_embedder.embed_chips(chips) - embedder.embed_chips(chips)).max() <= PARITY
    jittered = onnx_embedder.embed_chips(chips[:3], num_jitters=4, seed=7)
    assert np.abs(jittered - embedder.embed_chips(chips[:3], num_jitters=4, seed=7)).max() <= PARITY
    assert onnx_embedder.embed_chips(chips[0]).shape == (1, 128)
    assert onnx_embedder.embed_chips(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    stamp = cached[0].stat().st_mtime_ns
    pfd.FaceEmbedder(backend="onnx", device="cpu")
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not exported again
    faces = onnx_embedder.embed_image(johns[0][0])  # the whole pipeline on the onnx backend
    assert all(f.descriptor.shape == (128,) for f in faces)
    assert "CPUExecutionProvider" in pfd.build_info()["onnx_providers"]


def test_a_damaged_or_unwritable_cache_is_not_fatal(tmp_path, monkeypatch, johns, embedder):
    monkeypatch.setenv("PYFACEDLIB_ONNX_CACHE", str(tmp_path / "cache"))
    pfd.FaceEmbedder(backend="onnx", device="cpu")
    (cached,) = (tmp_path / "cache").glob("*.onnx")
    cached.write_bytes(cached.read_bytes()[:1000])  # truncated behind our back
    again = pfd.FaceEmbedder(backend="onnx", device="cpu")  # exported again, not an onnxruntime traceback
    assert cached.stat().st_size > 20_000_000
    assert np.abs(again.embed_chips(johns[0][:4]) - embedder.embed_chips(johns[0][:4])).max() <= PARITY
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("PYFACEDLIB_ONNX_CACHE", str(tmp_path / "a_file" / "cache"))  # cannot be a folder
    with pytest.warns(RuntimeWarning, match="PYFACEDLIB_ONNX_CACHE"):
        elsewhere = pfd.FaceEmbedder(backend="onnx", device="cpu")
    assert elsewhere.embed_chips(johns[0][:1]).shape == (1, 128)


def test_onnx_backend_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("PYFACEDLIB_ONNX_CACHE", str(tmp_path / "cache"))
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(DeviceError, match="CUDAExecutionProvider"):
            pfd.FaceEmbedder(backend="onnx", device="cuda")
    with pytest.raises(DeviceError, match="NoSuchExecutionProvider"):
        pfd.FaceEmbedder(backend="onnx", onnx_providers=["NoSuchExecutionProvider"])
    with pytest.raises(ValueError, match="onnx_providers"):
        pfd.FaceEmbedder(onnx_providers=["CPUExecutionProvider"])
    embedder = pfd.FaceEmbedder(backend="onnx", device="cpu")
    with pytest.raises(ValueError, match="chosen when the embedder is made"):
        embedder.backend = "folded"
    with pytest.raises(ValueError, match="conv_kernel"):
        embedder.conv_kernel = "blas"
    with pytest.raises(ValueError, match="chosen when the embedder is made"):
        pfd.FaceEmbedder(device="cpu").backend = "onnx"
    (tmp_path / "text.dat").write_text("not a model")
    with pytest.raises(pfd.ModelFormatError):
        pfd.FaceEmbedder(tmp_path / "text.dat", backend="onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"pyfacedlib\[onnx\]"):
        pfd.FaceEmbedder(backend="onnx")


def _cli(*args: str, env_cache: Path) -> subprocess.CompletedProcess:
    """`pyfacedlib ARGS` in a child process importing this very pyfacedlib (-I: not the checkout's
    source folder when the tests run against an installed package)."""
    import os

    env = {**os.environ, "PYFACEDLIB_ONNX_CACHE": str(env_cache)}
    launcher = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from pyfacedlib.cli import main; "
                "sys.exit(main(sys.argv[1:]))")
    package_parent = str(Path(pfd.__file__).resolve().parents[1])
    return subprocess.run([sys.executable, "-I", "-c", launcher, package_parent, *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_cli_convert_embed_and_archive_on_onnx(tmp_path, johns_dir, lfw_sample):
    run = _cli("convert", "--to", "onnx", pfd.models.path(pfd.models.FACE_RECOGNITION), str(tmp_path / "m.onnx"),
               env_cache=tmp_path / "cache")
    assert run.returncode == 0, run.stderr
    assert "opset 17" in run.stdout and (tmp_path / "m.onnx").exists()
    refused = _cli("convert", "--to", "bn", "a.dat", "b.dat", "--opset", "17", env_cache=tmp_path / "cache")
    assert refused.returncode == 2 and "--opset" in refused.stderr
    photos = [str(p) for p in lfw_sample[:6]]
    folded = _cli("embed", *photos, "--out", str(tmp_path / "folded.npy"), env_cache=tmp_path / "cache")
    on_onnx = _cli("embed", *photos, "--backend", "onnx", "--onnx-providers", "CPUExecutionProvider",
                   "--out", str(tmp_path / "onnx.npy"), env_cache=tmp_path / "cache")
    assert folded.returncode == 0 and on_onnx.returncode == 0, on_onnx.stderr
    assert "onnx forward pass on CPUExecutionProvider" in on_onnx.stderr
    a, b = np.load(tmp_path / "folded.npy"), np.load(tmp_path / "onnx.npy")
    assert a.shape == b.shape and len(a) >= 6 and np.abs(a - b).max() <= PARITY
    archive = _cli("embed", *photos, "--backend", "onnx", "--out", str(tmp_path / "faces.parquet"),
                   env_cache=tmp_path / "cache")
    assert archive.returncode == 0, archive.stderr
    table = pfd.FaceTable.read_parquet(tmp_path / "faces.parquet")
    rows = {(s, f): e for s, f, e in zip(table.source_path, table.face, table.embedding, strict=True) if f >= 0}
    assert len(rows) == len(a) and min(np.abs(b - e).max(axis=1).min() for e in rows.values()) <= PARITY
    bad = _cli("embed", *photos, "--backend", "onnx", "--onnx-providers", "NoSuchExecutionProvider",
               env_cache=tmp_path / "cache")
    assert bad.returncode != 0 and "NoSuchExecutionProvider" in bad.stderr and "Traceback" not in bad.stderr


def test_the_docs_runtime_example_runs_without_pyfacedlib(tmp_path, johns_dir):
    """docs/deploy.md's onnxruntime example, run in a process that cannot import pyfacedlib."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "deploy.md").read_text()
    example = re.search(r"<!-- runtime-example -->\s*```python\n(.*?)```", text, re.S).group(1)
    assert len(example.strip().splitlines()) <= 10
    pfd.convert_to_onnx(pfd.models.path(pfd.models.FACE_RECOGNITION), tmp_path / "face.onnx")
    chip = sorted(johns_dir.glob("*/*.jpg"))[0]
    (tmp_path / "chip.jpg").write_bytes(chip.read_bytes())
    guard = "import sys; sys.modules['pyfacedlib'] = None\n"
    run = subprocess.run([sys.executable, "-c", guard + example], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    printed = np.array([float(v) for v in run.stdout.split()[-128:]], np.float32)
    expected = pfd.FaceEmbedder().embed_chips(pfd.load_image(chip))[0]
    assert np.abs(printed - expected).max() <= 1e-3  # printed with 4 decimals

"""Fine-tuning: learning on real faces, exact freezing per strategy, resume, bad training sets, drop-in output."""
import json
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib import datasets
from pyfacedlib._native import core

LEVEL_TOP = core.LEVEL_TOP_LAYER  # level -> index of its top layer (layer<i>)


@pytest.fixture(scope="module")
def shifted_lfw(lfw_dir, tmp_path_factory):
    """50 peopleDevTrain identities x 6 images, aligned, then degraded to 16 px (a domain the shipped model is
    weak on)."""
    people = [(n, c) for n, c in datasets.read_lfw_people(lfw_dir.parent / "peopleDevTrain.txt")[0] if c >= 6][:50]
    paths = [datasets.lfw_image(lfw_dir, n, i) for n, _ in people for i in range(1, 7)]
    labels = np.array([n for n, _ in people for _ in range(6)])
    faces = pfd.ChipCache(tmp_path_factory.mktemp("cache")).faces(paths, labels, progress=False)
    return datasets.degrade(faces.chips, "lowres:16"), faces.labels


def test_head_training_reduces_validation_loss(tmp_path, shifted_lfw):
    chips, labels = shifted_lfw
    names = sorted(set(labels))
    train = np.isin(labels, names[:40])
    result = pfd.finetune((chips[train], labels[train]), tmp_path, strategy="head", steps=400, val_every=100,
                          val=(chips[~train], labels[~train]), progress=False)
    history = json.loads(Path(result.history_path).read_text())["history"]
    validations = [h for h in history if h["kind"] == "validation"]
    assert validations[0]["step"] == 0 and result.best_step > 0
    assert result.best_validation["loss"] < validations[0]["loss"]
    assert result.validation_identities == 10 and result.train_identities == 40
    assert Path(result.curve_path).read_bytes()[:4] == b"\x89PNG"
    assert core.net_kind(result.affine_model) == "affine" and core.net_kind(result.bn_model) == "bn"


def _changed_layers(before: dict, after: dict) -> set:
    return {i for i in before if not np.array_equal(before[i], after[i])}


@pytest.mark.parametrize("strategy, bn", [("head", "frozen"), ("from_level:5", "frozen"), ("all", "frozen"),
                                          ("from_level:4", "calibrated")])
def test_each_strategy_freezes_exactly_what_it_says(tmp_path, johns, strategy, bn):
    chips, labels = johns
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    kind, level = pfd.parse_strategy(strategy)
    train_bn = bn == "calibrated" and kind != "head"
    if train_bn:
        pfd.convert_affine_to_bn(base, tmp_path / "bn.dat", calibration=chips)
        base = str(tmp_path / "bn.dat")
    # labels that contradict the faces: a non-zero loss, so every trainable layer gets a gradient
    # (with the true johns labels the loss is 0 and only weight decay would move anything)
    wrong = [i % 5 for i in range(len(labels))]
    trainer = core.FaceTrainer(base, train_bn, chips, wrong, level, 0.05, 3, 3, False, 1, 0, 2)
    before = trainer.parameters()
    trainer.train(2)
    changed = _changed_layers(before, trainer.parameters())
    first_frozen = LEVEL_TOP[level - 1] if level > 0 else 10**9
    trainable_layers = {i for i in before if i < first_frozen and before[i].size}
    assert changed == trainable_layers, (strategy, sorted(changed)[:5], sorted(trainable_layers)[:5])


def test_resume_continues_at_the_saved_step(tmp_path, johns):
    chips, labels = johns
    first = pfd.finetune((chips, labels), tmp_path, strategy="head", steps=100, checkpoint_every=50, val_every=50,
                         progress=False)
    assert first.steps == 100 and first.resumed_from_step == 0
    again = pfd.finetune((chips, labels), tmp_path, strategy="head", steps=150, checkpoint_every=50, val_every=50,
                         progress=False)
    assert again.resumed_from_step == 100 and again.steps == 150
    with pytest.raises(ValueError, match="different run"):
        pfd.finetune((chips, labels), tmp_path, strategy="head", steps=200, lr=0.5, progress=False)


@pytest.mark.slow
def test_resume_after_kill_9(tmp_path, johns_dir):
    code = (f"import pyfacedlib as pfd; pfd.finetune({str(johns_dir)!r}, {str(tmp_path)!r}, strategy='from_level:6',"
            " bn='frozen', steps=10**6, checkpoint_every=2, val_every=10**6, progress=False)")
    # -I keeps the checkout's source folder off sys.path; the child imports this very pyfacedlib
    package_parent = str(Path(pfd.__file__).resolve().parents[1])
    code = f"import sys; sys.path.insert(0, {package_parent!r}); " + code.replace("from_level:6", "from_level:5")
    child = subprocess.Popen([sys.executable, "-I", "-c", code])
    state = tmp_path / "checkpoint.json"
    deadline = time.time() + 300
    while time.time() < deadline and not state.exists():
        assert child.poll() is None, f"the training process died by itself (exit {child.returncode})"
        time.sleep(0.5)
    time.sleep(3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert state.exists(), "no checkpoint was written"
    saved = json.loads(state.read_text())
    saved_step = max([h["step"] for h in saved["history"] if h["kind"] == "train"] or [0])
    saved_step -= saved_step % 2  # checkpoints land on multiples of checkpoint_every
    with warnings.catch_warnings():  # the kill may land between checkpoint.bin and .json: resumed from .prev.bin
        warnings.filterwarnings("default", message=".*is not the one checkpoint.json was written with",
                                category=RuntimeWarning)
        result = pfd.finetune(str(johns_dir), tmp_path, strategy="from_level:5", bn="frozen", steps=saved_step + 2,
                              checkpoint_every=2, val_every=10**6, progress=False)
    assert result.resumed_from_step >= 2 and result.steps == max(saved_step + 2, result.resumed_from_step)


def test_bad_training_sets(tmp_path, johns_dir, lfw_dir):
    import shutil

    one = tmp_path / "one"
    shutil.copytree(johns_dir / "John_Salley", one / "John_Salley")
    with pytest.raises(ValueError, match="at least 2 identities"):
        pfd.finetune(one, tmp_path / "o1", steps=1, progress=False)
    with pytest.raises(ValueError, match="no images"):
        (tmp_path / "empty" / "Nobody").mkdir(parents=True)
        pfd.finetune(tmp_path / "empty", tmp_path / "o2", steps=1, progress=False)
    mixed = tmp_path / "mixed"
    for name in ("John_Salley", "John_Savage", "John_Schneider"):
        shutil.copytree(johns_dir / name, mixed / name)
    (mixed / "Lonely").mkdir()
    shutil.copy(next((johns_dir / "John_Simm").iterdir()), mixed / "Lonely" / "only.jpg")
    (mixed / "John_Savage" / "broken.jpg").write_text("not an image")
    result = pfd.finetune(mixed, tmp_path / "o3", strategy="head", steps=10, progress=False,
                          cache_dir=tmp_path / "cache")
    assert "Lonely" in result.skipped_identities
    assert any("broken.jpg" in p for p in result.skipped_images)
    with pytest.raises(ValueError, match="strategy"):
        pfd.finetune(mixed, tmp_path / "o4", strategy="middle", progress=False)
    with pytest.raises(ValueError, match="bn must be"):
        pfd.finetune(mixed, tmp_path / "o4", bn="warm", progress=False)


@pytest.mark.parametrize("strategy, steps", [("head", 50), ("all", 4)])  # "all": the fast_con, data-parallel path
def test_finetuned_model_is_a_dlib_drop_in(tmp_path, johns, dlib_bin, strategy, steps):
    chips, labels = johns
    chips = datasets.degrade(chips, "lowres:10")  # a non-zero loss, so the weights really move
    result = pfd.finetune((chips, labels), tmp_path, strategy=strategy, steps=steps, val_every=2, progress=False)
    shipped = pfd.FaceEmbedder().embed_chips(chips[:8])
    theirs = np.array(dlib_bin.face_recognition_model_v1(result.affine_model).compute_face_descriptor(list(chips[:8])))
    ours = pfd.FaceEmbedder(result.affine_model).embed_chips(chips[:8])
    assert np.abs(ours - theirs).max() <= 1e-5
    assert result.best_step > 0 and np.abs(ours - shipped).max() > 1e-4  # a trained model, not the shipped one


def test_finetune_config_validates_instead_of_defaulting():
    # the old keyword handling turned lr=0, val_every=0, threads=0 silently into defaults
    for bad in ({"lr": 0}, {"val_every": 0}, {"threads": 0}, {"steps": -1}, {"strategy": "from_level:7"},
                {"bn": "batch"}, {"identities_per_batch": 1}, {"lr": float("nan")}, {"patience": True}):
        with pytest.raises(ValueError):
            pfd.FinetuneConfig(**bad)
    config = pfd.FinetuneConfig(strategy="from_level:3")
    assert (config.kind, config.first_level, config.learning_rate, config.total_steps) == ("from_level", 3, 1e-4, 400)
    assert pfd.FinetuneConfig(steps=0).total_steps == 0
    with pytest.raises(TypeError, match="unknown fine-tuning option"):
        pfd.finetune("nowhere", "nowhere", learning_rate=0.1)
    # every setting is reachable from the command line
    from pyfacedlib.cli import build_parser

    args = build_parser().parse_args(["finetune", "T", "O", "--patience", "5", "--lr-floor", "1e-7", "--cache-dir", "C",
                                      "--head-feature-copies", "2", "--no-augment"])
    assert ((args.patience, args.lr_floor, args.cache_dir, args.head_feature_copies, args.augment)
            == (5, 1e-7, "C", 2, False))


def test_trainer_exports_scaled_nets_from_memory_as_the_file_api_would(tmp_path, johns):
    """FaceTrainer.affine_bytes / bn_bytes(descriptor_scale): the bytes scaled_descriptor_net makes from
    the written file, without the file."""
    chips, labels = johns
    names = {n: i for i, n in enumerate(sorted(set(labels)))}
    ints = [names[n] for n in labels]
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    pfd.convert_affine_to_bn(base, tmp_path / "bn.dat", calibration=chips)
    for start, train_bn in ((base, False), (str(tmp_path / "bn.dat"), True)):
        trainer = core.FaceTrainer(start, train_bn, chips, ints, 5, 0.01, 3, 3, False, 1, 0, 2)
        trainer.train(1)
        plain = tmp_path / "plain_affine.dat"
        plain.write_bytes(trainer.affine_bytes())
        assert trainer.affine_bytes(1.25) == core.scaled_descriptor_net(str(plain), 1.25)
        if train_bn:
            plain_bn = tmp_path / "plain_bn.dat"
            plain_bn.write_bytes(trainer.bn_bytes())
            assert trainer.bn_bytes(0.8) == core.scaled_descriptor_net(str(plain_bn), 0.8)
        else:
            assert trainer.bn_bytes(1.25) == b""
        for bad in (0.0, -1.0, float("nan")):
            with pytest.raises(ValueError, match="scale"):
                trainer.affine_bytes(bad)


def test_unvalidated_run_is_scaled_on_its_training_pairs(tmp_path, johns):
    """Without validation identities the exported (last) model is measured on training pairs through
    the trainer's own embedder and written once, scaled so that dlib's 0.6 is its best threshold."""
    from pyfacedlib.evaluate import best_threshold, sample_pairs

    chips, labels = johns
    keep = np.isin(labels, sorted(set(labels))[:3])  # 3 identities: too few to hold any out
    chips, labels = datasets.degrade(chips[keep], "lowres:12"), labels[keep]
    result = pfd.finetune((chips, labels), tmp_path, strategy="head", steps=20, progress=False)
    assert result.validation_identities == 0 and result.best_validation is None
    assert result.threshold == 0.6 and result.descriptor_scale != 1.0
    descriptors = pfd.FaceEmbedder(result.affine_model).embed_chips(chips).astype(np.float64)
    pairs = sample_pairs(labels, 3000, 0, folds=1)
    d = np.linalg.norm(descriptors[pairs.first] - descriptors[pairs.second], axis=1)
    assert best_threshold(d, pairs.same) == pytest.approx(0.6, rel=1e-4)


def _export_state(result, out: Path) -> tuple:
    """What a finished run exported: the two model files' bytes and the report's numbers."""
    return (Path(result.affine_model).read_bytes(), Path(result.bn_model).read_bytes(), result.best_step,
            result.best_validation, result.threshold, result.descriptor_scale,
            json.loads((out / "history.json").read_text()).get("exported"))


def test_rerun_or_interrupted_export_leaves_exactly_the_best_model(tmp_path, johns, monkeypatch):
    """Running a finished run again, or again after a crash in the middle of its export, writes the
    best model once scaled and the same report (the export used to *move* best_affine.dat, so a
    rerun exported the last weights, scaled on training pairs)."""
    import pyfacedlib.convert

    chips, labels = johns
    chips = datasets.degrade(chips, "lowres:10")
    args = dict(strategy="head", steps=40, val_every=20, checkpoint_every=20, progress=False)
    first = pfd.finetune((chips, labels), tmp_path / "a", **args)
    assert first.best_validation is not None and first.validation_identities >= 2
    done = _export_state(first, tmp_path / "a")
    again = pfd.finetune((chips, labels), tmp_path / "a", **args)
    assert again.resumed_from_step == 40
    assert _export_state(again, tmp_path / "a")[:-1] == done[:-1]  # the same model files and report
    assert _export_state(again, tmp_path / "a") == done
    assert done[-1]["model"] == "best" and done[-1]["step"] == first.best_step  # history.json says what it exported

    convert = pyfacedlib.convert.convert_affine_to_bn

    def crash(*a, **k):  # the export dies after finetuned_affine.dat was written
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(pyfacedlib.convert, "convert_affine_to_bn", crash)
    with pytest.raises(KeyboardInterrupt):
        pfd.finetune((chips, labels), tmp_path / "b", **args)
    assert (tmp_path / "b" / "finetuned_affine.dat").exists() and not (tmp_path / "b" / "history.json").exists()
    monkeypatch.setattr(pyfacedlib.convert, "convert_affine_to_bn", convert)
    resumed = pfd.finetune((chips, labels), tmp_path / "b", **args)
    assert _export_state(resumed, tmp_path / "b")[:-1] == done[:-1]
    assert _export_state(resumed, tmp_path / "b") == done


def test_corrupt_or_mismatched_checkpoint_is_refused(tmp_path, johns):
    """checkpoint.json records the size and sha256 of its checkpoint.bin: a corrupt .bin or a .bin of
    another checkpoint is a one-line CheckpointError naming it, never a silent restore; a run stopped
    between writing the two files resumes from the consistent older state, and says so."""
    chips, labels = johns
    args = dict(strategy="head", val_every=20, checkpoint_every=20, progress=False)
    pfd.finetune((chips, labels), tmp_path, steps=40, **args)
    binary, state = tmp_path / "checkpoint.bin", tmp_path / "checkpoint.json"
    good, json_at_40 = binary.read_bytes(), state.read_text()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    for bad in (good[: len(good) // 2], bytes(flipped), b""):
        binary.write_bytes(bad)
        with pytest.raises(pfd.errors.CheckpointError, match="checkpoint.bin") as caught:
            pfd.finetune((chips, labels), tmp_path, steps=60, **args)
        assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)
    # a checkpoint.json without the record (older format) and a truncated .bin: the reader's error, named
    legacy = json.loads(json_at_40)
    del legacy["bin"], legacy["step"]
    state.write_text(json.dumps(legacy))
    binary.write_bytes(good[: len(good) // 2])
    with pytest.raises(pfd.errors.CheckpointError, match="checkpoint.bin.*cannot be restored"):
        pfd.finetune((chips, labels), tmp_path, steps=60, **args)
    # a mismatched pair: the .bin of step 60 with the JSON of step 40
    binary.write_bytes(good)
    state.write_text(json_at_40)
    pfd.finetune((chips, labels), tmp_path, steps=60, **args)
    state.write_text(json_at_40)
    (tmp_path / "checkpoint.prev.bin").unlink()
    with pytest.raises(pfd.errors.CheckpointError, match="checkpoint.bin"):
        pfd.finetune((chips, labels), tmp_path, steps=80, **args)
    # ... unless the .bin that JSON was written with is still there (stopped between the two writes)
    (tmp_path / "checkpoint.prev.bin").write_bytes(good)
    with pytest.warns(RuntimeWarning, match="consistent older state"):
        result = pfd.finetune((chips, labels), tmp_path, steps=80, **args)
    assert result.resumed_from_step == 40 and result.steps == 80


def test_interpolated_net_mixes_every_parameter(tmp_path, johns):
    """core.interpolated_net: (1 - alpha) x base + alpha x tuned for every parameter. A tuned net whose
    descriptors are doubled (only its fc layer differs) interpolated at alpha gives (1 + alpha) x
    the base's descriptors; alpha 0 and 1 give the two nets."""
    chips = johns[0][:8]
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    doubled = tmp_path / "doubled.dat"
    doubled.write_bytes(core.scaled_descriptor_net(base, 2.0))
    reference = pfd.FaceEmbedder().embed_chips(chips)
    for alpha in (0.0, 0.25, 1.0):
        mixed = tmp_path / f"mixed{alpha}.dat"
        mixed.write_bytes(core.interpolated_net(base, str(doubled), alpha))
        np.testing.assert_allclose(pfd.FaceEmbedder(mixed).embed_chips(chips), (1 + alpha) * reference, atol=2e-6)
    with pytest.raises(ValueError, match="interpolation weight"):
        core.interpolated_net(base, str(doubled), 1.5)


def test_base_weight_exports_the_interpolated_model(tmp_path, johns, dlib_bin):
    """finetune(base_weight=w) exports (1 - w) x the best model + w x the base, validated and scaled
    to dlib's 0.6 on its own validation pairs; a drop-in for dlib, and the same bytes when run again."""
    chips, labels = johns
    chips = datasets.degrade(chips, "lowres:10")
    args = dict(strategy="from_level:5", steps=6, val_every=3, progress=False, base_weight=0.5)
    result = pfd.finetune((chips, labels), tmp_path, **args)
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    interpolated = tmp_path / "interpolated_affine.dat"
    assert interpolated.read_bytes() == core.interpolated_net(base, str(tmp_path / "best_affine.dat"), 0.5)
    assert Path(result.affine_model).read_bytes() == core.scaled_descriptor_net(str(interpolated),
                                                                                 result.descriptor_scale)
    assert result.base_weight == 0.5 and result.threshold == 0.6
    assert result.exported_validation["base_weight"] == 0.5
    assert result.exported_validation["accuracy"] != result.best_validation["accuracy"] or \
        result.exported_validation["threshold"] != result.best_validation["threshold"]
    # the descriptors lie between the base model's and the best model's (up to the export's scale)
    best = pfd.FaceEmbedder(tmp_path / "best_affine.dat").embed_chips(chips[:8])
    shipped = pfd.FaceEmbedder().embed_chips(chips[:8])
    mixed = pfd.FaceEmbedder(interpolated).embed_chips(chips[:8])
    assert np.abs(mixed - shipped).max() > 1e-4 and np.abs(mixed - best).max() > 1e-4
    ours = pfd.FaceEmbedder(result.affine_model).embed_chips(chips[:8])
    theirs = np.array(dlib_bin.face_recognition_model_v1(result.affine_model).compute_face_descriptor(list(chips[:8])))
    assert np.abs(ours - theirs).max() <= 1e-5
    again = pfd.finetune((chips, labels), tmp_path, **args)
    assert Path(again.affine_model).read_bytes() == Path(result.affine_model).read_bytes()
    with pytest.raises(ValueError, match="bn='frozen'"):
        pfd.FinetuneConfig(bn="calibrated", base_weight=0.5)
    with pytest.raises(ValueError, match="base_weight"):
        pfd.FinetuneConfig(base_weight=1.0)

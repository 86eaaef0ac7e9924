"""The `pyfacedlib` command line (also `python -m pyfacedlib`)."""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np

from . import _atomic
from .align import DETECTORS
from .chipcache import FALLBACKS
from .archive import ENGINES
from .clustering import METHODS
from ._native import DEVICES
from .embedder import BACKENDS
from .gallery import CLASSIFIERS, MULTIPLE_FACES
from .index import KINDS


def _cmd_info(args: argparse.Namespace) -> int:
    from . import build_info, models

    info = build_info()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    print("models:")
    for name in models.names():
        try:
            where = models.path(name)
        except (FileNotFoundError, ValueError) as exc:
            where = f"MISSING: {exc}"
        print(f"  {name:<40} {where}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from .embedder import FaceEmbedder
    from .errors import ImageError
    from .images import load_image

    if args.out and Path(args.out).suffix == ".parquet":
        return _embed_archive(args)
    if args.engine != "local" or args.resume or args.address:
        print("--engine ray, --address and --resume need --out OUT.parquet", file=sys.stderr)
        return 2
    from .datasets.identities import list_files

    embedder = FaceEmbedder(model=args.model, threads=args.threads, backend=args.backend, device=args.device)
    print(f"embedding on {embedder.device} ({embedder.backend} forward pass)", file=sys.stderr)
    images = list_files(args.images)
    records, failed, faceless = [], 0, 0
    for image in images:
        try:
            pixels = load_image(image, exif_orientation=not args.no_exif)
            faces = embedder.embed_image(pixels, detector=args.detector, upsample=args.upsample,
                                         num_jitters=args.num_jitters, seed=args.seed,
                                         min_face_size=args.min_face_size)
        except (ImageError, TypeError) as exc:
            print(f"{image}: ERROR {exc}", file=sys.stderr)
            failed += 1
            continue
        if not faces:
            faceless += 1
            print(f"{image}: no face found")
        for index, face in enumerate(faces):
            records.append({
                "image": str(image), "face": index, "box": face.box.tolist(), "score": face.score,
                "landmarks": face.landmarks.tolist(), "descriptor": [float(v) for v in face.descriptor],
            })
            if not args.quiet:
                left, top, right, bottom = face.box.tolist()
                print(f"{image}: face {index} box=({left},{top},{right},{bottom}) "
                      f"|d|={np.linalg.norm(face.descriptor):.4f}")
                print(np.array2string(face.descriptor, precision=5, separator=" ", max_line_width=100,
                                      threshold=10_000))
    if args.out:
        out = Path(args.out)
        if out.suffix == ".npy":
            buffer = io.BytesIO()
            np.save(buffer, np.array([r["descriptor"] for r in records], np.float32).reshape(-1, 128))
            _atomic.write_bytes(out, buffer.getvalue())
        elif out.suffix == ".json":
            _atomic.write_text(out, json.dumps(records, indent=1))
        else:
            print(f"--out must end in .npy or .json, got {out}", file=sys.stderr)
            return 2
        print(f"wrote {len(records)} descriptors to {out}")
    print(f"{len(images)} images, {len(records)} faces, {faceless} without a face, {failed} unreadable",
          file=sys.stderr)
    return 1 if failed else 0


def _embed_archive(args: argparse.Namespace) -> int:
    """embed ... --out OUT.parquet: the archive pipeline (pyfacedlib.archive), local or on Ray."""
    from .archive import ArchiveConfig, embed_archive
    from .chipcache import AlignmentSettings

    if args.num_jitters or args.backend == "dlib":
        print("--out OUT.parquet embeds without jitter on the default backend", file=sys.stderr)
        return 2
    config = ArchiveConfig(engine=args.engine, workers=args.workers, address=args.address, resume=args.resume,
                           images_per_part=args.part_size)
    settings = AlignmentSettings(**{"fallback": "none", **_alignment_options(args)})
    try:
        report = embed_archive(args.images, args.out, model=args.model, settings=settings, config=config)
    except FileExistsError as exc:
        print(f"pyfacedlib embed: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    for source, error in sorted(report.unreadable.items()):
        print(f"{source}: ERROR {error}", file=sys.stderr)
    return 1 if report.unreadable else 0


def _cmd_index(args: argparse.Namespace) -> int:
    from .facetable import FaceTable
    from .index import DescriptorIndex

    table = FaceTable.read_parquet(args.table)
    vectors = table.embedding[table.has_face]
    index = DescriptorIndex(vectors, args.kind)
    index.save(args.index, table_rows=len(table))
    print(f"{index.kind} index over {len(vectors)} faces of {args.table} ({index.memory_bytes / 2**20:.0f} MiB): "
          f"wrote {args.index}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_affine_to_bn, convert_bn_to_affine

    if args.to == "bn":
        report = convert_affine_to_bn(args.src, args.dst, calibration=args.calibrate, holdout=args.holdout,
                                      threads=args.threads, progress=True)
    else:
        if args.calibrate or args.holdout:
            print("--calibrate/--holdout only apply to --to bn", file=sys.stderr)
            return 2
        report = convert_bn_to_affine(args.src, args.dst)
    print(report.summary())
    if args.report:
        _atomic.write_text(args.report, json.dumps(report.to_dict(), indent=1))
    return 0


def _cmd_bench_lfw(args: argparse.Namespace) -> int:
    from .bench import bench_lfw
    from .chipcache import AlignmentSettings

    settings = AlignmentSettings(detector=args.detector, upsample=args.upsample, fallback=args.fallback)
    try:
        bench_lfw(args.lfw_dir, args.pairs, models=[None if m == "shipped" else m for m in (args.model or ["shipped"])], num_jitters=args.num_jitters,
                           flip=args.flip, out=args.out, strict=args.strict, cache_dir=args.cache_dir,
                           settings=settings, workers=args.workers, threads=args.threads)
    except FileNotFoundError as exc:
        print(f"pyfacedlib bench-lfw: {exc}", file=sys.stderr)
        return 2
    print((Path(args.out) / "report.md").read_text())
    print(f"wrote {args.out}/report.json, report.md, roc.png")
    return 0


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per FinetuneConfig field (--no-X for the ones that default to True)."""
    import dataclasses
    import typing

    from ._finetune import FinetuneConfig

    hints = typing.get_type_hints(FinetuneConfig)
    for f in dataclasses.fields(FinetuneConfig):
        option = "--" + f.name.replace("_", "-")
        text = f.metadata.get("help", "")
        if hints[f.name] is bool:
            if f.default:
                parser.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false", help="no: " + text)
            else:
                parser.add_argument(option, dest=f.name, action="store_true", help=text)
            continue
        kind = next(t for t in (int, float, str) if t in (hints[f.name], *typing.get_args(hints[f.name])))
        parser.add_argument(option, dest=f.name, type=kind, default=f.default, choices=f.metadata.get("choices"),
                            help=f"{text} (default: {f.default})" if f.default is not None else text)


def _cmd_finetune(args: argparse.Namespace) -> int:
    import dataclasses

    from ._finetune import FinetuneConfig, finetune

    config = FinetuneConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)})
    result = finetune(args.train_dir, args.out_dir, base_model=args.base_model, val=args.val_dir, config=config)
    print(f"trained {result.strategy}/{config.bn}/{result.loss} for {result.steps} steps ({result.device}) in "
          f"{result.minutes:.1f} min on {result.train_faces} faces of {result.train_identities} identities "
          f"(resumed from step {result.resumed_from_step})")
    if result.best_validation:
        v = result.best_validation
        print(f"best validation (step {result.best_step}, {result.validation_identities} held-out identities): "
              f"accuracy {100 * v['accuracy']:.2f}%, VAL@FAR=1e-3 {100 * v['val_at_far_1e_3']:.2f}%, loss {v['loss']:.4f}")
    if result.skipped_identities or result.skipped_images:
        print(f"skipped: {len(result.skipped_identities)} identities, {len(result.skipped_images)} images "
              f"(listed in {result.history_path})")
    if result.threshold is not None:
        scaled = f" (descriptors scaled x{result.descriptor_scale:.3f} so that it is dlib's 0.6)" if result.descriptor_scale != 1 else ""
        print(f"most accurate threshold on the validation pairs: {result.threshold:.3f}{scaled}")
    print(f"model: {result.affine_model}\nbn net: {result.bn_model}\nhistory: {result.history_path}")
    return 0


def _alignment_arguments(parser: argparse.ArgumentParser) -> None:
    """Detection options shared by the commands that find faces in photos (defaults None: unset)."""
    parser.add_argument("--detector", choices=DETECTORS, default=None, help="face detector (default: hog)")
    parser.add_argument("--upsample", type=int, default=None, help="times the image is doubled before detection "
                                                                   "(default: 1)")
    parser.add_argument("--min-face-size", type=float, default=None,
                        help="smallest face wanted, in pixels: large photos are scanned on a resized copy "
                             "(default: dlib's own scan up to 800 px on the shorter side, else 1/20 of it; 0: always dlib's)")
    parser.add_argument("--no-exif", action="store_true",
                        help="do not turn photos upright by their EXIF orientation (read pixels as dlib does)")


def _alignment_options(args: argparse.Namespace) -> dict:
    """The AlignmentSettings fields given on the command line."""
    options = {name: getattr(args, name) for name in ("detector", "upsample", "min_face_size")
               if getattr(args, name) is not None}
    if args.no_exif:
        options["exif_orientation"] = False
    if getattr(args, "fallback", None) is not None:
        options["fallback"] = args.fallback
    return options


def _expand_inputs(inputs: list[str]) -> list[str]:
    """Photos and videos as given, folders replaced by the photos and videos under them; camera
    indices (0, 1, ...) kept."""
    from .datasets.identities import IMAGE_SUFFIXES, list_files
    from .photos import VIDEO_SUFFIXES

    expanded: list[str] = []
    for item in inputs:
        if item.isdigit() and not Path(item).exists():
            expanded.append(item)
        else:
            try:
                expanded += list_files([item], IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            except FileNotFoundError:
                expanded.append(item)  # reported as unreadable by identify, with the others done
    return expanded


def _csv_output(target: str | None):
    """A context manager giving a csv.writer on stdout, or on FILE written atomically."""
    import contextlib
    import csv

    @contextlib.contextmanager
    def output():
        if target is None:
            yield csv.writer(sys.stdout, lineterminator="\n")
            sys.stdout.flush()
            return
        with _atomic.atomic_path(target) as tmp, open(tmp, "w", newline="") as f:
            yield csv.writer(f, lineterminator="\n")

    return output()


def _cmd_enrol(args: argparse.Namespace) -> int:
    from .gallery import Gallery, GalleryConfig

    options = _alignment_options(args)
    if Path(args.gallery).exists():
        gallery = Gallery.load(args.gallery, model=args.model, threads=args.threads)
        given = {**vars(gallery.settings), **options}
        if given != vars(gallery.settings):
            changed = sorted(k for k in options if options[k] != getattr(gallery.settings, k))
            print(f"pyfacedlib enrol: {args.gallery} was made with other alignment settings ({', '.join(changed)}); "
                  "its descriptors cannot be mixed with new ones: enrol into a new gallery", file=sys.stderr)
            return 2
        gallery.root = str(Path(args.root))
        gallery.sync()
    else:
        config = GalleryConfig(multiple_faces=args.multiple_faces or "largest")
        gallery = Gallery.build(args.root, model=args.model, config=config, threads=args.threads, **options)
    report = gallery.last_sync
    assert report is not None
    gallery.save(args.gallery)
    print(report.summary())
    for source, reason in sorted(report.skipped.items()):
        print(f"  skipped {source}: {reason}")
    print(gallery.summary())
    print(f"wrote {args.gallery}")
    return 0


def _cmd_identify(args: argparse.Namespace) -> int:
    from .gallery import Gallery

    gallery = Gallery.load(args.gallery, model=args.model, threads=args.threads)
    inputs = _expand_inputs(args.inputs)
    failed = faces = 0
    with _csv_output(args.csv) as out:
        out.writerow(["path", "frame", "face", "left", "top", "right", "bottom", "identity", "distance", "confidence"])
        for result in gallery.identify_many(inputs, threshold=args.threshold, k=args.k, classifier=args.classifier,
                                            every=args.every, progress=True, max_frames=args.max_frames):
            frame = "" if result.frame is None else result.frame
            if result.error:
                failed += 1
                print(f"{result.source}: ERROR {result.error}", file=sys.stderr)
            elif not result.matches and result.frame is None:
                out.writerow([result.source, frame, "", "", "", "", "", "no_faces_found", "", ""])
            for m in result.matches:
                faces += 1
                out.writerow([m.source, frame, m.face, *m.box, m.identity, f"{m.distance:.4f}", f"{m.confidence:.4f}"])
    print(f"{len(inputs)} inputs, {faces} faces, {failed} unreadable; threshold {args.threshold or gallery.threshold:.3f}"
          + (f"; wrote {args.csv}" if args.csv else ""), file=sys.stderr)
    return 1 if failed else 0


def _cmd_search(args: argparse.Namespace) -> int:
    from .errors import NoFaceFoundError
    from .gallery import Gallery

    gallery = Gallery.load(args.gallery, model=args.model, threads=args.threads)
    if args.index:
        from .index import DescriptorIndex

        gallery.use_search_index(DescriptorIndex.load(args.index))
    try:
        hits = gallery.search(args.query, k=args.k, max_distance=args.max_distance)
    except NoFaceFoundError as exc:
        print(f"{args.query}: no_faces_found ({exc})", file=sys.stderr)
        return 1
    with _csv_output(args.csv) as out:
        out.writerow(["rank", "path", "face", "left", "top", "right", "bottom", "identity", "distance"])
        for rank, hit in enumerate(hits, 1):
            out.writerow([rank, hit.source, hit.face, *hit.box, hit.identity, f"{hit.distance:.4f}"])
    return 0


def _input_files(inputs: list[str]) -> dict[str, str]:
    """Image path -> identity: files as given (no identity); images under a folder given named by the
    subfolder they are in, if any (identity folders root/Name/*.jpg)."""
    from .datasets.identities import list_files

    files: dict[str, str] = {}
    for item in inputs:
        for image in list_files([item]):
            parts = Path(image).relative_to(item).parts if Path(item).is_dir() else ()
            files.setdefault(image, parts[0] if len(parts) > 1 else "")
    return files


def _embedded_table(files: dict[str, str], args: argparse.Namespace, previous_path: Path | None, progress: str):
    """The face table of `files`, re-using the rows of the table at previous_path when it was made
    with the same model and alignment settings (only new or changed files are processed)."""
    from ._system import file_sha256
    from .chipcache import AlignmentSettings
    from .embedder import FaceEmbedder
    from .facetable import FaceTable, update_table

    settings = AlignmentSettings(**{"fallback": "none", **_alignment_options(args)})
    embedder = FaceEmbedder(model=args.model, threads=args.threads)
    model_id = file_sha256(embedder.model_path)
    previous = FaceTable(model_id=model_id, settings_hash=settings.key(), metadata={"settings": vars(settings)})
    if previous_path is not None and previous_path.exists():
        try:
            old = FaceTable.read_parquet(previous_path)
        except ValueError as exc:
            print(f"not re-using {previous_path}: {exc}", file=sys.stderr)
        else:
            if (old.model_id, old.settings_hash) == (model_id, settings.key()) or not len(old):
                old.model_id, old.settings_hash = model_id, settings.key()
                previous = old
            else:
                print(f"not re-using {previous_path}: made with another model or other alignment settings",
                      file=sys.stderr)
    previous.metadata.update({"settings": vars(settings), "model_path": embedder.model_path})
    table, changes = update_table(previous, files, embedder, settings, progress=progress)
    print(changes.summary(), file=sys.stderr)
    return table


def _table_summary(table) -> str:
    photos = len(set(table.source_path))
    unreadable = {s for s, e in zip(table.source_path, table.error) if e}
    faceless = {s for s, f in zip(table.source_path, table.face) if f < 0} - unreadable
    return (f"{photos} photos, {int(table.has_face.sum())} faces, {len(faceless)} photos without a face, "
            f"{len(unreadable)} unreadable")


def _cmd_cluster(args: argparse.Namespace) -> int:
    import os
    import re
    import shutil

    from .clustering import cluster

    out = Path(args.out_dir)
    files = {path: "" for path in _input_files([args.input_dir])}
    if not files:
        print(f"pyfacedlib cluster: no images under {args.input_dir}", file=sys.stderr)
        return 2
    table = _embedded_table(files, args, out / "faces.parquet", "faces")
    table.write_parquet(out / "faces.parquet")
    rows = np.flatnonzero(table.has_face)
    labels = cluster(table.embedding[rows], threshold=args.threshold, method=args.method, min_size=args.min_size)
    with _csv_output(str(out / "clusters.csv")) as writer:
        writer.writerow(["path", "face", "cluster"])
        for row, label in zip(rows, labels):
            writer.writerow([table.source_path[row], int(table.face[row]), int(label)])
    for old in out.iterdir():  # folders of an earlier run (links only) are replaced
        if old.is_dir() and re.fullmatch(r"cluster_\d+", old.name) and all(p.is_symlink() for p in old.iterdir()):
            shutil.rmtree(old)
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, int)
    width = max(3, len(str(len(sizes))))
    for label in range(len(sizes)):
        folder = out / f"cluster_{label:0{width}d}"
        folder.mkdir(parents=True, exist_ok=True)
        for row in rows[labels == label]:
            source = Path(table.source_path[row]).resolve()
            link = folder / source.name
            if link.is_symlink() and Path(os.readlink(link)) != source:
                link = folder / f"{len(list(folder.iterdir()))}_{source.name}"
            if not link.is_symlink():
                link.symlink_to(source)
    print(_table_summary(table))
    print(f"{len(sizes)} clusters ({args.method}, threshold {args.threshold}), {int((labels < 0).sum())} faces "
          f"in no cluster (-1); largest: {', '.join(str(n) for n in sizes[:10])}")
    print(f"wrote {out / 'clusters.csv'}, {out / 'faces.parquet'} and one folder of links per cluster")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix not in (".parquet", ".npy"):
        print(f"--out must end in .parquet or .npy, got {out}", file=sys.stderr)
        return 2
    files = _input_files(args.inputs)
    if not files:
        print("pyfacedlib export: no images found", file=sys.stderr)
        return 2
    table = _embedded_table(files, args, out if out.suffix == ".parquet" else None, "exporting")
    if out.suffix == ".parquet":
        table.write_parquet(out)
        written = [out]
    else:
        rows = np.flatnonzero(table.has_face)
        buffer = io.BytesIO()
        np.save(buffer, table.embedding[rows])
        _atomic.write_bytes(out, buffer.getvalue())
        written = [out]
        names = [table.identity[i] for i in rows]
        if any(names):  # identity folders: facenet's labels.npy / label_strings.npy beside it
            classes = sorted(set(names))
            for name, values in (("labels.npy", np.array([classes.index(n) for n in names], np.int64)),
                                 ("label_strings.npy", np.array(names))):
                buffer = io.BytesIO()
                np.save(buffer, values)
                _atomic.write_bytes(out.parent / name, buffer.getvalue())
                written.append(out.parent / name)
    print(_table_summary(table))
    print("wrote " + ", ".join(str(p) for p in written))
    unreadable = sorted({s for s, e in zip(table.source_path, table.error) if e})
    for source in unreadable:
        print(f"{source}: ERROR {table.error[table.source_path.index(source)]}", file=sys.stderr)
    return 1 if unreadable else 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .bench import evaluate_folders

    models = [None if m == "shipped" else m for m in (args.model or ["shipped"])]
    evaluate_folders(args.root, model=models, out=args.out, threads=args.threads)
    print((Path(args.out) / "report.md").read_text())
    print(f"wrote {args.out}/report.json, report.md, roc.png")
    return 0


def _gallery_arguments(parser: argparse.ArgumentParser) -> None:
    """The gallery file and how to run its model, for the commands that read a gallery."""
    parser.add_argument("gallery", help="a gallery (enrol), an export or an archive (.parquet)")
    parser.add_argument("--model", help="the gallery's model file, when it has moved")
    parser.add_argument("--threads", type=int, default=None)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `pyfacedlib` command."""
    parser = argparse.ArgumentParser(prog="pyfacedlib", description="Fine-tunable dlib face recognition.")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="build information and model files")
    info.set_defaults(run=_cmd_info)

    embed = sub.add_parser("embed", help="detect, align and embed the faces in images")
    embed.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    embed.add_argument("--out", help="write descriptors to FILE.npy (N,128), FILE.json (with boxes, landmarks), or "
                                     "OUT.parquet: a folder of Parquet parts, one row per face (archives; resumable)")
    embed.add_argument("--engine", choices=ENGINES, default="local",
                       help="OUT.parquet: threads on this machine, or Ray Data (pip install 'pyfacedlib[ray]')")
    embed.add_argument("--address", help="--engine ray: the cluster to join ('auto': the running one; default: "
                                         "start Ray on this machine)")
    embed.add_argument("--workers", type=int, default=None, help="OUT.parquet: detection threads (local) or actors "
                                                                 "(ray); default: the CPUs")
    embed.add_argument("--resume", action="store_true", help="OUT.parquet: continue an existing output, skipping "
                                                             "images already in it (by sha256)")
    embed.add_argument("--part-size", type=int, default=1000, help="OUT.parquet: images per Parquet part")
    embed.add_argument("--model", help="affine .dat model (default: the shipped dlib model)")
    embed.add_argument("--detector", choices=DETECTORS, default="hog")
    embed.add_argument("--upsample", type=int, default=1)
    embed.add_argument("--num-jitters", type=int, default=0)
    embed.add_argument("--seed", type=int, default=0)
    embed.add_argument("--threads", type=int, default=None)
    embed.add_argument("--backend", choices=BACKENDS, default=None,
                       help="forward pass: folded (CPU default) or dlib's own (the reference)")
    embed.add_argument("--device", choices=DEVICES, default="auto",
                       help="cpu, cuda (a CUDA build and a GPU) or auto: the GPU when there is one (printed)")
    embed.add_argument("--min-face-size", type=float, default=None,
                       help="smallest face wanted, in pixels: large photos are scanned on a resized copy "
                            "(default: dlib's own scan up to 800 px on the shorter side, else 1/20 of it; 0: always dlib's)")
    embed.add_argument("--no-exif", action="store_true",
                       help="do not turn photos upright by their EXIF orientation (read pixels as dlib does)")
    embed.add_argument("--quiet", action="store_true", help="do not print descriptors")
    embed.set_defaults(run=_cmd_embed)

    convert = sub.add_parser("convert", help="affine testing net <-> bn_con training net")
    convert.add_argument("--to", choices=["bn", "affine"], required=True)
    convert.add_argument("src")
    convert.add_argument("dst")
    convert.add_argument("--calibrate", metavar="DIR", help="images (identity folders) to calibrate batch norm on")
    convert.add_argument("--holdout", metavar="DIR", help="other images to measure the batch-mode drift on")
    convert.add_argument("--threads", type=int, default=None)
    convert.add_argument("--report", metavar="FILE.json", help="write the full report as JSON")
    convert.set_defaults(run=_cmd_convert)

    bench = sub.add_parser("bench-lfw", help="LFW 10-fold verification benchmark, several models side by side")
    bench.add_argument("--lfw-dir", help="folder with lfw-deepfunneled/ (or lfw/) and pairs.txt "
                                         "(default: $PYFACEDLIB_DATA/lfw or ../shared/datasets/lfw)")
    bench.add_argument("--pairs", help="pairs file (default: LFW_DIR/pairs.txt; pairsDevTest.txt works too)")
    bench.add_argument("--model", action="append", help="affine .dat to evaluate (repeat for several; "
                                                        "default: the shipped model). Use 'shipped' for it.")
    bench.add_argument("--num-jitters", type=int, default=0)
    bench.add_argument("--flip", action="store_true", help="average each descriptor with its mirror image's")
    bench.add_argument("--strict", action="store_true",
                       help="drop pairs with an image the detector missed (instead of the fallback)")
    bench.add_argument("--fallback", choices=FALLBACKS, default="cnn+center",
                       help="when the detector finds no face: dlib's CNN detector, then a centred box (default)")
    bench.add_argument("--detector", choices=DETECTORS, default="hog")
    bench.add_argument("--upsample", type=int, default=1)
    bench.add_argument("--out", default="lfw-bench")
    bench.add_argument("--cache-dir", help="aligned-chip cache (default: ~/.cache/pyfacedlib/chips)")
    bench.add_argument("--workers", type=int, default=None, help="alignment processes (default: CPUs)")
    bench.add_argument("--threads", type=int, default=None, help="embedding threads (default: CPUs)")
    bench.set_defaults(run=_cmd_bench_lfw)

    enrol = sub.add_parser("enrol", help="enrol known people (ROOT/Name/*.jpg or ROOT/Name.jpg) into a gallery "
                                         "file, or sync an existing one with ROOT")
    enrol.add_argument("root")
    enrol.add_argument("gallery", help="gallery file (.parquet); created, or synced when it exists")
    enrol.add_argument("--model", help="affine .dat model (default: the shipped dlib model)")
    _alignment_arguments(enrol)
    enrol.add_argument("--fallback", choices=["cnn", "none"], default=None,
                       help="when HOG finds no face: try dlib's CNN detector (slow on CPU), or skip (default)")
    enrol.add_argument("--multiple-faces", choices=MULTIPLE_FACES, default=None,
                       help="enrolment photos with several faces: enrol the clearly largest (default) or skip them")
    enrol.add_argument("--threads", type=int, default=None)
    enrol.set_defaults(run=_cmd_enrol)

    identify = sub.add_parser("identify", help="who is in these photos or videos: CSV path,frame,face,left,top,right,"
                                               "bottom,identity,distance,confidence")
    _gallery_arguments(identify)
    identify.add_argument("inputs", nargs="+", help="photos, folders, video files or camera indices (0, 1, ...)")
    identify.add_argument("--threshold", type=float, default=None, help="unknown above this distance "
                                                                        "(default: the gallery's calibrated one)")
    identify.add_argument("--k", type=int, default=5, help="candidates considered per face")
    identify.add_argument("--classifier", choices=CLASSIFIERS, default=None)
    identify.add_argument("--every", type=int, default=1, help="videos: every Nth frame")
    identify.add_argument("--max-frames", type=int, default=None, help="videos and cameras: stop after N frames")
    identify.add_argument("--csv", help="write the CSV to FILE (atomically) instead of standard output")
    identify.set_defaults(run=_cmd_identify)

    search = sub.add_parser("search", help="the gallery's faces nearest to the face in QUERY: CSV rank,path,face,"
                                           "left,top,right,bottom,identity,distance")
    _gallery_arguments(search)
    search.add_argument("query", help="a photo (its largest face is searched for)")
    search.add_argument("--k", type=int, default=10)
    search.add_argument("--max-distance", type=float, default=None)
    search.add_argument("--csv", help="write the CSV to FILE instead of standard output")
    search.add_argument("--index", help="a saved index of the gallery's faces (pyfacedlib index)")
    search.set_defaults(run=_cmd_search)

    index = sub.add_parser("index", help="a search index over a face table (an archive made by embed --out "
                                         "OUT.parquet, an export, a gallery), used by search --index")
    index.add_argument("table")
    index.add_argument("index", help="index file to write (.npz)")
    index.add_argument("--kind", choices=KINDS, default="auto")
    index.set_defaults(run=_cmd_index)

    clus = sub.add_parser("cluster", help="group the faces of a folder of photos by person: OUT_DIR/clusters.csv "
                                          "(path,face,cluster; -1 = in no cluster) and a folder of links per cluster")
    clus.add_argument("input_dir")
    clus.add_argument("out_dir")
    clus.add_argument("--threshold", type=float, default=0.5, help="faces closer than this are linked (default 0.5, "
                                                                   "dlib's face_clustering example)")
    clus.add_argument("--method", choices=METHODS, default="chinese_whispers")
    clus.add_argument("--min-size", type=int, default=2, help="smaller clusters count as no cluster (-1)")
    clus.add_argument("--model", help="affine .dat model (default: the shipped dlib model)")
    _alignment_arguments(clus)
    clus.add_argument("--threads", type=int, default=None)
    clus.set_defaults(run=_cmd_cluster)

    export = sub.add_parser("export", help="every face's embedding: FILE.parquet (one row per face, with source, "
                                           "sha256, box, landmarks, identity) or FILE.npy (+ facenet's labels.npy, "
                                           "label_strings.npy for identity folders)")
    export.add_argument("inputs", nargs="+", help="photos or folders (identity folders: ROOT/Name/*.jpg)")
    export.add_argument("--out", required=True, help="FILE.parquet (re-running re-uses its rows) or FILE.npy")
    export.add_argument("--model", help="affine .dat model (default: the shipped dlib model)")
    _alignment_arguments(export)
    export.add_argument("--threads", type=int, default=None)
    export.set_defaults(run=_cmd_export)

    evaluate = sub.add_parser("evaluate", help="verification on your own identity folders (ROOT/Name/*.jpg), "
                                               "several models side by side: report.md/json, roc.png")
    evaluate.add_argument("root")
    evaluate.add_argument("--model", action="append", help="affine .dat (repeat for several; 'shipped' for dlib's)")
    evaluate.add_argument("--out", default="folder-eval")
    evaluate.add_argument("--threads", type=int, default=None)
    evaluate.set_defaults(run=_cmd_evaluate)

    tune = sub.add_parser("finetune", help="fine-tune the face model on identity folders (TRAIN_DIR/Name/*.jpg)")
    tune.add_argument("train_dir")
    tune.add_argument("out_dir")
    tune.add_argument("--base-model", help="affine .dat to start from (default: the shipped model)")
    tune.add_argument("--val-dir", help="held-out identities (default: a fifth of TRAIN_DIR's identities)")
    _config_arguments(tune)
    tune.set_defaults(run=_cmd_finetune)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pyfacedlib` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:  # ModelFormatError, ImageError, GalleryError included
        print(f"pyfacedlib: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

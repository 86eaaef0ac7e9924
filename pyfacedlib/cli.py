"""The `pyfacedlib` command line (also `python -m pyfacedlib`).

Each verb is a few lines over the library: its options are generated from the library's config
dataclasses (AlignmentSettings, GalleryConfig, ArchiveConfig, IndexSettings, ClusterSettings,
FinetuneConfig), so every default and its help are written once, where the library defines them.
An option the chosen branch of a verb would not use is a usage error (exit 2), never ignored.

Exit codes, the same for every verb (EXIT_CODES, shown in --help): 0 done, 1 failed, 2 usage,
3 done but some inputs were unreadable (each listed on stderr), 130 interrupted. An error is one line
on stderr, `pyfacedlib VERB: message`; --debug adds the traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
import typing
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _atomic
from ._native import DEVICES
from .align import PHOTO_FALLBACKS, AlignmentSettings
from .archive import ArchiveConfig
from .clustering import ClusterSettings
from .embedder import EmbedderSettings
from .gallery import CLASSIFIERS, GalleryConfig
from .index import KINDS, IndexSettings


class UsageError(ValueError):
    """A command line that asks for something the verb cannot do; exit code 2."""


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EXIT_CODES = """exit codes (every verb):
  0    done
  1    failed: one line on stderr says which input and why (a missing or bad model, gallery or
       query, no face in search's query, no GPU for --device cuda, every input unreadable, ...)
  2    usage: the command line asks for something the verb cannot do; nothing was done
  3    done, but some inputs were unreadable or incomplete: each is listed on stderr (PATH: ERROR ...)
  130  interrupted (Ctrl-C): stderr says what was kept
--debug (before or after the verb) prints the traceback of an error."""

# optional or separately installed modules -> what installs them (an ImportError names the fix)
PIP_NAMES = {"cv2": "opencv-python-headless", "faiss": "'pyfacedlib[search]'", "ray": "'pyfacedlib[ray]'",
             "pyarrow": "pyarrow", "sklearn": "scikit-learn", "PIL": "pillow", "matplotlib": "matplotlib",
             "tqdm": "tqdm", "scipy_openblas32": "scipy-openblas32", "onnx": "'pyfacedlib[onnx]'",
             "onnxruntime": "'pyfacedlib[onnx]'", "torch": "torch", "dlib": "dlib-bin",
             "face_recognition_models": "face_recognition_models",
             "nvidia": "'pyfacedlib[cuda]'"}


def exit_code(unreadable: int, readable: int) -> int:
    """0 when no input was unreadable, 3 when some were (and others done), 1 when none could be read."""
    if not unreadable:
        return EXIT_OK
    return EXIT_PARTIAL if readable else EXIT_FAILED


def _no_inputs(inputs: Iterable[str], what: str = "images") -> ValueError:
    """The error (exit 1: nothing was done) of a command whose inputs hold nothing to read (an empty folder)."""
    return ValueError(f"no {what} under {', '.join(map(str, inputs))}")


# ---------------------------------------------------------------------------------------------
# Options generated from config dataclasses


def add_config_options(parser: argparse.ArgumentParser, config: type, *, title: str | None = None,
                       skip: Iterable[str] = (), choices: dict[str, Sequence] | None = None,
                       defaults: dict[str, Any] | None = None, aliases: dict[str, Sequence[str]] | None = None) -> None:
    """One option per field of the dataclass `config` (its metadata: help, choices, flag; cli=False
    fields are left out), in a group titled `title`. A bool field defaulting to True becomes
    --no-NAME (or its `flag`), one defaulting to False --NAME. Options not given stay absent from the
    parsed namespace (argparse.SUPPRESS), so the library's defaults apply; `defaults` only changes the
    default shown in the help (a preset such as AlignmentSettings.for_photos), `choices` narrows a
    field's choices, `aliases` adds more option strings."""
    group = parser.add_argument_group(title) if title else parser
    hints = typing.get_type_hints(config)
    shown = {f.name: f.default for f in dataclasses.fields(config)} | (defaults or {})
    for f in dataclasses.fields(config):
        if f.name in skip or not f.metadata.get("cli", True):
            continue
        text = f.metadata.get("help", "")
        names = [f.metadata.get("flag") or "--" + f.name.replace("_", "-"), *(aliases or {}).get(f.name, ())]
        if hints[f.name] is bool:
            if shown[f.name]:
                flag = f.metadata.get("flag") or "--no-" + f.name.replace("_", "-")
                group.add_argument(flag, *names[1:], dest=f.name, action="store_false", default=argparse.SUPPRESS,
                                   help=f"do not: {text}")
            else:
                group.add_argument(*names, dest=f.name, action="store_true", default=argparse.SUPPRESS, help=text)
            continue
        kind = next(t for t in (bool, int, float, str) if t in (hints[f.name], *typing.get_args(hints[f.name])))
        allowed = (choices or {}).get(f.name, f.metadata.get("choices"))
        default = shown[f.name]
        group.add_argument(*names, dest=f.name, type=kind, choices=allowed, default=argparse.SUPPRESS,
                           help=f"{text} (default: {default})" if default is not None else text)


def given(args: argparse.Namespace, config: type) -> dict[str, Any]:
    """The fields of `config` given on the command line (absent ones keep the library's defaults)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config) if hasattr(args, f.name)}


def refuse(args: argparse.Namespace, names: Iterable[str], why: str) -> None:
    """UsageError when any of the options `names` (dests) was given: this branch would ignore it."""
    used = [n for n in names if getattr(args, n, None) not in (None, False)]
    if used:
        raise UsageError(f"{', '.join('--' + n.replace('_', '-') for n in used)}: {why}")


def configured(factory: Callable, args: argparse.Namespace, config: type | None = None) -> Any:
    """factory(**the options of `config` (default: factory itself) given): a value the library
    refuses (its ValueError/TypeError) is a usage error (exit 2)."""
    try:
        return factory(**given(args, config if config is not None else typing.cast(type, factory)))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc


def _listed(line: str) -> None:
    """One line on stderr while a progress bar may be drawn there (tqdm.write keeps them apart)."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def default_of(function: Callable, name: str) -> Any:
    """The default of parameter `name` of `function` (so the CLI never restates it)."""
    return inspect.signature(function).parameters[name].default


def _photo_alignment(parser: argparse.ArgumentParser) -> None:
    add_config_options(parser, AlignmentSettings, title="finding faces", choices={"fallback": PHOTO_FALLBACKS},
                       defaults=dataclasses.asdict(AlignmentSettings.for_photos()))


def _models(values: list[str] | None) -> list[str | None]:
    return [None if m == "shipped" else m for m in (values or ["shipped"])]


# ---------------------------------------------------------------------------------------------
# Verbs


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
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix == ".parquet":
        return _embed_archive(args)
    archive_only = [f.name for f in dataclasses.fields(ArchiveConfig) if f.metadata.get("cli", True)]
    refuse(args, archive_only, "archive options need --out OUT.parquet")
    if out is not None and out.suffix not in (".npy", ".json"):
        raise UsageError(f"--out must end in .npy, .json or .parquet, got {out}")
    settings = configured(AlignmentSettings.for_photos, args, AlignmentSettings)
    from .datasets import list_files
    from .embedder import FaceEmbedder
    from .photos import embed_photos

    embedder = FaceEmbedder(model=args.model, threads=args.threads, device=args.device or "auto",
                            **configured(EmbedderSettings, args).kwargs())
    via = f" on {', '.join(embedder.onnx_providers)}" if embedder.backend == "onnx" else ""
    print(f"embedding on {embedder.device} ({embedder.backend} forward pass{via})", file=sys.stderr)
    images = list_files(args.images, exclude=[out] if out is not None else [])
    if not images:
        raise _no_inputs(args.images)
    records, failed, faceless = [], 0, 0
    for photo in embed_photos(images, embedder, settings, workers=args.threads, hash_files=False,
                              num_jitters=args.num_jitters, seed=args.seed, progress=out is not None and "faces"):
        if photo.error:
            _listed(f"{photo.source}: ERROR {photo.error}")
            failed += 1
            continue
        if not len(photo):
            faceless += 1
            print(f"{photo.source}: no face found")
        for index in range(len(photo)):
            box, descriptor = photo.boxes[index], photo.descriptors[index]
            records.append({"image": photo.source, "face": index, "box": box.tolist(),
                            "score": float(photo.scores[index]), "landmarks": photo.landmarks[index].tolist(),
                            "descriptor": [float(v) for v in descriptor]})
            if not args.quiet:
                left, top, right, bottom = box.tolist()
                print(f"{photo.source}: face {index} box=({left},{top},{right},{bottom}) "
                      f"|d|={np.linalg.norm(descriptor):.4f}")
                print(np.array2string(descriptor, precision=5, separator=" ", max_line_width=100, threshold=10_000))
    if out is not None:
        if out.suffix == ".npy":
            _atomic.write_npy(out, np.array([r["descriptor"] for r in records], np.float32).reshape(-1, 128))
        else:
            _atomic.write_text(out, json.dumps(records, indent=1))
        print(f"wrote {len(records)} descriptors to {out}")
    print(f"{len(images)} images, {len(records)} faces, {faceless} without a face, {failed} unreadable",
          file=sys.stderr)
    return exit_code(failed, len(images) - failed)


def _embed_archive(args: argparse.Namespace) -> int:
    """embed ... --out OUT.parquet: the archive pipeline (pyfacedlib.archive), local or on Ray."""
    from .archive import embed_archive

    refuse(args, ("threads", "device", "num_jitters", "seed"),
           "--out OUT.parquet embeds without jitter, on the CPU unless --backend onnx with --onnx-providers "
           "(set the archive's threads with --workers, GPUs with --embed-gpus)")
    config = configured(ArchiveConfig, args)
    settings = configured(AlignmentSettings.for_photos, args, AlignmentSettings)
    try:
        report = embed_archive(args.images, args.out, model=args.model, settings=settings, config=config)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from exc
    except KeyboardInterrupt as exc:
        exc.add_note(f"the parts written so far are kept in {args.out}: the same command with --resume continues")
        raise
    print(report.summary())
    for source, error in sorted(report.unreadable.items()):
        print(f"{source}: ERROR {error}", file=sys.stderr)
    return exit_code(len(report.unreadable), report.already_done + report.processed - len(report.unreadable))


def _cmd_index(args: argparse.Namespace) -> int:
    from .facetable import FaceTable
    from .index import DescriptorIndex

    table = FaceTable.read_parquet(args.table)
    vectors = table.embedding[table.has_face]
    index = DescriptorIndex(vectors, args.kind, settings=configured(IndexSettings, args))
    index.save(args.index, table_rows=len(table))
    print(f"{index.kind} index over {len(vectors)} faces of {args.table} ({index.memory_bytes / 2**20:.0f} MiB): "
          f"wrote {args.index}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert_affine_to_bn, convert_bn_to_affine

    if args.to == "onnx":
        refuse(args, ("calibrate", "holdout", "threads", "report"), "do not apply to --to onnx")
        from .onnx_model import DEFAULT_OPSET, convert_to_onnx

        opset = args.opset or DEFAULT_OPSET
        convert_to_onnx(args.src, args.dst, opset=opset)
        print(f"wrote {args.dst}: ONNX opset {opset}, input chips uint8 (N,150,150,3) RGB, "
              "output descriptors float32 (N,128)")
        return 0
    refuse(args, ("opset",), "only applies to --to onnx")
    if args.to == "bn":
        report = convert_affine_to_bn(args.src, args.dst, calibration=args.calibrate, holdout=args.holdout,
                                      threads=args.threads, progress=True)
    else:
        refuse(args, ("calibrate", "holdout", "threads"), "only apply to --to bn")
        report = convert_bn_to_affine(args.src, args.dst)
    print(report.summary())
    if args.report:
        _atomic.write_text(args.report, json.dumps(report.to_dict(), indent=1))
    return 0


def _cmd_bench_lfw(args: argparse.Namespace) -> int:
    from .bench import bench_lfw

    settings = configured(AlignmentSettings, args)
    try:
        bench_lfw(args.lfw_dir, args.pairs, models=_models(args.model), num_jitters=args.num_jitters, flip=args.flip,
                  out=args.out, strict=args.strict, cache_dir=args.cache_dir, settings=settings, workers=args.workers,
                  threads=args.threads, embedder=configured(EmbedderSettings, args))
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    print((Path(args.out) / "report.md").read_text())
    print(f"wrote {args.out}/report.json, report.md, roc.png")
    return 0


class _Rows:
    """A csv writer that counts its rows and flushes its file on demand."""

    def __init__(self, file):
        import csv

        self.file, self.rows = file, 0
        self._writer = csv.writer(file, lineterminator="\n")

    def header(self, names: list[str]) -> None:
        self._writer.writerow(names)

    def writerow(self, row: list) -> None:
        self._writer.writerow(row)
        self.rows += 1

    def flush(self) -> None:
        self.file.flush()


def _streamed_csv(target: str | None):
    """A context manager giving _Rows on stdout, or on FILE.part (flushed by the caller as rows come)
    that is renamed to FILE at the end, and on Ctrl-C with the rows written so far (the interrupt's
    message says how many). On another error FILE.part is kept, and the error's message names it."""
    import contextlib

    @contextlib.contextmanager
    def output():
        if target is None:
            yield _Rows(sys.stdout)
            sys.stdout.flush()
            return
        final = Path(target)
        part = final.with_name(final.name + ".part")
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "w", newline="") as f:
            rows = _Rows(f)
            try:
                yield rows
            except KeyboardInterrupt as exc:
                f.flush()
                os.replace(part, final)
                exc.add_note(f"kept the {rows.rows} rows written so far in {final}")
                raise
            except BaseException as exc:
                exc.add_note(f"the {rows.rows} rows written before it are in {part}")
                raise
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, final)

    return output()


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
    from .gallery import Gallery

    alignment = given(args, AlignmentSettings)
    config = given(args, GalleryConfig)
    configured(AlignmentSettings.for_photos, args, AlignmentSettings)  # a value refused: exit 2
    gallery_config = configured(GalleryConfig, args)
    if Path(args.gallery).exists():
        gallery = _load_gallery(args)
        changed = sorted(k for k, v in alignment.items() if v != getattr(gallery.settings, k))
        if changed:
            raise UsageError(f"{args.gallery} was made with other alignment settings ({', '.join(changed)}); its "
                             "descriptors cannot be mixed with new ones: enrol into a new gallery")
        changed = sorted(k for k, v in config.items() if v != getattr(gallery.config, k))
        if changed:
            raise UsageError(f"{args.gallery} was made with other gallery settings ({', '.join(changed)}): "
                             "enrol into a new gallery")
        gallery.root = str(Path(args.root))
        gallery.sync()
    else:
        gallery = Gallery.build(args.root, model=args.model, config=gallery_config, threads=args.threads,
                                embedder=configured(EmbedderSettings, args), **alignment)
    report = gallery.last_sync
    assert report is not None
    gallery.save(args.gallery)
    print(report.summary())
    unreadable: set[str] = set()
    for source, reason in sorted(report.skipped.items()):
        if reason.startswith("unreadable: "):  # listed as every verb lists an unreadable input
            unreadable.add(source)
            print(f"{source}: ERROR {reason.removeprefix('unreadable: ')}", file=sys.stderr)
        else:
            print(f"  skipped {source}: {reason}")
    print(gallery.summary())
    print(f"wrote {args.gallery}")
    return exit_code(len(unreadable), len((set(report.added) | set(report.changed)) - unreadable) + report.unchanged)


def _load_gallery(args: argparse.Namespace):
    """Gallery.load(args.gallery, ...); a file whose metadata the library cannot use is a GalleryError
    naming the file."""
    from .errors import GalleryError, ModelFormatError
    from .gallery import Gallery

    try:
        return Gallery.load(args.gallery, model=args.model, threads=args.threads,
                            embedder=configured(EmbedderSettings, args))
    except (GalleryError, ModelFormatError, OSError, ImportError):
        raise
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        if str(args.gallery) in str(exc):
            raise
        raise GalleryError(f"{args.gallery}: not a usable gallery ({type(exc).__name__}: {exc})") from exc


def _expand_inputs(inputs: list[str], exclude: Sequence[str] = ()) -> list[str]:
    """Photos and videos as given, folders replaced by the photos and videos under them (`exclude`:
    the command's outputs, never read); camera indices (0, 1, ...) kept."""
    from .datasets import IMAGE_SUFFIXES, list_files
    from .photos import VIDEO_SUFFIXES

    expanded: list[str] = []
    for item in inputs:
        if item.isdigit() and not Path(item).exists():
            expanded.append(item)
        else:
            try:
                expanded += list_files([item], IMAGE_SUFFIXES + VIDEO_SUFFIXES, exclude)
            except FileNotFoundError:
                expanded.append(item)  # reported as unreadable by identify, with the others done
    return expanded


def _cmd_identify(args: argparse.Namespace) -> int:
    gallery = _load_gallery(args)
    inputs = _expand_inputs(args.inputs, [args.csv] if args.csv else [])
    if not inputs:
        raise _no_inputs(args.inputs, "photos or videos")
    failed = faces = done = 0
    with _streamed_csv(args.csv) as out:
        out.header(["path", "frame", "face", "left", "top", "right", "bottom", "identity", "distance", "confidence",
                    "quality"])
        for result in gallery.identify_many(inputs, threshold=args.threshold, k=args.k, classifier=args.classifier,
                                            every=args.every, progress=True, max_frames=args.max_frames):
            frame = "" if result.frame is None else result.frame
            if result.error:
                failed += 1
                _listed(f"{result.source}: ERROR {result.error}")
            else:
                done += 1
                if not result.matches and result.frame is None:
                    out.writerow([result.source, frame, "", "", "", "", "", "no_faces_found", "", "", ""])
            for m in result.matches:
                faces += 1
                out.writerow([m.source, frame, m.face, *m.box, m.identity, f"{m.distance:.4f}", f"{m.confidence:.4f}",
                               "" if np.isnan(m.quality) else f"{m.quality:.3f}"])
            out.flush()  # rows as they are found: a camera or a long video loses nothing on Ctrl-C
    print(f"{len(inputs)} inputs, {faces} faces, {failed} unreadable; "
          f"threshold {args.threshold or gallery.threshold:.3f}"
          + (f"; wrote {args.csv}" if args.csv else ""), file=sys.stderr)
    return exit_code(failed, done)


def _cmd_search(args: argparse.Namespace) -> int:
    from .errors import NoFaceFoundError

    gallery = _load_gallery(args)
    if args.index:
        from .index import DescriptorIndex

        gallery.use_search_index(DescriptorIndex.load(args.index))
    try:
        hits = gallery.search(args.query, k=args.k, max_distance=args.max_distance)
    except NoFaceFoundError as exc:  # failed: the one input gave nothing to search for
        print(f"pyfacedlib search: {args.query}: no_faces_found ({exc})", file=sys.stderr)
        return EXIT_FAILED
    with _csv_output(args.csv) as out:
        out.writerow(["rank", "path", "face", "left", "top", "right", "bottom", "identity", "distance"])
        for rank, hit in enumerate(hits, 1):
            out.writerow([rank, hit.source, hit.face, *hit.box, hit.identity, f"{hit.distance:.4f}"])
    return 0


def _face_table(files: dict[str, str | None], args: argparse.Namespace, previous: Path | None, progress: str):
    """The face table of `files` (path -> person or None), re-using the rows of the table at
    `previous` when it was made with the same model and alignment settings."""
    from .embedder import FaceEmbedder
    from .facetable import embed_files

    settings = configured(AlignmentSettings.for_photos, args, AlignmentSettings)
    embedder = FaceEmbedder(model=args.model, threads=args.threads, **configured(EmbedderSettings, args).kwargs())
    table, changes = embed_files(files, embedder, settings, previous=previous, progress=progress,
                                 warn=lambda message: print(message, file=sys.stderr))
    print(changes.summary(), file=sys.stderr)
    return table


def _table_summary(table) -> str:
    photos = len(set(table.source_path))
    unreadable = {s for s, e in zip(table.source_path, table.error) if e}
    faceless = {s for s, f in zip(table.source_path, table.face) if f < 0} - unreadable
    return (f"{photos} photos, {int(table.has_face.sum())} faces, {len(faceless)} photos without a face, "
            f"{len(unreadable)} unreadable")


def _unreadable(table) -> list[str]:
    """Lists (on stderr) the table's unreadable photos with their errors; returns them."""
    errors = {s: e for s, e in zip(table.source_path, table.error) if e}
    for source in sorted(errors):
        print(f"{source}: ERROR {errors[source]}", file=sys.stderr)
    return sorted(errors)


def _cmd_cluster(args: argparse.Namespace) -> int:
    from .clustering import auto_threshold, cluster, link_cluster_folders
    from .datasets import labelled_files

    out = Path(args.out_dir)
    settings = configured(ClusterSettings, args)
    if Path(args.input_dir).is_dir() and out.exists() and out.resolve() == Path(args.input_dir).resolve():
        raise UsageError(f"OUT_DIR {out} is INPUT_DIR itself: give a folder of its own (inside INPUT_DIR is fine, "
                         "it is never read as input)")
    files = labelled_files(args.input_dir, labelled=False, exclude=[out])
    if not files:
        raise _no_inputs([args.input_dir])
    table = _face_table(files, args, out / "faces.parquet", "faces")
    table.write_parquet(out / "faces.parquet")
    rows = np.flatnonzero(table.has_face)
    threshold = settings.threshold if settings.threshold is not None else auto_threshold(len(rows))
    chosen = "" if settings.threshold is not None else f", chosen for {len(rows)} faces"
    labels = cluster(table.embedding[rows], threshold=threshold, method=settings.method, min_size=settings.min_size)
    with _csv_output(str(out / "clusters.csv")) as writer:
        writer.writerow(["path", "face", "cluster"])
        for row, label in zip(rows, labels):
            writer.writerow([table.source_path[row], int(table.face[row]), int(label)])
    clusters = link_cluster_folders(out, [table.source_path[row] for row in rows], labels)
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, int)
    print(_table_summary(table))
    print(f"{clusters} clusters ({settings.method}, threshold {threshold}{chosen}), {int((labels < 0).sum())} faces "
          f"in no cluster (-1); largest: {', '.join(str(n) for n in sorted(sizes, reverse=True)[:10])}")
    print(f"wrote {out / 'clusters.csv'}, {out / 'faces.parquet'} and one folder of links per cluster")
    unreadable = _unreadable(table)
    return exit_code(len(unreadable), len(set(table.source_path)) - len(unreadable))


LABELS_OWNER = ".pyfacedlib-labels.json"  # beside labels.npy: the export FILE.npy they belong to


def _npy_label_files(out: Path) -> tuple[list[Path], str | None]:
    """The facenet label files beside `out` that exist, and the FILE.npy whose export wrote them
    (None when no export recorded it)."""
    present = [out.parent / name for name in ("labels.npy", "label_strings.npy") if (out.parent / name).exists()]
    try:
        owner = json.loads((out.parent / LABELS_OWNER).read_text()).get("embeddings")
    except (OSError, ValueError, AttributeError):
        owner = None
    return present, owner


def _cmd_export(args: argparse.Namespace) -> int:
    from .datasets import labelled_inputs

    out = Path(args.out)
    if out.suffix not in (".parquet", ".npy"):
        raise UsageError(f"--out must end in .parquet or .npy, got {out}")
    files = labelled_inputs(args.inputs, labelled=False, exclude=[out])
    if not files:
        raise _no_inputs(args.inputs)
    labels, owner = _npy_label_files(out) if out.suffix == ".npy" else ([], None)
    if labels and owner != out.name and any(files.values()):
        raise UsageError(f"{', '.join(map(str, labels))} exist beside {out} and were not written by an export of "
                         f"{out.name} ({out.parent / LABELS_OWNER} says {owner or 'nothing'}): an export would "
                         "overwrite them; move them or export into another folder")
    table = _face_table(files, args, out if out.suffix == ".parquet" else None, "exporting")
    if out.suffix == ".parquet":
        table.write_parquet(out)
        written = [out]
    else:
        written = table.write_npy(out)
        if len(written) > 1:
            _atomic.write_text(out.parent / LABELS_OWNER, json.dumps({"embeddings": out.name}))
        elif labels and owner == out.name:  # this export's old labels, now without identities: stale
            for path in [*labels, out.parent / LABELS_OWNER]:
                path.unlink()
            print(f"removed {', '.join(map(str, labels))}: written by an earlier export of {out.name}, "
                  "whose photos now have no identities", file=sys.stderr)
    print(_table_summary(table))
    print("wrote " + ", ".join(str(p) for p in written))
    unreadable = _unreadable(table)
    return exit_code(len(unreadable), len(set(table.source_path)) - len(unreadable))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .bench import evaluate_folders

    report = evaluate_folders(args.root, model=_models(args.model), out=args.out, threads=args.threads,
                              settings=configured(AlignmentSettings, args), embedder=configured(EmbedderSettings, args))
    print((Path(args.out) / "report.md").read_text())
    print(f"wrote {args.out}/report.json, report.md, roc.png")
    unreadable = {s: why for s, why in report["skipped_images"].items() if why != "no face detected"}
    for source in sorted(unreadable):
        print(f"{source}: ERROR {unreadable[source]}", file=sys.stderr)
    return exit_code(len(unreadable), report["images"] - len(unreadable))


def _cmd_finetune(args: argparse.Namespace) -> int:
    from ._finetune import FinetuneConfig, finetune

    config = configured(FinetuneConfig, args)
    try:
        result = finetune(args.train_dir, args.out_dir, base_model=args.base_model, val=args.val_dir, config=config)
    except KeyboardInterrupt as exc:
        exc.add_note(f"the checkpoints in {args.out_dir} are kept: the same command continues from the last one")
        raise
    print(f"trained {result.strategy}/{config.bn}/{result.loss} for {result.steps} steps ({result.device}) in "
          f"{result.minutes:.1f} min on {result.train_faces} faces of {result.train_identities} identities "
          f"(resumed from step {result.resumed_from_step})")
    if result.best_validation:
        v = result.best_validation
        print(f"best validation (step {result.best_step}, {result.validation_identities} held-out identities): "
              f"accuracy {100 * v['accuracy']:.2f}%, VAL@FAR=1e-3 {100 * v['val_at_far_1e_3']:.2f}%, "
              f"loss {v['loss']:.4f}")
    if result.skipped_identities or result.skipped_images:
        print(f"skipped: {len(result.skipped_identities)} identities, {len(result.skipped_images)} images "
              f"(listed in {result.history_path})")
    if result.threshold is not None:
        scaled = (f" (descriptors scaled x{result.descriptor_scale:.3f} so that it is dlib's 0.6)"
                  if result.descriptor_scale != 1 else "")
        print(f"most accurate threshold on the validation pairs: {result.threshold:.3f}{scaled}")
    print(f"model: {result.affine_model}\nbn net: {result.bn_model}\nhistory: {result.history_path}")
    return 0


# ---------------------------------------------------------------------------------------------
# The parser


def _gallery_arguments(parser: argparse.ArgumentParser) -> None:
    """The gallery file and how to run its model, for the commands that read a gallery."""
    parser.add_argument("gallery", help="a gallery (enrol), an export or an archive (.parquet)")
    parser.add_argument("--model", help="the gallery's model file, when it has moved")
    parser.add_argument("--threads", type=int, default=None, help="embedding threads (default: the CPUs)")


MODEL_HELP = "affine .dat model (default: the shipped dlib model)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `pyfacedlib` command."""
    from ._finetune import FinetuneConfig
    from .gallery import Gallery

    parser = argparse.ArgumentParser(prog="pyfacedlib", description="Fine-tunable dlib face recognition.",
                                     epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="on an error, print its traceback too")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="build information and model files")
    info.set_defaults(run=_cmd_info)

    embed = sub.add_parser("embed", help="detect, align and embed the faces in images")
    embed.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    embed.add_argument("--out", help="write descriptors to FILE.npy (N,128), FILE.json (with boxes, landmarks), or "
                                     "OUT.parquet: a folder of Parquet parts, one row per face (archives; resumable)")
    embed.add_argument("--model", help=MODEL_HELP)
    embed.add_argument("--quiet", action="store_true", help="do not print descriptors")
    _photo_alignment(embed)
    embedding = embed.add_argument_group("embedding (FILE.npy, FILE.json or printed)")
    embedding.add_argument("--threads", type=int, default=None, help="detection and embedding threads "
                                                                     "(default: the CPUs)")
    embedding.add_argument("--device", choices=DEVICES, default=None,
                           help="cpu, cuda (a CUDA build and a GPU) or auto: the GPU when there is one (default)")
    embedding.add_argument("--num-jitters", type=int, default=0, help="> 1: the mean descriptor of that many "
                                                                      "jittered copies (dlib's num_jitters)")
    embedding.add_argument("--seed", type=int, default=0, help="seed of the jitters")
    # --backend, --onnx-providers (EmbedderSettings; they also reach ArchiveConfig for OUT.parquet)
    add_config_options(embed, EmbedderSettings, title="forward pass (every output)")
    add_config_options(embed, ArchiveConfig, title="archives (--out OUT.parquet)",
                       aliases={"images_per_part": ["--part-size"]})
    embed.set_defaults(run=_cmd_embed)

    convert = sub.add_parser("convert", help="affine testing net <-> bn_con training net, or either to ONNX")
    convert.add_argument("--to", choices=["bn", "affine", "onnx"], required=True,
                         help="bn: the trainable net; affine: what dlib loads; onnx: a graph for onnxruntime/TensorRT "
                              "(pip install 'pyfacedlib[onnx]')")
    convert.add_argument("src")
    convert.add_argument("dst")
    convert.add_argument("--calibrate", metavar="DIR", help="images (identity folders) to calibrate batch norm on")
    convert.add_argument("--holdout", metavar="DIR", help="other images to measure the batch-mode drift on")
    convert.add_argument("--threads", type=int, default=None)
    convert.add_argument("--report", metavar="FILE.json", help="write the full report as JSON")
    convert.add_argument("--opset", type=int, default=None, help="--to onnx: the ONNX opset, 13 to 21 (default: 17)")
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
    add_config_options(bench, AlignmentSettings, title="finding faces")
    bench.add_argument("--out", default="lfw-bench")
    bench.add_argument("--cache-dir", help="aligned-chip cache (default: ~/.cache/pyfacedlib/chips)")
    bench.add_argument("--workers", type=int, default=None, help="alignment processes (default: CPUs)")
    bench.add_argument("--threads", type=int, default=None, help="embedding threads (default: CPUs)")
    add_config_options(bench, EmbedderSettings, title="embedding")
    bench.set_defaults(run=_cmd_bench_lfw)

    enrol = sub.add_parser("enrol", help="enrol known people (ROOT/Name/**/*.jpg or ROOT/Name.jpg) into a gallery "
                                         "file, or sync an existing one with ROOT")
    enrol.add_argument("root")
    enrol.add_argument("gallery", help="gallery file (.parquet); created, or synced when it exists")
    enrol.add_argument("--model", help=MODEL_HELP)
    enrol.add_argument("--threads", type=int, default=None)
    _photo_alignment(enrol)
    add_config_options(enrol, GalleryConfig, title="the gallery (a new one; an existing gallery keeps its own)")
    add_config_options(enrol, EmbedderSettings, title="embedding")
    enrol.set_defaults(run=_cmd_enrol)

    identify = sub.add_parser("identify", help="who is in these photos or videos: CSV path,frame,face,left,top,right,"
                                               "bottom,identity,distance,confidence")
    _gallery_arguments(identify)
    identify.add_argument("inputs", nargs="+", help="photos, folders, video files or camera indices (0, 1, ...)")
    identify.add_argument("--threshold", type=float, default=None, help="unknown above this distance "
                                                                        "(default: the gallery's calibrated one)")
    identify.add_argument("--k", type=int, default=default_of(Gallery.identify_many, "k"),
                          help="candidates considered per face (default: %(default)s)")
    identify.add_argument("--classifier", choices=CLASSIFIERS, default=None, help="default: the gallery's")
    identify.add_argument("--every", type=int, default=default_of(Gallery.identify_many, "every"),
                          help="videos: every Nth frame (default: %(default)s)")
    identify.add_argument("--max-frames", type=int, default=None, help="videos and cameras: stop after N frames")
    identify.add_argument("--csv", help="write the CSV to FILE instead of standard output: rows go to FILE.part as "
                                        "they are found, renamed to FILE at the end or on Ctrl-C")
    add_config_options(identify, EmbedderSettings, title="embedding")
    identify.set_defaults(run=_cmd_identify)

    search = sub.add_parser("search", help="the gallery's faces nearest to the face in QUERY: CSV rank,path,face,"
                                           "left,top,right,bottom,identity,distance")
    _gallery_arguments(search)
    search.add_argument("query", help="a photo (its largest face is searched for)")
    search.add_argument("--k", type=int, default=default_of(Gallery.search, "k"),
                        help="faces listed (default: %(default)s)")
    search.add_argument("--max-distance", type=float, default=None)
    search.add_argument("--csv", help="write the CSV to FILE instead of standard output")
    search.add_argument("--index", help="a saved index of the gallery's faces (pyfacedlib index)")
    add_config_options(search, EmbedderSettings, title="embedding")
    search.set_defaults(run=_cmd_search)

    index = sub.add_parser("index", help="a search index over a face table (an archive made by embed --out "
                                         "OUT.parquet, an export, a gallery), used by search --index")
    index.add_argument("table")
    index.add_argument("index", help="index file to write (.npz)")
    index.add_argument("--kind", choices=KINDS, default="auto")
    add_config_options(index, IndexSettings, title="approximate indexes")
    index.set_defaults(run=_cmd_index)

    clus = sub.add_parser("cluster", help="group the faces of a folder of photos by person: OUT_DIR/clusters.csv "
                                          "(path,face,cluster; -1 = in no cluster) and a folder of links per cluster")
    clus.add_argument("input_dir")
    clus.add_argument("out_dir")
    clus.add_argument("--model", help=MODEL_HELP)
    clus.add_argument("--threads", type=int, default=None)
    add_config_options(clus, ClusterSettings, title="clustering")
    _photo_alignment(clus)
    add_config_options(clus, EmbedderSettings, title="embedding")
    clus.set_defaults(run=_cmd_cluster)

    export = sub.add_parser("export", help="every face's embedding: FILE.parquet (one row per face, with source, "
                                           "sha256, box, landmarks, identity) or FILE.npy (+ facenet's labels.npy, "
                                           "label_strings.npy for identity folders)")
    export.add_argument("inputs", nargs="+", help="photos or folders (identity folders: ROOT/Name/**/*.jpg)")
    export.add_argument("--out", required=True, help="FILE.parquet (re-running re-uses its rows) or FILE.npy "
                                                      "(labels.npy / label_strings.npy beside it are overwritten only "
                                                      "when an export of the same FILE.npy wrote them)")
    export.add_argument("--model", help=MODEL_HELP)
    export.add_argument("--threads", type=int, default=None)
    _photo_alignment(export)
    add_config_options(export, EmbedderSettings, title="embedding")
    export.set_defaults(run=_cmd_export)

    evaluate = sub.add_parser("evaluate", help="verification on your own identity folders (ROOT/Name/**/*.jpg), "
                                               "several models side by side: report.md/json, roc.png")
    evaluate.add_argument("root")
    evaluate.add_argument("--model", action="append", help="affine .dat (repeat for several; 'shipped' for dlib's)")
    evaluate.add_argument("--out", default="folder-eval")
    evaluate.add_argument("--threads", type=int, default=None)
    add_config_options(evaluate, AlignmentSettings, title="finding faces")
    add_config_options(evaluate, EmbedderSettings, title="embedding")
    evaluate.set_defaults(run=_cmd_evaluate)

    tune = sub.add_parser("finetune", help="fine-tune the face model on identity folders (TRAIN_DIR/Name/**/*.jpg)")
    tune.add_argument("train_dir")
    tune.add_argument("out_dir")
    tune.add_argument("--base-model", help="affine .dat to start from (default: the shipped model)")
    tune.add_argument("--val-dir", help="held-out identities (default: a fifth of TRAIN_DIR's identities)")
    add_config_options(tune, FinetuneConfig, title="training")
    tune.set_defaults(run=_cmd_finetune)
    for verb in sub.choices.values():
        verb.epilog, verb.formatter_class = EXIT_CODES, argparse.RawDescriptionHelpFormatter
        verb.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                          help="on an error, print its traceback too")
    return parser


def _one_line(exc: BaseException) -> str:
    """The message of `exc` on one line, with its notes; an ImportError says what installs the module."""
    message = str(exc) if not isinstance(exc, KeyError) else f"missing {exc}"
    if isinstance(exc, ImportError) and "pip install" not in message:
        module = (exc.name or "").split(".")[0]
        if module and module != "pyfacedlib":
            message += f" (pip install {PIP_NAMES.get(module, module)})"
    known = (ValueError, OSError, RuntimeError, ImportError)  # the library's errors, with messages for users
    if not isinstance(exc, known) or not message:
        message = f"{type(exc).__name__}: {message}".rstrip(": ") + " (--debug shows where)"
    parts = [*message.splitlines(), *getattr(exc, "__notes__", ())]
    return "; ".join(part.strip() for part in parts if part.strip())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `pyfacedlib` command; returns the exit code (EXIT_CODES)."""
    args = build_parser().parse_args(argv)
    # pyfacedlib's own limit (max_image_pixels) refuses a large image with its one-line error; Pillow's
    # warning about the same image would only add two lines of noise
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
    error: BaseException
    try:
        return args.run(args)
    except KeyboardInterrupt as exc:
        notes = ("; ".join(getattr(exc, "__notes__", ()))
                 or "the command did not finish; each output file is written whole or not at all")
        error, code, message = exc, EXIT_INTERRUPTED, f"interrupted: {notes}"
    except UsageError as exc:
        error, code, message = exc, EXIT_USAGE, _one_line(exc)
    except Exception as exc:  # noqa: BLE001 - any failure is one line (and --debug shows the traceback)
        error, code, message = exc, EXIT_FAILED, _one_line(exc)
    if args.debug:
        import traceback

        traceback.print_exception(error)
    print(f"pyfacedlib {args.command}: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

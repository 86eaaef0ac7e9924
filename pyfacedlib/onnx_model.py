"""The face net as an ONNX model: written from the weights pyfacedlib reads, cached, run in onnxruntime.

`convert_to_onnx(src, dst)` writes dlib's face-recognition ResNet (an affine testing-net `.dat`, the
shipped one or a fine-tuned export; a bn training net through its exact affine form) as an ONNX graph
built with the `onnx` package (no torch): input `chips` uint8 (N, 150, 150, 3) RGB — the chips
`FaceEmbedder.embed_chips` takes — with dlib's input normalisation inside the graph, output
`descriptors` float32 (N, 128), dynamic batch. The graph is the folded pass's op list (the same one
`FaceEmbedder(backend="folded")` runs): every affine layer folded into its convolution, every ReLU
fused, dlib's residual down-sampling (2x2 average pool on the skip path, zero-padding of the smaller
tensor in `add_prev`) written out op by op.

`OnnxSession` runs such a graph in onnxruntime on the execution providers asked for
(`FaceEmbedder(backend="onnx")` uses it; the graph of a `.dat` is exported into `onnx_cache_dir()`
on first use).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _atomic
from ._native import CHIP_SIZE, DESCRIPTOR_SIZE, core
from ._system import file_sha256
from .errors import DeviceError

__all__ = ["DEFAULT_OPSET", "OnnxSession", "available_providers", "cached_onnx", "convert_to_onnx",
           "onnx_cache_dir"]

DEFAULT_OPSET = 17
SUPPORTED_OPSETS = range(13, 22)   # onnxruntime 1.20 reads up to opset 21 (IR 10)
INPUT_NAME, OUTPUT_NAME = "chips", "descriptors"
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
ONNX_BATCH = 64  # chips per onnxruntime run (bounds the activations' memory)

_INSTALL_HINT = ("pip install 'pyfacedlib[onnx]' (CPU) or 'pyfacedlib[onnx-gpu]' (CUDA/TensorRT; onnxruntime and "
                 "onnxruntime-gpu install the same module: have one of them, not both)")


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"writing an ONNX model needs the onnx package: {_INSTALL_HINT}") from exc
    return onnx


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f"backend='onnx' needs onnxruntime: {_INSTALL_HINT}") from exc
    return onnxruntime


class _GraphWriter:
    """Appends ONNX nodes for the folded op list, tracking each tensor's (channels, height, width)."""

    def __init__(self, onnx: Any) -> None:
        self.onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.shapes: dict[str, tuple[int, int, int]] = {}
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def constant(self, stem: str, values: np.ndarray) -> str:
        name = self.name(stem)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(values), name))
        return name

    def node(self, op_type: str, inputs: Sequence[str], stem: str, shape: tuple[int, int, int] | None = None,
             output: str | None = None, **attributes: Any) -> str:
        out = output or self.name(stem)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], name=out, **attributes))
        if shape is not None:
            self.shapes[out] = shape
        return out

    def relu(self, x: str, wanted: bool) -> str:
        return self.node("Relu", [x], "relu", self.shapes[x]) if wanted else x

    @staticmethod
    def _window(op: dict) -> dict[str, Any]:
        (py, px), (sy, sx), (ky, kx) = op["padding"], op["stride"], op["window"]
        return {"kernel_shape": [ky, kx], "strides": [sy, sx], "pads": [py, px, py, px]}

    @staticmethod
    def _out_size(size: int, window: int, stride: int, pad: int) -> int:
        return 1 + (size + 2 * pad - window) // stride  # dlib's and ONNX's (floor) rule alike

    def windowed_shape(self, x: str, op: dict, channels: int) -> tuple[int, int, int]:
        _, h, w = self.shapes[x]
        (py, px), (sy, sx), (ky, kx) = op["padding"], op["stride"], op["window"]
        return channels, self._out_size(h, ky, sy, py), self._out_size(w, kx, sx, px)

    def conv(self, x: str, op: dict) -> str:
        weights = op["weights"].transpose(3, 2, 0, 1)  # (ky, kx, in, out) -> ONNX's (out, in, ky, kx)
        w = self.constant("conv_weights", weights.astype(np.float32))
        b = self.constant("conv_bias", op["bias"].astype(np.float32))
        y = self.node("Conv", [x, w, b], "conv", self.windowed_shape(x, op, op["out_channels"]), **self._window(op))
        return self.relu(y, op["relu"])

    def pool(self, x: str, op: dict, op_type: str) -> str:
        return self.node(op_type, [x], op_type.lower(), self.windowed_shape(x, op, self.shapes[x][0]),
                         **self._window(op))

    def scale_shift(self, x: str, op: dict) -> str:
        channels = len(op["weights"])
        scale = self.constant("scale", op["weights"].reshape(1, channels, 1, 1).astype(np.float32))
        shift = self.constant("shift", op["bias"].reshape(1, channels, 1, 1).astype(np.float32))
        y = self.node("Mul", [x, scale], "scaled", self.shapes[x])
        return self.relu(self.node("Add", [y, shift], "shifted", self.shapes[x]), op["relu"])

    def pad_to(self, x: str, shape: tuple[int, int, int]) -> str:
        """x zero-padded at the end of channels, rows and columns up to `shape` (dlib's add_prev)."""
        grow = [target - have for target, have in zip(shape, self.shapes[x], strict=True)]
        if not any(grow):
            return x
        pads = self.constant("pads", np.array([0, 0, 0, 0, 0, *grow], np.int64))
        return self.node("Pad", [x, pads], "padded", shape, mode="constant")

    def add(self, a: str, b: str, relu: bool) -> str:
        (ca, ha, wa), (cb, hb, wb) = self.shapes[a], self.shapes[b]
        shape = (max(ca, cb), max(ha, hb), max(wa, wb))
        y = self.node("Add", [self.pad_to(a, shape), self.pad_to(b, shape)], "sum", shape)
        return self.relu(y, relu)

    def fc(self, x: str, op: dict) -> str:
        if self.shapes[x][1:] != (1, 1):
            raise ValueError("an fc layer on a spatial tensor (not after global pooling) is not supported")
        flat = self.node("Flatten", [x], "flat", self.shapes[x], axis=1)
        w = self.constant("fc_weights", op["weights"].astype(np.float32))
        y = self.node("MatMul", [flat, w], "fc", (op["out_channels"], 1, 1))
        if np.any(op["bias"]):
            y = self.node("Add", [y, self.constant("fc_bias", op["bias"].astype(np.float32))], "fc_bias",
                          (op["out_channels"], 1, 1))
        return y


def _graph_nodes(writer: _GraphWriter, graph: dict) -> str:
    """Nodes from the uint8 NHWC input `chips` to the descriptors; returns the last tensor's name."""
    size = int(graph["input_size"])
    means = np.array(graph["input_means"], np.float32).reshape(1, 1, 1, 3)
    x = writer.node("Cast", [INPUT_NAME], "as_float", to=writer.onnx.TensorProto.FLOAT)
    x = writer.node("Sub", [x, writer.constant("input_means", means)], "centred")
    x = writer.node("Div", [x, writer.constant("input_scale", np.array(256.0, np.float32))], "normalised")
    x = writer.node("Transpose", [x], "nchw", (3, size, size), perm=[0, 3, 1, 2])
    tags: dict[int, str] = {}
    for op in graph["ops"]:
        kind = op["kind"]
        if kind == "conv":
            x = writer.conv(x, op)
        elif kind == "scale_shift":
            x = writer.scale_shift(x, op)
        elif kind == "relu":
            x = writer.relu(x, True)
        elif kind == "max_pool":
            x = writer.pool(x, op, "MaxPool")
        elif kind == "avg_pool":
            x = writer.pool(x, op, "AveragePool")
        elif kind == "tag":
            tags[op["tag"]] = x
        elif kind == "skip":
            x = tags[op["tag"]]
        elif kind == "add_tag":
            x = writer.add(x, tags[op["tag"]], op["relu"])
        elif kind == "global_avg":
            x = writer.node("GlobalAveragePool", [x], "global_avg", (writer.shapes[x][0], 1, 1))
        elif kind == "fc":
            x = writer.fc(x, op)
        else:  # pragma: no cover - the C++ side lists every kind it compiles
            raise ValueError(f"unknown op {kind!r} in the folded net")
    return x


def convert_to_onnx(src: str | os.PathLike, dst: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Writes the face net in `src` (an affine testing-net .dat, or a bn training net through its
    exact affine form) as an ONNX model at `dst`, atomically; returns dst.

    The graph: input "chips" uint8 (N, 150, 150, 3) RGB, output "descriptors" float32 (N, 128),
    N dynamic; dlib's normalisation ((pixel - mean) / 256) inside; checked by onnx.checker. Its
    metadata holds the source's sha256 and file name and pyfacedlib's version. opset: 13 to 21 (the
    IR version is the lowest that opset needs, so onnxruntime 1.20 and later read it). Raises
    ModelFormatError for a file that is not a face net, ImportError without the onnx package.
    """
    onnx = _import_onnx()
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(f"opset must be {SUPPORTED_OPSETS.start} to {SUPPORTED_OPSETS.stop - 1}, got {opset!r}")
    from . import __version__

    src = Path(src)
    graph = core.folded_net_graph(str(src))
    kind = core.net_kind(str(src))
    writer = _GraphWriter(onnx)
    last = _graph_nodes(writer, graph)
    size = int(graph["input_size"])
    writer.node("Identity", [last], "out", output=OUTPUT_NAME)
    inputs = [onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.UINT8, ["N", size, size, 3])]
    outputs = [onnx.helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, ["N", DESCRIPTOR_SIZE])]
    body = onnx.helper.make_graph(writer.nodes, "dlib_face_recognition_resnet", inputs, outputs,
                                  initializer=writer.initializers)
    opsets = [onnx.helper.make_opsetid("", opset)]
    model = onnx.helper.make_model(body, opset_imports=opsets, producer_name="pyfacedlib",
                                   producer_version=__version__,
                                   ir_version=onnx.helper.find_min_ir_version_for(opsets),
                                   doc_string=f"dlib face-recognition ResNet from {src.name} ({kind} net): uint8 "
                                              f"RGB chips (N,{size},{size},3) -> float32 descriptors "
                                              f"(N,{DESCRIPTOR_SIZE}), written by pyfacedlib {__version__}")
    onnx.helper.set_model_props(model, {"source_sha256": file_sha256(src), "source_file": src.name,
                                        "source_kind": kind, "pyfacedlib_version": __version__,
                                        "input_normalisation": "(pixel - input_means) / 256, RGB",
                                        "input_means": ",".join(f"{m:.6g}" for m in graph["input_means"])})
    onnx.checker.check_model(model, full_check=True)
    _atomic.write_bytes(dst, model.SerializeToString())
    return Path(dst)


def onnx_cache_dir() -> Path:
    """Where FaceEmbedder(backend="onnx") keeps the graphs it exports: $PYFACEDLIB_ONNX_CACHE, else
    $XDG_CACHE_HOME/pyfacedlib/onnx (~/.cache/pyfacedlib/onnx)."""
    if os.environ.get("PYFACEDLIB_ONNX_CACHE"):
        return Path(os.environ["PYFACEDLIB_ONNX_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyfacedlib" / "onnx"


def cached_onnx(model_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                refresh: bool = False) -> Path:
    """The ONNX graph of the face net in `model_path`, exported into the cache on first use (or
    again with refresh=True) and named by the model's sha256 and pyfacedlib's version (a changed .dat
    or a new exporter gets a new file). A cache folder that cannot be written is replaced by a
    temporary folder of this process (removed when it exits), with a RuntimeWarning naming it and
    PYFACEDLIB_ONNX_CACHE."""
    from . import __version__

    folder = Path(cache_dir) if cache_dir is not None else onnx_cache_dir()
    name = f"{file_sha256(model_path)[:32]}-pyfacedlib{__version__}-opset{DEFAULT_OPSET}.onnx"
    target = folder / name
    if target.exists() and not refresh:
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return convert_to_onnx(model_path, target)
    except OSError as exc:
        fallback = Path(tempfile.mkdtemp(prefix="pyfacedlib-onnx-")) / name
        atexit.register(shutil.rmtree, fallback.parent, ignore_errors=True)  # sessions hold the graph in memory
        warnings.warn(f"the ONNX cache {folder} cannot be written ({exc}); exporting to {fallback.parent} for this "
                      "process (set PYFACEDLIB_ONNX_CACHE to a writable folder)", RuntimeWarning, stacklevel=2)
        return convert_to_onnx(model_path, fallback)


def available_providers() -> list[str]:
    """onnxruntime's execution providers on this installation ([] without onnxruntime)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


class OnnxSession:
    """An exported face-net graph in an onnxruntime session: (N,150,150,3) uint8 -> (N,128) float32.

    providers: onnxruntime execution providers in order of preference (names, or (name, options)
    pairs); None = CUDA when onnxruntime has it, else the CPU. A provider asked for that this
    onnxruntime lacks raises DeviceError naming what it has. threads: the CPU provider's threads.
    """

    def __init__(self, path: str | os.PathLike, providers: Sequence[str | tuple[str, dict]] | None = None,
                 threads: int | None = None) -> None:
        ort = _import_onnxruntime()
        have = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider",) if p in have] + ["CPUExecutionProvider"]
        wanted = [p if isinstance(p, str) else p[0] for p in providers]
        missing = [p for p in wanted if p not in have]
        if missing:
            raise DeviceError(f"onnxruntime has no {', '.join(missing)} here (it has: {', '.join(have)}); "
                              f"{_INSTALL_HINT}")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        active = self.session.get_providers()
        if wanted and wanted[0] not in active:
            raise DeviceError(f"onnxruntime could not start {wanted[0]} (running on: {', '.join(active)})")

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, in priority order."""
        return list(self.session.get_providers())

    @property
    def device(self) -> str:
        """"cuda" when a GPU provider leads, else "cpu"."""
        return "cuda" if self.providers[0] in GPU_PROVIDERS else "cpu"

    def run(self, chips: np.ndarray, batch: int = ONNX_BATCH) -> np.ndarray:
        """Descriptors of (N,150,150,3) uint8 chips, `batch` chips per onnxruntime run."""
        if chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or chips.dtype != np.uint8:
            raise ValueError(f"chips must be uint8 (N,{CHIP_SIZE},{CHIP_SIZE},3), got {chips.dtype} {chips.shape}")
        out = np.empty((len(chips), DESCRIPTOR_SIZE), np.float32)
        for start in range(0, len(chips), batch):
            part = np.ascontiguousarray(chips[start:start + batch])
            out[start:start + len(part)] = self.session.run([OUTPUT_NAME], {INPUT_NAME: part})[0]
        return out

"""
pyfacedlib's C++ core over dlib's DNN module (use the pyfacedlib package, not this module).
"""
from __future__ import annotations
import numpy
import numpy.typing
import typing
__all__: list[str] = ['BnCalibrator', 'CHIP_SIZE', 'CnnFaceDetector', 'DESCRIPTOR_SIZE', 'FaceEmbedderCore', 'FaceTrainer', 'HogFaceDetector', 'LEVEL_TOP_LAYER', 'LandmarkPredictor', 'MarginLoss', 'NUM_LEVELS', 'affine_to_bn', 'bn_net_descriptors', 'bn_to_affine', 'build_info', 'chinese_whispers', 'cosine_layer', 'cuda_runtime', 'extract_face_chip', 'folded_net_graph', 'hog_scan_threads', 'identity_batches', 'interpolated_net', 'metric_loss', 'net_kind', 'scaled_descriptor_net', 'set_hog_scan_thread_budget', 'set_training_conv_kernel', 'sgemm_gflops', 'training_conv_kernel']
class FaceEmbedderCore:
    """
    dlib's face-recognition ResNet (affine testing net) run on batches of chips.
    """
    @staticmethod
    def jitter_chips(chips: numpy.ndarray, num_jitters: typing.SupportsInt | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex = 0) -> numpy.typing.NDArray[numpy.uint8]:
        """
        The jittered copies embed_chips averages: (N*num_jitters,150,150,3), face-major.
        """
    def __init__(self, model_path: str, threads: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        Loads an affine testing-net .dat; raises ModelFormatError when the file is not one.
        """
    def embed_chips(self, chips: numpy.ndarray, num_jitters: typing.SupportsInt | typing.SupportsIndex = 0, seed: typing.SupportsInt | typing.SupportsIndex = 0) -> numpy.typing.NDArray[numpy.float32]:
        """
        (N,150,150,3) uint8 chips -> (N,128) float32 descriptors. num_jitters > 1 averages that many jittered copies (dlib's jitter_image), drawn from a generator seeded with `seed`.
        """
    @property
    def backend(self) -> str:
        """
        'folded' (affine folded into convolutions, batched GEMMs, fused ReLU) or 'dlib' (dlib's own forward pass, the reference).
        """
    @backend.setter
    def backend(self, arg1: str) -> None:
        ...
    @property
    def conv_kernel(self) -> str:
        """
        The folded backend's convolutions: 'avx512' / 'avx2' (direct SIMD kernels, no im2col) or 'blas' (im2col + OpenBLAS GEMM); set 'auto' for the fastest this CPU supports. Raises ValueError for a name this CPU cannot run.
        """
    @conv_kernel.setter
    def conv_kernel(self, arg1: str) -> None:
        ...
    @property
    def folded_ops(self) -> str:
        """
        The folded net's operations, one per line.
        """
    @property
    def multiply_adds_per_face(self) -> float:
        """
        Multiply-adds of one forward pass (from the folded net's op list).
        """
    @property
    def threads(self) -> int:
        """
        Worker threads used for one batch.
        """
    @threads.setter
    def threads(self, arg1: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
class HogFaceDetector:
    """
    dlib's frontal face detector (HOG + linear SVM).
    """
    def __init__(self, kernel: str = 'auto') -> None:
        """
        kernel: 'auto' (AVX2 where the CPU has it), 'portable' or 'avx2'; the same boxes and scores from each.
        """
    def detect(self, image: numpy.ndarray, upsample: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        """
        (boxes (N,4) int64 [left, top, right, bottom], scores (N,)) as dlib's detector(image, upsample).
        """
    @property
    def kernel(self) -> str:
        """
        The HOG kernel this detector scans with.
        """
class CnnFaceDetector:
    """
    dlib's CNN (MMOD) face detector.
    """
    def __init__(self, model_path: str) -> None:
        ...
    def detect(self, image: numpy.ndarray, upsample: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        """
        (boxes (N,4) int64, confidences (N,)) as dlib.cnn_face_detection_model_v1(image, upsample).
        """
class LandmarkPredictor:
    """
    A dlib shape predictor (5- or 68-point landmarks).
    """
    def __init__(self, model_path: str) -> None:
        ...
    def align(self, image: numpy.ndarray, boxes: numpy.ndarray, size: typing.SupportsInt | typing.SupportsIndex = 150, padding: typing.SupportsFloat | typing.SupportsIndex = 0.25) -> tuple:
        """
        (landmarks (N,K,2) int64, chips (N,size,size,3) uint8) of every box (N,4) int64 [left, top, right, bottom] in one call: predict() then extract_face_chip() for each.
        """
    def predict(self, image: numpy.ndarray, left: typing.SupportsInt | typing.SupportsIndex, top: typing.SupportsInt | typing.SupportsIndex, right: typing.SupportsInt | typing.SupportsIndex, bottom: typing.SupportsInt | typing.SupportsIndex) -> numpy.typing.NDArray[numpy.int64]:
        """
        (K,2) int64 landmark x, y for the face in the box.
        """
    @property
    def num_parts(self) -> int:
        ...
class BnCalibrator:
    """
    Per-channel mean/variance of every BN layer's input, streamed.
    """
    def __init__(self, affine_path: str, threads: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def add(self, chips: numpy.ndarray) -> None:
        """
        Accumulates a (N,150,150,3) uint8 batch.
        """
    def statistics(self) -> list:
        """
        [(mean (K,), variance (K,), count)] per BN layer, by layer index.
        """
    @property
    def faces(self) -> int:
        ...
class MarginLoss:
    """
    Softmax margin loss over cosines (insightface's combined form with m1 = 1): the true class's logit is s*(cos(theta + angular_margin) - cosine_margin), the others s*cos(theta). ArcFace: angular_margin; CosFace: cosine_margin.
    """
    def __init__(self, scale: typing.SupportsFloat | typing.SupportsIndex, angular_margin: typing.SupportsFloat | typing.SupportsIndex = 0.0, cosine_margin: typing.SupportsFloat | typing.SupportsIndex = 0.0) -> None:
        ...
    def loss_and_gradient(self, cosines: numpy.ndarray, labels: typing.Any) -> tuple[float, numpy.typing.NDArray[numpy.float32]]:
        """
        (mean loss, d loss / d cosines) for (n, classes) float32 cosines and n labels.
        """
    @property
    def angular_margin(self) -> float:
        ...
    @property
    def cosine_margin(self) -> float:
        ...
    @property
    def scale(self) -> float:
        ...
class FaceTrainer:
    """
    One fine-tuning run of the face net (dlib's sgd; loss_metric, or margin_loss with a cosine class layer starting from class_centres; fast_path=False: dlib's con_ and dnn_trainer unchanged, the reference).
    """
    def __init__(self, base_path: str, train_bn_net: bool, chips: numpy.ndarray, labels: typing.Any, first_level: typing.SupportsInt | typing.SupportsIndex, learning_rate: typing.SupportsFloat | typing.SupportsIndex, identities_per_batch: typing.SupportsInt | typing.SupportsIndex, images_per_identity: typing.SupportsInt | typing.SupportsIndex, augment: bool, head_feature_copies: typing.SupportsInt | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex, threads: typing.SupportsInt | typing.SupportsIndex, fast_path: bool = True, stop_backprop: bool = True, margin_loss: MarginLoss | None = None, class_centres: typing.Any = None) -> None:
        ...
    def affine_bytes(self, descriptor_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0) -> bytes:
        """
        The current model as an affine .dat (what dlib.face_recognition_model_v1 loads), its descriptors multiplied by descriptor_scale (ValueError unless finite and > 0).
        """
    def bn_bytes(self, descriptor_scale: typing.SupportsFloat | typing.SupportsIndex = 1.0) -> bytes:
        """
        The current bn_con training net (.dat bytes), its descriptors multiplied by descriptor_scale; empty when the run trains the affine net.
        """
    def checkpoint(self) -> bytes:
        ...
    def class_centres(self) -> numpy.typing.NDArray[numpy.float32]:
        """
        A margin run's class layer as trained: (classes, 128) float32, one row per label (0 rows for loss_metric).
        """
    def embedder(self, threads: typing.SupportsInt | typing.SupportsIndex) -> FaceEmbedderCore:
        """
        A FaceEmbedderCore on the current model (affine testing net).
        """
    def parameters(self) -> dict:
        """
        {layer index: learnable parameters} of every computational layer (empty for affine layers).
        """
    def restore(self, arg0: bytes) -> None:
        ...
    def train(self, steps: typing.SupportsInt | typing.SupportsIndex) -> float:
        """
        Runs `steps` mini-batches; returns their mean loss.
        """
    def validation_loss(self, chips: numpy.ndarray, labels: typing.Any, batch_size: typing.SupportsInt | typing.SupportsIndex) -> float:
        """
        Mean loss_metric loss of the current model (inference mode) over consecutive mini-batches.
        """
    @property
    def backward_counts(self) -> list[int]:
        """
        The last train() call's backward work per fine-tuning level (NUM_LEVELS entries, 0 = stem .. NUM_LEVELS-1 = head): for the convolution levels, how many convolution backward passes computed a gradient (summed over replicas); for the head, how many backward passes ran through it. Empty where the convolutions do not count (fast_path=False, CUDA). from_level:K shows 0 below K.
        """
    @property
    def learning_rate(self) -> float:
        ...
    @learning_rate.setter
    def learning_rate(self, arg1: typing.SupportsFloat | typing.SupportsIndex) -> None:
        ...
    @property
    def step(self) -> int:
        ...
def affine_to_bn(affine_path: str, statistics: typing.Any = None) -> bytes:
    """
    Serialized (clean) bn_con training net from an affine file; exact without statistics, calibrated with.
    """
def bn_net_descriptors(bn_path: str, chips: numpy.ndarray, batch_size: typing.SupportsInt | typing.SupportsIndex = 25) -> numpy.typing.NDArray[numpy.float32]:
    """
    Descriptors of the bn net itself over consecutive batches of batch_size: batch_size 1 is dlib's inference mode (running statistics), > 1 training mode (each batch's own statistics).
    """
def bn_to_affine(bn_path: str) -> bytes:
    """
    Serialized affine testing net (loadable by dlib.face_recognition_model_v1).
    """
def build_info() -> dict:
    """
    What this build of the extension contains: dlib version, BLAS, CUDA, SIMD and compiler flags.
    """
def chinese_whispers(descriptors: numpy.ndarray, threshold: typing.SupportsFloat | typing.SupportsIndex) -> list[int]:
    """
    Cluster label per descriptor from dlib::chinese_whispers over edges closer than threshold.
    """
def cosine_layer(x: numpy.ndarray, centres: numpy.ndarray, gradient: numpy.ndarray) -> tuple[numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.float32]]:
    """
    The margin runs' class layer (cosine_fc_) on its own: (cosines (n, c), d/dx (n, d), d/dcentres (c, d)) for float32 x (n, d), centres (c, d) and a gradient (n, c) with respect to the cosines.
    """
def cuda_runtime() -> dict:
    """
    The CUDA runtime, driver and cuDNN versions and the GPUs found now (a CPU build: none, and why).
    """
def extract_face_chip(image: numpy.ndarray, landmarks: numpy.ndarray, size: typing.SupportsInt | typing.SupportsIndex = 150, padding: typing.SupportsFloat | typing.SupportsIndex = 0.25) -> numpy.typing.NDArray[numpy.uint8]:
    """
    The aligned face chip, pixel for pixel what dlib.get_face_chip returns.
    """
def folded_net_graph(path: str) -> dict:
    """
    The face net in `path` (either kind; a bn net through its exact affine form) as the folded pass runs it: {'input_size', 'input_means' (R, G, B), 'ops': [dict per op]}, each affine folded into its convolution, each ReLU marked on the op it follows.
    """
def hog_scan_threads(reset_peak: bool = False) -> dict:
    """
    HOG scan threads of the whole process: {'budget': the thread budget, 'in_use': threads scanning now, 'peak': most scanning at once since the last reset}; reset_peak=True starts a new peak after reading this one. Every HogFaceDetector.detect counts its caller's thread; a large image takes helpers (up to one per pyramid level or filter) only while fewer threads than the budget scan, and a helper gives its thread back when later callers overfill the budget.
    """
def identity_batches(labels: typing.Any, identities: typing.SupportsInt | typing.SupportsIndex, per_identity: typing.SupportsInt | typing.SupportsIndex, seed: typing.SupportsInt | typing.SupportsIndex = 0) -> list[list[int]]:
    """
    Disjoint evaluation mini-batches (lists of indices): `identities` identities x `per_identity` faces each, every face at most once (see cpp/sampler.h).
    """
def interpolated_net(base_path: str, tuned_path: str, alpha: typing.SupportsFloat | typing.SupportsIndex) -> bytes:
    """
    WiSE-FT: the affine net whose every parameter is (1 - alpha) x base's + alpha x tuned's, as .dat bytes.
    """
def metric_loss(path: str, chips: numpy.ndarray, labels: typing.Any) -> float:
    """
    loss_metric's loss of one mini-batch (a bn net runs in training mode).
    """
def net_kind(path: str) -> str:
    """
    'affine' or 'bn' for a face-net file; ModelFormatError for anything else.
    """
def scaled_descriptor_net(path: str, factor: typing.SupportsFloat | typing.SupportsIndex) -> bytes:
    """
    The face net in `path` (either kind) with every descriptor multiplied by `factor`, as .dat bytes.
    """
def set_hog_scan_thread_budget(threads: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    The most HOG scan threads running at once in this process (callers included; a caller always scans on its own thread); 0 = the CPUs this process may run on (the default). ValueError when < 0.
    """
def set_training_conv_kernel(name: str) -> None:
    """
    The convolution kernel of the training nets' forward pass and stride-1 data gradients, for the whole process: 'auto' (the fastest this CPU runs; the default), 'avx512', 'avx2' or 'blas' (im2col + GEMM, the path before the direct kernels). ValueError for a name this CPU cannot run.
    """
def sgemm_gflops(m: typing.SupportsInt | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex, k: typing.SupportsInt | typing.SupportsIndex, threads: typing.SupportsInt | typing.SupportsIndex, repeats: typing.SupportsInt | typing.SupportsIndex = 5) -> float:
    """
    float32 GEMM rate (GFLOP/s) of the linked BLAS at an m x n x k shape, best of `repeats`: the machine's reference peak for the speed benchmarks.
    """
def training_conv_kernel() -> str:
    """
    The training nets' convolution kernel in use.
    """
CHIP_SIZE: int = 150
DESCRIPTOR_SIZE: int = 128
LEVEL_TOP_LAYER: dict = {0: 127, 1: 103, 2: 68, 3: 41, 4: 14, 5: 3, 6: 1}
NUM_LEVELS: int = 7

// Bindings: descriptors from face chips.
#include "bindings.h"

#include "blas.h"
#include "conv_kernels.h"
#include "inference.h"

#include <cstring>
#include <stdexcept>

namespace pfd {

void bind_inference(py::module_& m) {
    py::class_<face_embedder>(m, "FaceEmbedderCore",
                              "dlib's face-recognition ResNet (affine testing net) run on batches of chips.",
                              py::module_local())
        .def(py::init<const std::string&, int>(), py::arg("model_path"), py::arg("threads"),
             "Loads an affine testing-net .dat; raises ModelFormatError when the file is not one.")
        .def("embed_chips",
             [](face_embedder& self, const py::array& chips, int num_jitters, std::uint64_t seed) {
                 auto batch = checked_chips(chips);
                 py::array_t<float> out({static_cast<py::ssize_t>(batch.size()), static_cast<py::ssize_t>(descriptor_size)});
                 float* dst = out.mutable_data();
                 {
                     py::gil_scoped_release release;
                     self.embed(batch, num_jitters, seed, dst);
                 }
                 return out;
             },
             py::arg("chips").noconvert(), py::arg("num_jitters") = 0, py::arg("seed") = 0,
             "(N,150,150,3) uint8 chips -> (N,128) float32 descriptors. num_jitters > 1 averages that many "
             "jittered copies (dlib's jitter_image), drawn from a generator seeded with `seed`.")
        .def_static("jitter_chips",
             [](const py::array& chips, int num_jitters, std::uint64_t seed) {
                 if (num_jitters < 1) throw py::value_error("num_jitters must be >= 1");
                 const auto crops = jittered_chips(checked_chips(chips), num_jitters, seed);
                 py::array_t<unsigned char> out({static_cast<py::ssize_t>(crops.size()), static_cast<py::ssize_t>(chip_size),
                                                 static_cast<py::ssize_t>(chip_size), static_cast<py::ssize_t>(3)});
                 for (size_t i = 0; i < crops.size(); ++i)
                     std::memcpy(out.mutable_data() + i * chip_size * chip_size * 3, &crops[i](0, 0), chip_size * chip_size * 3);
                 return out;
             },
             py::arg("chips").noconvert(), py::arg("num_jitters"), py::arg("seed") = 0,
             "The jittered copies embed_chips averages: (N*num_jitters,150,150,3), face-major.")
        .def_property("threads", &face_embedder::threads, &face_embedder::set_threads,
                      "Worker threads used for one batch.")
        .def_property("backend", &face_embedder::backend, &face_embedder::set_backend,
                      "'folded' (affine folded into convolutions, batched GEMMs, fused ReLU) or 'dlib' "
                      "(dlib's own forward pass, the reference).")
        .def_property("conv_kernel", &face_embedder::conv_kernel_name, &face_embedder::set_conv_kernel,
                      "The folded backend's convolutions: 'avx512' / 'avx2' (direct SIMD kernels, no im2col) or "
                      "'blas' (im2col + OpenBLAS GEMM); set 'auto' for the fastest this CPU supports. Raises "
                      "ValueError for a name this CPU cannot run.")
        .def_property_readonly("multiply_adds_per_face",
                               [](const face_embedder& self) { return self.folded() ? self.folded()->multiply_adds_per_face() : 0.0; },
                               "Multiply-adds of one forward pass (from the folded net's op list).")
        .def_property_readonly("folded_ops", [](const face_embedder& self) { return self.folded() ? self.folded()->describe() : std::string(); },
                               "The folded net's operations, one per line.");
    m.def("sgemm_gflops", &measure_sgemm_gflops, py::arg("m"), py::arg("n"), py::arg("k"), py::arg("threads"), py::arg("repeats") = 5,
          "float32 GEMM rate (GFLOP/s) of the linked BLAS at an m x n x k shape, best of `repeats`: the "
          "machine's reference peak for the speed benchmarks.", py::call_guard<py::gil_scoped_release>());
}

}  // namespace pfd

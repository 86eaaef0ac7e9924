// The _core module: build information, exception translation and the per-area bindings.
#include "bindings.h"

#include "blas.h"
#include "cuda_info.h"
#include "conv_kernels.h"
#include "hog_kernel.h"
#include "model_io.h"

#include <pybind11/stl.h>

namespace pfd {

void bind_build_info(py::module_& m) {
    m.def("build_info", [] {
        py::dict info;
        info["dlib_version"] = PFD_DLIB_VERSION;
#ifdef DLIB_USE_CUDA
        info["cuda"] = true;
#else
        info["cuda"] = false;
#endif
        info["cuda_detail"] = PFD_CUDA_REASON;
#ifdef DLIB_USE_BLAS
        info["blas"] = "OpenBLAS from scipy-openblas32 (" + blas_config() + ")";
        info["blas_core"] = blas_core_name();
        info["blas_threads"] = blas_threads();
#else
        info["blas"] = "none (dlib's built-in loops)";
#endif
        info["simd"] = PFD_SIMD;
        info["hog_kernel"] = hog_kernel_choice();
        py::list conv_kernels;
        for (const conv_kernel k : {conv_kernel::avx512, conv_kernel::avx2, conv_kernel::blas})
            if (conv_kernel_supported(k)) conv_kernels.append(conv_kernel_name(k));
        info["conv_kernels"] = conv_kernels;  // what this CPU runs, fastest first (the folded net's default)
        info["compiler"] = PFD_COMPILER;
        info["cxx_flags"] = PFD_CXX_FLAGS;
        return info;
    }, "What this build of the extension contains: dlib version, BLAS, CUDA, SIMD and compiler flags.");
    m.def("cuda_runtime", [] {
        const cuda_runtime_info cuda = query_cuda_runtime();
        py::dict info;
        info["built_with_cuda"] = cuda.built_with_cuda;
        info["runtime_version"] = cuda.runtime_version;
        info["driver_version"] = cuda.driver_version;
        info["cudnn_version"] = cuda.cudnn_version;
        info["device_error"] = cuda.device_error;
        py::list devices;
        for (const auto& d : cuda.devices) {
            py::dict device;
            device["index"] = d.index;
            device["name"] = d.name;
            device["compute_capability"] = std::to_string(d.compute_major) + "." + std::to_string(d.compute_minor);
            device["memory_bytes"] = d.memory_bytes;
            device["multiprocessors"] = d.multiprocessors;
            devices.append(device);
        }
        info["devices"] = devices;
        return info;
    }, "The CUDA runtime, driver and cuDNN versions and the GPUs found now (a CPU build: none, and why).");
}

}  // namespace pfd

PYBIND11_MODULE(PFD_MODULE_NAME, m) {
    m.doc() = "pyfacedlib's C++ core over dlib's DNN module (use the pyfacedlib package, not this module).";
    pybind11::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const pfd::model_format_error& e) {
            auto error_type = pybind11::module_::import("pyfacedlib.errors").attr("ModelFormatError");
            PyErr_SetString(error_type.ptr(), e.what());
        }
    });
    m.attr("CHIP_SIZE") = pfd::chip_size;              // aligned face chips are CHIP_SIZE x CHIP_SIZE x 3
    m.attr("DESCRIPTOR_SIZE") = pfd::descriptor_size;  // the face net's descriptors have this many floats
    pfd::bind_build_info(m);
    pfd::bind_inference(m);
    pfd::bind_alignment(m);
    pfd::bind_conversion(m);
    pfd::bind_clustering(m);
    pfd::bind_training(m);
}

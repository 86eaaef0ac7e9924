// The _core module: build information, exception translation and the per-area bindings.
#include "bindings.h"

#include "blas.h"
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
        info["compiler"] = PFD_COMPILER;
        info["cxx_flags"] = PFD_CXX_FLAGS;
        return info;
    }, "What this build of the extension contains: dlib version, BLAS, CUDA, SIMD and compiler flags.");
}

}  // namespace pfd

PYBIND11_MODULE(_core, m) {
    m.doc() = "pyfacedlib's C++ core over dlib's DNN module (use the pyfacedlib package, not this module).";
    pybind11::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const pfd::model_format_error& e) {
            auto error_type = pybind11::module_::import("pyfacedlib.errors").attr("ModelFormatError");
            PyErr_SetString(error_type.ptr(), e.what());
        }
    });
    pfd::bind_build_info(m);
    pfd::bind_inference(m);
    pfd::bind_alignment(m);
    pfd::bind_conversion(m);
    pfd::bind_clustering(m);
    pfd::bind_training(m);
}

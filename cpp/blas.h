// The BLAS library dlib was linked with (scipy-openblas32): its thread pool and identity.
#pragma once

#include <string>

namespace pfd {

void set_blas_threads(int threads);
int blas_threads();
std::string blas_config();     // build configuration string of the loaded OpenBLAS
std::string blas_core_name();  // CPU kernel OpenBLAS selected at run time (e.g. "SkylakeX", "Haswell")

}  // namespace pfd

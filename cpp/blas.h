// The BLAS library dlib was linked with (scipy-openblas32): its thread pool and identity.
#pragma once

#include <string>

namespace pfd {

void set_blas_threads(int threads);
int blas_threads();
std::string blas_config();     // build configuration string of the loaded OpenBLAS
std::string blas_core_name();  // CPU kernel OpenBLAS selected at run time (e.g. "SkylakeX", "Haswell")

// C[m x n] = A[m x k] * B[k x n] + beta * C, all row-major float32 (cblas_sgemm).
void sgemm_row_major(long m, long n, long k, const float* a, long lda, const float* b, long ldb, float* c, long ldc, float beta);

}  // namespace pfd

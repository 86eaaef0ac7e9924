// The BLAS library dlib was linked with (scipy-openblas32): its thread pool and identity.
#pragma once

#include <string>

namespace pfd {

void set_blas_threads(int threads);
int blas_threads();
std::string blas_config();     // build configuration string of the loaded OpenBLAS
std::string blas_core_name();  // CPU kernel OpenBLAS selected at run time (e.g. "SkylakeX", "Haswell")

// C[m x n] = op(A)[m x k] * op(B)[k x n] + beta * C, row-major float32 (cblas_sgemm); op = transpose when asked.
void sgemm(bool trans_a, bool trans_b, long m, long n, long k, const float* a, long lda, const float* b, long ldb, float* c,
           long ldc, float beta);
inline void sgemm_row_major(long m, long n, long k, const float* a, long lda, const float* b, long ldb, float* c, long ldc,
                            float beta) {
    sgemm(false, false, m, n, k, a, lda, b, ldb, c, ldc, beta);
}

// Measured single-call float32 GEMM rate (GFLOP/s) of the linked BLAS at an m x n x k shape, best
// of `repeats`, with `threads` BLAS threads: the reference peak the speed benchmarks report against.
double measure_sgemm_gflops(long m, long n, long k, int threads, int repeats);

}  // namespace pfd

#include "blas.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" {
void scipy_openblas_set_num_threads(int);
int scipy_openblas_get_num_threads(void);
char* scipy_openblas_get_config(void);
char* scipy_openblas_get_corename(void);
void scipy_cblas_sgemm(int order, int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a, int lda,
                       const float* b, int ldb, float beta, float* c, int ldc);
}

namespace pfd {

void set_blas_threads(int threads) { scipy_openblas_set_num_threads(threads < 1 ? 1 : threads); }
int blas_threads() { return scipy_openblas_get_num_threads(); }
std::string blas_config() { return scipy_openblas_get_config(); }
std::string blas_core_name() { return scipy_openblas_get_corename(); }

void sgemm(bool trans_a, bool trans_b, long m, long n, long k, const float* a, long lda, const float* b, long ldb, float* c,
           long ldc, float beta) {
    constexpr int row_major = 101, no_trans = 111, trans = 112;  // CblasRowMajor, CblasNoTrans, CblasTrans
    scipy_cblas_sgemm(row_major, trans_a ? trans : no_trans, trans_b ? trans : no_trans, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), 1.0f, a,
                      static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

double measure_sgemm_gflops(long m, long n, long k, int threads, int repeats) {
    constexpr long max_side = 16384;
    if (m < 1 || n < 1 || k < 1 || m > max_side || n > max_side || k > max_side || threads < 1 || repeats < 1)
        throw std::invalid_argument("sgemm sizes must be in 1.." + std::to_string(max_side) + ", threads and repeats >= 1");
    std::vector<float> a(m * k), b(k * n), c(m * n);
    for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>((i * 7919) % 1000) / 1000.0f - 0.5f;
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>((i * 104729) % 1000) / 1000.0f - 0.5f;
    const int previous = blas_threads();
    set_blas_threads(threads);
    double best = 0;
    for (int r = 0; r < repeats + 1; ++r) {  // the first call warms up
        const auto start = std::chrono::steady_clock::now();
        sgemm_row_major(m, n, k, a.data(), k, b.data(), n, c.data(), n, 0.0f);
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (r > 0) best = std::max(best, 2.0 * m * n * k / seconds / 1e9);
    }
    set_blas_threads(previous);
    return best;
}

}  // namespace pfd

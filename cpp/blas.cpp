#include "blas.h"

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

}  // namespace pfd

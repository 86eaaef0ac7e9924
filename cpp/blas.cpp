#include "blas.h"

extern "C" {
void scipy_openblas_set_num_threads(int);
int scipy_openblas_get_num_threads(void);
char* scipy_openblas_get_config(void);
char* scipy_openblas_get_corename(void);
}

namespace pfd {

void set_blas_threads(int threads) { scipy_openblas_set_num_threads(threads < 1 ? 1 : threads); }
int blas_threads() { return scipy_openblas_get_num_threads(); }
std::string blas_config() { return scipy_openblas_get_config(); }
std::string blas_core_name() { return scipy_openblas_get_corename(); }

}  // namespace pfd

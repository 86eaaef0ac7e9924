// The HOG scan compiled with -mavx2 (no FMA), as its own module: dlib's simd8f code paths are
// chosen by the compiler's flags, so they live in a separate shared object that _core loads only
// on CPUs with AVX2 (hog_kernel.cpp). Symbols are hidden and bound locally (CMakeLists.txt).
#define PFD_HOG_KERNEL_NAME "avx2"
#define PFD_HOG_KERNEL_TABLE pfd_hog_kernel_avx2
#define PFD_HOG_KERNEL_EXPORT __attribute__((visibility("default")))
#include "hog_kernel_impl.h"

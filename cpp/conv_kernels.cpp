#include "conv_kernels.h"

#include <stdexcept>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PFD_CONV_X86 1
#include <immintrin.h>
#endif

#ifdef PFD_CONV_X86

namespace pfd::avx512_kernels {
#define PFD_CONV_TARGET __attribute__((target("avx512f,fma")))
struct vec {
    using reg = __m512;
    static constexpr long lanes = 16;
    static constexpr int max_rows = 12;  // 24 accumulators of 32
    PFD_CONV_TARGET static reg load(const float* p) { return _mm512_loadu_ps(p); }
    PFD_CONV_TARGET static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
    PFD_CONV_TARGET static reg broadcast(const float* p) { return _mm512_set1_ps(*p); }
    PFD_CONV_TARGET static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
    PFD_CONV_TARGET static reg relu(reg v) { return _mm512_max_ps(v, _mm512_setzero_ps()); }
};
}  // namespace pfd::avx512_kernels
#define PFD_CONV_NS avx512_kernels
#include "conv_kernel_impl.h"
#undef PFD_CONV_NS
#undef PFD_CONV_TARGET

namespace pfd::avx2_kernels {
#define PFD_CONV_TARGET __attribute__((target("avx2,fma")))
struct vec {
    using reg = __m256;
    static constexpr long lanes = 8;
    static constexpr int max_rows = 3;  // 12 accumulators of 16 registers
    PFD_CONV_TARGET static reg load(const float* p) { return _mm256_loadu_ps(p); }
    PFD_CONV_TARGET static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
    PFD_CONV_TARGET static reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
    PFD_CONV_TARGET static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
    PFD_CONV_TARGET static reg relu(reg v) { return _mm256_max_ps(v, _mm256_setzero_ps()); }
};
}  // namespace pfd::avx2_kernels
#define PFD_CONV_NS avx2_kernels
#include "conv_kernel_impl.h"
#undef PFD_CONV_NS
#undef PFD_CONV_TARGET

namespace pfd::avx2_kernels {

// One 8x8 block: rows of src (src_stride apart) become columns of dst.
template <bool add>
__attribute__((target("avx2,fma"))) inline void transpose8(const float* src, long src_stride, float* dst, long dst_stride) {
    __m256 r[8], t[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * src_stride);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    // r[0..3]: columns 0, 1, 2, 3 of rows 0-3 (low half) and columns 4-7 (high half); r[4..7]: rows 4-7
    const int order[8] = {0, 1, 2, 3, 0, 1, 2, 3};
    for (int j = 0; j < 8; ++j) {
        const __m256 column = j < 4 ? _mm256_permute2f128_ps(r[order[j]], r[order[j] + 4], 0x20)
                                    : _mm256_permute2f128_ps(r[order[j]], r[order[j] + 4], 0x31);
        float* d = dst + j * dst_stride;
        _mm256_storeu_ps(d, add ? _mm256_add_ps(_mm256_loadu_ps(d), column) : column);
    }
}

template <bool add>
__attribute__((target("avx2,fma"))) void transpose(const float* src, long src_stride, float* dst, long dst_stride, long rows,
                                                   long cols) {
    const long rows8 = rows - rows % 8, cols8 = cols - cols % 8;
    for (long i = 0; i < rows8; i += 8)
        for (long j = 0; j < cols8; j += 8) transpose8<add>(src + i * src_stride + j, src_stride, dst + j * dst_stride + i, dst_stride);
    for (long i = 0; i < rows; ++i)  // the edges
        for (long j = i < rows8 ? cols8 : 0; j < cols; ++j) {
            float& d = dst[j * dst_stride + i];
            d = add ? d + src[i * src_stride + j] : src[i * src_stride + j];
        }
}

}  // namespace pfd::avx2_kernels

#endif  // PFD_CONV_X86

namespace pfd {

void transpose(const float* src, long src_stride, float* dst, long dst_stride, long rows, long cols, bool add) {
#ifdef PFD_CONV_X86
    static const bool avx2 = conv_kernel_supported(conv_kernel::avx2);
    if (avx2) {
        if (add) return avx2_kernels::transpose<true>(src, src_stride, dst, dst_stride, rows, cols);
        return avx2_kernels::transpose<false>(src, src_stride, dst, dst_stride, rows, cols);
    }
#endif
    for (long i = 0; i < rows; ++i)
        for (long j = 0; j < cols; ++j) {
            float& d = dst[j * dst_stride + i];
            d = add ? d + src[i * src_stride + j] : src[i * src_stride + j];
        }
}

std::string conv_kernel_name(conv_kernel kernel) {
    switch (kernel) {
        case conv_kernel::avx512: return "avx512";
        case conv_kernel::avx2: return "avx2";
        case conv_kernel::blas: break;
    }
    return "blas";
}

conv_kernel conv_kernel_from_name(const std::string& name) {
    if (name == "blas") return conv_kernel::blas;
    if (name == "avx2") return conv_kernel::avx2;
    if (name == "avx512") return conv_kernel::avx512;
    throw std::invalid_argument("conv_kernel must be 'auto', 'avx512', 'avx2' or 'blas', got '" + name + "'");
}

bool conv_kernel_supported(conv_kernel kernel) {
#ifdef PFD_CONV_X86
    __builtin_cpu_init();  // may run from a static initialiser, before libgcc's own
    switch (kernel) {
        case conv_kernel::avx512: return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
        case conv_kernel::avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case conv_kernel::blas: return true;
    }
    return false;
#else
    return kernel == conv_kernel::blas;
#endif
}

void require_conv_kernel(conv_kernel kernel) {
    if (conv_kernel_supported(kernel)) return;
#ifdef PFD_CONV_X86
    const std::string needs = kernel == conv_kernel::avx512 ? "AVX-512F and FMA" : "AVX2 and FMA";
#else
    const std::string needs = "an x86-64 processor and a GCC or Clang build";
#endif
    throw std::invalid_argument("the '" + conv_kernel_name(kernel) + "' convolution kernel needs " + needs +
                                ", which this CPU or build lacks; 'blas' runs everywhere");
}

conv_kernel best_conv_kernel() {
    for (const conv_kernel k : {conv_kernel::avx512, conv_kernel::avx2})
        if (conv_kernel_supported(k)) return k;
    return conv_kernel::blas;
}

std::vector<float> pack_conv_weights(const std::vector<float>& weights, long rows, long f) {
    if (f % conv_block != 0 || static_cast<long>(weights.size()) != rows * f)
        throw std::invalid_argument("pack_conv_weights: weights must be rows x f with f a multiple of 32");
    std::vector<float> packed(weights.size());
    for (long block = 0; block < f / conv_block; ++block)
        for (long r = 0; r < rows; ++r)
            for (long lane = 0; lane < conv_block; ++lane)
                packed[(block * rows + r) * conv_block + lane] = weights[r * f + block * conv_block + lane];
    return packed;
}

void direct_conv_run(conv_kernel kernel, const direct_conv_call& call, long in_offset, long in_step, long out_offset,
                     long out_step, long count) {
#ifdef PFD_CONV_X86
    if (kernel == conv_kernel::avx512) return avx512_kernels::run(call, in_offset, in_step, out_offset, out_step, count);
    if (kernel == conv_kernel::avx2) return avx2_kernels::run(call, in_offset, in_step, out_offset, out_step, count);
#endif
    (void)call, (void)in_offset, (void)in_step, (void)out_offset, (void)out_step, (void)count;
    throw std::logic_error("direct_conv_run: no direct kernel '" + conv_kernel_name(kernel) + "'");
}

void direct_conv_gather(conv_kernel kernel, const direct_conv_call& call, const long* in_offsets, const long* out_offsets,
                        long count) {
#ifdef PFD_CONV_X86
    if (kernel == conv_kernel::avx512) return avx512_kernels::gather(call, in_offsets, out_offsets, count);
    if (kernel == conv_kernel::avx2) return avx2_kernels::gather(call, in_offsets, out_offsets, count);
#endif
    (void)call, (void)in_offsets, (void)out_offsets, (void)count;
    throw std::logic_error("direct_conv_gather: no direct kernel '" + conv_kernel_name(kernel) + "'");
}

}  // namespace pfd

#include "fast_conv.h"

#include "blas.h"

#include <algorithm>
#include <cstring>

namespace pfd {

namespace {

constexpr long group_budget = 2 * 1024 * 1024;  // floats of im2col columns per GEMM (several samples)

// Output columns [begin, end) of one output row whose input column ox*stride - pad + kx lies inside [0, cols).
void valid_span(long out_cols, long cols, long stride, long pad, long kx, long& begin, long& end) {
    const long first = pad - kx;  // ox*stride >= first
    begin = first <= 0 ? 0 : (first + stride - 1) / stride;
    const long last = cols - 1 + pad - kx;  // ox*stride <= last
    end = last < 0 ? 0 : std::min(out_cols, last / stride + 1);
    begin = std::min(begin, end);
}

// cols (K x M), K = (channel, ky, kx), M = (sample in group, oy, ox): samples [first, first + count).
// With add=false it writes cols from input; with add=true it adds cols back into input (col2img).
template <bool add>
void im2col_rows(const conv_shape& s, long first, long count, const float* in_const, float* in_mut, float* cols) {
    const long oh = s.out_rows(), ow = s.out_cols(), plane = oh * ow, m = count * plane;
    for (long c = 0; c < s.channels; ++c)
        for (long ky = 0; ky < s.filter_rows; ++ky)
            for (long kx = 0; kx < s.filter_cols; ++kx) {
                long begin, end;
                valid_span(ow, s.cols, s.stride_x, s.pad_x, kx, begin, end);
                float* row = cols + ((c * s.filter_rows + ky) * s.filter_cols + kx) * m;
                for (long g = 0; g < count; ++g) {
                    const long offset = ((first + g) * s.channels + c) * s.rows * s.cols;
                    for (long oy = 0; oy < oh; ++oy) {
                        float* d = row + g * plane + oy * ow;
                        const long iy = oy * s.stride_y - s.pad_y + ky;
                        const bool inside = iy >= 0 && iy < s.rows;
                        if (!add) {
                            if (!inside) {
                                std::fill(d, d + ow, 0.0f);
                                continue;
                            }
                            std::fill(d, d + begin, 0.0f);
                            std::fill(d + end, d + ow, 0.0f);
                        }
                        if (!inside) continue;
                        const long base = offset + iy * s.cols - s.pad_x + kx;
                        if (add) {
                            float* dst = in_mut + base;
                            if (s.stride_x == 1)
                                for (long ox = begin; ox < end; ++ox) dst[ox] += d[ox];
                            else
                                for (long ox = begin; ox < end; ++ox) dst[ox * s.stride_x] += d[ox];
                        } else {
                            const float* src = in_const + base;
                            if (s.stride_x == 1)
                                std::memcpy(d + begin, src + begin, (end - begin) * sizeof(float));
                            else
                                for (long ox = begin; ox < end; ++ox) d[ox] = src[ox * s.stride_x];
                        }
                    }
                }
            }
}

// Sizes of one pass and its scratch: im2col columns (K x group*plane) and a (F x group*plane) matrix.
struct conv_work {
    long k, plane, group;
    float* cols;
    float* matrix;

    conv_work(const conv_shape& s, std::vector<float>& scratch)
        : k(s.channels * s.filter_rows * s.filter_cols), plane(s.out_rows() * s.out_cols()),
          group(std::clamp<long>(group_budget / std::max<long>(1, k * plane), 1, std::max<long>(1, s.samples))) {
        scratch.resize((k + s.filters) * group * plane);
        cols = scratch.data();
        matrix = cols + k * group * plane;
    }
};

}  // namespace

void fast_conv_forward(const conv_shape& s, const float* input, const float* filters, const float* bias, float* output,
                       std::vector<float>& scratch) {
    const conv_work w(s, scratch);
    const long k = w.k, plane = w.plane, group = w.group;
    float *cols = w.cols, *product = w.matrix;
    for (long first = 0; first < s.samples; first += group) {
        const long count = std::min(group, s.samples - first), m = count * plane;
        im2col_rows<false>(s, first, count, input, nullptr, cols);
        sgemm(false, false, s.filters, m, k, filters, k, cols, m, product, m, 0.0f);
        for (long g = 0; g < count; ++g)
            for (long f = 0; f < s.filters; ++f) {
                float* dst = output + ((first + g) * s.filters + f) * plane;
                const float* src = product + f * m + g * plane;
                const float b = bias ? bias[f] : 0.0f;
                for (long p = 0; p < plane; ++p) dst[p] = src[p] + b;
            }
    }
}

void fast_conv_backward(const conv_shape& s, const float* input, const float* filters, const float* gradient,
                        float* data_gradient, float* filter_gradient, std::vector<float>& scratch) {
    const conv_work w(s, scratch);
    const long k = w.k, plane = w.plane, group = w.group;
    float *cols = w.cols, *dy = w.matrix;
    for (long first = 0; first < s.samples; first += group) {
        const long count = std::min(group, s.samples - first), m = count * plane;
        for (long g = 0; g < count; ++g)
            for (long f = 0; f < s.filters; ++f)
                std::memcpy(dy + f * m + g * plane, gradient + ((first + g) * s.filters + f) * plane, plane * sizeof(float));
        if (filter_gradient) {  // dW (F x K) = dY (F x M) * cols^T
            im2col_rows<false>(s, first, count, input, nullptr, cols);
            sgemm(false, true, s.filters, k, m, dy, m, cols, m, filter_gradient, k, first == 0 ? 0.0f : 1.0f);
        }
        if (data_gradient) {  // d cols (K x M) = W^T * dY, then scattered back (added) into the data gradient
            sgemm(true, false, k, m, s.filters, filters, k, dy, m, cols, m, 0.0f);
            im2col_rows<true>(s, first, count, nullptr, data_gradient, cols);
        }
    }
}

}  // namespace pfd

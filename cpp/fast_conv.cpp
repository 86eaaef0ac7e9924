#include "fast_conv.h"

#include "blas.h"
#include "conv_kernels.h"
#include "parallel.h"

#include <algorithm>
#include <atomic>
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
        const size_t floats = (k + s.filters) * group * plane;
        if (scratch.size() < floats) scratch.resize(floats);  // grown only: resizing up zero-fills
        cols = scratch.data();
        matrix = cols + k * group * plane;
    }
};


std::atomic<int>& chosen_kernel() {
    static std::atomic<int> kernel{static_cast<int>(best_conv_kernel())};
    return kernel;
}

conv_kernel direct_kernel() { return static_cast<conv_kernel>(chosen_kernel().load()); }

// The direct kernels read windows from a one-pixel zero border, write blocks of 32 outputs.
bool direct_forward_fits(const conv_shape& s) {
    return s.filters % conv_block == 0 && s.pad_y <= 1 && s.pad_x <= 1;
}
// The data gradient of a stride-1 "same" convolution is a "same" convolution of the output
// gradient with the filters flipped and transposed (channels become outputs).
bool direct_data_gradient_fits(const conv_shape& s) {
    return s.channels % conv_block == 0 && s.stride_y == 1 && s.stride_x == 1 && s.filter_rows % 2 == 1 &&
           s.filter_cols % 2 == 1 && s.pad_y == s.filter_rows / 2 && s.pad_x == s.filter_cols / 2 && s.pad_y <= 1 && s.pad_x <= 1;
}

// NCHW (n, c, h, w) -> NHWC with a one-pixel zero border: out holds n * (h+2) * (w+2) * c floats.
void to_bordered_nhwc(const float* in, long n, long c, long h, long w, float* out) {
    const long pitch = (w + 2) * c, sample = (h + 2) * pitch;
    for (long i = 0; i < n; ++i) {
        float* o = out + i * sample;
        std::fill(o, o + pitch, 0.0f);
        std::fill(o + (h + 1) * pitch, o + sample, 0.0f);
        for (long y = 0; y < h; ++y) {
            float* row = o + (y + 1) * pitch;
            std::fill(row, row + c, 0.0f);
            std::fill(row + (w + 1) * c, row + pitch, 0.0f);
            for (long ch = 0; ch < c; ++ch) {
                const float* src = in + ((i * c + ch) * h + y) * w;
                for (long x = 0; x < w; ++x) row[(x + 1) * c + ch] = src[x];
            }
        }
    }
}

// NHWC (n, h, w, c) -> NCHW, assigned or added.
template <bool add>
void from_nhwc(const float* in, long n, long c, long h, long w, float* out) {
    for (long i = 0; i < n; ++i)
        for (long ch = 0; ch < c; ++ch)
            for (long y = 0; y < h; ++y) {
                float* dst = out + ((i * c + ch) * h + y) * w;
                const float* src = in + ((i * h + y) * w) * c + ch;
                for (long x = 0; x < w; ++x) {
                    if (add) dst[x] += src[x * c];
                    else dst[x] = src[x * c];
                }
            }
}

// Runs one direct convolution over every output pixel (n, oh, ow) of a bordered NHWC input into an
// NHWC output, on blas_threads() threads (1 inside the trainers' per-replica threads).
// window_at(i, y, x): offset of the window of output pixel (i, y, x) in the bordered input.
template <typename WINDOW_AT>
void direct_conv_all(const direct_conv_call& call, long n, long oh, long ow, WINDOW_AT window_at, long window_step) {
    const long threads = std::max(1, blas_threads());
    if (ow >= 8) {  // along output rows
        parallel_slices(n * oh, std::min(threads, n * oh), [&](long, long begin, long end) {
            for (long r = begin; r < end; ++r)
                direct_conv_run(direct_kernel(), call, window_at(r / oh, r % oh, 0), window_step, r * ow * call.f, call.f, ow);
        });
        return;
    }
    std::vector<long> in_offsets, out_offsets;  // narrow outputs: tiles across rows and samples
    for (long i = 0; i < n; ++i)
        for (long y = 0; y < oh; ++y)
            for (long x = 0; x < ow; ++x) {
                in_offsets.push_back(window_at(i, y, x));
                out_offsets.push_back(((i * oh + y) * ow + x) * call.f);
            }
    const long pixels = n * oh * ow;
    parallel_slices(pixels, std::min(threads, std::max<long>(1, pixels / 12)), [&](long, long begin, long end) {
        direct_conv_gather(direct_kernel(), call, in_offsets.data() + begin, out_offsets.data() + begin, end - begin);
    });
}

// Scratch areas of a direct convolution: bordered input, NHWC output, packed weights, zero bias.
struct direct_work {
    float *in, *out, *packed, *zero_bias;
    direct_work(std::vector<float>& scratch, long in_floats, long out_floats, long weights, long outputs) {
        const size_t floats = in_floats + out_floats + weights + outputs;  // all written before read, but the bias
        if (scratch.size() < floats) scratch.resize(floats);  // grown only: resizing up zero-fills
        in = scratch.data();
        out = in + in_floats;
        packed = out + out_floats;
        zero_bias = packed + weights;
        std::fill(zero_bias, zero_bias + outputs, 0.0f);
    }
};

void direct_forward(const conv_shape& s, const float* input, const float* filters, const float* bias, float* output,
                    std::vector<float>& scratch) {
    const long oh = s.out_rows(), ow = s.out_cols(), c = s.channels, f = s.filters;
    const long window = s.filter_rows * s.filter_cols, k = window * c;
    direct_work w(scratch, s.samples * (s.rows + 2) * (s.cols + 2) * c, s.samples * oh * ow * f, k * f, f);
    to_bordered_nhwc(input, s.samples, c, s.rows, s.cols, w.in);
    for (long block = 0; block < f / conv_block; ++block)  // dlib's (f, c, ky, kx) -> rows (ky, kx, c) in blocks of 32 filters
        for (long ch = 0; ch < c; ++ch)
            for (long p = 0; p < window; ++p) {  // the 32 filters' (ch, p) values: 32 cache lines, reused over p
                float* dst = w.packed + (block * k + p * c + ch) * conv_block;
                const float* src = filters + (block * conv_block * c + ch) * window + p;
                for (long lane = 0; lane < conv_block; ++lane) dst[lane] = src[lane * c * window];
            }
    const long pitch = (s.cols + 2) * c, sample = (s.rows + 2) * pitch;
    const direct_conv_call call{w.in, pitch, s.filter_rows, s.filter_cols * c, w.packed, bias ? bias : w.zero_bias, f, false, w.out};
    const auto window_at = [&](long i, long y, long x) {
        return i * sample + (y * s.stride_y - s.pad_y + 1) * pitch + (x * s.stride_x - s.pad_x + 1) * c;
    };
    direct_conv_all(call, s.samples, oh, ow, window_at, s.stride_x * c);
    from_nhwc<false>(w.out, s.samples, f, oh, ow, output);
}

// data_gradient += the "same" convolution of gradient with the flipped, transposed filters.
void direct_data_gradient(const conv_shape& s, const float* filters, const float* gradient, float* data_gradient,
                          std::vector<float>& scratch) {
    const long h = s.rows, w_ = s.cols, c = s.channels, f = s.filters;  // stride 1, same size
    const long window = s.filter_rows * s.filter_cols, k = window * f;
    direct_work w(scratch, s.samples * (h + 2) * (w_ + 2) * f, s.samples * h * w_ * c, k * c, c);
    to_bordered_nhwc(gradient, s.samples, f, h, w_, w.in);
    for (long block = 0; block < c / conv_block; ++block)
        for (long fi = 0; fi < f; ++fi)
            for (long p = 0; p < window; ++p) {  // window position p of W' is position window-1-p of W
                float* dst = w.packed + (block * k + p * f + fi) * conv_block;
                const float* src = filters + (fi * c + block * conv_block) * window + (window - 1 - p);
                for (long lane = 0; lane < conv_block; ++lane) dst[lane] = src[lane * window];
            }
    const long pitch = (w_ + 2) * f, sample = (h + 2) * pitch;
    const direct_conv_call call{w.in, pitch, s.filter_rows, s.filter_cols * f, w.packed, w.zero_bias, c, false, w.out};
    const auto window_at = [&](long i, long y, long x) { return i * sample + (y - s.pad_y + 1) * pitch + (x - s.pad_x + 1) * f; };
    direct_conv_all(call, s.samples, h, w_, window_at, f);
    from_nhwc<true>(w.out, s.samples, c, h, w_, data_gradient);
}

}  // namespace

void set_fast_conv_kernel(const std::string& name) {
    const conv_kernel kernel = name == "auto" ? best_conv_kernel() : conv_kernel_from_name(name);
    require_conv_kernel(kernel);
    chosen_kernel() = static_cast<int>(kernel);
}

std::string fast_conv_kernel_name() { return conv_kernel_name(direct_kernel()); }

void fast_conv_forward(const conv_shape& s, const float* input, const float* filters, const float* bias, float* output,
                       std::vector<float>& scratch) {
    if (direct_kernel() != conv_kernel::blas && direct_forward_fits(s)) return direct_forward(s, input, filters, bias, output, scratch);
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
    if (data_gradient && direct_kernel() != conv_kernel::blas && direct_data_gradient_fits(s)) {
        if (filter_gradient) fast_conv_backward(s, input, filters, gradient, nullptr, filter_gradient, scratch);
        return direct_data_gradient(s, filters, gradient, data_gradient, scratch);
    }
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

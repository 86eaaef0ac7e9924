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
            transpose(in + (i * c * h + y) * w, h * w, row + c, c, c, w, false);  // (c x w) -> (w x c)
        }
    }
}

// NHWC (n, h, w, c) -> NCHW, assigned or added.
template <bool add>
void from_nhwc(const float* in, long n, long c, long h, long w, float* out) {
    for (long i = 0; i < n; ++i) transpose(in + i * h * w * c, c, out + i * c * h * w, h * w, h * w, c, add);
}

// Runs one direct convolution over every output pixel (n, oh, ow) of a bordered NHWC input into an
// NHWC output, on blas_threads() threads (1 inside the trainers' per-replica threads).
// window_at(i, y, x): offset of the window of output pixel (i, y, x) in the bordered input.
template <typename WINDOW_AT>
void direct_conv_all(const direct_conv_call& call, long n, long oh, long ow, WINDOW_AT window_at, long window_step) {
    std::vector<long> in_offsets, out_offsets;
    direct_conv_pixels(direct_kernel(), call, n, oh, ow, window_at, window_step,
                       [&](long i, long y, long x) { return ((i * oh + y) * ow + x) * call.f; }, blas_threads(), in_offsets,
                       out_offsets);
}

// A bordered NHWC copy of an NCHW tensor: its offsets and pitch.
struct bordered {
    float* data;
    long h, w, c;
    long pitch() const { return (w + 2) * c; }
    long sample() const { return (h + 2) * pitch(); }
    long size(long n) const { return n * sample(); }
    long at(long i, long y, long x) const { return i * sample() + (y + 1) * pitch() + (x + 1) * c; }  // -1 <= y, x
};

// Carves the layer's scratch vector into consecutive areas (grown only: growing zero-fills).
struct scratch_areas {
    std::vector<float>& scratch;
    std::vector<long> sizes;
    long add(long floats) {
        sizes.push_back(floats);
        return static_cast<long>(sizes.size()) - 1;
    }
    std::vector<float*> carve() {
        long total = 0;
        for (long n : sizes) total += n;
        if (static_cast<long>(scratch.size()) < total) scratch.resize(total);
        std::vector<float*> areas;
        float* p = scratch.data();
        for (long n : sizes) areas.push_back(p), p += n;
        return areas;
    }
};

// dlib's filters (f, c, ky, kx) -> packed rows (ky, kx, c) in blocks of 32 filters: each block's
// (32 x c*window) matrix transposed, then its rows (c, ky, kx) put in (ky, kx, c) order. work: k*32 floats.
void pack_filters(const conv_shape& s, const float* filters, float* packed, float* work) {
    const long c = s.channels, window = s.filter_rows * s.filter_cols, k = window * c;
    for (long block = 0; block < s.filters / conv_block; ++block) {
        transpose(filters + block * conv_block * k, k, work, conv_block, conv_block, k, false);
        for (long ch = 0; ch < c; ++ch)
            for (long p = 0; p < window; ++p)
                std::memcpy(packed + (block * k + p * c + ch) * conv_block, work + (ch * window + p) * conv_block, conv_block * sizeof(float));
    }
}

// The data gradient's filters: rows (ky', kx', f) in blocks of 32 channels; window position p of
// W' is position window-1-p of W. Each filter's (c x window) matrix transposed, then runs of 32
// channels copied. work: k floats.
void pack_flipped_filters(const conv_shape& s, const float* filters, float* packed, float* work) {
    const long c = s.channels, f = s.filters, window = s.filter_rows * s.filter_cols, k = window * f;
    for (long fi = 0; fi < f; ++fi) {
        transpose(filters + fi * c * window, window, work, c, c, window, false);  // work[p * c + ch]
        for (long block = 0; block < c / conv_block; ++block)
            for (long p = 0; p < window; ++p)
                std::memcpy(packed + (block * k + p * f + fi) * conv_block, work + (window - 1 - p) * c + block * conv_block,
                            conv_block * sizeof(float));
    }
}

void direct_forward(const conv_shape& s, const float* input, const float* filters, const float* bias, float* output,
                    std::vector<float>& scratch) {
    const long oh = s.out_rows(), ow = s.out_cols(), c = s.channels, f = s.filters;
    const long k = s.filter_rows * s.filter_cols * c;
    scratch_areas plan{scratch, {}};
    bordered x{nullptr, s.rows, s.cols, c};
    const long in_area = plan.add(x.size(s.samples)), out_area = plan.add(s.samples * oh * ow * f), packed_area = plan.add(k * f),
               bias_area = plan.add(f), work_area = plan.add(k * conv_block);
    const auto areas = plan.carve();
    x.data = areas[in_area];
    to_bordered_nhwc(input, s.samples, c, s.rows, s.cols, x.data);
    pack_filters(s, filters, areas[packed_area], areas[work_area]);
    if (!bias) std::fill(areas[bias_area], areas[bias_area] + f, 0.0f);
    const auto call = direct_conv_call::convolution(x.data, x.pitch(), s.filter_rows, s.filter_cols * c, areas[packed_area],
                                                    bias ? bias : areas[bias_area], f, false, areas[out_area]);
    direct_conv_all(
        call, s.samples, oh, ow, [&](long i, long y, long xx) { return x.at(i, y * s.stride_y - s.pad_y, xx * s.stride_x - s.pad_x); },
        s.stride_x * c);
    from_nhwc<false>(areas[out_area], s.samples, f, oh, ow, output);
}

// data_gradient += the "same" convolution of the bordered output gradient dy with the flipped,
// transposed filters (packed: window*f*c floats, zero_bias: c, out: the NHWC result, work: window*c).
void direct_data_gradient(const conv_shape& s, const float* filters, const bordered& dy, float* data_gradient, float* packed,
                          float* zero_bias, float* out, float* work) {
    const long h = s.rows, w = s.cols, c = s.channels, f = s.filters;  // stride 1, same size
    pack_flipped_filters(s, filters, packed, work);
    std::fill(zero_bias, zero_bias + c, 0.0f);
    const auto call = direct_conv_call::convolution(dy.data, dy.pitch(), s.filter_rows, s.filter_cols * f, packed, zero_bias, c,
                                                    false, out);
    direct_conv_all(call, s.samples, h, w, [&](long i, long y, long x) { return dy.at(i, y - s.pad_y, x - s.pad_x); }, f);
    from_nhwc<true>(out, s.samples, c, h, w, data_gradient);
}

// filter_gradient (f, c, ky, kx) = sum over samples and output pixels of dy (x) the pixel's window,
// accumulated by the direct kernel into `sums`, rows (ky, kx, c) x blocks of 32 filters: the
// "window" of row (ky, j) is the input value at (ky, j) of every output pixel's window (output rows
// sy*pitch apart, pixels sx*c apart), its "weights" the output gradient's pixels. x: where the
// bordered NHWC input goes; work: as many floats as sums.
void direct_filter_gradient(const conv_shape& s, const float* input, const bordered& dy, float* filter_gradient,
                            const bordered& x, float* sums, float* work) {
    const long oh = s.out_rows(), ow = s.out_cols(), c = s.channels, f = s.filters, row = s.filter_cols * c;
    const long window = s.filter_rows * s.filter_cols, k = window * c;
    to_bordered_nhwc(input, s.samples, c, s.rows, s.cols, x.data);
    std::fill(sums, sums + k * f, 0.0f);
    const long threads = std::max<long>(1, std::min<long>(blas_threads(), row / 12));
    parallel_slices(row, threads, [&](long, long begin, long end) {  // threads own disjoint rows of the sums
        for (long i = 0; i < s.samples; ++i) {
            const direct_conv_call call{x.data, s.stride_y * x.pitch(), s.stride_x * c, oh, ow, dy.data + dy.at(i, 0, 0),
                                        dy.pitch(), f, conv_block, nullptr, f, false, true, sums};
            for (long ky = 0; ky < s.filter_rows; ++ky)
                direct_conv_run(direct_kernel(), call, x.at(i, ky - s.pad_y, -s.pad_x) + begin, 1, (ky * row + begin) * f, f,
                                end - begin);
        }
    });
    transpose(sums, f, work, k, k, f, false);  // work[fi][p * c + ch]
    for (long fi = 0; fi < f; ++fi)            // -> (fi, ch, p)
        transpose(work + fi * k, c, filter_gradient + fi * k, window, window, c, false);
}

// The direct parts of a backward pass; sets the gradients it computed to null (the rest is left
// to im2col + GEMM).
void direct_backward(const conv_shape& s, const float* input, const float* filters, const float* gradient,
                     float*& data_gradient, float*& filter_gradient, std::vector<float>& scratch) {
    const bool direct = direct_kernel() != conv_kernel::blas;
    const bool direct_filters = filter_gradient && direct && direct_forward_fits(s);
    const bool direct_data = data_gradient && direct && direct_data_gradient_fits(s);
    if (!direct_filters && !direct_data) return;
    const long window = s.filter_rows * s.filter_cols;
    scratch_areas plan{scratch, {}};
    bordered dy{nullptr, s.out_rows(), s.out_cols(), s.filters}, x{nullptr, s.rows, s.cols, s.channels};
    const long dy_area = plan.add(dy.size(s.samples));
    const long x_area = plan.add(direct_filters ? x.size(s.samples) : 0);
    const long sums_area = plan.add(direct_filters ? window * s.channels * s.filters : 0);
    const long out_area = plan.add(direct_data ? s.samples * s.rows * s.cols * s.channels : 0);
    const long packed_area = plan.add(direct_data ? window * s.filters * s.channels : 0);
    const long bias_area = plan.add(direct_data ? s.channels : 0);
    const long work_area = plan.add(direct_filters ? window * s.channels * s.filters : window * s.channels);
    const auto areas = plan.carve();
    dy.data = areas[dy_area];
    x.data = areas[x_area];
    to_bordered_nhwc(gradient, s.samples, s.filters, dy.h, dy.w, dy.data);  // read by both
    if (direct_filters) {
        direct_filter_gradient(s, input, dy, filter_gradient, x, areas[sums_area], areas[work_area]);
        filter_gradient = nullptr;
    }
    if (direct_data) {
        direct_data_gradient(s, filters, dy, data_gradient, areas[packed_area], areas[bias_area], areas[out_area], areas[work_area]);
        data_gradient = nullptr;
    }
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
    direct_backward(s, input, filters, gradient, data_gradient, filter_gradient, scratch);
    if (!data_gradient && !filter_gradient) return;
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

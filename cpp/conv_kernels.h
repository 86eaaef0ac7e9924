// Direct convolution kernels for the folded net (cpp/folded_net.cpp) and the training nets'
// fast_con (cpp/fast_conv.cpp): NHWC tensors whose samples carry a zero border wide enough for the
// convolution's padding, so one output pixel's window row (kw pixels x c channels) is kw*c
// contiguous floats and no im2col copy is made. The outputs of one tile are accumulated in SIMD
// registers over the whole window (bias first, ReLU fused) and stored once; the weights are packed
// in blocks of 32 output channels. The same kernel, with strides, accumulates filter gradients.
//
// The kernels are compiled into the portable module with per-function target attributes and
// chosen at run time from the CPU (no dlib or std template is compiled with those flags).
#pragma once

#include "parallel.h"

#include <algorithm>
#include <string>
#include <vector>

namespace pfd {

// How the folded net computes its convolutions: "blas" (im2col + OpenBLAS GEMM, any CPU),
// "avx512" (direct, AVX-512F + FMA) or "avx2" (direct, AVX2 + FMA).
enum class conv_kernel { blas, avx2, avx512 };

constexpr long conv_block = 32;  // output channels per packed weight block and per kernel call

std::string conv_kernel_name(conv_kernel kernel);
// Throws std::invalid_argument naming the choices for an unknown name ("auto" is resolved by the caller).
conv_kernel conv_kernel_from_name(const std::string& name);
// Whether this CPU (and this build) can run the kernel; blas always can.
bool conv_kernel_supported(conv_kernel kernel);
// Throws std::invalid_argument saying what the CPU lacks when it cannot run the kernel.
void require_conv_kernel(conv_kernel kernel);
// The fastest kernel this CPU supports: avx512, else avx2, else blas.
conv_kernel best_conv_kernel();

// (kh*kw*c) x f row-major weights -> blocks of conv_block columns: packed[(block*rows + row)*32 + lane].
// f must be a multiple of conv_block.
std::vector<float> pack_conv_weights(const std::vector<float>& weights, long rows, long f);

// One direct-kernel pass over a list of outputs (output pixels of a convolution, or rows of a
// filter gradient), each conv_block channels wide per block. Output i's window starts at
// in + in_offset(i); its window rows are in_pitch floats apart, each window_row values in_step
// apart. Value j of window row ky multiplies the conv_block weights at
// weights + block * weight_block + ky * weight_pitch + j * weight_step. Sums start from the bias
// (or, with `accumulate`, from the output's current values); ReLU when `relu`; block b of output i
// is stored at out + out_offset(i) + b * conv_block.
struct direct_conv_call {
    const float* in;
    long in_pitch, in_step;
    long window_rows, window_row;
    const float* weights;
    long weight_pitch, weight_step, weight_block;
    const float* bias;  // f values (unused with accumulate)
    long f;             // output channels: a multiple of conv_block
    bool relu, accumulate;
    float* out;

    // A convolution: window rows of kw*c contiguous values, weights packed by pack_conv_weights.
    static direct_conv_call convolution(const float* in, long in_pitch, long kh, long kw_times_c, const float* packed,
                                        const float* bias, long f, bool relu, float* out) {
        return {in, in_pitch, 1, kh, kw_times_c, packed, kw_times_c * conv_block, conv_block, kh * kw_times_c * conv_block,
                bias, f, relu, false, out};
    }
};

// `count` outputs, output i's window at in_offset + i * in_step and its values at
// out_offset + i * out_step (the pixels of one output row; adjacent rows of a filter gradient).
void direct_conv_run(conv_kernel kernel, const direct_conv_call& call, long in_offset, long in_step, long out_offset,
                     long out_step, long count);
// `count` output pixels at arbitrary offsets (small images: tiles across rows and samples).
void direct_conv_gather(conv_kernel kernel, const direct_conv_call& call, const long* in_offsets, const long* out_offsets,
                        long count);

// Below this output width the pixels are tiled across rows and samples (listed) rather than along one row.
constexpr long min_row_tile = 8;

// One convolution over every output pixel (i, y, x) of an n x oh x ow output: its window starts at
// window_at(i, y, x) in call.in (pixels of a row window_step apart), its call.f outputs go to
// output_at(i, y, x) in call.out (pixels of a row call.f apart). Wide outputs run along output rows,
// narrow ones as one list of pixels (in_offsets / out_offsets: reused buffers); split over
// `threads` threads.
template <typename WINDOW_AT, typename OUTPUT_AT>
void direct_conv_pixels(conv_kernel kernel, const direct_conv_call& call, long n, long oh, long ow, WINDOW_AT window_at,
                        long window_step, OUTPUT_AT output_at, long threads, std::vector<long>& in_offsets,
                        std::vector<long>& out_offsets) {
    if (ow >= min_row_tile) {
        parallel_slices(n * oh, std::max(1L, std::min(threads, n * oh)), [&](long, long begin, long end) {
            for (long r = begin; r < end; ++r)
                direct_conv_run(kernel, call, window_at(r / oh, r % oh, 0), window_step, output_at(r / oh, r % oh, 0), call.f, ow);
        });
        return;
    }
    in_offsets.clear();
    out_offsets.clear();
    for (long i = 0; i < n; ++i)
        for (long y = 0; y < oh; ++y)
            for (long x = 0; x < ow; ++x) {
                in_offsets.push_back(window_at(i, y, x));
                out_offsets.push_back(output_at(i, y, x));
            }
    const long pixels = n * oh * ow;
    parallel_slices(pixels, std::max(1L, std::min(threads, pixels / 12)), [&](long, long begin, long end) {
        direct_conv_gather(kernel, call, in_offsets.data() + begin, out_offsets.data() + begin, end - begin);
    });
}

// dst[j * dst_stride + i] = (or +=, with add) src[i * src_stride + j] for i < rows, j < cols: the
// layout changes around the direct kernels (8x8 register blocks where the CPU has AVX2).
void transpose(const float* src, long src_stride, float* dst, long dst_stride, long rows, long cols, bool add);

}  // namespace pfd

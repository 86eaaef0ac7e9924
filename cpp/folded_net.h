// A faster CPU inference path for the testing (affine) face net: the same computation as dlib's
// forward pass, compiled from the dlib network object (so the topology stays written once, in
// face_net.h) into a short list of operations on batched NHWC tensors:
//   - each affine layer is folded into the convolution below it (weights scaled, bias shifted),
//   - each ReLU is fused into the convolution or residual addition it follows,
//   - tensors carry a one-pixel zero border, so padding is read, not tested for,
//   - a convolution runs one of the conv_kernels (cpp/conv_kernels.h): direct SIMD kernels that
//     accumulate a tile of output pixels in registers over the whole window (no im2col copy; AVX-512
//     or AVX2, chosen from the CPU at run time), or im2col + OpenBLAS GEMM over the rows of all
//     samples of a batch (any CPU; the path before the direct kernels),
//   - callers parallelise over samples, with a single-threaded BLAS per worker.
// dlib's own forward pass stays the reference; tests check the two agree within 1e-4.
#pragma once

#include "conv_kernels.h"
#include "face_net.h"

#include <array>
#include <string>
#include <vector>

namespace pfd {

// Per-thread scratch memory for folded_face_net::forward (reused between calls).
struct folded_workspace {
    std::vector<std::vector<float>> buffers;
    std::vector<float> columns, products;        // blas kernel: im2col rows and their GEMM results
    std::vector<long> in_offsets, out_offsets;    // direct kernels on narrow outputs: the pixels' windows
};

class folded_face_net {
public:
    // Compiles `net`; throws std::runtime_error naming the layer when the net holds a layer type
    // or setting this path does not implement.
    explicit folded_face_net(const face_test_net& net);

    // Descriptors of chips[0..count) (150x150 RGB) into out[count*128]. Single-threaded apart from
    // BLAS; one workspace per concurrent caller.
    void forward(const dlib::matrix<dlib::rgb_pixel>* chips, long count, float* out, folded_workspace& ws) const;

    // The convolution kernel forward() uses (default: the fastest this CPU supports); throws
    // std::invalid_argument for one the CPU cannot run.
    void set_conv_kernel(conv_kernel kernel);
    conv_kernel convolution_kernel() const { return kernel_; }

    // Multiply-adds per face (for reporting GFLOP/s) and a one-line-per-op description.
    double multiply_adds_per_face() const;
    std::string describe() const;

    enum class op_kind { conv, scale_shift, relu, max_pool, avg_pool, tag, skip, add_tag, global_avg, fc };

    struct op {
        op_kind kind;
        // conv / pools: window, stride, padding; conv: channels and folded weights ((kh*kw*in) x out) + bias
        long in_channels = 0, out_channels = 0, window_y = 0, window_x = 0, stride_y = 1, stride_x = 1, pad_y = 0, pad_x = 0;
        std::vector<float> weights, bias;
        std::vector<float> packed;  // conv: weights in blocks of 32 outputs for the direct kernels (empty: blas only)
        bool relu = false;  // fused ReLU after this op (conv, scale_shift, add_tag)
        int tag = 0;        // tag / skip / add_tag: the tag id
    };

    // The compiled net as data, for writing it in another format (pyfacedlib's ONNX export): the
    // input side, dlib's per-channel input means (R, G, B; a chip is (pixel - mean) / 256), and the
    // ops in execution order.
    long input_size() const { return input_size_; }
    std::array<float, 3> input_means() const { return {avg_red_, avg_green_, avg_blue_}; }
    const std::vector<op>& ops() const { return ops_; }

private:
    float avg_red_ = 0, avg_green_ = 0, avg_blue_ = 0;
    long input_size_ = 0;
    std::vector<op> ops_;
    conv_kernel kernel_ = best_conv_kernel();

    friend struct folded_net_builder;
};


}  // namespace pfd

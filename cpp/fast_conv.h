// fast_con_: dlib's con_ with a faster CPU forward and backward, for the training nets.
//
// dlib's CPU convolution builds its im2col matrix one element at a time with a bounds check, one
// sample at a time, and multiplies per sample; in a fine-tuning step that im2col/col2img work
// costs more than the GEMMs. fast_con_ keeps con_'s parameters, settings and serialization (it
// derives from con_, so files written from a net using it are ordinary con_ records that dlib
// reads) and replaces only forward() and backward(). Where the CPU has them, the forward pass and
// the data gradient of stride-1 "same" convolutions run the folded net's direct SIMD kernels
// (cpp/conv_kernels.h) on transposed copies; otherwise, and for the filter gradient, im2col/col2img
// copy whole runs of rows and several samples share one GEMM. Nets with con_ and fast_con_
// convert into each other.
#pragma once

#include <dlib/dnn.h>

#include <string>
#include <vector>

namespace pfd {

// Geometry of one convolution: NCHW input, filters (F, C, KH, KW), stride and padding.
struct conv_shape {
    long samples, channels, rows, cols;  // input
    long filters, filter_rows, filter_cols, stride_y, stride_x, pad_y, pad_x;
    long out_rows() const { return 1 + (rows + 2 * pad_y - filter_rows) / stride_y; }
    long out_cols() const { return 1 + (cols + 2 * pad_x - filter_cols) / stride_x; }
};

// output (N, F, OH, OW) = conv(input) + bias (bias may be null).
void fast_conv_forward(const conv_shape& s, const float* input, const float* filters, const float* bias, float* output,
                       std::vector<float>& scratch);
// data_gradient (N, C, H, W) += conv_transpose(gradient); filter_gradient (F, C, KH, KW) = sum over
// samples (when non-null; assigned, not accumulated, like dlib's con_).
void fast_conv_backward(const conv_shape& s, const float* input, const float* filters, const float* gradient,
                        float* data_gradient, float* filter_gradient, std::vector<float>& scratch);

// Which kernel fast_con_ uses where it can ("auto" = the fastest this CPU runs, "blas" = im2col +
// GEMM everywhere): one setting for the process, for comparisons; throws std::invalid_argument for
// a name the CPU cannot run.
void set_fast_conv_kernel(const std::string& name);
std::string fast_conv_kernel_name();

template <long N, long NR, long NC, int SY, int SX, int PY = SY != 1 ? 0 : NR / 2, int PX = SX != 1 ? 0 : NC / 2>
class fast_con_ : public dlib::con_<N, NR, NC, SY, SX, PY, PX> {
    using base = dlib::con_<N, NR, NC, SY, SX, PY, PX>;

public:
    fast_con_() = default;
    fast_con_(const base& other) : base(other) {}  // NOLINT: implicit, so dlib nets convert

    template <typename SUBNET>
    void forward(const SUBNET& sub, dlib::resizable_tensor& output) {
        const conv_shape s = shape_of(sub.get_output());
        output.set_size(s.samples, s.filters, s.out_rows(), s.out_cols());
        const float* params = this->get_layer_params().host();
        const long filter_size = s.filters * s.channels * s.filter_rows * s.filter_cols;
        fast_conv_forward(s, sub.get_output().host(), params, this->bias_is_disabled() ? nullptr : params + filter_size,
                          output.host(), scratch_);
        if (!this->relu_is_disabled()) dlib::tt::relu(output, output);
    }

    // Back-propagation stops here: the gradient with respect to this layer's input is not
    // computed (set on the lowest trained convolution when every layer below it is frozen).
    void stop_input_gradient(bool stop) { stop_input_gradient_ = stop; }
    // A frozen convolution (learning-rate multiplier 0) computes no gradients at all: the trainers
    // freeze whole levels from the input up (from_level:K), so no layer below it learns.
    void skip_when_frozen(bool skip) { skip_when_frozen_ = skip; }

    // Backward passes that computed a gradient (filters, bias or input) since the last reset: a
    // debugging statistic the trainers sum per level (FaceTrainer.backward_counts).
    long gradient_passes() const { return gradient_passes_; }
    void reset_gradient_passes() { gradient_passes_ = 0; }

    template <typename SUBNET>
    void backward(const dlib::tensor& gradient_input, SUBNET& sub, dlib::tensor& params_grad) {
        const conv_shape s = shape_of(sub.get_output());
        const bool learns = this->get_learning_rate_multiplier() != 0;
        if (!learns && skip_when_frozen_) return;
        if (!learns && stop_input_gradient_) return;  // nothing to compute
        ++gradient_passes_;
        fast_conv_backward(s, sub.get_output().host(), this->get_layer_params().host(), gradient_input.host(),
                           stop_input_gradient_ ? nullptr : sub.get_gradient_input().host(),
                           learns ? params_grad.host() : nullptr, scratch_);
        if (learns && !this->bias_is_disabled()) {
            const long filter_size = s.filters * s.channels * s.filter_rows * s.filter_cols;
            dlib::alias_tensor bias_shape(1, s.filters);
            auto b = bias_shape(params_grad, filter_size);
            dlib::tt::assign_conv_bias_gradient(b, gradient_input);
        }
    }

private:
    conv_shape shape_of(const dlib::tensor& in) const {
        return {in.num_samples(), in.k(), in.nr(), in.nc(), this->num_filters(), this->nr(), this->nc(),
                this->stride_y(), this->stride_x(), this->padding_y(), this->padding_x()};
    }

    std::vector<float> scratch_;
    bool stop_input_gradient_ = false;   // runtime settings, not serialised (the trainers set them)
    bool skip_when_frozen_ = false;
    long gradient_passes_ = 0;
};

#ifdef DLIB_USE_CUDA  // cuDNN's convolutions are the fast ones there
template <long N, long NR, long NC, int SY, int SX, typename SUBNET>
using fast_con = dlib::con<N, NR, NC, SY, SX, SUBNET>;
#else
template <long N, long NR, long NC, int SY, int SX, typename SUBNET>
using fast_con = dlib::add_layer<fast_con_<N, NR, NC, SY, SX>, SUBNET>;
#endif

}  // namespace pfd

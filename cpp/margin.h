// Margin losses for the face net: CosFace / ArcFace (insightface's combined form with m1 = 1).
//
//   cosine_fc_     a computational layer that owns the class-centre matrix W (classes x inputs) and
//                  outputs cos(x, w_c) for every class: it normalises x and the rows of W itself, so
//                  the raw descriptor below it stays readable (dlib's in-place l2normalize would
//                  disable fc_no_bias<128>'s get_output()). A dlib loss layer cannot own parameters,
//                  hence the separate layer.
//   loss_margin_   softmax cross-entropy over s * logits, the true class's logit being
//                  cos(theta + m_angular) - m_cosine (ArcFace: m_angular; CosFace: m_cosine).
//
// Both follow dlib's EXAMPLE_COMPUTATIONAL_LAYER_ / EXAMPLE_LOSS_LAYER_ interfaces (dnn_trainer,
// serialisation, learning-rate multipliers) and use only tt:: tensor calls and small host loops, so
// they compile and run in CUDA builds too.
#pragma once

#include <dlib/dnn.h>

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>

namespace pfd {

class cosine_fc_ {
public:
    cosine_fc_() = default;
    // Starts from these class centres (one row per class; normalised in forward(), any norm works).
    explicit cosine_fc_(const dlib::matrix<float>& centres) {
        if (centres.nr() < 2 || centres.nc() < 1) throw std::invalid_argument("cosine_fc_ needs >= 2 class centres");
        params_.set_size(centres.nr(), centres.nc());
        std::copy(centres.begin(), centres.end(), params_.host());
    }

    long num_classes() const { return params_.num_samples(); }
    // The class centres as they are now (one row per class, not normalised).
    dlib::matrix<float> centres() const { return dlib::mat(params_.host(), params_.num_samples(), params_.k() * params_.nr() * params_.nc()); }

    double get_learning_rate_multiplier() const { return learning_rate_multiplier_; }
    double get_weight_decay_multiplier() const { return weight_decay_multiplier_; }
    void set_learning_rate_multiplier(double v) { learning_rate_multiplier_ = v; }
    void set_weight_decay_multiplier(double v) { weight_decay_multiplier_ = v; }

    template <typename SUBNET>
    void setup(const SUBNET& sub) {
        const long inputs = sub.get_output().k() * sub.get_output().nr() * sub.get_output().nc();
        if (params_.size() == 0) throw std::logic_error("cosine_fc_: construct it with its class centres");
        if (params_.k() * params_.nr() * params_.nc() != inputs)
            throw std::invalid_argument("cosine_fc_: class centres have " + std::to_string(params_.k() * params_.nr() * params_.nc()) +
                                        " values each, the layer below outputs " + std::to_string(inputs));
    }

    template <typename SUBNET>
    void forward(const SUBNET& sub, dlib::resizable_tensor& output) {
        const dlib::tensor& x = sub.get_output();
        normalise(x, x_unit_, x_inv_norms_);
        normalise(params_, w_unit_, w_inv_norms_);
        output.set_size(x.num_samples(), num_classes());
        dlib::tt::gemm(0, output, 1, x_unit_, false, w_unit_, true);
    }

    // d cos(x, w)/d x = (w_hat - cos * x_hat) / |x|: with g = gradient_input, the data gradient is
    // (G - (G . x_hat) x_hat) / |x| where G = g W_hat; the same with the roles swapped for W's rows.
    template <typename SUBNET>
    void backward(const dlib::tensor& gradient_input, SUBNET& sub, dlib::tensor& params_grad) {
        if (learning_rate_multiplier_ != 0) {
            scratch_.set_size(w_unit_.num_samples(), w_unit_.k(), w_unit_.nr(), w_unit_.nc());
            dlib::tt::gemm(0, scratch_, 1, gradient_input, true, x_unit_, false);
            dlib::tt::dot_prods(dots_, scratch_, w_unit_);
            dlib::tt::scale_rows2(0, params_grad, scratch_, w_unit_, dots_, w_inv_norms_);
        }
        scratch_.copy_size(x_unit_);
        dlib::tt::gemm(0, scratch_, 1, gradient_input, false, w_unit_, false);
        dlib::tt::dot_prods(dots_, scratch_, x_unit_);
        dlib::tt::scale_rows2(1, sub.get_gradient_input(), scratch_, x_unit_, dots_, x_inv_norms_);
    }

    const dlib::tensor& get_layer_params() const { return params_; }
    dlib::tensor& get_layer_params() { return params_; }

    friend void serialize(const cosine_fc_& item, std::ostream& out) {
        dlib::serialize("pfd_cosine_fc_1", out);
        dlib::serialize(item.params_, out);
        dlib::serialize(item.learning_rate_multiplier_, out);
        dlib::serialize(item.weight_decay_multiplier_, out);
    }

    friend void deserialize(cosine_fc_& item, std::istream& in) {
        std::string version;
        dlib::deserialize(version, in);
        if (version != "pfd_cosine_fc_1")
            throw dlib::serialization_error("Unexpected version '" + version + "' found while deserializing pfd::cosine_fc_.");
        dlib::deserialize(item.params_, in);
        dlib::deserialize(item.learning_rate_multiplier_, in);
        dlib::deserialize(item.weight_decay_multiplier_, in);
    }

    friend std::ostream& operator<<(std::ostream& out, const cosine_fc_& item) {
        out << "cosine_fc\t (num_classes=" << item.num_classes() << ") learning_rate_mult=" << item.learning_rate_multiplier_
            << " weight_decay_mult=" << item.weight_decay_multiplier_;
        return out;
    }

    friend void to_xml(const cosine_fc_& item, std::ostream& out) {
        out << "<cosine_fc num_classes='" << item.num_classes() << "' learning_rate_mult='" << item.learning_rate_multiplier_
            << "' weight_decay_mult='" << item.weight_decay_multiplier_ << "'>\n"
            << dlib::mat(item.params_) << "</cosine_fc>\n";
    }

private:
    static void normalise(const dlib::tensor& m, dlib::resizable_tensor& unit, dlib::resizable_tensor& inv_norms) {
        dlib::tt::inverse_norms(inv_norms, m, 1e-12);
        unit.copy_size(m);
        dlib::tt::scale_rows(unit, m, inv_norms);
    }

    dlib::resizable_tensor params_;  // classes x inputs
    double learning_rate_multiplier_ = 1;
    double weight_decay_multiplier_ = 0;  // the rows are normalised: decaying their length only speeds them up
    // forward results kept for backward, and scratch
    dlib::resizable_tensor x_unit_, x_inv_norms_, w_unit_, w_inv_norms_, scratch_, dots_;
};

template <typename SUBNET>
using cosine_fc = dlib::add_layer<cosine_fc_, SUBNET>;

// Softmax cross-entropy over s * [cos(theta_j) for j != y; cos(theta_y + m_angular) - m_cosine].
// Where theta_y + m_angular would pass pi the target logit continues linearly (insightface's
// "cos - mm"), so it keeps decreasing with theta.
class loss_margin_ {
public:
    typedef unsigned long training_label_type;
    typedef unsigned long output_label_type;

    loss_margin_() = default;
    loss_margin_(double scale, double angular_margin, double cosine_margin)
        : scale_(scale), angular_(angular_margin), cosine_(cosine_margin) {
        if (!(scale > 0) || !std::isfinite(scale)) throw std::invalid_argument("the margin loss's scale must be > 0");
        if (!(angular_margin >= 0 && angular_margin < 1.5) || !(cosine_margin >= 0 && cosine_margin < 1))
            throw std::invalid_argument("margins must be in [0, 1.5) radians (angular) and [0, 1) (cosine)");
    }

    double scale() const { return scale_; }
    double angular_margin() const { return angular_; }
    double cosine_margin() const { return cosine_; }

    // The true class's logit / s, and its derivative with respect to cos(theta).
    void target(double cosine, double& value, double& derivative) const {
        const double c = std::min(1.0 - 1e-7, std::max(-1.0 + 1e-7, cosine));
        const double theta = std::acos(c);
        if (angular_ == 0) {
            value = cosine - cosine_;
            derivative = 1;
        } else if (theta + angular_ <= M_PI) {
            value = std::cos(theta + angular_) - cosine_;
            derivative = std::sin(theta + angular_) / std::sin(theta);
        } else {
            value = cosine - std::sin(M_PI - angular_) * angular_ - cosine_;
            derivative = 1;
        }
    }

    template <typename SUB_TYPE, typename label_iterator>
    void to_label(const dlib::tensor& input_tensor, const SUB_TYPE& sub, label_iterator iter) const {
        const dlib::tensor& out = sub.get_output();
        DLIB_CASSERT(input_tensor.num_samples() == out.num_samples());
        for (long i = 0; i < out.num_samples(); ++i) *iter++ = dlib::index_of_max(dlib::rowm(dlib::mat(out), i));
    }

    template <typename const_label_iterator, typename SUBNET>
    double compute_loss_value_and_gradient(const dlib::tensor& input_tensor, const_label_iterator truth, SUBNET& sub) const {
        const dlib::tensor& out = sub.get_output();
        dlib::tensor& grad = sub.get_gradient_input();
        DLIB_CASSERT(input_tensor.num_samples() == out.num_samples() && out.nr() == 1 && out.nc() == 1);
        const long n = out.num_samples(), classes = out.k();
        const float* cosines = out.host();
        float* g = grad.host();
        double loss = 0;
        std::vector<double> logits(classes);
        for (long i = 0; i < n; ++i) {
            const unsigned long y = *truth++;
            if (y >= static_cast<unsigned long>(classes))
                throw std::invalid_argument("label " + std::to_string(y) + " >= the class layer's " + std::to_string(classes) + " classes");
            double target_value = 0, target_derivative = 0;
            target(cosines[i * classes + y], target_value, target_derivative);
            double top = -1e300;
            for (long c = 0; c < classes; ++c) {
                logits[c] = scale_ * (c == static_cast<long>(y) ? target_value : cosines[i * classes + c]);
                top = std::max(top, logits[c]);
            }
            double sum = 0;
            for (long c = 0; c < classes; ++c) sum += (logits[c] = std::exp(logits[c] - top));
            for (long c = 0; c < classes; ++c) {
                const double p = logits[c] / sum;
                if (c == static_cast<long>(y)) {
                    loss -= std::log(std::max(p, 1e-300)) / n;
                    g[i * classes + c] = static_cast<float>(scale_ * (p - 1) * target_derivative / n);
                } else {
                    g[i * classes + c] = static_cast<float>(scale_ * p / n);
                }
            }
        }
        return loss;
    }

    friend void serialize(const loss_margin_& item, std::ostream& out) {
        dlib::serialize("pfd_loss_margin_1", out);
        dlib::serialize(item.scale_, out);
        dlib::serialize(item.angular_, out);
        dlib::serialize(item.cosine_, out);
    }

    friend void deserialize(loss_margin_& item, std::istream& in) {
        std::string version;
        dlib::deserialize(version, in);
        if (version != "pfd_loss_margin_1")
            throw dlib::serialization_error("Unexpected version '" + version + "' found while deserializing pfd::loss_margin_.");
        dlib::deserialize(item.scale_, in);
        dlib::deserialize(item.angular_, in);
        dlib::deserialize(item.cosine_, in);
    }

    friend std::ostream& operator<<(std::ostream& out, const loss_margin_& item) {
        out << "loss_margin (s=" << item.scale_ << ", m_angular=" << item.angular_ << ", m_cosine=" << item.cosine_ << ")";
        return out;
    }

    friend void to_xml(const loss_margin_& item, std::ostream& out) {
        out << "<loss_margin s='" << item.scale_ << "' m_angular='" << item.angular_ << "' m_cosine='" << item.cosine_ << "'/>\n";
    }

private:
    double scale_ = 16;
    double angular_ = 0;
    double cosine_ = 0;
};

template <typename SUBNET>
using loss_margin = dlib::add_loss_layer<loss_margin_, SUBNET>;

// The margin-trained net whose embedding part is exactly the loss_metric net `metric_net`'s:
// loss_margin<cosine_fc<fc_no_bias<128, ...>>>. embedding_part() gives that net back.
template <typename metric_net>
using margin_net_of = loss_margin<cosine_fc<typename metric_net::subnet_type>>;

template <typename metric_net>
metric_net embedding_part(const margin_net_of<metric_net>& net) {
    metric_net out;
    out.subnet() = net.subnet().subnet();
    return out;
}

// The margin net around a loss_metric net, with these class centres and loss settings.
template <typename metric_net>
margin_net_of<metric_net> with_margin_head(const metric_net& net, const dlib::matrix<float>& centres, const loss_margin_& loss) {
    margin_net_of<metric_net> out;
    out.loss_details() = loss;
    out.subnet().layer_details() = cosine_fc_(centres);
    out.subnet().subnet() = net.subnet();
    return out;
}

// What a layer or a loss needs from the net below it: its output and the gradient to write to.
// Lets the trainers and the checks run a layer or loss on a plain tensor.
struct tensor_pair {
    dlib::resizable_tensor output, gradient;
    const dlib::tensor& get_output() const { return output; }
    dlib::tensor& get_gradient_input() { return gradient; }
    static unsigned int sample_expansion_factor() { return 1; }
};

// The layer and the loss on their own (for gradient checks and inspection; row-major float arrays):
// the cosines of x (n x d) with the centres (c x d), and, for a gradient g (n x c) of some loss with
// respect to those cosines, the gradients with respect to x and to the centres.
struct cosine_layer_pass {
    dlib::matrix<float> cosines, x_gradient, centre_gradient;
};
cosine_layer_pass run_cosine_layer(const dlib::matrix<float>& x, const dlib::matrix<float>& centres, const dlib::matrix<float>& g);

// The margin loss of cosines (n x c) with these labels, and its gradient with respect to them.
double margin_loss_gradient(const loss_margin_& loss, const dlib::matrix<float>& cosines,
                            const std::vector<unsigned long>& labels, dlib::matrix<float>& gradient);

}  // namespace pfd

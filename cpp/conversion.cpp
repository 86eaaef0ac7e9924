#include "conversion.h"

#include "blas.h"
#include "model_io.h"
#include "net_io.h"
#include "parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>
#include <type_traits>

namespace pfd {

using namespace dlib;  // this file works on dlib nets throughout (never in a header)

namespace {

// Merges a batch's (count, mean, M2) into running ones (Chan et al.'s parallel Welford update).
void merge_moments(double& n, double& mean, double& m2, double bn, double bmean, double bm2) {
    if (bn == 0) return;
    const double total = n + bn, delta = bmean - mean;
    mean += delta * bn / total;
    m2 += bm2 + delta * delta * n * bn / total;
    n = total;
}

}  // namespace

// The batch-norm slot of the probe net: applies the affine transform like affine_ (not in place, so
// its input stays readable) and accumulates per-channel moments of that input.
class affine_probe_ {
public:
    std::vector<float> g, b;
    std::vector<double> n, mean, m2;

    template <typename SUBNET> void setup(const SUBNET&) {}

    template <typename SUBNET>
    void forward(const SUBNET& sub, resizable_tensor& output) {
        const tensor& x = sub.get_output();
        output.copy_size(x);
        const long K = x.k(), area = x.nr() * x.nc();
        if (static_cast<long>(g.size()) != K) {  // set-up pass before parameters are loaded
            output = x;
            return;
        }
        if (static_cast<long>(mean.size()) != K) n.assign(K, 0), mean.assign(K, 0), m2.assign(K, 0);
        const float* in = x.host();
        float* out = output.host();
        for (long k = 0; k < K; ++k) {
            double sum = 0;
            for (long s = 0; s < x.num_samples(); ++s) {
                const float* p = in + (s * K + k) * area;
                for (long i = 0; i < area; ++i) sum += p[i];
            }
            const double count = static_cast<double>(x.num_samples()) * area, bmean = sum / count;
            double bm2 = 0;
            for (long s = 0; s < x.num_samples(); ++s) {
                const float* p = in + (s * K + k) * area;
                float* o = out + (s * K + k) * area;
                for (long i = 0; i < area; ++i) {
                    const double d = p[i] - bmean;
                    bm2 += d * d;
                    o[i] = g[k] * p[i] + b[k];
                }
            }
            merge_moments(n[k], mean[k], m2[k], count, bmean, bm2);
        }
    }

    template <typename SUBNET>
    void backward(const tensor&, SUBNET&, tensor&) { throw std::logic_error("the statistics probe is not trainable"); }

    const tensor& get_layer_params() const { return params_; }
    tensor& get_layer_params() { return params_; }
    dpoint map_input_to_output(const dpoint& p) const { return p; }
    dpoint map_output_to_input(const dpoint& p) const { return p; }

    friend void serialize(const affine_probe_&, std::ostream&) { throw serialization_error("probe nets are not saved"); }
    friend void deserialize(affine_probe_&, std::istream&) { throw serialization_error("probe nets are not loaded"); }
    friend std::ostream& operator<<(std::ostream& out, const affine_probe_&) { return out << "affine_probe"; }
    friend void to_xml(const affine_probe_&, std::ostream& out) { out << "<affine_probe/>\n"; }

private:
    resizable_tensor params_;
};

template <typename SUBNET> using affine_probe = add_layer<affine_probe_, SUBNET>;
using face_probe_net = face_net<affine_probe>;

namespace {

template <typename T> constexpr bool is_bn_slot =
    std::is_same_v<T, affine_> || std::is_same_v<T, bn_<CONV_MODE>> || std::is_same_v<T, affine_probe_>;

// Per computational layer of a face net: its parameters, by layer index.
struct net_weights {
    std::map<size_t, std::vector<float>> conv_fc;                 // con_/fc_ params, as stored
    std::map<size_t, std::pair<std::vector<float>, std::vector<float>>> affine;  // (g, b) per BN slot
};

std::vector<float> to_vector(const tensor& t) { return std::vector<float>(t.host(), t.host() + t.size()); }

net_weights weights_of(const face_test_net& net) {
    net_weights w;
    visit_computational_layers(const_cast<face_test_net&>(net), [&](size_t idx, auto& l) {
        using layer_type = std::decay_t<decltype(l)>;
        if constexpr (std::is_same_v<layer_type, affine_>) {
            // affine_ keeps gamma/beta outside get_layer_params() (it has no learnable parameters)
            const affine_& a = l;
            w.affine[idx] = {to_vector(a.get_gamma()), to_vector(a.get_beta())};
            if (w.affine[idx].first.empty()) throw std::logic_error("affine layer " + std::to_string(idx) + " is empty");
        } else {
            const auto values = to_vector(l.get_layer_params());
            if (!values.empty()) w.conv_fc[idx] = values;
        }
    });
    return w;
}

// Copies con_/fc_ parameters of `w` into `net` (set up already, same topology); `on_bn(idx, layer, g, b)`
// fills each batch-norm slot.
template <typename net_type, typename bn_filler>
void load_weights(net_type& net, const net_weights& w, bn_filler&& on_bn) {
    size_t copied = 0, bn_slots = 0;
    visit_computational_layers(net, [&](size_t idx, auto& l) {
        using layer_type = std::decay_t<decltype(l)>;
        if constexpr (is_bn_slot<layer_type>) {
            const auto& gb = w.affine.at(idx);
            on_bn(idx, l, gb.first, gb.second);
            ++bn_slots;
        } else {
            tensor& params = l.get_layer_params();
            const auto found = w.conv_fc.find(idx);
            if (found == w.conv_fc.end()) {
                if (params.size() != 0) throw std::logic_error("layer " + std::to_string(idx) + " has no source weights");
                return;
            }
            if (found->second.size() != params.size())
                throw std::logic_error("layer " + std::to_string(idx) + ": parameter count differs");
            std::memcpy(params.host(), found->second.data(), params.size() * sizeof(float));
            ++copied;
        }
    });
    if (copied != w.conv_fc.size() || bn_slots != w.affine.size())
        throw std::logic_error("face nets do not line up layer for layer");
}

// A bn_con2 record with the given gamma/beta/running statistics, deserialized into `layer`.
void fill_bn(bn_<CONV_MODE>& layer, const std::vector<float>& gamma, const std::vector<float>& beta,
             const std::vector<float>& running_mean, const std::vector<float>& running_var) {
    const long K = static_cast<long>(gamma.size());
    std::ostringstream out;
    serialize("bn_con2", out);
    resizable_tensor params(2 * K);
    std::copy(gamma.begin(), gamma.end(), params.host());
    std::copy(beta.begin(), beta.end(), params.host() + K);
    serialize(params, out);
    alias_tensor channel(1, K);
    serialize(channel, out);  // gamma
    serialize(channel, out);  // beta
    resizable_tensor batch_means(1, K), batch_invstds(1, K), rmean(1, K), rvar(1, K);
    batch_means = 0;
    batch_invstds = 1;
    std::copy(running_mean.begin(), running_mean.end(), rmean.host());
    std::copy(running_var.begin(), running_var.end(), rvar.host());
    serialize(batch_means, out);
    serialize(batch_invstds, out);
    serialize(rmean, out);
    serialize(rvar, out);
    // num_updates = the window: the recovered statistics weigh as a full window of past batches.
    const unsigned long window = layer.get_running_stats_window_size();
    serialize(window, out);
    serialize(window, out);
    serialize(layer.get_learning_rate_multiplier(), out);
    serialize(layer.get_weight_decay_multiplier(), out);
    serialize(layer.get_bias_learning_rate_multiplier(), out);
    serialize(layer.get_bias_weight_decay_multiplier(), out);
    serialize(layer.get_eps(), out);
    std::istringstream in(out.str());
    deserialize(layer, in);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct bn_input_statistics::impl {
    std::vector<face_probe_net> replicas;
    int threads = 1;
    long faces = 0;
    std::mutex mutex;
};

bn_input_statistics::bn_input_statistics(const face_test_net& net, int threads) : impl_(std::make_unique<impl>()) {
    impl_->threads = std::max(1, threads);
    face_probe_net probe;
    set_up(probe);
    const auto w = weights_of(net);
    load_weights(probe, w, [](size_t, affine_probe_& l, const std::vector<float>& g, const std::vector<float>& b) {
        l.g = g;
        l.b = b;
        l.n.clear(), l.mean.clear(), l.m2.clear();
    });
    impl_->replicas.assign(impl_->threads, probe);
}

bn_input_statistics::~bn_input_statistics() = default;

long bn_input_statistics::faces() const { return impl_->faces; }

void bn_input_statistics::add(const std::vector<chip_type>& chips) {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    const long n = static_cast<long>(chips.size()), workers = std::max<long>(1, std::min<long>(impl_->threads, n));
    set_blas_threads(std::max<int>(1, impl_->threads / static_cast<int>(workers)));
    parallel_slices(n, workers, [&](long w, long begin, long end) {
        std::vector<matrix<float, 0, 1>> out(16);
        for (long b = begin; b < end; b += 16) {
            const long e = std::min(end, b + 16);
            impl_->replicas[w](chips.begin() + b, chips.begin() + e, out.begin());
        }
    });
    impl_->faces += n;
}

std::vector<channel_stats> bn_input_statistics::result() const {
    std::map<size_t, channel_stats> merged;
    for (auto& replica : impl_->replicas) {
        visit_computational_layers(replica, [&](size_t idx, auto& l) {
            using layer_type = std::decay_t<decltype(l)>;
            if constexpr (std::is_same_v<layer_type, affine_probe_>) {
                auto& s = merged[idx];
                const size_t K = l.g.size();
                if (s.mean.empty()) s.mean.assign(K, 0), s.var.assign(K, 0);  // var holds M2 while merging
                if (l.mean.empty()) return;
                for (size_t k = 0; k < K; ++k) {
                    double n = s.count;
                    merge_moments(n, s.mean[k], s.var[k], l.n[k], l.mean[k], l.m2[k]);
                }
                s.count += l.n[0];
            }
        });
    }
    std::vector<channel_stats> out;
    for (auto& [idx, s] : merged) {
        for (auto& v : s.var) v = s.count > 0 ? v / s.count : 0;  // population variance, as batch norm uses
        out.push_back(s);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------

face_train_net affine_to_bn(const face_test_net& affine, const std::vector<channel_stats>* stats) {
    face_train_net net;
    set_up(net);
    const auto w = weights_of(affine);
    if (stats && stats->size() != w.affine.size())
        throw std::invalid_argument("statistics for " + std::to_string(stats->size()) + " layers, the net has " +
                                    std::to_string(w.affine.size()) + " batch-norm layers");
    size_t slot = 0;
    load_weights(net, w, [&](size_t, auto& layer, const std::vector<float>& g, const std::vector<float>& b) {
        using layer_type = std::decay_t<decltype(layer)>;
        if constexpr (std::is_same_v<layer_type, bn_<CONV_MODE>>) {
            const size_t K = g.size();
            const double eps = layer.get_eps();
            std::vector<float> gamma(K), beta(K), rmean(K), rvar(K);
            for (size_t k = 0; k < K; ++k) {
                if (stats) {  // calibrated: running stats = measured moments, same affine map in inference
                    const auto& s = (*stats)[slot];
                    if (s.mean.size() != K) throw std::invalid_argument("statistics have the wrong channel count");
                    const double m = s.mean[k], v = std::max(s.var[k], 0.0);
                    rmean[k] = static_cast<float>(m);
                    rvar[k] = static_cast<float>(v);
                    gamma[k] = static_cast<float>(g[k] * std::sqrt(v + eps));
                    beta[k] = static_cast<float>(b[k] + static_cast<double>(g[k]) * m);
                } else {  // exact: the identity normalisation in inference
                    rmean[k] = 0;
                    rvar[k] = static_cast<float>(1.0 - eps);
                    gamma[k] = g[k];
                    beta[k] = b[k];
                }
            }
            fill_bn(layer, gamma, beta, rmean, rvar);
            ++slot;
        }
    });
    return net;
}

std::vector<float> train_mode_descriptors(const face_train_net& source, const std::vector<chip_type>& chips,
                                          long batch_size) {
    face_train_net net = source;
    std::vector<float> out(chips.size() * descriptor_size);
    std::vector<matrix<float, 0, 1>> desc(batch_size);
    for (size_t b = 0; b < chips.size(); b += batch_size) {
        const size_t e = std::min(chips.size(), b + batch_size);
        net(chips.begin() + b, chips.begin() + e, desc.begin());
        for (size_t i = b; i < e; ++i) std::memcpy(&out[i * descriptor_size], &desc[i - b](0), descriptor_size * sizeof(float));
    }
    return out;
}

namespace {
template <typename net_type>
double loss_of(const net_type& source, const std::vector<chip_type>& chips, const std::vector<unsigned long>& labels) {
    if (chips.size() < 2 || labels.size() != chips.size())
        throw std::invalid_argument("loss_metric needs at least 2 chips and one label per chip");
    net_type net = source;
    resizable_tensor x;
    net.to_tensor(chips.begin(), chips.end(), x);
    return net.compute_loss(x, labels.begin());
}
}  // namespace

double metric_loss(const face_train_net& net, const std::vector<chip_type>& chips, const std::vector<unsigned long>& labels) {
    return loss_of(net, chips, labels);
}
double metric_loss(const face_test_net& net, const std::vector<chip_type>& chips, const std::vector<unsigned long>& labels) {
    return loss_of(net, chips, labels);
}

double mean_metric_loss(const face_test_net& net, const std::vector<chip_type>& chips,
                        const std::vector<unsigned long>& labels, long batch_size) {
    if (batch_size < 2) throw std::invalid_argument("batch_size must be >= 2 (loss_metric needs pairs)");
    if (labels.size() != chips.size()) throw std::invalid_argument("one label per chip is needed");
    double total = 0;
    long batches = 0;
    for (size_t b = 0; b + batch_size <= chips.size(); b += batch_size, ++batches) {
        const std::vector<chip_type> chunk(chips.begin() + b, chips.begin() + b + batch_size);
        const std::vector<unsigned long> chunk_labels(labels.begin() + b, labels.begin() + b + batch_size);
        total += metric_loss(net, chunk, chunk_labels);
    }
    return batches ? total / batches : 0.0;
}

}  // namespace pfd

#include "training.h"

#include "blas.h"
#include "model_io.h"
#include "net_io.h"
#include "parallel.h"
#include "sampler.h"

#include <dlib/image_transforms.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <type_traits>

namespace pfd {

using namespace dlib;  // this file works on dlib nets throughout (never in a header)

namespace {

// Mini-batches of N identities x M images: both positive and negative pairs in every batch.
// jitter_image's random crop/scale/rotation/flip plus a random colour offset, as in dlib's
// metric-learning example.
chip_type augmented(const chip_type& chip, dlib::rand& rnd) {
    chip_type out = dlib::jitter_image(chip, rnd);
    dlib::apply_random_color_offset(out, rnd);
    return out;
}

// Trainer state (net, solver, counters), sampler state and step, in one blob.
template <typename trainer_type>
std::string save_state(trainer_type& trainer, dlib::rand& rnd, long step) {
    trainer.get_net();  // waits for the training thread
    std::ostringstream out;
    serialize(trainer, out);
    serialize(rnd, out);
    dlib::serialize(step, out);
    return out.str();
}

template <typename trainer_type>
void load_state(const std::string& bytes, trainer_type& trainer, dlib::rand& rnd, long& step) {
    std::istringstream in(bytes);
    deserialize(trainer, in);
    deserialize(rnd, in);
    dlib::deserialize(step, in);
    trainer.be_quiet();
}

template <typename layer_type, typename = void>
struct can_stop_input_gradient : std::false_type {};
template <typename layer_type>
struct can_stop_input_gradient<layer_type, std::void_t<decltype(std::declval<layer_type&>().stop_input_gradient(true))>>
    : std::true_type {};

// Freezes every layer from first_frozen_index down to the input (learning-rate multipliers 0).
// With fast_con convolutions back-propagation also stops there: frozen convolutions compute no
// gradients, and the trained convolution nearest the input computes none for its input.
template <typename net_type>
void set_multipliers(net_type& net, size_t first_frozen_index, bool stop_backprop) {
    size_t lowest_trained_conv = 0;
    bool found = false;
    visit_computational_layers(net, [&](size_t idx, auto& l) {
        const double m = idx >= first_frozen_index ? 0.0 : 1.0;
        set_learning_rate_multiplier(l, m);
        set_bias_learning_rate_multiplier(l, m);
        if constexpr (can_stop_input_gradient<std::decay_t<decltype(l)>>::value) {
            if (idx < first_frozen_index && (!found || idx > lowest_trained_conv)) lowest_trained_conv = idx, found = true;
        }
    });
    visit_computational_layers(net, [&](size_t idx, auto& l) {
        if constexpr (can_stop_input_gradient<std::decay_t<decltype(l)>>::value) {
            l.stop_input_gradient(stop_backprop && found && idx == lowest_trained_conv);
            l.skip_when_frozen(stop_backprop);
        }
    });
}

template <typename net_type>
std::vector<std::pair<size_t, std::vector<float>>> parameters_of(net_type& net) {
    std::vector<std::pair<size_t, std::vector<float>>> out;
    visit_computational_layers(net, [&](size_t idx, auto& l) {
        // learnable parameters only: empty for affine_ (frozen batch norm), gamma+beta for bn_
        const tensor& t = l.get_layer_params();
        out.emplace_back(idx, std::vector<float>(t.host(), t.host() + t.size()));
    });
    return out;
}

// --------------------------------------------------------------------------------------------
// Runs driven by one dlib dnn_trainer: the step loop (batches from the sampler, one sample per
// index from make_sample), counters, learning rate and trainer state. The schedule lives in Python,
// so dnn_trainer's own learning-rate shrinking is switched off.

template <typename net_type, typename sample_type>
class dnn_trainer_run : public face_trainer {
public:
    double train(long steps) override {
        set_blas_threads(options_.threads);
        trainer_.clear_average_loss();
        std::vector<size_t> indices;
        std::vector<unsigned long> labels;
        std::vector<sample_type> batch;
        for (long s = 0; s < steps; ++s) {
            sampler_.next(indices, labels);
            batch.clear();
            for (size_t i : indices) batch.push_back(make_sample(i));
            // dnn_trainer computes in its own thread; the next batch is prepared meanwhile.
            trainer_.train_one_step(batch, labels);
            ++step_;
        }
        return trainer_.get_average_loss();
    }

    long step() const override { return step_; }
    double learning_rate() const override { return trainer_.get_learning_rate(); }
    void set_learning_rate(double lr) override { trainer_.set_learning_rate(lr); }

    std::string checkpoint() override {
        trained_net().clean();  // drop cached activations/gradients (10x smaller); the next step reallocates them
        return save_state(trainer_, sampler_.rnd(), step_);
    }
    void restore(const std::string& bytes) override { load_state(bytes, trainer_, sampler_.rnd(), step_); }

protected:
    dnn_trainer_run(net_type net, const std::vector<unsigned long>& labels, const train_options& options)
        : options_(options), sampler_(labels, options.identities_per_batch, options.images_per_identity, options.seed), net_(std::move(net)),
          trainer_(net_, dlib::sgd(options.weight_decay, options.momentum)) {
        trainer_.be_quiet();
        trainer_.set_learning_rate(options.learning_rate);
        trainer_.set_iterations_without_progress_threshold(1000000000);
        trainer_.set_test_iterations_without_progress_threshold(1000000000);
    }

    virtual sample_type make_sample(size_t index) = 0;

    net_type& trained_net() {
        trainer_.get_net();  // waits for the training thread
        return net_;
    }

    train_options options_;
    batch_sampler sampler_;
    net_type net_;
    dlib::dnn_trainer<net_type> trainer_;
    long step_ = 0;
};

// The whole net through dnn_trainer (lower levels frozen by learning-rate multipliers).
template <typename net_type>
class full_trainer : public dnn_trainer_run<net_type, chip_type> {
    using base = dnn_trainer_run<net_type, chip_type>;

public:
    full_trainer(net_type net, train_data data, const train_options& options)
        : base(std::move(net), data.labels, options), data_(std::move(data)) {
        // levels below first_trained_level are frozen: every layer at or below the top of level k-1
        const int k = options.first_trained_level;
        set_multipliers(this->net_, k == 0 ? face_net_levels::net::num_layers : face_net_levels::top_layer_of_level(k - 1),
                        options.stop_backprop);
    }

    face_test_net testing_net() override { return face_test_net(this->trained_net()); }

    std::string training_net_bytes() override {
        if constexpr (!std::is_same_v<net_type, face_test_net>) {
            face_train_net copy = this->trained_net();
            return serialize_net(copy);
        }
        return std::string();
    }

    std::vector<std::pair<size_t, std::vector<float>>> parameters() override { return parameters_of(this->trained_net()); }

private:
    chip_type make_sample(size_t i) override {
        return this->options_.augment ? augmented(data_.chips[i], this->sampler_.rnd()) : data_.chips[i];
    }

    train_data data_;
};

// --------------------------------------------------------------------------------------------
// The frozen-BN (affine) net, data-parallel: the batch is split over worker threads, each with its
// own replica and a single-threaded BLAS (dlib's layers other than GEMMs run on one core, so one
// dnn_trainer leaves the second core idle most of a step). loss_metric sees all embeddings of the
// batch at once, so the loss and its gradient are exactly dnn_trainer's; with batch norm frozen the
// parameter gradient is the sum of the replicas' gradients, and one dlib sgd update (same solver,
// same learning-rate multipliers) is applied. Augmentation runs in the workers too, each sample
// drawn from its own generator seeded per step, so results do not depend on the thread count.

// What loss_metric_::compute_loss_value_and_gradient needs from the net below it.
struct embedding_batch {
    resizable_tensor output, gradient;
    const tensor& get_output() const { return output; }
    tensor& get_gradient_input() { return gradient; }
    static unsigned int sample_expansion_factor() { return 1; }
};

class parallel_affine_trainer : public face_trainer {
public:
    parallel_affine_trainer(fast_test_net net, train_data data, const train_options& options)
        : data_(std::move(data)), options_(options), sampler_(data_.labels, options.identities_per_batch, options.images_per_identity, options.seed), learning_rate_(options.learning_rate),
          solvers_(fast_test_net::num_computational_layers, dlib::sgd(options.weight_decay, options.momentum)) {
        const int k = options.first_trained_level;
        set_multipliers(net, k == 0 ? face_net_levels::net::num_layers : face_net_levels::top_layer_of_level(k - 1),
                        options.stop_backprop);
        replicas_.assign(std::max(1, options.threads), net);
        inputs_.resize(replicas_.size());
        slices_.resize(replicas_.size());
    }

    double train(long steps) override {
        set_blas_threads(replicas_.size() > 1 ? 1 : options_.threads);
        double total = 0;
        for (long s = 0; s < steps; ++s) total += one_step();
        return steps > 0 ? total / steps : 0.0;
    }

    long step() const override { return step_; }
    double learning_rate() const override { return learning_rate_; }
    void set_learning_rate(double lr) override { learning_rate_ = lr; }
    face_test_net testing_net() override { return face_test_net(replicas_.front()); }
    std::string training_net_bytes() override { return std::string(); }

    std::string checkpoint() override {
        for (auto& r : replicas_) r.clean();
        std::ostringstream out;
        serialize(replicas_.front(), out);
        serialize(solvers_, out);
        serialize(sampler_.rnd(), out);
        dlib::serialize(step_, out);
        dlib::serialize(learning_rate_, out);
        return out.str();
    }

    void restore(const std::string& bytes) override {
        std::istringstream in(bytes);
        fast_test_net net;
        deserialize(net, in);
        deserialize(solvers_, in);
        deserialize(sampler_.rnd(), in);
        dlib::deserialize(step_, in);
        dlib::deserialize(learning_rate_, in);
        const int k = options_.first_trained_level;   // the frozen levels again (runtime settings are not serialised)
        set_multipliers(net, k == 0 ? face_net_levels::net::num_layers : face_net_levels::top_layer_of_level(k - 1),
                        options_.stop_backprop);
        replicas_.assign(replicas_.size(), net);
    }

    std::vector<std::pair<size_t, std::vector<float>>> parameters() override { return parameters_of(replicas_.front()); }

private:
    double one_step() {
        std::vector<size_t> indices;
        std::vector<unsigned long> labels;
        sampler_.next(indices, labels);
        const std::uint64_t step_seed = sampler_.rnd().get_random_64bit_number();
        const long n = static_cast<long>(indices.size());
        const long workers = std::min<long>(static_cast<long>(replicas_.size()), n);  // no empty slices

        // forward: each worker its slice of the batch
        parallel_slices(n, workers, [&](long w, long begin, long end) {
            slices_[w] = {begin, end};
            std::vector<chip_type> batch;
            for (long i = begin; i < end; ++i) {
                if (!options_.augment) {
                    batch.push_back(data_.chips[indices[i]]);
                    continue;
                }
                dlib::rand rnd("pyfacedlib-augment-" + std::to_string(step_seed) + "-" + std::to_string(i));
                batch.push_back(augmented(data_.chips[indices[i]], rnd));
            }
            replicas_[w].to_tensor(batch.begin(), batch.end(), inputs_[w]);
            replicas_[w].subnet().forward(inputs_[w]);
        });

        // loss_metric over the whole batch
        embedding_batch all;
        all.output.set_size(n, descriptor_size);
        all.gradient.set_size(n, descriptor_size);
        for (long w = 0; w < workers; ++w) {
            const tensor& out = replicas_[w].subnet().get_output();
            std::memcpy(all.output.host() + slices_[w].first * descriptor_size, out.host(), out.size() * sizeof(float));
        }
        const double loss = loss_.compute_loss_value_and_gradient(all.output, labels.begin(), all);

        // backward: each worker its slice of the gradient
        parallel_slices(n, workers, [&](long w, long begin, long end) {
            resizable_tensor gradient(end - begin, descriptor_size);
            std::memcpy(gradient.host(), all.gradient.host() + begin * descriptor_size, gradient.size() * sizeof(float));
            replicas_[w].subnet().back_propagate_error(inputs_[w], gradient);
        });

        // sum parameter gradients into replica 0, one sgd update, then share the new parameters
        std::vector<std::vector<tensor*>> grads(workers);
        for (long w = 0; w < workers; ++w)
            visit_layer_parameter_gradients(replicas_[w], [&](size_t, tensor& t) { grads[w].push_back(&t); });
        for (size_t g = 0; g < grads[0].size(); ++g)
            for (long w = 1; w < workers; ++w)
                if (grads[0][g]->size() != 0) tt::add(*grads[0][g], *grads[0][g], *grads[w][g]);
        replicas_.front().subnet().update_parameters(make_sstack(solvers_), learning_rate_);
        if (replicas_.size() > 1) {
            std::vector<tensor*> master;
            visit_layer_parameters(replicas_.front(), [&](size_t, tensor& t) { master.push_back(&t); });
            for (size_t w = 1; w < replicas_.size(); ++w) {
                size_t i = 0;
                visit_layer_parameters(replicas_[w], [&](size_t, tensor& t) {
                    if (t.size() != 0) std::memcpy(t.host(), master[i]->host(), t.size() * sizeof(float));
                    ++i;
                });
            }
        }
        ++step_;
        return loss;
    }

    train_data data_;
    train_options options_;
    batch_sampler sampler_;
    double learning_rate_;
    std::vector<dlib::sgd> solvers_;        // one per computational layer, as dnn_trainer keeps them
    std::vector<fast_test_net> replicas_;   // replicas_[0] holds the model; the others follow it
    std::vector<resizable_tensor> inputs_;
    std::vector<std::pair<long, long>> slices_;
    loss_metric_ loss_;
    long step_ = 0;
};

// --------------------------------------------------------------------------------------------
// Head fast path: the frozen trunk runs once per (augmented) image, its 256-D pooled features are
// cached, and only the final fc_no_bias<128> learns, on features.

using feature_type = matrix<float, 0, 1>;
using head_net = loss_metric<fc_no_bias<128, input<feature_type>>>;

class head_trainer : public dnn_trainer_run<head_net, feature_type> {
    using base = dnn_trainer_run<head_net, feature_type>;

public:
    head_trainer(face_test_net trunk, train_data data, const train_options& options)
        : base(head_net(), data.labels, options), trunk_(std::move(trunk)), images_(data.labels.size()) {
        compute_features(data.chips);
        feature_type probe(256);
        probe = 0;
        net_(probe);  // set up, then start from the base net's fc weights
        copy_fc(layer<1>(trunk_).layer_details(), layer<1>(net_).layer_details());
    }

    face_test_net testing_net() override {
        face_test_net out = trunk_;
        copy_fc(layer<1>(trained_net()).layer_details(), layer<1>(out).layer_details());
        return out;
    }

    std::string training_net_bytes() override { return std::string(); }

    std::vector<std::pair<size_t, std::vector<float>>> parameters() override {
        auto net = testing_net();
        return parameters_of(net);
    }

private:
    template <typename from_type, typename to_type>
    static void copy_fc(const from_type& from, to_type& to) {
        const tensor& src = from.get_layer_params();
        tensor& dst = to.get_layer_params();
        if (src.size() != dst.size()) throw std::logic_error("fc layer sizes differ");
        std::memcpy(dst.host(), src.host(), src.size() * sizeof(float));
    }

    void compute_features(const std::vector<chip_type>& chips) {
        const size_t copies = options_.augment ? std::max(1, options_.head_feature_copies) : 1;
        dlib::rand rnd("pyfacedlib-features-" + std::to_string(options_.seed));
        std::vector<chip_type> views;
        views.reserve(chips.size() * copies);
        for (const auto& chip : chips)
            for (size_t c = 0; c < copies; ++c) views.push_back(c == 0 ? chip : augmented(chip, rnd));
        // the trunk = everything below the fc layer: layer<2> is avg_pool_everything's output
        const int workers = std::max(1, options_.threads);
        set_blas_threads(1);
        std::vector<face_test_net> nets(workers, trunk_);
        features_.assign(views.size(), feature_type());
        parallel_slices(static_cast<long>(views.size()), workers, [&](long w, long begin, long end) {
            resizable_tensor x;
            for (long b = begin; b < end; b += 16) {
                const long e = std::min(end, b + 16);
                nets[w].to_tensor(views.begin() + b, views.begin() + e, x);
                const tensor& pooled = layer<2>(nets[w]).forward(x);
                const long dims = pooled.k() * pooled.nr() * pooled.nc();
                for (long i = b; i < e; ++i) features_[i] = dlib::mat(pooled.host() + (i - b) * dims, dims);
            }
        });
    }

    feature_type make_sample(size_t i) override {
        const size_t copies = features_.size() / images_;
        return features_[i * copies + sampler_.rnd().get_random_32bit_number() % copies];
    }

    face_test_net trunk_;
    size_t images_;
    std::vector<feature_type> features_;  // copies per image, image-major
};

}  // namespace

namespace {

void check_run(const train_data& data, const train_options& o) {
    constexpr int head_level = face_net_levels::num_levels - 1;
    if (data.chips.size() != data.labels.size()) throw std::invalid_argument("one label per chip is needed");
    std::map<unsigned long, long> per_identity;
    for (const auto label : data.labels) ++per_identity[label];
    if (per_identity.size() < 2) throw std::invalid_argument("training needs at least 2 identities");
    if (o.first_trained_level < 0 || o.first_trained_level > head_level)
        throw std::invalid_argument("the first trained level must be in 0.." + std::to_string(head_level));
    if (!(o.learning_rate >= 0) || !std::isfinite(o.learning_rate))
        throw std::invalid_argument("learning_rate must be a finite number >= 0");
    if (o.identities_per_batch < 2 || o.images_per_identity < 2)
        throw std::invalid_argument("mini-batches need >= 2 identities of >= 2 images each (loss_metric's pairs)");
    if (o.threads < 1 || o.head_feature_copies < 1) throw std::invalid_argument("threads and head_feature_copies must be >= 1");
}

}  // namespace

std::unique_ptr<face_trainer> make_trainer(const std::string& base_bytes, const std::string& base_label,
                                           bool train_bn_net, train_data data, const train_options& options) {
    check_run(data, options);
    if (options.first_trained_level == face_net_levels::num_levels - 1)  // head only: the trunk, batch norm included, is frozen
        return std::make_unique<head_trainer>(load_test_net(base_bytes, base_label), std::move(data), options);
    if (train_bn_net && !options.fast_path)
        return std::make_unique<full_trainer<face_train_net>>(load_bn_net(base_bytes, base_label), std::move(data), options);
    if (train_bn_net)
        return std::make_unique<full_trainer<fast_train_net>>(fast_train_net(load_bn_net(base_bytes, base_label)), std::move(data), options);
#ifndef DLIB_USE_CUDA  // CPU replicas; with CUDA one dnn_trainer feeds the GPU
    if (options.fast_path)
        return std::make_unique<parallel_affine_trainer>(fast_test_net(load_affine_net(base_bytes, base_label)), std::move(data), options);
#endif
    return std::make_unique<full_trainer<face_test_net>>(load_affine_net(base_bytes, base_label), std::move(data), options);
}

}  // namespace pfd

// The fine-tuning runs shared by the training translation units (training.cpp, training_bn.cpp,
// training_affine.cpp): the helpers, the dnn_trainer-driven run and the full-net trainer. The
// instantiations of the full net are spread over those files so that they compile in parallel.
// Internal to the training code: everything is in pfd::training_detail.
#pragma once

#include "training.h"

#include "blas.h"
#include "net_io.h"
#include "sampler.h"

#include <dlib/image_transforms.h>

#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace pfd::training_detail {

using namespace dlib;  // the training code works on dlib nets throughout (confined to this namespace)


// Mini-batches of N identities x M images: both positive and negative pairs in every batch.
// jitter_image's random crop/scale/rotation/flip plus a random colour offset, as in dlib's
// metric-learning example.
inline chip_type augmented(const chip_type& chip, dlib::rand& rnd) {
    chip_type out = dlib::jitter_image(chip, rnd);
    dlib::apply_random_color_offset(out, rnd);
    return out;
}

// The augmented copy of the `position`-th sample of a step: its own generator, seeded from the step's
// seed (one number drawn from the sampler per step), so every trainer and thread count draws the
// same batch and the same augmentation.
inline chip_type augmented_sample(const chip_type& chip, std::uint64_t step_seed, long position) {
    dlib::rand rnd("pyfacedlib-augment-" + std::to_string(step_seed) + "-" + std::to_string(position));
    return augmented(chip, rnd);
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

template <typename layer_type, typename = void>
struct counts_gradient_passes : std::false_type {};
template <typename layer_type>
struct counts_gradient_passes<layer_type, std::void_t<decltype(std::declval<const layer_type&>().gradient_passes())>>
    : std::true_type {};

// The fine-tuning level (face_levels::num_levels) of layer<idx> of the embedding net.
inline int level_of_layer(size_t idx) {
    for (int k = 0; k < face_net_levels::num_levels - 1; ++k)
        if (idx >= face_net_levels::top_layer_of_level(k)) return k;
    return face_net_levels::num_levels - 1;
}

// Adds each counting convolution's gradient passes to its level's entry of `counts` (num_levels
// entries); class_layers as in first_frozen_layer. False when the net has no counting convolution.
template <typename net_type>
bool add_gradient_passes(net_type& net, size_t class_layers, std::vector<long>& counts) {
    bool any = false;
    visit_computational_layers(net, [&](size_t idx, auto& l) {
        if constexpr (counts_gradient_passes<std::decay_t<decltype(l)>>::value) {
            counts[level_of_layer(idx - class_layers)] += l.gradient_passes();
            any = true;
        }
    });
    return any;
}

template <typename net_type>
void reset_gradient_passes(net_type& net) {
    visit_computational_layers(net, [&](size_t, auto& l) {
        if constexpr (counts_gradient_passes<std::decay_t<decltype(l)>>::value) l.reset_gradient_passes();
    });
}

// The first layer index frozen when levels >= first_trained_level learn; class_layers = layers above
// fc_no_bias<128> (1 for a margin net's cosine_fc, 0 for loss_metric).
inline size_t first_frozen_layer(int first_trained_level, size_t class_layers) {
    const int k = first_trained_level;
    return (k == 0 ? face_net_levels::net::num_layers : face_net_levels::top_layer_of_level(k - 1)) + class_layers;
}

// What a trainer's net is made of: a loss_metric net is its own embedding net; a margin net
// (margin.h) is the embedding net with a cosine class layer and the margin loss on top.
template <typename net_type>
struct net_parts {
    static constexpr size_t class_layers = 0;
    using embedding_type = net_type;
    static const net_type& embedding(const net_type& net) { return net; }
    static matrix<float> class_centres(const net_type&) { return matrix<float>(); }
};

template <typename S>
struct net_parts<add_loss_layer<loss_margin_, add_layer<cosine_fc_, S>>> {
    static constexpr size_t class_layers = 1;
    using embedding_type = loss_metric<S>;
    static embedding_type embedding(const add_loss_layer<loss_margin_, add_layer<cosine_fc_, S>>& net) {
        return embedding_part<embedding_type>(net);
    }
    static matrix<float> class_centres(const add_loss_layer<loss_margin_, add_layer<cosine_fc_, S>>& net) {
        return net.subnet().layer_details().centres();
    }
};

inline loss_margin_ margin_loss_of(const margin_options& o) { return loss_margin_(o.scale, o.angular_margin, o.cosine_margin); }

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
        reset_gradient_passes(trained_net());
        head_passes_ = 0;
        trainer_.clear_average_loss();
        std::vector<size_t> indices;
        std::vector<unsigned long> labels;
        std::vector<sample_type> batch;
        for (long s = 0; s < steps; ++s) {
            sampler_.next(indices, labels);
            const std::uint64_t step_seed = sampler_.rnd().get_random_64bit_number();
            batch.clear();
            for (size_t k = 0; k < indices.size(); ++k) batch.push_back(make_sample(indices[k], step_seed, static_cast<long>(k)));
            // dnn_trainer computes in its own thread; the next batch is prepared meanwhile.
            trainer_.train_one_step(batch, labels);
            ++step_;
            ++head_passes_;
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

    std::vector<long> backward_counts() override {
        std::vector<long> counts(face_net_levels::num_levels, 0);
        if (!add_gradient_passes(trained_net(), net_parts<net_type>::class_layers, counts)) return {};
        counts.back() = head_passes_;
        return counts;
    }

protected:
    dnn_trainer_run(net_type net, const std::vector<unsigned long>& labels, const train_options& options)
        : options_(options), sampler_(labels, options.identities_per_batch, options.images_per_identity, options.seed), net_(std::move(net)),
          trainer_(net_, dlib::sgd(options.weight_decay, options.momentum)) {
        trainer_.be_quiet();
        trainer_.set_learning_rate(options.learning_rate);
        trainer_.set_iterations_without_progress_threshold(1000000000);
        trainer_.set_test_iterations_without_progress_threshold(1000000000);
    }

    // Sample `index` of the data as the `position`-th of a step seeded with `step_seed`.
    virtual sample_type make_sample(size_t index, std::uint64_t step_seed, long position) = 0;

    net_type& trained_net() {
        trainer_.get_net();  // waits for the training thread
        return net_;
    }

    train_options options_;
    batch_sampler sampler_;
    net_type net_;
    dlib::dnn_trainer<net_type> trainer_;
    long step_ = 0;
    long head_passes_ = 0;   // backward passes of the last train() call
};

// The whole net through dnn_trainer (lower levels frozen by learning-rate multipliers).
template <typename net_type>
class full_trainer : public dnn_trainer_run<net_type, chip_type> {
    using base = dnn_trainer_run<net_type, chip_type>;
    using parts = net_parts<net_type>;
    using embedding_type = typename parts::embedding_type;

public:
    full_trainer(net_type net, train_data data, const train_options& options)
        : base(std::move(net), data.labels, options), data_(std::move(data)) {
        // levels below first_trained_level are frozen: every layer at or below the top of level k-1
        set_multipliers(this->net_, first_frozen_layer(options.first_trained_level, parts::class_layers), options.stop_backprop);
    }

    face_test_net testing_net() override { return face_test_net(parts::embedding(this->trained_net())); }

    std::unique_ptr<face_train_net> training_net() override {
        if constexpr (!std::is_same_v<embedding_type, face_test_net> && !std::is_same_v<embedding_type, fast_test_net>)
            return std::make_unique<face_train_net>(parts::embedding(this->trained_net()));
        return nullptr;
    }

    std::vector<std::pair<size_t, std::vector<float>>> parameters() override {
        embedding_type net = parts::embedding(this->trained_net());
        return parameters_of(net);
    }

    dlib::matrix<float> class_centres() override { return parts::class_centres(this->trained_net()); }

private:
    chip_type make_sample(size_t i, std::uint64_t step_seed, long position) override {
        return this->options_.augment ? augmented_sample(data_.chips[i], step_seed, position) : data_.chips[i];
    }

    train_data data_;
};

// A dnn_trainer run of `net` with the run's loss: loss_metric, or the margin head on top of it.
template <typename metric_net>
std::unique_ptr<face_trainer> full_run(metric_net net, train_data data, const train_options& options) {
    if (!options.margin.enabled) return std::make_unique<full_trainer<metric_net>>(std::move(net), std::move(data), options);
    return std::make_unique<full_trainer<margin_net_of<metric_net>>>(
        with_margin_head(net, options.margin.centres, margin_loss_of(options.margin)), std::move(data), options);
}

// The bn_con net through dnn_trainer (fast_path: fast_con convolutions; else dlib's con_, the
// reference, loss_metric only). training_bn.cpp.
std::unique_ptr<face_trainer> bn_net_run(face_train_net net, train_data data, const train_options& options);

// The affine (frozen-BN) net through one dnn_trainer with dlib's con_: the reference, and the CUDA
// path. training_affine.cpp.
std::unique_ptr<face_trainer> affine_net_run(face_test_net net, train_data data, const train_options& options);

}  // namespace pfd::training_detail

#include "training_runs.h"

#include "model_io.h"
#include "parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <stdexcept>

namespace pfd {

using namespace training_detail;  // the shared training code (and through it dlib's names)

namespace {

// --------------------------------------------------------------------------------------------
// The frozen-BN (affine) net, data-parallel: the batch is split over worker threads, each with its
// own replica and a single-threaded BLAS (dlib's layers other than GEMMs run on one core, so one
// dnn_trainer leaves the second core idle most of a step). loss_metric sees all embeddings of the
// batch at once, so the loss and its gradient are exactly dnn_trainer's; with batch norm frozen the
// parameter gradient is the sum of the replicas' gradients, and one dlib sgd update (same solver,
// same learning-rate multipliers) is applied. Augmentation runs in the workers too, each sample
// drawn from its own generator seeded per step, so results do not depend on the thread count.

// The batch's embeddings and their gradient, as the loss sees them.
using embedding_batch = tensor_pair;

// The loss over the whole batch of embeddings, between the replicas' forward and backward passes:
// loss_metric, or the margin loss with its class layer (which updates its own parameters, as
// dnn_trainer would: gradients from the pre-step parameters, the same sgd).
class batch_objective {
public:
    virtual ~batch_objective() = default;
    // The batch's loss; fills all.gradient with d loss / d embeddings.
    virtual double step(embedding_batch& all, const std::vector<unsigned long>& labels, double learning_rate) = 0;
    virtual void save(std::ostream&) const {}
    virtual void load(std::istream&) {}
    virtual matrix<float> class_centres() const { return matrix<float>(); }
};

class metric_objective : public batch_objective {
public:
    double step(embedding_batch& all, const std::vector<unsigned long>& labels, double) override {
        return loss_.compute_loss_value_and_gradient(all.output, labels.begin(), all);
    }

private:
    loss_metric_ loss_;
};

class margin_objective : public batch_objective {
public:
    margin_objective(const train_options& o)
        : layer_(o.margin.centres), loss_(margin_loss_of(o.margin)), solver_(o.weight_decay, o.momentum) {}

    double step(embedding_batch& all, const std::vector<unsigned long>& labels, double learning_rate) override {
        layer_.setup(all);  // checks the sizes
        embedding_batch cosines;
        layer_.forward(all, cosines.output);
        cosines.gradient.copy_size(cosines.output);
        const double loss = loss_.compute_loss_value_and_gradient(cosines.output, labels.begin(), cosines);
        all.gradient = 0;
        params_grad_.copy_size(layer_.get_layer_params());
        layer_.backward(cosines.gradient, all, params_grad_);
        if (layer_.get_learning_rate_multiplier() != 0) {
            const tensor& change = solver_(static_cast<float>(learning_rate), layer_, params_grad_);
            tt::add(layer_.get_layer_params(), layer_.get_layer_params(), change);
        }
        return loss;
    }

    matrix<float> class_centres() const override { return layer_.centres(); }

    void save(std::ostream& out) const override {
        serialize(layer_, out);
        serialize(solver_, out);
    }
    void load(std::istream& in) override {
        deserialize(layer_, in);
        deserialize(solver_, in);
    }

private:
    cosine_fc_ layer_;
    loss_margin_ loss_;
    dlib::sgd solver_;
    resizable_tensor params_grad_;
};

class parallel_affine_trainer : public face_trainer {
public:
    parallel_affine_trainer(fast_test_net net, train_data data, const train_options& options)
        : data_(std::move(data)), options_(options), sampler_(data_.labels, options.identities_per_batch, options.images_per_identity, options.seed), learning_rate_(options.learning_rate),
          solvers_(fast_test_net::num_computational_layers, dlib::sgd(options.weight_decay, options.momentum)) {
        if (options.margin.enabled)
            objective_ = std::make_unique<margin_objective>(options);
        else
            objective_ = std::make_unique<metric_objective>();
        set_multipliers(net, first_frozen_layer(options.first_trained_level, 0), options.stop_backprop);
        replicas_.assign(std::max(1, options.threads), net);
        inputs_.resize(replicas_.size());
        slices_.resize(replicas_.size());
    }

    double train(long steps) override {
        set_blas_threads(replicas_.size() > 1 ? 1 : options_.threads);
        for (auto& r : replicas_) reset_gradient_passes(r);
        head_passes_ = 0;
        double total = 0;
        for (long s = 0; s < steps; ++s) total += one_step();
        return steps > 0 ? total / steps : 0.0;
    }

    long step() const override { return step_; }
    double learning_rate() const override { return learning_rate_; }
    void set_learning_rate(double lr) override { learning_rate_ = lr; }
    face_test_net testing_net() override { return face_test_net(replicas_.front()); }
    std::unique_ptr<face_train_net> training_net() override { return nullptr; }

    std::string checkpoint() override {
        for (auto& r : replicas_) r.clean();
        std::ostringstream out;
        serialize(replicas_.front(), out);
        serialize(solvers_, out);
        serialize(sampler_.rnd(), out);
        dlib::serialize(step_, out);
        dlib::serialize(learning_rate_, out);
        objective_->save(out);
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
        objective_->load(in);
        // the frozen levels again (runtime settings are not serialised)
        set_multipliers(net, first_frozen_layer(options_.first_trained_level, 0), options_.stop_backprop);
        replicas_.assign(replicas_.size(), net);
    }

    std::vector<std::pair<size_t, std::vector<float>>> parameters() override { return parameters_of(replicas_.front()); }
    dlib::matrix<float> class_centres() override { return objective_->class_centres(); }

    std::vector<long> backward_counts() override {
        std::vector<long> counts(face_net_levels::num_levels, 0);
        bool any = false;
        for (auto& r : replicas_) any = add_gradient_passes(r, 0, counts) || any;
        if (!any) return {};
        counts.back() = head_passes_;
        return counts;
    }

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
            for (long i = begin; i < end; ++i)
                batch.push_back(options_.augment ? augmented_sample(data_.chips[indices[i]], step_seed, i) : data_.chips[indices[i]]);
            replicas_[w].to_tensor(batch.begin(), batch.end(), inputs_[w]);
            replicas_[w].subnet().forward(inputs_[w]);
        });

        // the loss over the whole batch
        embedding_batch all;
        all.output.set_size(n, descriptor_size);
        all.gradient.set_size(n, descriptor_size);
        for (long w = 0; w < workers; ++w) {
            const tensor& out = replicas_[w].subnet().get_output();
            std::memcpy(all.output.host() + slices_[w].first * descriptor_size, out.host(), out.size() * sizeof(float));
        }
        const double loss = objective_->step(all, labels, learning_rate_);

        // backward: each worker its slice of the gradient
        parallel_slices(n, workers, [&](long w, long begin, long end) {
            resizable_tensor gradient(end - begin, descriptor_size);
            std::memcpy(gradient.host(), all.gradient.host() + begin * descriptor_size, gradient.size() * sizeof(float));
            replicas_[w].subnet().back_propagate_error(inputs_[w], gradient);
        });
        head_passes_ += workers;

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
    std::unique_ptr<batch_objective> objective_;
    long step_ = 0;
    long head_passes_ = 0;   // backward passes (one per replica that had samples) of the last train() call
};

// --------------------------------------------------------------------------------------------
// Head fast path: the frozen trunk runs once per (augmented) image, its 256-D pooled features are
// cached, and only the final fc_no_bias<128> learns, on features.

using feature_type = matrix<float, 0, 1>;
using head_net = loss_metric<fc_no_bias<128, input<feature_type>>>;

template <typename net_type>  // head_net or margin_net_of<head_net>
class head_trainer : public dnn_trainer_run<net_type, feature_type> {
    using base = dnn_trainer_run<net_type, feature_type>;
    using parts = net_parts<net_type>;
    using base::net_;
    using base::options_;
    using base::sampler_;

public:
    head_trainer(face_test_net trunk, train_data data, const train_options& options)
        : base(net_type(), data.labels, options), trunk_(std::move(trunk)), images_(data.labels.size()) {
        compute_features(data.chips);
        feature_type probe(256);
        probe = 0;
        head_net head;
        head(probe);  // set up, then start from the base net's fc weights
        copy_fc(layer<1>(trunk_).layer_details(), layer<1>(head).layer_details());
        if constexpr (parts::class_layers == 0)
            net_ = head;
        else
            net_ = with_margin_head(head, options.margin.centres, margin_loss_of(options.margin));
    }

    face_test_net testing_net() override {
        face_test_net out = trunk_;
        auto head = parts::embedding(this->trained_net());
        copy_fc(layer<1>(head).layer_details(), layer<1>(out).layer_details());
        return out;
    }

    std::unique_ptr<face_train_net> training_net() override { return nullptr; }

    dlib::matrix<float> class_centres() override { return parts::class_centres(this->trained_net()); }

    std::vector<std::pair<size_t, std::vector<float>>> parameters() override {
        auto net = testing_net();
        return parameters_of(net);
    }

    // The trunk is not in this net (its features are cached): only the head back-propagates.
    std::vector<long> backward_counts() override {
        this->trained_net();  // waits for the training thread
        std::vector<long> counts(face_net_levels::num_levels, 0);
        counts.back() = this->head_passes_;
        return counts;
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

    feature_type make_sample(size_t i, std::uint64_t, long) override {
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
    if (o.margin.enabled) {
        margin_loss_of(o.margin);  // checks scale and margins
        const auto& centres = o.margin.centres;
        if (centres.nc() != static_cast<long>(descriptor_size))
            throw std::invalid_argument("class centres need " + std::to_string(descriptor_size) + " columns, got " + std::to_string(centres.nc()));
        if (static_cast<unsigned long>(centres.nr()) <= per_identity.rbegin()->first)
            throw std::invalid_argument("class centres need one row per label value (labels go up to " +
                                        std::to_string(per_identity.rbegin()->first) + ", got " + std::to_string(centres.nr()) + " rows)");
        if (!dlib::is_finite(centres) || min(sum_cols(squared(centres))) <= 0)
            throw std::invalid_argument("class centres must be finite and non-zero");
    }
}

}  // namespace

std::string export_affine_net(face_trainer& trainer, double descriptor_scale) {
    face_test_net net = trainer.testing_net();
    if (descriptor_scale != 1.0) scale_descriptors(net, descriptor_scale);
    return serialize_net(net);
}

std::string export_training_net(face_trainer& trainer, double descriptor_scale) {
    const auto net = trainer.training_net();
    if (!net) return std::string();
    if (descriptor_scale != 1.0) scale_descriptors(*net, descriptor_scale);
    return serialize_net(*net);  // clean()s it
}

std::unique_ptr<face_trainer> make_trainer(const std::string& base_bytes, const std::string& base_label,
                                           bool train_bn_net, train_data data, const train_options& options) {
    check_run(data, options);
    if (options.first_trained_level == face_net_levels::num_levels - 1) {  // head only: the trunk, batch norm included, is frozen
        if (options.margin.enabled)
            return std::make_unique<head_trainer<margin_net_of<head_net>>>(load_test_net(base_bytes, base_label), std::move(data), options);
        return std::make_unique<head_trainer<head_net>>(load_test_net(base_bytes, base_label), std::move(data), options);
    }
    if (train_bn_net) return training_detail::bn_net_run(load_bn_net(base_bytes, base_label), std::move(data), options);
#ifndef DLIB_USE_CUDA  // CPU replicas; with CUDA one dnn_trainer feeds the GPU
    if (options.fast_path)
        return std::make_unique<parallel_affine_trainer>(fast_test_net(load_affine_net(base_bytes, base_label)), std::move(data), options);
#endif
    return training_detail::affine_net_run(load_affine_net(base_bytes, base_label), std::move(data), options);
}

}  // namespace pfd

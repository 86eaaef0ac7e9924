// Fine-tuning the face net with dlib's dnn_trainer and loss_metric.
#pragma once

#include "face_net.h"
#include "inference.h"
#include "margin.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pfd {

// The loss: dlib's loss_metric (enabled = false), or a softmax margin loss (margin.h) over a
// cosine class layer that starts from `centres` (one row per label value, 128 columns).
struct margin_options {
    bool enabled = false;
    double scale = 0;
    double angular_margin = 0;   // ArcFace: cos(theta + m)
    double cosine_margin = 0;    // CosFace: cos(theta) - m
    dlib::matrix<float> centres;
};

// Every field is set by the caller: the user-facing defaults live in one place, pyfacedlib's
// FinetuneConfig. make_trainer() rejects values out of range.
struct train_options {
    int first_trained_level = 0;    // levels >= this learn (face_net_levels::num_levels - 1 = head only)
    double learning_rate = 0;
    double weight_decay = 0.0001;
    double momentum = 0.9;
    int identities_per_batch = 5;
    int images_per_identity = 5;
    bool augment = true;
    int head_feature_copies = 1;    // head fast path: augmented copies whose features are cached
    std::uint64_t seed = 0;
    int threads = 1;
    // full-net runs: fast_con convolutions, and for frozen BN each batch split over `threads` net
    // replicas (exact, faster); false = dlib's con_ in one dnn_trainer (the reference)
    bool fast_path = true;
    // fast path, from_level:K: back-propagation stops at the lowest trained level (the frozen
    // levels' convolutions compute no gradients, see face_trainer::backward_counts; dlib's recursion
    // still calls their batch-norm/affine, relu, pooling and add_prev layers' backward on zero
    // gradients); false = computed through the frozen levels as dlib does (benchmarks)
    bool stop_backprop = true;
    margin_options margin;
};

// A training set: chips and integer identity labels (every identity with >= 2 images).
struct train_data {
    std::vector<chip_type> chips;
    std::vector<unsigned long> labels;
};

// One fine-tuning run. Implementations: the full net (bn_con or affine = frozen batch norm) through
// dnn_trainer, the frozen-BN net data-parallel, and the head fast path (cached trunk features, only
// fc_no_bias<128> learns) -- each with loss_metric or a margin loss. With a margin loss the class
// layer trains too; the model (testing net, exports, parameters) is always the 128-D net without it.
class face_trainer {
public:
    virtual ~face_trainer() = default;
    // Runs `steps` mini-batches; returns their mean loss.
    virtual double train(long steps) = 0;
    virtual long step() const = 0;
    virtual double learning_rate() const = 0;
    virtual void set_learning_rate(double lr) = 0;
    // The current model as the affine testing net (what inference and export use).
    virtual face_test_net testing_net() = 0;
    // A copy of the current bn_con training net (null when the run trains the affine net).
    virtual std::unique_ptr<face_train_net> training_net() = 0;
    // Trainer state (net, solver, counters, sampler) to resume from.
    virtual std::string checkpoint() = 0;
    virtual void restore(const std::string& bytes) = 0;
    // Per computational layer index: a copy of its learnable parameters (none for affine_ layers).
    virtual std::vector<std::pair<size_t, std::vector<float>>> parameters() = 0;
    // A margin run's class layer (classes x 128, as trained); empty for loss_metric.
    virtual dlib::matrix<float> class_centres() = 0;
    // Per fine-tuning level (face_net_levels::num_levels entries, 0 = stem ... 6 = head), the backward
    // work of the last train() call: for levels 0..5 how many convolution backward passes computed a
    // gradient (filters or input; summed over replicas), for the head how many backward passes ran
    // through it. Empty where the convolutions do not count (dlib's con_: the reference path, CUDA).
    // A debugging statistic: from_level:K must show 0 below K.
    virtual std::vector<long> backward_counts() = 0;
};

// The trainer's current model as .dat bytes with its descriptors multiplied by `descriptor_scale`
// (1 = as trained; see scale_descriptors), straight from memory: the affine testing net (what
// dlib.face_recognition_model_v1 loads), and the clean()ed bn_con training net (empty when the run
// trains the affine net). std::invalid_argument unless the scale is finite and > 0.
std::string export_affine_net(face_trainer& trainer, double descriptor_scale = 1.0);
std::string export_training_net(face_trainer& trainer, double descriptor_scale = 1.0);

// base: the starting net, as a serialized affine .dat (bn="frozen" or strategy head) or bn_con .dat.
std::unique_ptr<face_trainer> make_trainer(const std::string& base_bytes, const std::string& base_label,
                                           bool train_bn_net, train_data data, const train_options& options);

}  // namespace pfd

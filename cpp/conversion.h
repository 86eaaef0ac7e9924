// affine (testing) <-> bn_con (training) conversion of the face net, and the measurements behind it.
#pragma once

#include "chip.h"
#include "face_net.h"
#include "net_io.h"

#include <memory>
#include <string>
#include <vector>

namespace pfd {

// Per-channel statistics of one batch-norm layer's input.
struct channel_stats {
    std::vector<double> mean, var;
    double count = 0;  // values per channel seen
};

// Streams chips through the affine net and accumulates every BN input's per-channel mean and
// variance (Chan/Welford merge in double precision; activations are never stored).
class bn_input_statistics {
public:
    bn_input_statistics(const face_test_net& net, int threads);
    ~bn_input_statistics();
    bn_input_statistics(const bn_input_statistics&) = delete;
    bn_input_statistics& operator=(const bn_input_statistics&) = delete;
    void add(const std::vector<chip_type>& chips);
    std::vector<channel_stats> result() const;  // one per BN layer, bottom (input side) first... see .cpp
    long faces() const;

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// The training net computing the same function as `affine` in inference. With `stats` (one per BN
// layer, in the order bn_input_statistics reports) the running statistics, gamma and beta are set
// so that training mode (batch statistics) also computes ~the same function on such data.
face_train_net affine_to_bn(const face_test_net& affine, const std::vector<channel_stats>* stats);

// Descriptors of the bn net run in training mode: consecutive batches of `batch_size` chips, every
// BN layer normalising with its batch's statistics (what dnn_trainer sees). `net` is copied, so its
// running statistics are untouched.
std::vector<float> train_mode_descriptors(const face_train_net& net, const std::vector<chip_type>& chips,
                                          long batch_size);

// loss_metric's loss on one mini-batch (training mode for a bn net).
double metric_loss(const face_train_net& net, const std::vector<chip_type>& chips,
                   const std::vector<unsigned long>& labels);
double metric_loss(const face_test_net& net, const std::vector<chip_type>& chips,
                   const std::vector<unsigned long>& labels);

// Mean loss_metric loss of `net` (inference mode) over consecutive mini-batches of `batch_size`
// (a trailing partial batch is left out); 0 when there is no whole batch.
double mean_metric_loss(const face_test_net& net, const std::vector<chip_type>& chips,
                        const std::vector<unsigned long>& labels, long batch_size);

}  // namespace pfd

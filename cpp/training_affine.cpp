// The affine (frozen batch norm) net through one dnn_trainer: the reference path and the CUDA path.
// Its own translation unit, compiled beside the others.
#include "training_runs.h"

namespace pfd::training_detail {

std::unique_ptr<face_trainer> affine_net_run(face_test_net net, train_data data, const train_options& options) {
    return full_run(std::move(net), std::move(data), options);
}

}  // namespace pfd::training_detail

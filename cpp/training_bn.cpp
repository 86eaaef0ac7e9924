// The bn_con (calibrated batch norm) runs: their own translation unit, compiled beside the others.
#include "training_runs.h"

#include <stdexcept>

namespace pfd::training_detail {

std::unique_ptr<face_trainer> bn_net_run(face_train_net net, train_data data, const train_options& options) {
    if (options.fast_path) return full_run(fast_train_net(std::move(net)), std::move(data), options);
    if (options.margin.enabled)
        throw std::invalid_argument("dlib's reference path (fast_path=False) with calibrated batch norm trains loss_metric only");
    return std::make_unique<full_trainer<face_train_net>>(std::move(net), std::move(data), options);
}

}  // namespace pfd::training_detail

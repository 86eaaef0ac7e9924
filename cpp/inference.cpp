#include "inference.h"

#include "blas.h"
#include "model_io.h"
#include "parallel.h"
#include "net_io.h"

#include <algorithm>
#include <cstring>

namespace pfd {

namespace {
#ifdef DLIB_USE_CUDA
constexpr long batch_size = 256;               // chips per forward pass on the GPU
#else
constexpr long batch_size = 16;                // dlib's own Python binding uses 16
#endif
constexpr long folded_batch_size = 8;          // faces per batched GEMM pass of the folded net
constexpr long min_chips_per_worker = 4;       // below this, one worker with a threaded BLAS wins
}  // namespace

std::vector<chip_type> jittered_chips(const std::vector<chip_type>& chips, int num_jitters, std::uint64_t seed) {
    dlib::rand rnd;
    rnd.set_seed(seed == 0 ? std::string() : std::to_string(seed));
    std::vector<chip_type> out;
    out.reserve(chips.size() * num_jitters);
    for (const auto& chip : chips)
        for (int j = 0; j < num_jitters; ++j) out.push_back(dlib::jitter_image(chip, rnd));
    return out;
}

face_embedder::face_embedder(const std::string& model_path, int threads) {
    replicas_.push_back(load_test_net(read_model_bytes(model_path, "dlib face recognition network (.dat)"), model_path));
    init_backend();
    set_threads(threads);
}

face_embedder::face_embedder(const face_test_net& net, int threads) {
    replicas_.push_back(net);
    init_backend();
    set_threads(threads);
}

void face_embedder::init_backend() {
#ifndef DLIB_USE_CUDA  // with CUDA, dlib's cuDNN path is the fast one
    folded_ = std::make_unique<folded_face_net>(replicas_.front());
    folded_->set_conv_kernel(conv_kernel_);
    backend_ = "folded";
#endif
}

void face_embedder::set_conv_kernel(const std::string& name) {
    const conv_kernel kernel = name == "auto" ? best_conv_kernel() : conv_kernel_from_name(name);
    require_conv_kernel(kernel);
    std::lock_guard<std::mutex> lock(mutex_);
    if (folded_) folded_->set_conv_kernel(kernel);
    conv_kernel_ = kernel;
}

std::string face_embedder::conv_kernel_name() const { return pfd::conv_kernel_name(conv_kernel_); }

void face_embedder::set_backend(const std::string& backend) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (backend == "folded") {
        if (!folded_) {
            folded_ = std::make_unique<folded_face_net>(replicas_.front());
            folded_->set_conv_kernel(conv_kernel_);
        }
    } else if (backend != "dlib") {
        throw std::invalid_argument("backend must be 'folded' or 'dlib', got '" + backend + "'");
    }
    backend_ = backend;
}

void face_embedder::set_threads(int threads) {
    std::lock_guard<std::mutex> lock(mutex_);
    threads_ = std::max(1, threads);
    // dlib-net replicas are made when the dlib forward pass first needs them (the folded pass does not)
    replicas_.resize(std::min<size_t>(replicas_.size(), threads_));
    workspaces_.resize(threads_);
}

void face_embedder::forward(const std::vector<chip_type>& chips, float* out) {
    const long n = static_cast<long>(chips.size());
    if (n == 0) return;
    if (backend_ == "folded") {
        const long folded_workers = std::max<long>(1, std::min<long>(threads_, (n + folded_batch_size - 1) / folded_batch_size));
        set_blas_threads(std::max<int>(1, threads_ / static_cast<int>(folded_workers)));
        // each worker runs a contiguous slice of whole batches with its own workspace
        const long batches = (n + folded_batch_size - 1) / folded_batch_size;
        parallel_slices(batches, folded_workers, [&](long worker, long first, long last) {
            for (long b = first; b < last; ++b) {
                const long begin = b * folded_batch_size, count = std::min(folded_batch_size, n - begin);
                folded_->forward(chips.data() + begin, count, out + begin * descriptor_size, workspaces_[worker]);
            }
        });
        return;
    }
#ifdef DLIB_USE_CUDA
    const long max_workers = 1;  // one GPU stream is fed by one net
#else
    const long max_workers = threads_;
#endif
    const long workers = std::max<long>(1, std::min<long>(max_workers, n / min_chips_per_worker));
    while (static_cast<long>(replicas_.size()) < workers) replicas_.push_back(replicas_.front());
    set_blas_threads(std::max<int>(1, threads_ / static_cast<int>(workers)));

    const auto run = [&](long worker, long begin, long end) {
        auto& net = replicas_[worker];
        std::vector<dlib::matrix<float, 0, 1>> descriptors(batch_size);
        for (long b = begin; b < end; b += batch_size) {
            const long e = std::min(end, b + batch_size);
            net(chips.begin() + b, chips.begin() + e, descriptors.begin());
            for (long i = b; i < e; ++i)
                std::memcpy(out + i * descriptor_size, &descriptors[i - b](0), descriptor_size * sizeof(float));
        }
    };
    parallel_slices(n, workers, run);
}

void face_embedder::embed(const std::vector<chip_type>& chips, int num_jitters, std::uint64_t seed, float* out) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (num_jitters <= 1) {
        forward(chips, out);
        return;
    }
    const auto crops = jittered_chips(chips, num_jitters, seed);
    std::vector<float> all(crops.size() * descriptor_size);
    forward(crops, all.data());
    for (size_t i = 0; i < chips.size(); ++i) {
        dlib::matrix<float, 0, 1> sum = dlib::mat(all.data() + i * num_jitters * descriptor_size, descriptor_size);
        for (int j = 1; j < num_jitters; ++j)
            sum += dlib::mat(all.data() + (i * num_jitters + j) * descriptor_size, descriptor_size);
        sum /= static_cast<float>(num_jitters);
        std::memcpy(out + i * descriptor_size, &sum(0), descriptor_size * sizeof(float));
    }
}

}  // namespace pfd

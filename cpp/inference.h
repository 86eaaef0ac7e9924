// Batched, multi-threaded descriptors from the testing (affine) face net.
#pragma once

#include "chip.h"
#include "face_net.h"
#include "folded_net.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace pfd {

// dlib's jitter_image() applied `num_jitters` times to every chip, drawn from one generator seeded
// with `seed` (seed 0 = dlib::rand's default state, i.e. what a freshly loaded dlib model uses).
std::vector<chip_type> jittered_chips(const std::vector<chip_type>& chips, int num_jitters, std::uint64_t seed);

class face_embedder {
public:
    // Loads an affine testing-net .dat file; throws model_format_error on a bad file.
    face_embedder(const std::string& model_path, int threads);
    explicit face_embedder(const face_test_net& net, int threads);

    // Descriptors of `chips` into out[count*128]. num_jitters <= 1: the chips as they are;
    // otherwise the mean descriptor of num_jitters jittered copies (dlib's definition).
    // Thread-safe; call without the Python GIL.
    void embed(const std::vector<chip_type>& chips, int num_jitters, std::uint64_t seed, float* out);

    void set_threads(int threads);
    int threads() const { return threads_; }
    const face_test_net& net() const { return replicas_.front(); }

    // "folded" (folded_face_net: affine folded into convolutions, batched GEMMs; the default when
    // the net compiles to it) or "dlib" (dlib's own forward pass, the reference).
    void set_backend(const std::string& backend);
    const std::string& backend() const { return backend_; }
    const folded_face_net* folded() const { return folded_.get(); }

    // The folded backend's convolution kernel: "auto" (the fastest this CPU supports), "avx512",
    // "avx2" or "blas" (im2col + OpenBLAS); throws std::invalid_argument for an unknown name or
    // one this CPU cannot run.
    void set_conv_kernel(const std::string& name);
    std::string conv_kernel_name() const;

private:
    void forward(const std::vector<chip_type>& chips, float* out);
    void init_backend();

    std::mutex mutex_;
    int threads_ = 1;
    std::string backend_ = "dlib";
    std::vector<face_test_net> replicas_;  // dlib path: one net per worker thread (not reentrant), made on first use
    std::unique_ptr<folded_face_net> folded_;
    conv_kernel conv_kernel_ = best_conv_kernel();  // applied to folded_ when it is made
    std::vector<folded_workspace> workspaces_;  // one per worker thread
};

}  // namespace pfd

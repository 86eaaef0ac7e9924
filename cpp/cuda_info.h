// What the CUDA runtime, the driver and cuDNN report: versions and devices (a CPU build: none).
#pragma once

#include <string>
#include <vector>

namespace pfd {

struct cuda_device {
    int index = 0;
    std::string name;
    int compute_major = 0;
    int compute_minor = 0;
    size_t memory_bytes = 0;
    int multiprocessors = 0;
};

struct cuda_runtime_info {
    bool built_with_cuda = false;
    std::string runtime_version;   // "13.0" (the cudart the module loaded), "" in a CPU build
    std::string driver_version;    // "13.0" (the newest CUDA the driver supports), "" without a driver
    std::string cudnn_version;     // "9.28.1" (the library loaded at run time)
    std::vector<cuda_device> devices;
    std::string device_error;      // why no device was found ("" when the query succeeded)
};

// Queries the runtime now (never throws; a machine without a GPU or driver reports 0 devices
// and the runtime's reason).
cuda_runtime_info query_cuda_runtime();

}  // namespace pfd

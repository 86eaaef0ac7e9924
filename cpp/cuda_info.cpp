#include "cuda_info.h"

#ifdef DLIB_USE_CUDA
#include <cuda_runtime_api.h>
#include <cudnn.h>
#endif

namespace pfd {

#ifdef DLIB_USE_CUDA
namespace {
std::string cuda_version_string(int version) {
    // CUDA encodes 13.0 as 13000
    return std::to_string(version / 1000) + "." + std::to_string((version % 1000) / 10);
}
}  // namespace

cuda_runtime_info query_cuda_runtime() {
    cuda_runtime_info info;
    info.built_with_cuda = true;
    int version = 0;
    if (cudaRuntimeGetVersion(&version) == cudaSuccess) info.runtime_version = cuda_version_string(version);
    if (cudaDriverGetVersion(&version) == cudaSuccess && version > 0) info.driver_version = cuda_version_string(version);
    const size_t cudnn = cudnnGetVersion();   // 9.28.1 -> 92801 (cuDNN 9: major*10000 + minor*100 + patch)
    info.cudnn_version = std::to_string(cudnn / 10000) + "." + std::to_string((cudnn % 10000) / 100) + "." +
                         std::to_string(cudnn % 100);
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
        info.device_error = std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status);
        cudaGetLastError();   // clear the sticky error so later calls report their own
        return info;
    }
    for (int i = 0; i < count; ++i) {
        cudaDeviceProp prop{};
        if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
        info.devices.push_back({i, prop.name, prop.major, prop.minor, prop.totalGlobalMem, prop.multiProcessorCount});
    }
    return info;
}
#else
cuda_runtime_info query_cuda_runtime() {
    cuda_runtime_info info;
    info.device_error = "this module was built without CUDA";
    return info;
}
#endif

}  // namespace pfd

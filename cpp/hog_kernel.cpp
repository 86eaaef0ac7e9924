// The portable HOG scan (compiled into _core) and the run-time choice of the AVX2 one.
#define PFD_HOG_KERNEL_NAME "portable"
#define PFD_HOG_KERNEL_TABLE pfd_hog_kernel_portable
#define PFD_HOG_KERNEL_EXPORT
#include "hog_kernel_impl.h"

#include <dlfcn.h>

#include <mutex>
#include <stdexcept>

namespace pfd {

namespace {

struct avx2_loader {
    const pfd_hog_kernel* kernel = nullptr;
    std::string why;   // where it came from, or why it is not available

    avx2_loader() {
#ifndef PFD_HOG_AVX2_FILE
        why = "no AVX2 kernel is built for this processor";
#else
        if (!__builtin_cpu_supports("avx2")) {
            why = "this CPU has no AVX2";
            return;
        }
        Dl_info self{};
        if (!dladdr(reinterpret_cast<const void*>(&pfd_hog_kernel_portable), &self) || !self.dli_fname) {
            why = "cannot locate the _core module";
            return;
        }
        std::string dir = self.dli_fname;
        dir = dir.substr(0, dir.find_last_of('/') + 1);
        const std::string path = dir + PFD_HOG_AVX2_FILE;
        void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (!handle) {
            why = std::string("cannot load ") + path + ": " + dlerror();
            return;
        }
        kernel = static_cast<const pfd_hog_kernel*>(dlsym(handle, "pfd_hog_kernel_avx2"));
        why = kernel ? path : path + " has no pfd_hog_kernel_avx2";
#endif
    }
};

const avx2_loader& avx2() {
    static const avx2_loader loader;   // loaded once, kept for the process's life
    return loader;
}

}  // namespace

const pfd_hog_kernel& hog_kernel(const std::string& name) {
    if (name == "portable") return pfd_hog_kernel_portable;
    if (name == "avx2" || name == "auto") {
        if (avx2().kernel) return *avx2().kernel;
        if (name == "auto") return pfd_hog_kernel_portable;
        throw std::invalid_argument("the AVX2 HOG kernel is not available: " + avx2().why);
    }
    throw std::invalid_argument("HOG kernel must be 'auto', 'portable' or 'avx2', got '" + name + "'");
}

std::string hog_kernel_choice() {
    return avx2().kernel ? "avx2: " + avx2().why : "portable: " + avx2().why;
}

}  // namespace pfd

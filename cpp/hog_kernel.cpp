// The portable HOG scan (compiled into _core) and the run-time choice of the AVX2 one.
#define PFD_HOG_KERNEL_NAME "portable"
#define PFD_HOG_KERNEL_TABLE pfd_hog_kernel_portable
#define PFD_HOG_KERNEL_EXPORT
#include "hog_kernel_impl.h"

#include <dlfcn.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace pfd {

long available_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
    return std::max(1u, std::thread::hardware_concurrency());
}

namespace {

// The process's scan-thread budget (hog_kernel.h), shared by the portable and AVX2 variants.
std::atomic<long> budget_setting{0};   // 0 = available_cpus()
std::atomic<long> threads_in_use{0};
std::atomic<long> threads_peak{0};

long current_budget() {
    const long set = budget_setting.load();
    return set > 0 ? set : available_cpus();
}

long acquire_scan_threads(long wanted) {
    const long budget = current_budget();
    long in_use = threads_in_use.load();
    long take = 1;
    do {  // the caller's own thread always, helpers while the total stays within the budget
        take = 1 + std::clamp(budget - in_use - 1, 0L, std::max(0L, wanted - 1));
    } while (!threads_in_use.compare_exchange_weak(in_use, in_use + take));
    long peak = threads_peak.load();
    while (peak < in_use + take && !threads_peak.compare_exchange_weak(peak, in_use + take)) {
    }
    return take;
}

void release_scan_threads(long count) { threads_in_use -= count; }

int give_back_if_over() {
    const long budget = current_budget();
    long in_use = threads_in_use.load();
    while (in_use > budget)
        if (threads_in_use.compare_exchange_weak(in_use, in_use - 1)) return 1;
    return 0;
}

const pfd_hog_threads scan_thread_budget = {&acquire_scan_threads, &release_scan_threads, &give_back_if_over};

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

namespace {

const pfd_hog_kernel& chosen_kernel(const std::string& name) {
    if (name == "portable") return pfd_hog_kernel_portable;
    if (name == "avx2" || name == "auto") {
        if (avx2().kernel) return *avx2().kernel;
        if (name == "auto") return pfd_hog_kernel_portable;
        throw std::invalid_argument("the AVX2 HOG kernel is not available: " + avx2().why);
    }
    throw std::invalid_argument("HOG kernel must be 'auto', 'portable' or 'avx2', got '" + name + "'");
}

}  // namespace

const pfd_hog_kernel& hog_kernel(const std::string& name) {
    const pfd_hog_kernel& kernel = chosen_kernel(name);
    kernel.use_threads(&scan_thread_budget);  // every variant scans within the one budget
    return kernel;
}

hog_thread_stats hog_scan_thread_stats(bool reset_peak) {
    hog_thread_stats stats{current_budget(), threads_in_use.load(), threads_peak.load()};
    if (reset_peak) threads_peak = threads_in_use.load();
    return stats;
}

void set_hog_scan_thread_budget(long threads) {
    if (threads < 0) throw std::invalid_argument("the HOG scan thread budget must be >= 0 (0 = the CPUs this process may run on)");
    budget_setting = threads;
}

std::string hog_kernel_choice() {
    return avx2().kernel ? "avx2: " + avx2().why : "portable: " + avx2().why;
}

}  // namespace pfd

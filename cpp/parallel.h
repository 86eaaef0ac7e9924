// Splitting a range over worker threads, with the first exception rethrown in the caller.
#pragma once

#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace pfd {

// Calls fn(worker, begin, end) for `workers` contiguous slices of [0, n); with one worker, inline.
template <typename function>
void parallel_slices(long n, long workers, function&& fn) {
    if (workers <= 1) {
        fn(0L, 0L, n);
        return;
    }
    std::vector<std::thread> pool;
    std::exception_ptr error;
    std::mutex error_mutex;
    for (long w = 0; w < workers; ++w) {
        const long begin = n * w / workers, end = n * (w + 1) / workers;
        pool.emplace_back([&, w, begin, end] {
            try {
                fn(w, begin, end);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
            }
        });
    }
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

}  // namespace pfd

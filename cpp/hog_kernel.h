// dlib's HOG face detector behind a plain C interface, so the same scan can be compiled twice:
// portable (inside _core) and for AVX2 (the module _hog_avx2*.so, loaded at run time on CPUs
// that have AVX2). Both give dlib's own boxes and scores (the AVX2 build keeps every
// multiply and add separate: -ffp-contract=off, no FMA), so choosing one changes only the speed.
#pragma once

#include <string>

extern "C" {

struct pfd_hog_hit {
    long left, top, right, bottom;  // in the scanned image (after `upsample` pyramid_up steps)
    double score;                   // dlib's detection_confidence
};

// The process's budget of HOG scan threads, one for every variant (hog_kernel.cpp keeps it):
// acquire(wanted) counts the calling thread plus up to wanted - 1 helper threads, as many as keep
// the threads scanning at once within the budget (the caller always gets its own), and returns how
// many threads the scan may run (>= 1); release(count) gives them back. A helper calls
// give_back_if_over() between its pieces of work: when more threads scan than the budget allows
// (callers arrived after the helpers were taken) it gives its own back (returns 1) and stops.
struct pfd_hog_threads {
    long (*acquire)(long wanted);
    void (*release)(long count);
    int (*give_back_if_over)();
};

// Function table of one compiled variant (see hog_kernel_impl.h).
struct pfd_hog_kernel {
    const char* name;                                   // "portable" or "avx2"
    void* (*create)();                                  // a detector: dlib::get_frontal_face_detector()
    void (*destroy)(void* detector);
    // dlib's detector(image, upsample) on interleaved RGB rows; writes at most `capacity` hits
    // and returns how many there are (call again with more room when that is more).
    // Returns -1 and fills `error` (256 bytes) when dlib throws.
    long (*detect)(void* detector, const unsigned char* rgb, long rows, long cols, unsigned upsample,
                   pfd_hog_hit* out, long capacity, char* error);
    // The thread budget detect() draws its scan threads from (set by hog_kernel() before any scan).
    void (*use_threads)(const pfd_hog_threads* threads);
};

}  // extern "C"

namespace pfd {

// "portable", "avx2" or "auto" (AVX2 when the CPU has it and its module loads) -> the variant.
// Throws std::invalid_argument for an unknown name or "avx2" where it cannot run (with why).
const pfd_hog_kernel& hog_kernel(const std::string& name);

// Why "auto" chose what it chose ("avx2: <path>" or "portable: <reason>").
std::string hog_kernel_choice();

// The HOG scan threads of the whole process. A scan of a large image (hog_kernel_impl.h) runs on
// its caller's thread plus helpers, and every scan, large or small, counts its threads against one
// budget: by default the CPUs this process may run on (its affinity mask). Helpers are taken only
// while fewer threads than the budget scan (never more than budget - 1 at once), and a helper
// gives its thread back between pieces of work when later callers overfill the budget: N threads
// detecting at once run at most N + CPUs - 1 scan threads (max(N, CPUs) once helpers have
// yielded), where each used to start CPUs - 1 helpers of its own. The boxes and scores do not
// depend on the thread count.
struct hog_thread_stats {
    long budget;   // the budget now
    long in_use;   // threads scanning now
    long peak;     // most threads scanning at once since the last reset
};
hog_thread_stats hog_scan_thread_stats(bool reset_peak = false);
// threads > 0 sets the budget; 0 restores the default (the CPUs this process may run on).
// std::invalid_argument when threads < 0.
void set_hog_scan_thread_budget(long threads);
// The CPUs this process may run on (sched_getaffinity; hardware_concurrency where that fails).
long available_cpus();

}  // namespace pfd

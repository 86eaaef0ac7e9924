// The HOG scan behind pfd_hog_kernel, included by hog_kernel_portable.cpp (in _core) and
// hog_kernel_avx2.cpp (its own module, compiled with -mavx2). Everything here has internal
// linkage; PFD_HOG_KERNEL_NAME names the variant and PFD_HOG_KERNEL_TABLE its exported table.
#pragma once

#include "hog_kernel.h"
#include "image_view.h"

#include <dlib/image_processing/frontal_face_detector.h>
#include <dlib/image_transforms.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace {

// Images with at least this many pixels (as scanned) are scanned with several threads.
constexpr long parallel_scan_pixels = 1000 * 1000;

// The process's scan-thread budget (hog_kernel.cpp), installed by hog_kernel() through use_threads;
// without one every scan runs on its caller's thread alone.
std::atomic<const pfd_hog_threads*> thread_budget{nullptr};

void use_threads(const pfd_hog_threads* threads) { thread_budget = threads; }

// Threads taken from the budget for one scan (the caller's and its helpers'), given back when it
// ends (exceptions included) or, one by one, when a helper yields to callers that came later.
class scan_threads {
public:
    explicit scan_threads(long wanted) : budget_(thread_budget.load()), count_(budget_ ? budget_->acquire(wanted) : 1) {}
    ~scan_threads() {
        if (budget_) budget_->release(count_);
    }
    scan_threads(const scan_threads&) = delete;
    scan_threads& operator=(const scan_threads&) = delete;
    long count() const { return count_; }
    // A helper's turn: true when it gave its thread back (more threads scan than the budget allows).
    bool helper_yields() {
        if (!budget_ || !budget_->give_back_if_over()) return false;
        --count_;
        return true;
    }

private:
    const pfd_hog_threads* budget_;
    std::atomic<long> count_;
};

// Runs task(i) for i in [0, n) on the caller's thread and up to threads.count() - 1 helpers, taking
// indices in order; a helper stops early when the budget is overfull (the caller always finishes
// the work). The first exception is rethrown in the caller.
template <typename task_type>
void run_in_order(long n, scan_threads& threads, task_type&& task) {
    std::atomic<long> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    const auto work = [&](bool helper) {
        try {
            while (!(helper && threads.helper_yields())) {
                const long i = next++;
                if (i >= n) return;
                task(i);
            }
        } catch (...) {
            next = n;  // the others stop after their current index
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    };
    std::vector<std::thread> pool;
    for (long w = 1; w < std::min(threads.count(), n); ++w) pool.emplace_back(work, true);
    work(false);
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

// The number of levels of dlib's feature pyramid of img, as impl::create_fhog_pyramid counts them.
template <typename image_type>
unsigned long pyramid_levels(const dlib::frontal_face_detector& detector, const image_type& img) {
    const auto& scanner = detector.get_scanner();
    dlib::pyramid_down<6> pyr;
    unsigned long levels = 0;
    dlib::rectangle rect = dlib::get_rect(img);
    do {
        rect = pyr.rect_down(rect);
        ++levels;
    } while (rect.width() >= scanner.get_min_pyramid_layer_width() && rect.height() >= scanner.get_min_pyramid_layer_height() &&
             levels < scanner.get_max_pyramid_levels());
    return levels;
}

// dlib's object_detector<scan_fhog_pyramid<pyramid_down<6>>>::operator()(img, dets, 0) computed
// with several threads and the same result: the image pyramid is built as dlib builds it, the HOG
// features of its levels are extracted in parallel, each of the detector's filters scans the whole
// feature pyramid in parallel (as dlib's own evaluate_detectors does, one impl call per filter),
// and the detections are gathered in filter order, sorted and non-max suppressed exactly as
// object_detector does.
template <typename image_type>
std::vector<dlib::rect_detection> parallel_hog_scan(const dlib::frontal_face_detector& detector, const image_type& img,
                                                    unsigned long levels, scan_threads& threads) {
    using pyramid_type = dlib::pyramid_down<6>;
    const auto& scanner = detector.get_scanner();
    const unsigned long cell_size = scanner.get_cell_size();
    const unsigned long window_w = scanner.get_fhog_window_width(), window_h = scanner.get_fhog_window_height();
    pyramid_type pyr;

    // the pyramid images (level 0 is img itself), each made from the one above as dlib makes them
    std::vector<dlib::array2d<dlib::rgb_pixel>> images(levels > 1 ? levels - 1 : 0);
    if (levels > 1) pyr(img, images[0]);
    for (unsigned long l = 2; l < levels; ++l) pyr(images[l - 2], images[l - 1]);

    dlib::array<dlib::array<dlib::array2d<float>>> feats;
    feats.set_max_size(levels);
    feats.set_size(levels);
    run_in_order(static_cast<long>(levels), threads, [&](long l) {
        if (l == 0)
            scanner.get_feature_extractor()(img, feats[0], cell_size, window_h, window_w);
        else
            scanner.get_feature_extractor()(images[l - 1], feats[l], cell_size, window_h, window_w);
    });

    const unsigned long det_w = window_w - 2 * scanner.get_padding(), det_h = window_h - 2 * scanner.get_padding();
    const long filters = static_cast<long>(detector.num_detectors());
    std::vector<std::vector<std::pair<double, dlib::rectangle>>> per_filter(filters);
    run_in_order(filters, threads, [&](long d) {
        const auto& w = detector.get_processed_w(d);
        dlib::impl::detect_from_fhog_pyramid<pyramid_type>(feats, scanner.get_feature_extractor(), w.get_detect_argument(),
                                                           w.w(scanner.get_num_dimensions()), det_h, det_w, cell_size,
                                                           window_h, window_w, per_filter[d]);
    });

    std::vector<dlib::rect_detection> accumulated;
    for (long d = 0; d < filters; ++d) {
        const double thresh = detector.get_processed_w(d).w(scanner.get_num_dimensions());
        for (const auto& [score, box] : per_filter[d]) {
            dlib::rect_detection det;
            det.detection_confidence = score - thresh;
            det.weight_index = d;
            det.rect = box;
            accumulated.push_back(det);
        }
    }
    if (filters > 1) std::sort(accumulated.rbegin(), accumulated.rend());
    std::vector<dlib::rect_detection> found;
    const auto& overlaps = detector.get_overlap_tester();
    for (const auto& det : accumulated) {
        const bool suppressed = std::any_of(found.begin(), found.end(),
                                            [&](const dlib::rect_detection& kept) { return overlaps(kept.rect, det.rect); });
        if (!suppressed) found.push_back(det);
    }
    return found;
}

// Every scan takes its threads from the process's budget: one (its caller's) for a small image, up
// to one per pyramid level or filter for a large one, as many as the budget has free.
template <typename image_type>
void hog_scan(dlib::frontal_face_detector& detector, const image_type& img, std::vector<dlib::rect_detection>& found) {
    const bool large = static_cast<long>(num_rows(img)) * num_columns(img) >= parallel_scan_pixels;
    const unsigned long levels = large ? pyramid_levels(detector, img) : 0;
    scan_threads threads(large ? std::max<long>(static_cast<long>(levels), static_cast<long>(detector.num_detectors())) : 1);
    if (threads.count() > 1)
        found = parallel_hog_scan(detector, img, levels, threads);
    else
        detector(img, found, 0.0);
}

void* hog_create() { return new dlib::frontal_face_detector(dlib::get_frontal_face_detector()); }

void hog_destroy(void* detector) { delete static_cast<dlib::frontal_face_detector*>(detector); }

long hog_detect(void* state, const unsigned char* rgb, long rows, long cols, unsigned upsample, pfd_hog_hit* out,
                long capacity, char* error) {
    try {
        auto& detector = *static_cast<dlib::frontal_face_detector*>(state);
        const pfd::rgb_image_view img(rgb, rows, cols);
        std::vector<dlib::rect_detection> found;
        if (upsample == 0) {
            hog_scan(detector, img, found);
        } else {
            dlib::pyramid_down<2> pyr;
            dlib::array2d<dlib::rgb_pixel> up;
            dlib::pyramid_up(img, up, pyr);
            for (unsigned level = 1; level < upsample; ++level) dlib::pyramid_up(up);
            hog_scan(detector, up, found);
        }
        const long count = static_cast<long>(found.size());
        for (long i = 0; i < std::min(count, capacity); ++i) {
            const auto& r = found[i].rect;
            out[i] = {r.left(), r.top(), r.right(), r.bottom(), found[i].detection_confidence};
        }
        return count;
    } catch (const std::exception& e) {
        std::strncpy(error, e.what(), 255);
        error[255] = '\0';
        return -1;
    }
}

}  // namespace

extern "C" PFD_HOG_KERNEL_EXPORT const pfd_hog_kernel PFD_HOG_KERNEL_TABLE = {PFD_HOG_KERNEL_NAME, &hog_create,
                                                                               &hog_destroy, &hog_detect, &use_threads};

#include "alignment.h"

#include "model_io.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace pfd {

namespace {

// Every detection rectangle mapped back to the original image after `upsample` pyramid_up steps.
void check_upsample(unsigned upsample) {
    if (upsample > max_upsample)
        throw std::invalid_argument("upsample must be at most " + std::to_string(max_upsample) + ", got " + std::to_string(upsample));
}

std::vector<detection> rects_down(std::vector<detection> dets, unsigned upsample) {
    dlib::pyramid_down<2> pyr;
    for (auto& d : dets) d.box = pyr.rect_down(d.box, upsample);
    return dets;
}

// Images with at least this many pixels (as scanned) are scanned with several threads.
constexpr long parallel_scan_pixels = 1000 * 1000;

// Runs task(i) for i in [0, n) on up to `workers` threads, taking indices in order.
template <typename task_type>
void run_in_order(long n, unsigned workers, task_type&& task) {
    std::atomic<long> next{0};
    const auto work = [&] {
        for (long i = next++; i < n; i = next++) task(i);
    };
    std::vector<std::thread> pool;
    for (unsigned w = 1; w < workers; ++w) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
}

// dlib's object_detector<scan_fhog_pyramid<pyramid_down<6>>>::operator()(img, dets, 0) computed
// with several threads and the same result: the image pyramid is built as dlib builds it, the HOG
// features of its levels are extracted in parallel, each of the detector's filters scans the whole
// feature pyramid in parallel (as dlib's own evaluate_detectors does, one impl call per filter),
// and the detections are gathered in filter order, sorted and non-max suppressed exactly as
// object_detector does.
template <typename image_type>
std::vector<dlib::rect_detection> parallel_hog_scan(const dlib::frontal_face_detector& detector, const image_type& img,
                                                    unsigned workers) {
    using pyramid_type = dlib::pyramid_down<6>;
    const auto& scanner = detector.get_scanner();
    const unsigned long cell_size = scanner.get_cell_size();
    const unsigned long window_w = scanner.get_fhog_window_width(), window_h = scanner.get_fhog_window_height();

    // the number of levels, as impl::create_fhog_pyramid counts them
    pyramid_type pyr;
    unsigned long levels = 0;
    dlib::rectangle rect = dlib::get_rect(img);
    do {
        rect = pyr.rect_down(rect);
        ++levels;
    } while (rect.width() >= scanner.get_min_pyramid_layer_width() && rect.height() >= scanner.get_min_pyramid_layer_height() &&
             levels < scanner.get_max_pyramid_levels());

    // the pyramid images (level 0 is img itself), each made from the one above as dlib makes them
    std::vector<dlib::array2d<dlib::rgb_pixel>> images(levels > 1 ? levels - 1 : 0);
    if (levels > 1) pyr(img, images[0]);
    for (unsigned long l = 2; l < levels; ++l) pyr(images[l - 2], images[l - 1]);

    dlib::array<dlib::array<dlib::array2d<float>>> feats;
    feats.set_max_size(levels);
    feats.set_size(levels);
    run_in_order(static_cast<long>(levels), workers, [&](long l) {
        if (l == 0)
            scanner.get_feature_extractor()(img, feats[0], cell_size, window_h, window_w);
        else
            scanner.get_feature_extractor()(images[l - 1], feats[l], cell_size, window_h, window_w);
    });

    const unsigned long det_w = window_w - 2 * scanner.get_padding(), det_h = window_h - 2 * scanner.get_padding();
    const long filters = static_cast<long>(detector.num_detectors());
    std::vector<std::vector<std::pair<double, dlib::rectangle>>> per_filter(filters);
    run_in_order(filters, workers, [&](long d) {
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

template <typename image_type>
void hog_scan(dlib::frontal_face_detector& detector, const image_type& img, std::vector<dlib::rect_detection>& found) {
    const unsigned workers = std::max(1u, std::thread::hardware_concurrency());
    if (workers > 1 && static_cast<long>(num_rows(img)) * num_columns(img) >= parallel_scan_pixels)
        found = parallel_hog_scan(detector, img, workers);
    else
        detector(img, found, 0.0);
}

}  // namespace

hog_face_detector::hog_face_detector() : detector_(dlib::get_frontal_face_detector()) {}

std::vector<detection> hog_face_detector::detect(const rgb_image_view& img, unsigned upsample) {
    check_upsample(upsample);
    std::vector<dlib::rect_detection> found;
    std::lock_guard<std::mutex> lock(mutex_);
    if (upsample == 0) {
        hog_scan(detector_, img, found);
    } else {
        dlib::pyramid_down<2> pyr;
        dlib::array2d<dlib::rgb_pixel> up;
        dlib::pyramid_up(img, up, pyr);
        for (unsigned level = 1; level < upsample; ++level) dlib::pyramid_up(up);
        hog_scan(detector_, up, found);
    }
    std::vector<detection> dets;
    for (const auto& f : found) dets.push_back({f.rect, f.detection_confidence});
    return upsample == 0 ? dets : rects_down(dets, upsample);
}

// dlib's CNN face detector network (the net of dlib's cnn_face_detection_model_v1).
struct cnn_face_detector::net_holder {
    template <long num_filters, typename SUBNET> using con5d = dlib::con<num_filters, 5, 5, 2, 2, SUBNET>;
    template <long num_filters, typename SUBNET> using con5 = dlib::con<num_filters, 5, 5, 1, 1, SUBNET>;
    template <typename SUBNET> using downsampler =
        dlib::relu<dlib::affine<con5d<32, dlib::relu<dlib::affine<con5d<32, dlib::relu<dlib::affine<con5d<16, SUBNET>>>>>>>>>;
    template <typename SUBNET> using rcon5 = dlib::relu<dlib::affine<con5<45, SUBNET>>>;
    using net_type = dlib::loss_mmod<dlib::con<1, 9, 9, 1, 1, rcon5<rcon5<rcon5<downsampler<
        dlib::input_rgb_image_pyramid<dlib::pyramid_down<6>>>>>>>>;
    net_type net;
};

cnn_face_detector::cnn_face_detector(const std::string& model_path) : net_(new net_holder) {
    load_model(model_path, "dlib CNN face detector (mmod_human_face_detector format)", net_->net);
}

cnn_face_detector::~cnn_face_detector() = default;

std::vector<detection> cnn_face_detector::detect(const rgb_image_view& img, unsigned upsample) {
    check_upsample(upsample);
    dlib::matrix<dlib::rgb_pixel> image;
    dlib::assign_image(image, img);
    dlib::pyramid_down<2> pyr;
    for (unsigned level = 0; level < upsample; ++level) dlib::pyramid_up(image, pyr);
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<detection> dets;
    for (const auto& d : net_->net(image)) dets.push_back({d.rect, d.detection_confidence});
    return rects_down(dets, upsample);
}

landmark_predictor::landmark_predictor(const std::string& model_path) {
    load_model(model_path, "dlib shape predictor (e.g. shape_predictor_5_face_landmarks.dat)", predictor_);
    if (predictor_.num_parts() == 0) throw model_format_error("'" + model_path + "' is a shape predictor with no parts");
}

std::vector<dlib::point> landmark_predictor::predict(const rgb_image_view& img, const dlib::rectangle& box) const {
    const auto shape = predictor_(img, box);
    std::vector<dlib::point> parts(shape.num_parts());
    for (unsigned long i = 0; i < shape.num_parts(); ++i) parts[i] = shape.part(i);
    return parts;
}

void extract_face_chip(const rgb_image_view& img, const std::vector<dlib::point>& parts,
                       unsigned long size, double padding, unsigned char* out) {
    if (parts.size() != 5 && parts.size() != 68)
        throw std::invalid_argument("face chips need 5 or 68 landmarks, got " + std::to_string(parts.size()));
    if (size == 0 || size > max_chip_size || !(padding >= 0) || !(padding <= 10))
        throw std::invalid_argument("chip size must be in 1.." + std::to_string(max_chip_size) + " and padding in 0..10");
    const dlib::full_object_detection face(dlib::rectangle(), parts);
    dlib::matrix<dlib::rgb_pixel> chip;
    dlib::extract_image_chip(img, dlib::get_face_chip_details(face, size, padding), chip);
    std::memcpy(out, &chip(0, 0), size * size * 3);
}

}  // namespace pfd

#include "alignment.h"

#include "fast_conv.h"
#include "model_io.h"

#include <cstring>
#include <stdexcept>

namespace pfd {

namespace {

void check_upsample(unsigned upsample) {
    if (upsample > max_upsample)
        throw std::invalid_argument("upsample must be at most " + std::to_string(max_upsample) + ", got " + std::to_string(upsample));
}

// Every detection rectangle mapped back to the original image after `upsample` pyramid_up steps.
std::vector<detection> rects_down(std::vector<detection> dets, unsigned upsample) {
    dlib::pyramid_down<2> pyr;
    for (auto& d : dets) d.box = pyr.rect_down(d.box, upsample);
    return dets;
}

}  // namespace

hog_face_detector::hog_face_detector(const std::string& kernel)
    : kernel_(&hog_kernel(kernel)), detector_(kernel_->create()) {}

hog_face_detector::~hog_face_detector() { kernel_->destroy(detector_); }

std::vector<detection> hog_face_detector::detect(const rgb_image_view& img, unsigned upsample) {
    check_upsample(upsample);
    std::vector<pfd_hog_hit> hits(16);
    char error[256] = "";
    std::lock_guard<std::mutex> lock(mutex_);
    long count = kernel_->detect(detector_, img.data, img.rows, img.cols, upsample, hits.data(), static_cast<long>(hits.size()), error);
    if (count > static_cast<long>(hits.size())) {   // more faces than room: once more with enough
        hits.resize(count);
        count = kernel_->detect(detector_, img.data, img.rows, img.cols, upsample, hits.data(), count, error);
    }
    if (count < 0) throw std::runtime_error(std::string("HOG face detection failed: ") + error);
    std::vector<detection> dets;
    for (long i = 0; i < count; ++i)
        dets.push_back({dlib::rectangle(hits[i].left, hits[i].top, hits[i].right, hits[i].bottom), hits[i].score});
    return upsample == 0 ? dets : rects_down(dets, upsample);
}

// dlib's CNN face detector network (the net of dlib's cnn_face_detection_model_v1).
// The convolutions are fast_con (fast_conv.h: dlib's con_ with faster im2col/col2img and batched
// GEMMs; the same parameters and file records), so detections match dlib's to float rounding.
struct cnn_face_detector::net_holder {
    template <long num_filters, typename SUBNET> using con5d = fast_con<num_filters, 5, 5, 2, 2, SUBNET>;
    template <long num_filters, typename SUBNET> using con5 = fast_con<num_filters, 5, 5, 1, 1, SUBNET>;
    template <typename SUBNET> using downsampler =
        dlib::relu<dlib::affine<con5d<32, dlib::relu<dlib::affine<con5d<32, dlib::relu<dlib::affine<con5d<16, SUBNET>>>>>>>>>;
    template <typename SUBNET> using rcon5 = dlib::relu<dlib::affine<con5<45, SUBNET>>>;
    using net_type = dlib::loss_mmod<fast_con<1, 9, 9, 1, 1, rcon5<rcon5<rcon5<downsampler<
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

void align_faces(const landmark_predictor& predictor, const rgb_image_view& img,
                 const std::vector<dlib::rectangle>& boxes, unsigned long size, double padding,
                 long long* landmarks_out, unsigned char* chips_out) {
    const unsigned long parts_per_face = predictor.num_parts();
    for (size_t i = 0; i < boxes.size(); ++i) {
        const auto parts = predictor.predict(img, boxes[i]);
        for (unsigned long k = 0; k < parts_per_face; ++k) {
            landmarks_out[(i * parts_per_face + k) * 2] = parts[k].x();
            landmarks_out[(i * parts_per_face + k) * 2 + 1] = parts[k].y();
        }
        extract_face_chip(img, parts, size, padding, chips_out + i * size * size * 3);
    }
}

}  // namespace pfd

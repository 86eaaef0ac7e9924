// Face detection (dlib's HOG and CNN/MMOD detectors), 5-point landmarks and face chips,
// computed exactly as dlib's Python binding computes them.
#pragma once

#include "hog_kernel.h"
#include "image_view.h"

#include <dlib/image_processing.h>
#include <dlib/image_processing/frontal_face_detector.h>
#include <dlib/dnn.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace pfd {

// Limits that keep a bad argument from allocating an absurd image (each upsample doubles both sides).
constexpr unsigned max_upsample = 8;
constexpr unsigned long max_chip_size = 4096;

struct detection {
    dlib::rectangle box;
    double score;
};

// dlib's get_frontal_face_detector(); detect() = dlib.get_frontal_face_detector()(img, upsample),
// scanned by the HOG kernel named ("auto": AVX2 where the CPU has it; see hog_kernel.h).
class hog_face_detector {
public:
    explicit hog_face_detector(const std::string& kernel = "auto");
    ~hog_face_detector();
    hog_face_detector(const hog_face_detector&) = delete;
    hog_face_detector& operator=(const hog_face_detector&) = delete;
    std::vector<detection> detect(const rgb_image_view& img, unsigned upsample);
    std::string kernel() const { return kernel_->name; }

private:
    std::mutex mutex_;
    const pfd_hog_kernel* kernel_;
    void* detector_;   // the kernel's dlib::frontal_face_detector
};

// mmod_human_face_detector.dat; detect() = dlib.cnn_face_detection_model_v1(path)(img, upsample).
class cnn_face_detector {
public:
    explicit cnn_face_detector(const std::string& model_path);
    ~cnn_face_detector();
    std::vector<detection> detect(const rgb_image_view& img, unsigned upsample);

private:
    struct net_holder;
    std::mutex mutex_;
    std::unique_ptr<net_holder> net_;
};

// A dlib shape_predictor file (5- or 68-point); predict() returns the parts in image coordinates.
class landmark_predictor {
public:
    explicit landmark_predictor(const std::string& model_path);
    std::vector<dlib::point> predict(const rgb_image_view& img, const dlib::rectangle& box) const;
    unsigned long num_parts() const { return predictor_.num_parts(); }

private:
    dlib::shape_predictor predictor_;
};

// dlib.get_face_chip(img, full_object_detection(box, parts), size, padding): the aligned,
// rotated and scaled face, size x size RGB, written to out[size*size*3].
void extract_face_chip(const rgb_image_view& img, const std::vector<dlib::point>& parts,
                       unsigned long size, double padding, unsigned char* out);

// Every face of an image aligned in one pass: for each box its landmarks (predictor) and its chip
// (extract_face_chip), written to landmarks_out[boxes * parts * 2] (x, y) and
// chips_out[boxes * size * size * 3]. One call per image instead of two per face.
void align_faces(const landmark_predictor& predictor, const rgb_image_view& img,
                 const std::vector<dlib::rectangle>& boxes, unsigned long size, double padding,
                 long long* landmarks_out, unsigned char* chips_out);

}  // namespace pfd

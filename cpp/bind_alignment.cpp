// Bindings: detection, landmarks and face chips.
#include "bindings.h"

#include "alignment.h"

namespace pfd {

namespace {

// (N, 4) int64 [left, top, right, bottom] boxes and (N,) float64 scores.
py::tuple detections_to_arrays(const std::vector<detection>& dets) {
    py::array_t<long long> boxes({static_cast<py::ssize_t>(dets.size()), static_cast<py::ssize_t>(4)});
    py::array_t<double> scores(static_cast<py::ssize_t>(dets.size()));
    auto b = boxes.mutable_unchecked<2>();
    auto s = scores.mutable_unchecked<1>();
    for (size_t i = 0; i < dets.size(); ++i) {
        b(i, 0) = dets[i].box.left();
        b(i, 1) = dets[i].box.top();
        b(i, 2) = dets[i].box.right();
        b(i, 3) = dets[i].box.bottom();
        s(i) = dets[i].score;
    }
    return py::make_tuple(boxes, scores);
}

// detector.detect(image, upsample) without the GIL: (boxes, scores) arrays.
template <typename detector_type>
py::tuple detect_faces(detector_type& detector, const py::array& image, unsigned upsample) {
    const auto view = checked_rgb_image(image);
    std::vector<detection> dets;
    {
        py::gil_scoped_release release;
        dets = detector.detect(view, upsample);
    }
    return detections_to_arrays(dets);
}

// predictor.align(image, boxes, size, padding): the landmarks and chips of every box, without the GIL.
py::tuple align_boxes(const landmark_predictor& predictor, const py::array& image, const py::array& boxes,
                      unsigned long size, double padding) {
    const auto view = checked_rgb_image(image);
    const auto box_array = checked_array<std::int64_t>(boxes, "boxes", {-1, 4});
    if (size == 0 || size > max_chip_size) throw py::value_error("size must be in 1..4096");
    const auto count = static_cast<py::ssize_t>(box_array.shape(0));
    std::vector<dlib::rectangle> rectangles;
    auto b = box_array.unchecked<2>();
    for (py::ssize_t i = 0; i < count; ++i) {
        if (b(i, 2) < b(i, 0) || b(i, 3) < b(i, 1)) throw py::value_error("a box has right < left or bottom < top");
        rectangles.emplace_back(b(i, 0), b(i, 1), b(i, 2), b(i, 3));
    }
    const auto parts = static_cast<py::ssize_t>(predictor.num_parts());
    const auto side = static_cast<py::ssize_t>(size);
    py::array_t<long long> landmarks({count, parts, static_cast<py::ssize_t>(2)});
    py::array_t<unsigned char> chips({count, side, side, static_cast<py::ssize_t>(3)});
    long long* landmarks_out = landmarks.mutable_data();
    unsigned char* chips_out = chips.mutable_data();
    {
        py::gil_scoped_release release;
        align_faces(predictor, view, rectangles, size, padding, landmarks_out, chips_out);
    }
    return py::make_tuple(landmarks, chips);
}

}  // namespace

void bind_alignment(py::module_& m) {
    py::class_<hog_face_detector>(m, "HogFaceDetector", "dlib's frontal face detector (HOG + linear SVM).", py::module_local())
        .def(py::init<const std::string&>(), py::arg("kernel") = "auto",
             "kernel: 'auto' (AVX2 where the CPU has it), 'portable' or 'avx2'; the same boxes and scores from each.")
        .def_property_readonly("kernel", &hog_face_detector::kernel, "The HOG kernel this detector scans with.")
        .def("detect", &detect_faces<hog_face_detector>, py::arg("image").noconvert(), py::arg("upsample"),
             "(boxes (N,4) int64 [left, top, right, bottom], scores (N,)) as dlib's detector(image, upsample).");

    py::class_<cnn_face_detector>(m, "CnnFaceDetector", "dlib's CNN (MMOD) face detector.", py::module_local())
        .def(py::init<const std::string&>(), py::arg("model_path"))
        .def("detect", &detect_faces<cnn_face_detector>, py::arg("image").noconvert(), py::arg("upsample"),
             "(boxes (N,4) int64, confidences (N,)) as dlib.cnn_face_detection_model_v1(image, upsample).");

    py::class_<landmark_predictor>(m, "LandmarkPredictor", "A dlib shape predictor (5- or 68-point landmarks).", py::module_local())
        .def(py::init<const std::string&>(), py::arg("model_path"))
        .def_property_readonly("num_parts", &landmark_predictor::num_parts)
        .def("predict",
             [](const landmark_predictor& self, const py::array& image, long left, long top, long right, long bottom) {
                 const auto view = checked_rgb_image(image);
                 std::vector<dlib::point> parts;
                 {
                     py::gil_scoped_release release;
                     parts = self.predict(view, dlib::rectangle(left, top, right, bottom));
                 }
                 py::array_t<long long> out({static_cast<py::ssize_t>(parts.size()), static_cast<py::ssize_t>(2)});
                 auto o = out.mutable_unchecked<2>();
                 for (size_t i = 0; i < parts.size(); ++i) {
                     o(i, 0) = parts[i].x();
                     o(i, 1) = parts[i].y();
                 }
                 return out;
             },
             py::arg("image").noconvert(), py::arg("left"), py::arg("top"), py::arg("right"), py::arg("bottom"),
             "(K,2) int64 landmark x, y for the face in the box.")
        .def("align", &align_boxes, py::arg("image").noconvert(), py::arg("boxes").noconvert(),
             py::arg("size") = 150, py::arg("padding") = 0.25,
             "(landmarks (N,K,2) int64, chips (N,size,size,3) uint8) of every box (N,4) int64 "
             "[left, top, right, bottom] in one call: predict() then extract_face_chip() for each.");

    m.def("extract_face_chip",
          [](const py::array& image, const py::array& landmarks, unsigned long size, double padding) {
              const auto view = checked_rgb_image(image);
              const auto parts = checked_landmarks(landmarks);
              if (size == 0 || size > max_chip_size) throw py::value_error("size must be in 1..4096");
              py::array_t<unsigned char> chip({static_cast<py::ssize_t>(size), static_cast<py::ssize_t>(size),
                                               static_cast<py::ssize_t>(3)});
              unsigned char* dst = chip.mutable_data();
              {
                  py::gil_scoped_release release;
                  extract_face_chip(view, parts, size, padding, dst);
              }
              return chip;
          },
          py::arg("image").noconvert(), py::arg("landmarks").noconvert(), py::arg("size") = 150, py::arg("padding") = 0.25,
          "The aligned face chip, pixel for pixel what dlib.get_face_chip returns.");

    m.def("hog_scan_threads",
          [](bool reset_peak) {
              const auto stats = hog_scan_thread_stats(reset_peak);
              py::dict out;
              out["budget"] = stats.budget;
              out["in_use"] = stats.in_use;
              out["peak"] = stats.peak;
              return out;
          },
          py::arg("reset_peak") = false,
          "HOG scan threads of the whole process: {'budget': the thread budget, 'in_use': threads scanning now, "
          "'peak': most scanning at once since the last reset}; reset_peak=True starts a new peak after reading "
          "this one. Every HogFaceDetector.detect counts its caller's thread; a large image takes helpers (up to one "
          "per pyramid level or filter) only while fewer threads than the budget scan, and a helper gives its "
          "thread back when later callers overfill the budget.");
    m.def("set_hog_scan_thread_budget", &set_hog_scan_thread_budget, py::arg("threads"),
          "The most HOG scan threads running at once in this process (callers included; a caller always scans on "
          "its own thread); 0 = the CPUs this process may run on (the default). ValueError when < 0.");
}

}  // namespace pfd

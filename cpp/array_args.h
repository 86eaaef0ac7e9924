// Checking what Python passes into _core: every binding that takes an array goes through these,
// so no entry point reads past an array's end or trusts its dtype, layout or shape.
//   TypeError  — not a numpy array, or the wrong dtype (no silent conversion),
//   ValueError — wrong number of dimensions, wrong shape, not C-contiguous, or too few elements.
#pragma once

#include "chip.h"
#include "image_view.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <initializer_list>
#include <string>
#include <vector>

namespace pfd {

namespace py = pybind11;

// `obj` as a C-contiguous numpy array of dtype T whose shape matches `shape` (-1: any length).
// `name` names the argument in the error messages.
template <typename T>
py::array_t<T, py::array::c_style> checked_array(const py::handle& obj, const char* name,
                                                 std::initializer_list<py::ssize_t> shape);

// (N, 150, 150, 3) uint8 face chips (N may be 0), copied into dlib matrices.
std::vector<chip_type> checked_chips(const py::handle& obj, const char* name = "chips");

// A non-empty (H, W, 3) uint8 RGB image, viewed in place (keep `obj` alive while it is used).
rgb_image_view checked_rgb_image(const py::handle& obj, const char* name = "image");

// (K, 2) int64 landmark x, y with K = 5 or 68 (the shapes dlib's face chips are defined for).
std::vector<dlib::point> checked_landmarks(const py::handle& obj, const char* name = "landmarks");

// One non-negative integer label per item: a sequence of `expected` ints.
std::vector<unsigned long> checked_labels(const py::handle& obj, size_t expected, const char* name = "labels");

}  // namespace pfd

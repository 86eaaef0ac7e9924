// One bind_xxx() per area of the _core extension.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "image_view.h"

namespace pfd {

namespace py = pybind11;

using u8_array = py::array_t<unsigned char, py::array::c_style>;

void bind_build_info(py::module_& m);
void bind_inference(py::module_& m);
void bind_alignment(py::module_& m);
void bind_conversion(py::module_& m);
void bind_clustering(py::module_& m);
void bind_training(py::module_& m);

// A read-only view of a (H, W, 3) uint8 C-contiguous array; ValueError on any other shape.
rgb_image_view rgb_view_of(const u8_array& image);

}  // namespace pfd

// One bind_xxx() per area of the _core extension. Array arguments are checked by array_args.h.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "array_args.h"

namespace pfd {

namespace py = pybind11;

void bind_build_info(py::module_& m);
void bind_inference(py::module_& m);
void bind_alignment(py::module_& m);
void bind_conversion(py::module_& m);
void bind_clustering(py::module_& m);
void bind_training(py::module_& m);

}  // namespace pfd

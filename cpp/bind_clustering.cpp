// Bindings: dlib's Chinese whispers graph clustering of face descriptors.
#include "bindings.h"

#include "clustering.h"

#include <pybind11/stl.h>

namespace pfd {

void bind_clustering(py::module_& m) {
    m.def("chinese_whispers",
          [](const py::array& descriptor_array, double threshold) {
              const auto descriptors = checked_array<double>(descriptor_array, "descriptors", {-1, -1});
              const double* data = descriptors.data();
              const long n = descriptors.shape(0), dims = descriptors.shape(1);
              py::gil_scoped_release release;
              return chinese_whispers_labels(data, n, dims, threshold);
          },
          py::arg("descriptors").noconvert(), py::arg("threshold"),
          "Cluster label per descriptor from dlib::chinese_whispers over edges closer than threshold.");
}

}  // namespace pfd

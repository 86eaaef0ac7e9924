// Bindings: dlib's Chinese whispers graph clustering of face descriptors.
#include "bindings.h"

#include <dlib/clustering.h>
#include <pybind11/stl.h>

#include <cmath>

namespace pfd {

void bind_clustering(py::module_& m) {
    m.def("chinese_whispers",
          [](const py::array& descriptor_array, double threshold) {
              const auto descriptors = checked_array<double>(descriptor_array, "descriptors", {-1, -1});
              const long n = descriptors.shape(0), dims = descriptors.shape(1);
              const double* d = descriptors.data();
              std::vector<unsigned long> labels;
              {
                  py::gil_scoped_release release;
                  std::vector<dlib::sample_pair> edges;
                  for (long i = 0; i < n; ++i)
                      for (long j = i; j < n; ++j) {  // self edges included, as in dlib's face clustering
                          double sum = 0;
                          for (long k = 0; k < dims; ++k) {
                              const double diff = d[i * dims + k] - d[j * dims + k];
                              sum += diff * diff;
                          }
                          if (std::sqrt(sum) < threshold) edges.emplace_back(i, j);
                      }
                  dlib::chinese_whispers(edges, labels);
              }
              return labels;
          },
          py::arg("descriptors").noconvert(), py::arg("threshold"),
          "Cluster label per descriptor from dlib::chinese_whispers over edges closer than threshold.");
}

}  // namespace pfd

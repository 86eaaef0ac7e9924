// Face clustering with dlib's Chinese whispers, as dlib's face_clustering example does it.
#pragma once

#include <vector>

namespace pfd {

// Cluster label per row of descriptors[n * dims] (row-major doubles): an edge joins every pair
// closer than `threshold`, plus a self edge for every face (as dlib's example), then dlib::chinese_whispers.
// Hand-written edge list: dlib's chinese_whispers takes edges, not points.
std::vector<unsigned long> chinese_whispers_labels(const double* descriptors, long n, long dims, double threshold);

}  // namespace pfd

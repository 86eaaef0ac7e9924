#include "clustering.h"

#include <dlib/clustering.h>

#include <cmath>

namespace pfd {

std::vector<unsigned long> chinese_whispers_labels(const double* d, long n, long dims, double threshold) {
    std::vector<dlib::sample_pair> edges;
    for (long i = 0; i < n; ++i) {
        edges.emplace_back(i, i);  // every face is a node, even one with no neighbour (or a NaN)
        for (long j = i + 1; j < n; ++j) {
            double sum = 0;
            for (long k = 0; k < dims; ++k) {
                const double diff = d[i * dims + k] - d[j * dims + k];
                sum += diff * diff;
            }
            if (std::sqrt(sum) < threshold) edges.emplace_back(i, j);
        }
    }
    std::vector<unsigned long> labels;
    dlib::chinese_whispers(edges, labels);
    return labels;
}

}  // namespace pfd

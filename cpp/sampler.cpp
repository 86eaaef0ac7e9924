#include "sampler.h"

#include <algorithm>

namespace pfd {

namespace {

template <typename T>
void shuffle(std::vector<T>& items, dlib::rand& rnd) {
    for (size_t i = items.size(); i > 1; --i) std::swap(items[i - 1], items[rnd.get_random_64bit_number() % i]);
}

}  // namespace

std::vector<std::vector<size_t>> disjoint_batches(const std::vector<unsigned long>& labels, int identities,
                                                  int per_identity, std::uint64_t seed) {
    if (identities < 1 || per_identity < 1) throw std::invalid_argument("identities and per_identity must be >= 1");
    dlib::rand rnd("pyfacedlib-disjoint-" + std::to_string(seed));
    std::map<unsigned long, std::vector<std::vector<size_t>>> groups;
    {
        std::map<unsigned long, std::vector<size_t>> members;
        for (size_t i = 0; i < labels.size(); ++i) members[labels[i]].push_back(i);
        for (auto& [label, faces] : members) {
            shuffle(faces, rnd);
            for (size_t g = 0; g + per_identity <= faces.size(); g += per_identity)
                groups[label].emplace_back(faces.begin() + g, faces.begin() + g + per_identity);
        }
    }
    std::vector<std::vector<size_t>> batches;
    for (;;) {
        std::vector<unsigned long> ready;
        for (const auto& [label, left] : groups)
            if (!left.empty()) ready.push_back(label);
        if (static_cast<int>(ready.size()) < identities) break;
        // the identities with the most groups left first (ties: smaller label first)
        std::stable_sort(ready.begin(), ready.end(),
                         [&](unsigned long a, unsigned long b) { return groups[a].size() > groups[b].size(); });
        std::vector<size_t> batch;
        for (int i = 0; i < identities; ++i) {
            auto& left = groups[ready[i]];
            batch.insert(batch.end(), left.back().begin(), left.back().end());
            left.pop_back();
        }
        batches.push_back(std::move(batch));
    }
    if (batches.empty()) {
        std::vector<size_t> order(labels.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        shuffle(order, rnd);
        const size_t size = static_cast<size_t>(identities) * per_identity;
        for (size_t b = 0; b + size <= order.size(); b += size) batches.emplace_back(order.begin() + b, order.begin() + b + size);
    }
    shuffle(batches, rnd);
    return batches;
}

}  // namespace pfd

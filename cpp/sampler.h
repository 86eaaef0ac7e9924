// Metric-learning mini-batches: N identities x M faces each (dlib's recipe: every batch holds
// positive and negative pairs). The one place batches are drawn, for training and for evaluation.
#pragma once

#include <dlib/rand.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace pfd {

// Random training batches: each batch takes `identities` distinct identities at random and
// `per_identity` faces of each (without replacement while an identity has enough faces).
class batch_sampler {
public:
    batch_sampler(const std::vector<unsigned long>& labels, int identities, int per_identity, std::uint64_t seed)
        : ids_(identities), per_id_(per_identity) {
        for (size_t i = 0; i < labels.size(); ++i) by_label_[labels[i]].push_back(i);
        for (auto& [label, members] : by_label_) identities_.push_back(label);
        if (identities_.size() < 2) throw std::invalid_argument("training needs at least 2 identities");
        if (ids_ < 2 || per_id_ < 2) throw std::invalid_argument("batches need >= 2 identities x >= 2 images");
        rnd_.set_seed("pyfacedlib-sampler-" + std::to_string(seed));
    }

    // Indices of one mini-batch and their labels.
    void next(std::vector<size_t>& indices, std::vector<unsigned long>& labels) {
        indices.clear();
        labels.clear();
        std::vector<unsigned long> chosen = identities_;
        const size_t ids = std::min<size_t>(ids_, chosen.size());
        for (size_t i = 0; i < ids; ++i) std::swap(chosen[i], chosen[i + rnd_.get_random_32bit_number() % (chosen.size() - i)]);
        for (size_t i = 0; i < ids; ++i) {
            auto members = by_label_[chosen[i]];
            for (int j = 0; j < per_id_; ++j) {
                size_t pick;
                if (j < static_cast<int>(members.size())) {  // without replacement while possible
                    const size_t k = j + rnd_.get_random_32bit_number() % (members.size() - j);
                    std::swap(members[j], members[k]);
                    pick = members[j];
                } else {
                    pick = members[rnd_.get_random_32bit_number() % members.size()];
                }
                indices.push_back(pick);
                labels.push_back(chosen[i]);
            }
        }
    }

    dlib::rand& rnd() { return rnd_; }

private:
    int ids_, per_id_;
    std::map<unsigned long, std::vector<size_t>> by_label_;
    std::vector<unsigned long> identities_;
    dlib::rand rnd_;
};

// Disjoint evaluation batches (validation loss, batch-mode drift): every face at most once.
// Each identity is cut into groups of `per_identity` faces; each batch takes one group from each
// of the `identities` identities with the most groups left. When fewer than `identities`
// identities have a whole group, batches are consecutive runs of the shuffled faces instead.
// Batches come out in a shuffled order.
std::vector<std::vector<size_t>> disjoint_batches(const std::vector<unsigned long>& labels, int identities,
                                                  int per_identity, std::uint64_t seed);

}  // namespace pfd

// Reading and writing face-net files: kind detection (affine testing net vs bn_con training net),
// structural validation against the topology, and serialization.
#pragma once

#include "face_net.h"

#include <string>

namespace pfd {

enum class net_kind { affine, bn };

// Which face net `bytes` (read from `label`) holds; model_format_error when neither.
net_kind detect_net_kind(const std::string& bytes, const std::string& label);

// Strict loaders: the named kind only (model_format_error naming the other kind otherwise).
face_test_net load_affine_net(const std::string& bytes, const std::string& label);
face_train_net load_bn_net(const std::string& bytes, const std::string& label);

// The testing net from either kind (a bn_con file is folded to affine on load, as dlib does).
face_test_net load_test_net(const std::string& bytes, const std::string& label);

// Sets a net up (one forward pass on a blank chip) so every layer has its parameter tensors.
// One sample: bn layers run in inference mode and update nothing.
template <typename net_type>
void set_up(net_type& net) {
    dlib::matrix<dlib::rgb_pixel> blank(chip_size, chip_size);
    blank = dlib::rgb_pixel(0, 0, 0);
    net(blank);
}

// Multiplies the net's descriptors by `factor` in place (the weights of the final fc_no_bias<128>
// scaled: every distance scales by factor); std::invalid_argument unless factor is finite and > 0.
void scale_descriptors(face_test_net& net, double factor);
void scale_descriptors(face_train_net& net, double factor);

// The same net (either kind) with its descriptors multiplied by `factor`, serialized.
std::string scaled_descriptor_net(const std::string& bytes, const std::string& label, double factor);

// WiSE-FT: the affine net whose every parameter (convolutions, affine scales and shifts, the fc
// layer) is (1 - alpha) x base's + alpha x tuned's, serialized. Both must be affine nets of the face
// net (model_format_error otherwise); std::invalid_argument unless 0 <= alpha <= 1.
std::string interpolated_net(const std::string& base_bytes, const std::string& base_label,
                             const std::string& tuned_bytes, const std::string& tuned_label, double alpha);

// Serialized nets (the bn net clean()ed first).
std::string serialize_net(face_train_net& net);
std::string serialize_net(const face_test_net& net);

}  // namespace pfd

#include "net_io.h"

#include "model_io.h"

#include <cmath>
#include <sstream>
#include <type_traits>
#include <vector>

namespace pfd {

using namespace dlib;  // this file works on dlib nets throughout (never in a header)

namespace {

const char* const kind_names[] = {"affine testing net (dlib_face_recognition_resnet_model_v1 format)",
                                  "bn_con training net"};

// Parameter counts per computational layer (affine_ layers: their gamma), in layer order.
template <typename net_type>
std::vector<size_t> parameter_shape(net_type& net) {
    std::vector<size_t> sizes;
    visit_computational_layers(net, [&](size_t, auto& l) {
        if constexpr (std::is_same_v<std::decay_t<decltype(l)>, affine_>) {
            const affine_& a = l;
            sizes.push_back(static_cast<const tensor&>(a.get_gamma()).size() +
                            static_cast<const tensor&>(a.get_beta()).size());
        } else {
            sizes.push_back(l.get_layer_params().size());
        }
    });
    return sizes;
}

// Throws model_format_error unless `net` has exactly the face net's parameter shapes and only
// finite weights (a corrupted size would read out of bounds, a corrupted float gives NaN descriptors).
template <typename net_type>
void validate(net_type& net, const std::string& label) {
    // The training net's set-up shapes are the reference for both kinds: a default-constructed
    // affine_ is in FC mode, while the face net's affine layers are per channel, like bn_con.
    static const std::vector<size_t> reference = [] {
        face_train_net fresh;
        set_up(fresh);
        return parameter_shape(fresh);
    }();
    if (parameter_shape(net) != reference)
        throw model_format_error("'" + label + "' has the face net's layers but not its parameter shapes (corrupt)");
    bool finite = true;
    visit_computational_layers(net, [&](size_t, auto& l) {
        auto check = [&](const tensor& t) {
            const float* p = t.host();
            for (size_t i = 0; i < t.size(); ++i) finite = finite && std::isfinite(p[i]);
        };
        if constexpr (std::is_same_v<std::decay_t<decltype(l)>, affine_>) {
            const affine_& a = l;
            check(a.get_gamma());
            check(a.get_beta());
        } else {
            check(l.get_layer_params());
        }
    });
    if (!finite) throw model_format_error("'" + label + "' holds NaN or infinite weights (corrupt)");
}

template <typename net_type>
bool try_deserialize(const std::string& bytes, net_type& net, std::string& error) {
    std::istringstream in(bytes);
    try {
        deserialize(net, in);
        in.peek();
        if (!in.eof()) {
            error = "bytes follow the end of the network";
            return false;
        }
        return true;
    } catch (const std::bad_alloc&) {
        error = "it declares sizes no real model has";
    } catch (const std::length_error&) {
        error = "it declares sizes no real model has";
    } catch (const std::exception& e) {
        error = e.what();
    }
    return false;
}

std::string not_a_face_net(const std::string& label, const std::string& why) {
    return "'" + label + "' is not a dlib face recognition network (expected the affine testing net or the "
           "bn_con training net; " + why + ")";
}

}  // namespace

net_kind detect_net_kind(const std::string& bytes, const std::string& label) {
    std::string bn_error, affine_error;
    face_train_net bn;
    if (try_deserialize(bytes, bn, bn_error)) return net_kind::bn;
    face_test_net affine;
    if (try_deserialize(bytes, affine, affine_error)) return net_kind::affine;
    throw model_format_error(not_a_face_net(label, affine_error));
}

face_test_net load_affine_net(const std::string& bytes, const std::string& label) {
    if (detect_net_kind(bytes, label) != net_kind::affine)
        throw model_format_error("'" + label + "' holds the " + kind_names[1] + ", but the " + kind_names[0] +
                                 " was expected; convert it with convert_bn_to_affine first");
    return load_test_net(bytes, label);
}

face_train_net load_bn_net(const std::string& bytes, const std::string& label) {
    if (detect_net_kind(bytes, label) != net_kind::bn)
        throw model_format_error("'" + label + "' holds the " + std::string(kind_names[0]) + ", but the " +
                                 kind_names[1] + " was expected; create one with convert_affine_to_bn");
    face_train_net net;
    std::string error;
    if (!try_deserialize(bytes, net, error)) throw model_format_error(not_a_face_net(label, error));
    validate(net, label);
    return net;
}

face_test_net load_test_net(const std::string& bytes, const std::string& label) {
    face_test_net net;
    std::string error;
    if (!try_deserialize(bytes, net, error)) throw model_format_error(not_a_face_net(label, error));
    validate(net, label);
    return net;
}

namespace {

template <typename net_type>
void scale_fc(net_type& net, double factor) {
    if (!(factor > 0) || !std::isfinite(factor)) throw std::invalid_argument("the descriptor scale must be a finite number > 0");
    dlib::tensor& weights = dlib::layer<1>(net).layer_details().get_layer_params();
    dlib::tt::affine_transform(weights, weights, static_cast<float>(factor));
}

}  // namespace

void scale_descriptors(face_test_net& net, double factor) { scale_fc(net, factor); }
void scale_descriptors(face_train_net& net, double factor) { scale_fc(net, factor); }

std::string scaled_descriptor_net(const std::string& bytes, const std::string& label, double factor) {
    if (!(factor > 0) || !std::isfinite(factor)) throw std::invalid_argument("the descriptor scale must be a finite number > 0");
    if (detect_net_kind(bytes, label) == net_kind::bn) {
        auto net = load_bn_net(bytes, label);
        scale_descriptors(net, factor);
        return serialize_net(net);
    }
    auto net = load_test_net(bytes, label);
    scale_descriptors(net, factor);
    return serialize_net(net);
}

std::string interpolated_net(const std::string& base_bytes, const std::string& base_label,
                             const std::string& tuned_bytes, const std::string& tuned_label, double alpha) {
    if (!(alpha >= 0 && alpha <= 1)) throw std::invalid_argument("the interpolation weight must be in [0, 1]");
    auto net = load_affine_net(base_bytes, base_label);
    auto tuned = load_affine_net(tuned_bytes, tuned_label);
    // every parameter block of the tuned net, in layer order (affine_ layers: gamma, then beta), as
    // (values, count): the alias views are temporaries, the memory they view is the net's own
    std::vector<std::pair<const float*, size_t>> theirs;
    auto keep = [&](const tensor& t) { theirs.emplace_back(t.host(), t.size()); };
    visit_computational_layers(tuned, [&](size_t, auto& l) {
        if constexpr (std::is_same_v<std::decay_t<decltype(l)>, affine_>) {
            const affine_& layer = l;
            keep(layer.get_gamma());
            keep(layer.get_beta());
        } else {
            keep(l.get_layer_params());
        }
    });
    size_t next = 0;
    const auto a = static_cast<float>(1 - alpha), b = static_cast<float>(alpha);
    auto mix = [&](tensor& mine) {
        const auto [other, count] = theirs.at(next++);
        if (mine.size() != count)
            throw model_format_error("'" + tuned_label + "' is not the same net as '" + base_label + "'");
        float* p = mine.host();
        for (size_t i = 0; i < count; ++i) p[i] = a * p[i] + b * other[i];
    };
    visit_computational_layers(net, [&](size_t, auto& l) {
        if constexpr (std::is_same_v<std::decay_t<decltype(l)>, affine_>) {
            affine_& layer = l;
            auto gamma = layer.get_gamma();
            auto beta = layer.get_beta();
            mix(gamma);
            mix(beta);
        } else {
            mix(l.get_layer_params());
        }
    });
    return serialize_net(net);
}

std::string serialize_net(face_train_net& net) {
    net.clean();
    std::ostringstream out;
    serialize(net, out);
    return out.str();
}

std::string serialize_net(const face_test_net& net) {
    std::ostringstream out;
    serialize(net, out);
    return out.str();
}

}  // namespace pfd

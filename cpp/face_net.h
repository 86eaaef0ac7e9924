// The face-recognition ResNet of dlib_face_recognition_resnet_model_v1.dat, written once.
//
// `face_net<BN>` is the whole network with the batch-norm layer as a parameter:
//   face_net<dlib::bn_con>  — the training net (batch norm, trainable),
//   face_net<dlib::affine>  — the testing net that the shipped .dat file holds.
// Both have the same 132 layers, so layer<i>(train_net) and layer<i>(test_net) line up.
// `face_fast_net<BN>` is the same net with fast_con (fast_conv.h) in place of dlib's con: what the
// trainers run. It serializes to the same bytes and converts to and from face_net<BN>.
#pragma once

#include "chip.h"
#include "fast_conv.h"

#include <dlib/dnn.h>

namespace pfd {

template <template <int, template <typename> class, int, typename> class block, int N,
          template <typename> class BN, typename SUBNET>
using residual = dlib::add_prev1<block<N, BN, 1, dlib::tag1<SUBNET>>>;

template <template <int, template <typename> class, int, typename> class block, int N,
          template <typename> class BN, typename SUBNET>
using residual_down = dlib::add_prev2<dlib::avg_pool<2, 2, 2, 2, dlib::skip1<dlib::tag2<block<N, BN, 2, dlib::tag1<SUBNET>>>>>>;

template <template <typename> class BN, template <long, long, long, int, int, typename> class CON = dlib::con>
struct face_levels {
    template <int N, template <typename> class B, int stride, typename SUBNET>
    using block = B<CON<N, 3, 3, 1, 1, dlib::relu<B<CON<N, 3, 3, stride, stride, SUBNET>>>>>;
    template <int N, typename SUBNET> using res = dlib::relu<residual<block, N, BN, SUBNET>>;
    template <int N, typename SUBNET> using res_down = dlib::relu<residual_down<block, N, BN, SUBNET>>;

    template <typename SUBNET> using level0 = res_down<256, SUBNET>;
    template <typename SUBNET> using level1 = res<256, res<256, res_down<256, SUBNET>>>;
    template <typename SUBNET> using level2 = res<128, res<128, res_down<128, SUBNET>>>;
    template <typename SUBNET> using level3 = res<64, res<64, res<64, res_down<64, SUBNET>>>>;
    template <typename SUBNET> using level4 = res<32, res<32, res<32, SUBNET>>>;

    // The net from the input up, one level at a time (dlib numbers its levels top-down).
    using stem = dlib::max_pool<3, 3, 2, 2, dlib::relu<BN<CON<32, 7, 7, 2, 2, dlib::input_rgb_image_sized<chip_size>>>>>;
    using up_to_level4 = level4<stem>;
    using up_to_level3 = level3<up_to_level4>;
    using up_to_level2 = level2<up_to_level3>;
    using up_to_level1 = level1<up_to_level2>;
    using up_to_level0 = level0<up_to_level1>;
    using net = dlib::loss_metric<dlib::fc_no_bias<128, dlib::avg_pool_everything<up_to_level0>>>;

    // Fine-tuning levels counted from the input: 0 = stem (7x7 conv), 1..5 = dlib's level4..level0
    // (32, 64, 128, 256, 256 channels), 6 = the head (dlib::fc_no_bias<128>).
    static constexpr int num_levels = 7;

    // Index (as in layer<i>(net)) of the top layer of level k; every layer with a larger index is below it.
    static constexpr size_t top_layer_of_level(int k) {
        constexpr size_t n = net::num_layers;
        switch (k) {
            case 0: return n - stem::num_layers;
            case 1: return n - up_to_level4::num_layers;
            case 2: return n - up_to_level3::num_layers;
            case 3: return n - up_to_level2::num_layers;
            case 4: return n - up_to_level1::num_layers;
            case 5: return n - up_to_level0::num_layers;
            default: return 1;  // layer<1> is dlib::fc_no_bias<128>
        }
    }
};

template <template <typename> class BN>
using face_net = typename face_levels<BN>::net;

template <template <typename> class BN>
using face_fast_net = typename face_levels<BN, fast_con>::net;

// Level structure (identical for both instantiations).
using face_net_levels = face_levels<dlib::bn_con>;

using face_train_net = face_net<dlib::bn_con>;   // batch norm: what dnn_trainer trains
using face_test_net = face_net<dlib::affine>;    // batch norm folded: what the shipped .dat holds
using fast_train_net = face_fast_net<dlib::bn_con>;  // what the trainers run
using fast_test_net = face_fast_net<dlib::affine>;

}  // namespace pfd

// Aligned face chips as the face net takes them, and the descriptor size it gives.
#pragma once

#include <dlib/matrix.h>
#include <dlib/pixel.h>

#include <cstring>
#include <vector>

namespace pfd {

constexpr long chip_size = 150;       // dlib's get_face_chip_details(shape, 150, 0.25)
constexpr long descriptor_size = 128;

using chip_type = dlib::matrix<dlib::rgb_pixel>;

// Copies `count` contiguous chip_size x chip_size x 3 uint8 RGB chips into dlib matrices. The
// caller guarantees count * chip_size * chip_size * 3 readable bytes (bindings check the shape).
inline std::vector<chip_type> chips_from_bytes(const unsigned char* data, long count) {
    std::vector<chip_type> chips(count);
    const long bytes = chip_size * chip_size * 3;
    for (long i = 0; i < count; ++i) {
        chips[i].set_size(chip_size, chip_size);
        std::memcpy(&chips[i](0, 0), data + i * bytes, bytes);
    }
    return chips;
}

}  // namespace pfd

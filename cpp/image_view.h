// A read-only dlib generic image over caller-owned interleaved RGB bytes (e.g. a numpy array),
// so detection, landmarking and chip extraction read the caller's pixels without a copy.
#pragma once

#include <dlib/image_processing/generic_image.h>
#include <dlib/pixel.h>

#include <stdexcept>

namespace pfd {

struct rgb_image_view {
    const unsigned char* data = nullptr;  // rows*cols*3 bytes, rows contiguous
    long rows = 0;
    long cols = 0;

    rgb_image_view() = default;
    rgb_image_view(const unsigned char* data_, long rows_, long cols_) : data(data_), rows(rows_), cols(cols_) {
        if (rows <= 0 || cols <= 0) throw std::invalid_argument("image has no pixels");
    }
};

inline long num_rows(const rgb_image_view& img) { return img.rows; }
inline long num_columns(const rgb_image_view& img) { return img.cols; }
inline const void* image_data(const rgb_image_view& img) { return img.data; }
inline long width_step(const rgb_image_view& img) { return img.cols * 3; }

}  // namespace pfd

namespace dlib {
template <> struct image_traits<pfd::rgb_image_view> { typedef rgb_pixel pixel_type; };
}  // namespace dlib

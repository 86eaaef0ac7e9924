// dlib's HOG face detector behind a plain C interface, so the same scan can be compiled twice:
// portable (inside _core) and for AVX2 (the module _hog_avx2*.so, loaded at run time on CPUs
// that have AVX2). Both give dlib's own boxes and scores (the AVX2 build keeps every
// multiply and add separate: -ffp-contract=off, no FMA), so choosing one changes only the speed.
#pragma once

#include <string>

extern "C" {

struct pfd_hog_hit {
    long left, top, right, bottom;  // in the scanned image (after `upsample` pyramid_up steps)
    double score;                   // dlib's detection_confidence
};

// Function table of one compiled variant (see hog_kernel_impl.h).
struct pfd_hog_kernel {
    const char* name;                                   // "portable" or "avx2"
    void* (*create)();                                  // a detector: dlib::get_frontal_face_detector()
    void (*destroy)(void* detector);
    // dlib's detector(image, upsample) on interleaved RGB rows; writes at most `capacity` hits
    // and returns how many there are (call again with more room when that is more).
    // Returns -1 and fills `error` (256 bytes) when dlib throws.
    long (*detect)(void* detector, const unsigned char* rgb, long rows, long cols, unsigned upsample,
                   pfd_hog_hit* out, long capacity, char* error);
};

}  // extern "C"

namespace pfd {

// "portable", "avx2" or "auto" (AVX2 when the CPU has it and its module loads) -> the variant.
// Throws std::invalid_argument for an unknown name or "avx2" where it cannot run (with why).
const pfd_hog_kernel& hog_kernel(const std::string& name);

// Why "auto" chose what it chose ("avx2: <path>" or "portable: <reason>").
std::string hog_kernel_choice();

}  // namespace pfd

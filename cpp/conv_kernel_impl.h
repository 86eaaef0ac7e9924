// The direct convolution kernels of cpp/conv_kernels.cpp, written once and included there once per
// instruction set. The includer defines PFD_CONV_NS (a namespace for this copy), PFD_CONV_TARGET
// (the target attribute every function here gets) and, inside namespace pfd::PFD_CONV_NS, `vec`:
// the register type and its load / store / broadcast / fma / relu, `lanes` floats wide, and
// max_rows, the output pixels of one tile (accumulators = max_rows * conv_block / lanes).
// Only intrinsics and plain loops here: no std or dlib template is instantiated with these flags.

namespace pfd {
namespace PFD_CONV_NS {

constexpr int regs_per_row = static_cast<int>(conv_block / vec::lanes);

// Where tile pixel r's window starts / its outputs go: evenly spaced (one output row), or listed.
template <typename T>
struct spaced {
    T* first;
    long step;
    PFD_CONV_TARGET T* operator[](int r) const { return first + r * step; }
};
template <typename T>
using listed = T* const*;

// Accumulates R output pixels x conv_block channels over the whole window (bias first), ReLU,
// stores. Pixel r's window starts at in[r] (window rows in_pitch apart), its outputs go to out[r].
template <int R, typename IN, typename OUT>
PFD_CONV_TARGET inline void tile(const direct_conv_call& c, IN in, const float* w, const float* bias, OUT out) {
    typename vec::reg acc[R][regs_per_row];
#pragma GCC unroll 4
    for (int v = 0; v < regs_per_row; ++v) {
        const typename vec::reg b = vec::load(bias + v * vec::lanes);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) acc[r][v] = b;
    }
    for (long ky = 0; ky < c.window_rows; ++ky) {
        const long row = ky * c.in_pitch;
        for (long j = 0; j < c.window_row; ++j, w += conv_block) {
            typename vec::reg weights[regs_per_row];
#pragma GCC unroll 4
            for (int v = 0; v < regs_per_row; ++v) weights[v] = vec::load(w + v * vec::lanes);
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) {
                const typename vec::reg x = vec::broadcast(in[r] + row + j);
#pragma GCC unroll 4
                for (int v = 0; v < regs_per_row; ++v) acc[r][v] = vec::fma(x, weights[v], acc[r][v]);
            }
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int v = 0; v < regs_per_row; ++v) vec::store(out[r] + v * vec::lanes, c.relu ? vec::relu(acc[r][v]) : acc[r][v]);
}

// tile<n> for a run-time n in 1..R.
template <int R, typename IN, typename OUT>
PFD_CONV_TARGET void tile_of(int n, const direct_conv_call& c, IN in, const float* w, const float* bias, OUT out) {
    if (n == R) {
        tile<R>(c, in, w, bias, out);
        return;
    }
    if constexpr (R > 1) tile_of<R - 1>(n, c, in, w, bias, out);
}

// Splits `count` pixels into tiles of up to max_rows, as even as possible, and calls
// each_tile(first, size, w, bias, block) for every block of conv_block output channels.
template <typename EACH_TILE>
PFD_CONV_TARGET void for_tiles(const direct_conv_call& c, long count, EACH_TILE each_tile) {
    const long rows = c.window_rows * c.window_row, tiles = (count + vec::max_rows - 1) / vec::max_rows;
    for (long block = 0; block < c.f / conv_block; ++block) {
        const float* w = c.packed + block * rows * conv_block;
        const float* bias = c.bias + block * conv_block;
        long first = 0;
        for (long t = 0; t < tiles; ++t) {
            const long end = count * (t + 1) / tiles;
            each_tile(first, static_cast<int>(end - first), w, bias, block * conv_block);
            first = end;
        }
    }
}

PFD_CONV_TARGET void run(const direct_conv_call& c, long in_offset, long in_step, long out_offset, long out_step, long count) {
    for_tiles(c, count, [&](long first, int size, const float* w, const float* bias, long channel) {
        const spaced<const float> in{c.in + in_offset + first * in_step, in_step};
        const spaced<float> out{c.out + out_offset + first * out_step + channel, out_step};
        tile_of<vec::max_rows>(size, c, in, w, bias, out);
    });
}

PFD_CONV_TARGET void gather(const direct_conv_call& c, const long* in_offsets, const long* out_offsets, long count) {
    for_tiles(c, count, [&](long first, int size, const float* w, const float* bias, long channel) {
        const float* in[vec::max_rows];
        float* out[vec::max_rows];
        for (int r = 0; r < size; ++r) {
            in[r] = c.in + in_offsets[first + r];
            out[r] = c.out + out_offsets[first + r] + channel;
        }
        tile_of<vec::max_rows>(size, c, listed<const float>(in), w, bias, listed<float>(out));
    });
}

}  // namespace PFD_CONV_NS
}  // namespace pfd

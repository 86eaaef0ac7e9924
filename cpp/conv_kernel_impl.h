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
// Adjacent values (rows of a filter gradient): the broadcasts share one base register.
template <typename T>
struct adjacent {
    T* first;
    PFD_CONV_TARGET T* operator[](int r) const { return first + r; }
};

// Accumulates R outputs x conv_block channels over the whole window, ReLU, stores. Output r's
// window starts at in[r]: window rows in_pitch apart, values in_step apart; value j of window row
// ky is multiplied by the conv_block weights at w + ky * weight_pitch + j * weight_step. The sums
// start from the bias, or with `accumulate` from what out[r] holds. UNIT: in_step 1 and
// weight_step conv_block (a convolution's packed weights), known at compile time.
template <int R, bool UNIT, typename IN, typename OUT>
PFD_CONV_TARGET inline void tile(const direct_conv_call& c, IN in, const float* w, const float* bias, OUT out) {
    typename vec::reg acc[R][regs_per_row];
#pragma GCC unroll 4
    for (int v = 0; v < regs_per_row; ++v) {
        if (c.accumulate) {
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) acc[r][v] = vec::load(out[r] + v * vec::lanes);
        } else {
            const typename vec::reg b = vec::load(bias + v * vec::lanes);
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) acc[r][v] = b;
        }
    }
    const long in_step = UNIT ? 1 : c.in_step, weight_step = UNIT ? conv_block : c.weight_step;
    for (long ky = 0; ky < c.window_rows; ++ky) {
        const long row = ky * c.in_pitch;
        const float* weight_row = w + ky * c.weight_pitch;
        for (long j = 0; j < c.window_row; ++j) {
            typename vec::reg weights[regs_per_row];
#pragma GCC unroll 4
            for (int v = 0; v < regs_per_row; ++v) weights[v] = vec::load(weight_row + j * weight_step + v * vec::lanes);
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) {
                const typename vec::reg x = vec::broadcast(in[r] + row + j * in_step);
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
template <int R, bool UNIT, typename IN, typename OUT>
PFD_CONV_TARGET void tile_of(int n, const direct_conv_call& c, IN in, const float* w, const float* bias, OUT out) {
    if (n == R) {
        tile<R, UNIT>(c, in, w, bias, out);
        return;
    }
    if constexpr (R > 1) tile_of<R - 1, UNIT>(n, c, in, w, bias, out);
}

template <typename IN, typename OUT>
PFD_CONV_TARGET void tile_any(int n, const direct_conv_call& c, IN in, const float* w, const float* bias, OUT out) {
    if (c.in_step == 1 && c.weight_step == conv_block)
        tile_of<vec::max_rows, true>(n, c, in, w, bias, out);
    else
        tile_of<vec::max_rows, false>(n, c, in, w, bias, out);
}

// Splits `count` pixels into tiles of up to max_rows, as even as possible, and calls
// each_tile(first, size, w, bias, block) for every block of conv_block output channels.
template <typename EACH_TILE>
PFD_CONV_TARGET void for_tiles(const direct_conv_call& c, long count, EACH_TILE each_tile) {
    const long tiles = (count + vec::max_rows - 1) / vec::max_rows;
    for (long block = 0; block < c.f / conv_block; ++block) {
        const float* w = c.weights + block * c.weight_block;
        const float* bias = c.bias ? c.bias + block * conv_block : nullptr;
        long first = 0;
        for (long t = 0; t < tiles; ++t) {
            const long end = count * (t + 1) / tiles;
            each_tile(first, static_cast<int>(end - first), w, bias, block * conv_block);
            first = end;
        }
    }
}

PFD_CONV_TARGET void run(const direct_conv_call& c, long in_offset, long in_step, long out_offset, long out_step, long count) {
    if (in_step == 1 && !(c.in_step == 1 && c.weight_step == conv_block)) {  // filter gradients
        for_tiles(c, count, [&](long first, int size, const float* w, const float* bias, long channel) {
            const spaced<float> out{c.out + out_offset + first * out_step + channel, out_step};
            tile_of<vec::max_rows, false>(size, c, adjacent<const float>{c.in + in_offset + first}, w, bias, out);
        });
        return;
    }
    for_tiles(c, count, [&](long first, int size, const float* w, const float* bias, long channel) {
        const spaced<const float> in{c.in + in_offset + first * in_step, in_step};
        const spaced<float> out{c.out + out_offset + first * out_step + channel, out_step};
        tile_any(size, c, in, w, bias, out);
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
        tile_any(size, c, listed<const float>(in), w, bias, listed<float>(out));
    });
}

}  // namespace PFD_CONV_NS
}  // namespace pfd

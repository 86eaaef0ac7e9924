#include "folded_net.h"

#include "blas.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <typeinfo>

namespace pfd {

using namespace dlib;  // this file works on dlib nets throughout (never in a header)

namespace {

// Rows of im2col kept per GEMM call (blas kernel): about this many floats of columns (fits the L2 cache).
constexpr long column_budget = 256 * 1024;
constexpr long min_block_rows = 64;

// An NHWC tensor whose samples carry a zero border of `b` pixels on every side (b = 1 for every
// spatial tensor, so a 3x3 window with padding 1 reads the border instead of testing bounds).
struct shape {
    long n = 0, h = 0, w = 0, c = 0, b = 0;
    long pitch() const { return (w + 2 * b) * c; }
    long sample_floats() const { return (h + 2 * b) * pitch(); }
    long size() const { return n * sample_floats(); }  // floats stored, border included
    long values() const { return n * h * w * c; }      // floats of the tensor itself
    // offset of pixel (y, x) of sample i; -b <= y, x reach into the border
    long at(long i, long y, long x) const { return i * sample_floats() + (y + b) * pitch() + (x + b) * c; }
};

constexpr long border = 1;  // the border of every spatial tensor: the largest convolution padding supported

long pooled(long in, long window, long stride, long pad) { return 1 + (in + 2 * pad - window) / stride; }

// Zeroes the border of every sample (buffers are reused, so it holds stale values otherwise).
void clear_border(float* t, const shape& s) {
    if (s.b == 0) return;
    const long side = s.b * s.c;
    for (long i = 0; i < s.n; ++i) {
        float* sample = t + i * s.sample_floats();
        std::fill(sample, sample + s.b * s.pitch(), 0.0f);
        std::fill(sample + (s.h + s.b) * s.pitch(), sample + s.sample_floats(), 0.0f);
        for (long y = 0; y < s.h; ++y) {
            float* row = sample + (y + s.b) * s.pitch();
            std::fill(row, row + side, 0.0f);
            std::fill(row + s.pitch() - side, row + s.pitch(), 0.0f);
        }
    }
}

// Calls fn(offset) for the first value of every pixel of the tensor (its c values follow).
template <typename FN>
void each_pixel(const shape& s, FN&& fn) {
    for (long i = 0; i < s.n; ++i)
        for (long y = 0; y < s.h; ++y)
            for (long x = 0; x < s.w; ++x) fn(s.at(i, y, x));
}

void relu_in_place(float* data, long count) {
    for (long i = 0; i < count; ++i) data[i] = std::max(data[i], 0.0f);
}

shape conv_output(const shape& s, const folded_face_net::op& o) {
    return {s.n, pooled(s.h, o.window_y, o.stride_y, o.pad_y), pooled(s.w, o.window_x, o.stride_x, o.pad_x), o.out_channels, border};
}

// im2col of output rows [row_begin, row_end) (row = (sample, y, x)); columns ordered (ky, kx, channel):
// each window row is window_x * c contiguous floats of the bordered input.
void im2col(const float* in, const shape& s, const folded_face_net::op& o, const shape& os, long row_begin, long row_end,
            float* cols) {
    const long row_floats = o.window_x * s.c, k = o.window_y * row_floats, plane = os.h * os.w;
    for (long r = row_begin; r < row_end; ++r) {
        const long n = r / plane, y = (r % plane) / os.w, x = r % os.w;
        const float* window = in + s.at(n, y * o.stride_y - o.pad_y, x * o.stride_x - o.pad_x);
        float* dst = cols + (r - row_begin) * k;
        for (long ky = 0; ky < o.window_y; ++ky) std::memcpy(dst + ky * row_floats, window + ky * s.pitch(), row_floats * sizeof(float));
    }
}

// conv_kernel::blas: im2col + one OpenBLAS GEMM per block of rows, then bias (+ ReLU) into the bordered output.
void conv_blas(const float* in, const shape& s, const folded_face_net::op& o, float* out, const shape& os, folded_workspace& ws) {
    const long k = o.window_y * o.window_x * s.c, f = o.out_channels, rows = os.n * os.h * os.w, plane = os.h * os.w;
    const long block = std::max(min_block_rows, column_budget / k);
    ws.columns.resize(std::min(rows, block) * k);
    ws.products.resize(std::min(rows, block) * f);
    for (long r0 = 0; r0 < rows; r0 += block) {
        const long r1 = std::min(rows, r0 + block);
        im2col(in, s, o, os, r0, r1, ws.columns.data());
        sgemm_row_major(r1 - r0, f, k, ws.columns.data(), k, o.weights.data(), f, ws.products.data(), f, 0.0f);
        for (long r = r0; r < r1; ++r) {
            const float* src = ws.products.data() + (r - r0) * f;
            float* dst = out + os.at(r / plane, (r % plane) / os.w, r % os.w);
            for (long c = 0; c < f; ++c) dst[c] = src[c] + o.bias[c];
            if (o.relu) relu_in_place(dst, f);
        }
    }
}

// The direct kernels (single-threaded: callers run one batch per thread).
void conv_direct(conv_kernel kernel, const float* in, const shape& s, const folded_face_net::op& o, float* out, const shape& os,
                 folded_workspace& ws) {
    const auto call = direct_conv_call::convolution(in, s.pitch(), o.window_y, o.window_x * s.c, o.packed.data(), o.bias.data(),
                                                    o.out_channels, o.relu, out);
    const auto window = [&](long i, long y, long x) { return s.at(i, y * o.stride_y - o.pad_y, x * o.stride_x - o.pad_x); };
    const auto output = [&](long i, long y, long x) { return os.at(i, y, x); };
    direct_conv_pixels(kernel, call, os.n, os.h, os.w, window, o.stride_x * s.c, output, 1, ws.in_offsets, ws.out_offsets);
}

void conv(conv_kernel kernel, const float* in, const shape& s, const folded_face_net::op& o, float* out, shape& os,
          folded_workspace& ws) {
    if (s.c != o.in_channels)
        throw std::runtime_error("folded_face_net: convolution expects " + std::to_string(o.in_channels) +
                                 " input channels, got " + std::to_string(s.c));
    os = conv_output(s, o);
    if (kernel != conv_kernel::blas && !o.packed.empty())
        conv_direct(kernel, in, s, o, out, os, ws);
    else
        conv_blas(in, s, o, out, os, ws);
    clear_border(out, os);
}

void pool(const float* in, const shape& s, const folded_face_net::op& o, float* out, shape& os) {
    const bool is_max = o.kind == folded_face_net::op_kind::max_pool;
    os = {s.n, pooled(s.h, o.window_y, o.stride_y, o.pad_y), pooled(s.w, o.window_x, o.stride_x, o.pad_x), s.c, border};
    const float inv = 1.0f / static_cast<float>(o.window_y * o.window_x);
    for (long n = 0; n < os.n; ++n)
        for (long y = 0; y < os.h; ++y)
            for (long x = 0; x < os.w; ++x) {
                float* dst = out + os.at(n, y, x);
                std::fill(dst, dst + s.c, is_max ? -std::numeric_limits<float>::infinity() : 0.0f);
                for (long ky = 0; ky < o.window_y; ++ky) {
                    const long iy = y * o.stride_y - o.pad_y + ky;
                    if (iy < 0 || iy >= s.h) continue;
                    for (long kx = 0; kx < o.window_x; ++kx) {
                        const long ix = x * o.stride_x - o.pad_x + kx;
                        if (ix < 0 || ix >= s.w) continue;
                        const float* src = in + s.at(n, iy, ix);
                        if (is_max)
                            for (long c = 0; c < s.c; ++c) dst[c] = std::max(dst[c], src[c]);
                        else
                            for (long c = 0; c < s.c; ++c) dst[c] += src[c];
                    }
                }
                if (!is_max)
                    for (long c = 0; c < s.c; ++c) dst[c] *= inv;
            }
    clear_border(out, os);
}

// dlib's add_prev: the output has the larger of each dimension; what one input lacks counts as 0.
void add_tensors(const float* a, const shape& sa, const float* b, const shape& sb, float* out, shape& os, bool relu) {
    os = {std::max(sa.n, sb.n), std::max(sa.h, sb.h), std::max(sa.w, sb.w), std::max(sa.c, sb.c), border};
    const auto at = [](const float* t, const shape& s, long n, long y, long x) -> const float* {
        return n < s.n && y < s.h && x < s.w ? t + s.at(n, y, x) : nullptr;
    };
    for (long n = 0; n < os.n; ++n)
        for (long y = 0; y < os.h; ++y)
            for (long x = 0; x < os.w; ++x) {
                float* dst = out + os.at(n, y, x);
                const float* pa = at(a, sa, n, y, x);
                const float* pb = at(b, sb, n, y, x);
                const long ca = pa ? sa.c : 0, cb = pb ? sb.c : 0, common = std::min(ca, cb);
                for (long c = 0; c < common; ++c) dst[c] = pa[c] + pb[c];
                for (long c = common; c < ca; ++c) dst[c] = pa[c];
                for (long c = common; c < cb; ++c) dst[c] = pb[c];
                std::fill(dst + std::max(ca, cb), dst + os.c, 0.0f);
                if (relu) relu_in_place(dst, os.c);
            }
    clear_border(out, os);
}

}  // namespace

// Walks the dlib net from the input up and appends one op per layer, folding and fusing as it goes.
struct folded_net_builder {
    folded_face_net& net;

    using op = folded_face_net::op;
    using kind = folded_face_net::op_kind;

    [[noreturn]] static void unsupported(const std::string& what) {
        throw std::runtime_error("folded_face_net: unsupported layer or setting: " + what);
    }

    op* last() { return net.ops_.empty() ? nullptr : &net.ops_.back(); }

    // window, stride and padding of a convolution or pooling layer
    template <typename LAYER>
    static op windowed(kind k, const LAYER& l) {
        op o{k};
        o.window_y = l.nr();
        o.window_x = l.nc();
        o.stride_y = l.stride_y();
        o.stride_x = l.stride_x();
        o.pad_y = l.padding_y();
        o.pad_x = l.padding_x();
        return o;
    }

    void operator()(size_t, input_rgb_image_sized<chip_size>& input) {
        net.avg_red_ = input.get_avg_red();
        net.avg_green_ = input.get_avg_green();
        net.avg_blue_ = input.get_avg_blue();
        net.input_size_ = chip_size;
    }

    template <typename LOSS, typename SUBNET>
    void operator()(size_t, add_loss_layer<LOSS, SUBNET>&) {}

    template <unsigned long ID, typename SUBNET, typename E>
    void operator()(size_t, add_tag_layer<ID, SUBNET, E>&) {
        op o{kind::tag};
        o.tag = static_cast<int>(ID);
        net.ops_.push_back(std::move(o));
    }

    template <template <typename> class TAG, typename SUBNET>
    void operator()(size_t, add_skip_layer<TAG, SUBNET>&) {
        op o{kind::skip};
        o.tag = static_cast<int>(tag_id<TAG>::id);
        net.ops_.push_back(std::move(o));
    }

    template <typename LAYER, typename SUBNET, typename E>
    void operator()(size_t, add_layer<LAYER, SUBNET, E>& l) {
        add(l.layer_details());
    }

    template <long N, long NR, long NC, int SY, int SX, int PY, int PX>
    void add(const con_<N, NR, NC, SY, SX, PY, PX>& c) {
        const auto& params = c.get_layer_params();
        const long filters = c.num_filters(), per_filter = c.nr() * c.nc();
        const long weight_count = params.size() - (c.bias_is_disabled() ? 0 : filters);
        const long in = weight_count / (filters * per_filter);
        op o = windowed(kind::conv, c);
        o.in_channels = in;
        o.out_channels = filters;
        o.weights.resize(weight_count);
        o.bias.assign(filters, 0.0f);
        const float* w = params.host();  // dlib layout: [filter][channel][ky][kx]
        for (long f = 0; f < filters; ++f)
            for (long ch = 0; ch < in; ++ch)
                for (long ky = 0; ky < c.nr(); ++ky)
                    for (long kx = 0; kx < c.nc(); ++kx)
                        o.weights[((ky * c.nc() + kx) * in + ch) * filters + f] = w[((f * in + ch) * c.nr() + ky) * c.nc() + kx];
        if (!c.bias_is_disabled()) std::copy(w + weight_count, w + weight_count + filters, o.bias.begin());
        o.relu = !c.relu_is_disabled();  // dlib's fuse_layers() moves a following ReLU into the con_
        if (o.pad_y > border || o.pad_x > border) unsupported("convolution padding above " + std::to_string(border));
        net.ops_.push_back(std::move(o));
    }

    void add(const affine_& a) {
        if (a.is_disabled()) return;  // fused away by dlib (fuse_layers): the identity
        if (a.get_mode() != CONV_MODE) unsupported("affine_ in fc mode");
        auto gamma_alias = a.get_gamma(), beta_alias = a.get_beta();  // not in get_layer_params()
        const tensor& gamma_tensor = gamma_alias;
        const tensor& beta_tensor = beta_alias;
        const long channels = static_cast<long>(gamma_tensor.size());
        if (channels == 0 || static_cast<long>(beta_tensor.size()) != channels) unsupported("affine_ without parameters");
        const float* gamma = gamma_tensor.host();
        const float* beta = beta_tensor.host();
        op* prev = last();
        if (prev && prev->kind == kind::conv && !prev->relu && prev->out_channels == channels) {
            const long rows = static_cast<long>(prev->weights.size()) / channels;
            for (long r = 0; r < rows; ++r)
                for (long f = 0; f < channels; ++f) prev->weights[r * channels + f] *= gamma[f];
            for (long f = 0; f < channels; ++f) prev->bias[f] = prev->bias[f] * gamma[f] + beta[f];
            return;
        }
        op o{kind::scale_shift};
        o.weights.assign(gamma, gamma + channels);
        o.bias.assign(beta, beta + channels);
        net.ops_.push_back(std::move(o));
    }

    void add(const relu_& r) {
        if (r.is_disabled()) return;  // fused into the con_ below by dlib
        op* prev = last();
        if (prev && !prev->relu && (prev->kind == kind::conv || prev->kind == kind::scale_shift || prev->kind == kind::add_tag)) {
            prev->relu = true;
            return;
        }
        net.ops_.push_back(op{kind::relu});
    }

    template <long NR, long NC, int SY, int SX, int PY, int PX>
    void add(const max_pool_<NR, NC, SY, SX, PY, PX>& p) {
        add_pool(kind::max_pool, p);
    }

    template <long NR, long NC, int SY, int SX, int PY, int PX>
    void add(const avg_pool_<NR, NC, SY, SX, PY, PX>& p) {
        if (p.nr() == 0 && p.nc() == 0) {
            net.ops_.push_back(op{kind::global_avg});
            return;
        }
        if (p.padding_y() != 0 || p.padding_x() != 0) unsupported("padded avg_pool");
        add_pool(kind::avg_pool, p);
    }

    template <typename POOL>
    void add_pool(kind k, const POOL& p) {
        if (p.nr() == 0 || p.nc() == 0) unsupported("global max pooling");
        net.ops_.push_back(windowed(k, p));
    }

    template <template <typename> class TAG>
    void add(const add_prev_<TAG>&) {
        op o{kind::add_tag};
        o.tag = static_cast<int>(tag_id<TAG>::id);
        net.ops_.push_back(std::move(o));
    }

    template <unsigned long OUTPUTS, fc_bias_mode MODE>
    void add(const fc_<OUTPUTS, MODE>& f) {
        const auto& params = f.get_layer_params();
        const long outputs = f.get_num_outputs(), rows = params.size() / outputs;
        const bool has_bias = f.get_bias_mode() == FC_HAS_BIAS && !f.bias_is_disabled();
        const long inputs = rows - (has_bias ? 1 : 0);
        op o{kind::fc};
        o.in_channels = inputs;
        o.out_channels = outputs;
        o.weights.assign(params.host(), params.host() + inputs * outputs);  // (inputs x outputs), row-major
        o.bias.assign(outputs, 0.0f);
        if (has_bias) std::copy(params.host() + inputs * outputs, params.host() + rows * outputs, o.bias.begin());
        net.ops_.push_back(std::move(o));
    }

    template <typename OTHER>
    void add(const OTHER&) {
        unsupported(typeid(OTHER).name());
    }
};

folded_face_net::folded_face_net(const face_test_net& source) {
    face_test_net copy = source;  // dlib's visitors take a mutable net
    visit_layers_backwards(copy, folded_net_builder{*this});
    if (input_size_ == 0 || ops_.empty() || ops_.back().kind != op_kind::fc)
        throw std::runtime_error("folded_face_net: the net does not start with a 150x150 RGB input and end with an fc layer");
    for (auto& o : ops_)  // after folding: the affine layers scaled the weights
        if (o.kind == op_kind::conv && o.out_channels % conv_block == 0)
            o.packed = pack_conv_weights(o.weights, o.window_y * o.window_x * o.in_channels, o.out_channels);
}

namespace {

// The tensors of one forward pass: workspace buffers ("slots") with their shapes, the slot holding
// the current tensor, and the slot each tag points at (a tagged slot is never overwritten).
struct forward_state {
    std::vector<std::vector<float>>& bufs;
    std::vector<shape> shapes;
    std::vector<int> tag_slot = std::vector<int>(16, -1);
    int cur = -1;

    explicit forward_state(std::vector<std::vector<float>>& buffers) : bufs(buffers), shapes(buffers.size()) {}

    bool tagged(int slot) const { return std::find(tag_slot.begin(), tag_slot.end(), slot) != tag_slot.end(); }

    // A slot of at least `floats` that is neither tagged nor one of the two given.
    int reserve(long floats, int avoid_a = -1, int avoid_b = -1) {
        for (int s = 0;; ++s) {
            if (s == static_cast<int>(bufs.size())) bufs.emplace_back(), shapes.emplace_back();
            if (s == avoid_a || s == avoid_b || tagged(s)) continue;
            if (static_cast<long>(bufs[s].size()) < floats) bufs[s].resize(floats);
            return s;
        }
    }
    const shape& current() const { return shapes[cur]; }
    float* data(int slot) { return bufs[slot].data(); }
};

using op = folded_face_net::op;

void run_conv(forward_state& st, const op& o, conv_kernel kernel, folded_workspace& ws) {
    const int dst = st.reserve(conv_output(st.current(), o).size(), st.cur);
    conv(kernel, st.data(st.cur), st.current(), o, st.data(dst), st.shapes[dst], ws);
    st.cur = dst;
}

// scale_shift (an affine that could not be folded) and a ReLU that could not be fused, in place
// unless the current tensor is tagged (then on a copy); the border stays zero.
void run_pointwise(forward_state& st, const op& o) {
    const shape s = st.current();
    int dst = st.cur;
    if (st.tagged(st.cur)) {
        dst = st.reserve(s.size(), st.cur);
        std::copy(st.bufs[st.cur].begin(), st.bufs[st.cur].begin() + s.size(), st.bufs[dst].begin());
        st.shapes[dst] = s;
    }
    float* data = st.data(dst);
    each_pixel(s, [&](long p) {
        if (o.kind == folded_face_net::op_kind::scale_shift)
            for (long c = 0; c < s.c; ++c) data[p + c] = data[p + c] * o.weights[c] + o.bias[c];
        if (o.kind == folded_face_net::op_kind::relu || o.relu) relu_in_place(data + p, s.c);
    });
    st.cur = dst;
}

void run_pool(forward_state& st, const op& o) {
    const shape s = st.current();
    const shape os{s.n, pooled(s.h, o.window_y, o.stride_y, o.pad_y), pooled(s.w, o.window_x, o.stride_x, o.pad_x), s.c, border};
    const int dst = st.reserve(os.size(), st.cur);
    pool(st.data(st.cur), s, o, st.data(dst), st.shapes[dst]);
    st.cur = dst;
}

void run_add_tag(forward_state& st, const op& o) {
    const int other = st.tag_slot.at(o.tag);
    if (other < 0) throw std::runtime_error("folded_face_net: add_prev of an unset tag");
    const shape s = st.current(), t = st.shapes[other];
    const shape os{std::max(s.n, t.n), std::max(s.h, t.h), std::max(s.w, t.w), std::max(s.c, t.c), border};
    const int dst = st.reserve(os.size(), st.cur, other);
    add_tensors(st.data(st.cur), s, st.data(other), t, st.data(dst), st.shapes[dst], o.relu);
    st.cur = dst;
}

void run_global_avg(forward_state& st) {
    const shape s = st.current();
    const int dst = st.reserve(s.n * s.c, st.cur);
    float* d = st.data(dst);
    const float* in = st.data(st.cur);
    const float inv = 1.0f / static_cast<float>(s.h * s.w);
    for (long i = 0; i < s.n; ++i) {
        std::fill(d + i * s.c, d + (i + 1) * s.c, 0.0f);
        for (long y = 0; y < s.h; ++y)
            for (long x = 0; x < s.w; ++x)
                for (long c = 0; c < s.c; ++c) d[i * s.c + c] += in[s.at(i, y, x) + c];
        for (long c = 0; c < s.c; ++c) d[i * s.c + c] *= inv;
    }
    st.shapes[dst] = {s.n, 1, 1, s.c, 0};
    st.cur = dst;
}

// Drops the border of the current tensor (an fc layer reads each sample as one vector).
void compact(forward_state& st) {
    const shape s = st.current();
    if (s.b == 0) return;
    const int dst = st.reserve(s.values(), st.cur);
    float* d = st.data(dst);
    each_pixel(s, [&](long p) { d = std::copy(st.data(st.cur) + p, st.data(st.cur) + p + s.c, d); });
    st.shapes[dst] = {s.n, s.h, s.w, s.c, 0};
    st.cur = dst;
}

void run_fc(forward_state& st, const op& o) {
    compact(st);
    const shape s = st.current();
    const long in = s.h * s.w * s.c;
    if (in != o.in_channels) throw std::runtime_error("folded_face_net: fc input size mismatch");
    const int dst = st.reserve(s.n * o.out_channels, st.cur);
    for (long i = 0; i < s.n; ++i)
        std::memcpy(st.data(dst) + i * o.out_channels, o.bias.data(), o.out_channels * sizeof(float));
    sgemm_row_major(s.n, o.out_channels, in, st.data(st.cur), in, o.weights.data(), o.out_channels, st.data(dst),
                    o.out_channels, 1.0f);
    st.shapes[dst] = {s.n, 1, 1, o.out_channels, 0};
    st.cur = dst;
}

}  // namespace

void folded_face_net::set_conv_kernel(conv_kernel kernel) {
    require_conv_kernel(kernel);
    kernel_ = kernel;
}

void folded_face_net::forward(const dlib::matrix<dlib::rgb_pixel>* chips, long count, float* out, folded_workspace& ws) const {
    if (count <= 0) return;
    const long n = count, side = input_size_;
    forward_state st(ws.buffers);
    const shape input{n, side, side, 3, border};
    st.cur = st.reserve(input.size());
    st.shapes[st.cur] = input;
    const float avg[3] = {avg_red_, avg_green_, avg_blue_};
    for (long i = 0; i < n; ++i) {
        const auto& chip = chips[i];
        if (chip.nr() != side || chip.nc() != side) throw std::invalid_argument("folded_face_net: chips must be 150x150");
        const dlib::rgb_pixel* src = &chip(0, 0);
        for (long y = 0; y < side; ++y) {
            float* dst = st.data(st.cur) + input.at(i, y, 0);
            for (long x = 0; x < side; ++x, ++src) {
                dst[3 * x + 0] = (src->red - avg[0]) / 256.0f;
                dst[3 * x + 1] = (src->green - avg[1]) / 256.0f;
                dst[3 * x + 2] = (src->blue - avg[2]) / 256.0f;
            }
        }
    }
    clear_border(st.data(st.cur), input);
    for (const auto& o : ops_) {
        switch (o.kind) {
            case op_kind::conv: run_conv(st, o, kernel_, ws); break;
            case op_kind::scale_shift:
            case op_kind::relu: run_pointwise(st, o); break;
            case op_kind::max_pool:
            case op_kind::avg_pool: run_pool(st, o); break;
            case op_kind::tag: st.tag_slot.at(o.tag) = st.cur; break;
            case op_kind::skip:
                if (st.tag_slot.at(o.tag) < 0) throw std::runtime_error("folded_face_net: skip to an unset tag");
                st.cur = st.tag_slot[o.tag];
                break;
            case op_kind::add_tag: run_add_tag(st, o); break;
            case op_kind::global_avg: run_global_avg(st); break;
            case op_kind::fc: run_fc(st, o); break;
        }
    }
    if (st.current().size() != n * descriptor_size)
        throw std::runtime_error("folded_face_net: the net does not output 128 values per face");
    std::memcpy(out, st.data(st.cur), n * descriptor_size * sizeof(float));
}

double folded_face_net::multiply_adds_per_face() const {
    long h = input_size_, w = input_size_;
    double total = 0;
    std::vector<std::pair<long, long>> tags(16, {0, 0});
    for (const auto& o : ops_) {
        switch (o.kind) {
            case op_kind::conv:
                h = pooled(h, o.window_y, o.stride_y, o.pad_y);
                w = pooled(w, o.window_x, o.stride_x, o.pad_x);
                total += static_cast<double>(h) * w * o.out_channels * o.window_y * o.window_x * o.in_channels;
                break;
            case op_kind::max_pool:
            case op_kind::avg_pool:
                h = pooled(h, o.window_y, o.stride_y, o.pad_y);
                w = pooled(w, o.window_x, o.stride_x, o.pad_x);
                break;
            case op_kind::tag: tags.at(o.tag) = {h, w}; break;
            case op_kind::skip: std::tie(h, w) = tags.at(o.tag); break;
            case op_kind::add_tag:
                h = std::max(h, tags.at(o.tag).first);
                w = std::max(w, tags.at(o.tag).second);
                break;
            case op_kind::global_avg: h = w = 1; break;
            case op_kind::fc: total += static_cast<double>(o.in_channels) * o.out_channels; break;
            default: break;
        }
    }
    return total;
}

std::string folded_face_net::describe() const {
    static const char* names[] = {"conv", "scale_shift", "relu", "max_pool", "avg_pool", "tag", "skip", "add_tag", "global_avg", "fc"};
    std::ostringstream out;
    for (const auto& o : ops_) {
        out << names[static_cast<int>(o.kind)];
        if (o.kind == op_kind::conv)
            out << " " << o.in_channels << "->" << o.out_channels << " " << o.window_y << "x" << o.window_x << "/" << o.stride_y
                << " pad " << o.pad_y;
        if (o.kind == op_kind::max_pool || o.kind == op_kind::avg_pool) out << " " << o.window_y << "x" << o.window_x << "/" << o.stride_y;
        if (o.kind == op_kind::tag || o.kind == op_kind::skip || o.kind == op_kind::add_tag) out << " " << o.tag;
        if (o.kind == op_kind::fc) out << " " << o.in_channels << "->" << o.out_channels;
        if (o.relu) out << " +relu";
        out << "\n";
    }
    return out.str();
}

}  // namespace pfd

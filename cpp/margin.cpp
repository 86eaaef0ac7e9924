#include "margin.h"

namespace pfd {

namespace {

void to_tensor(const dlib::matrix<float>& m, dlib::resizable_tensor& t) {
    t.set_size(m.nr(), m.nc());
    std::copy(m.begin(), m.end(), t.host());
}

dlib::matrix<float> to_matrix(const dlib::tensor& t) {
    return dlib::mat(t.host(), t.num_samples(), t.k() * t.nr() * t.nc());
}

}  // namespace

cosine_layer_pass run_cosine_layer(const dlib::matrix<float>& x, const dlib::matrix<float>& centres, const dlib::matrix<float>& g) {
    if (x.nr() < 1 || centres.nr() < 2 || x.nc() < 1) throw std::invalid_argument("the class layer needs >= 1 row of x and >= 2 centres");
    if (x.nc() != centres.nc()) throw std::invalid_argument("x and the centres need the same number of columns");
    if (dlib::min(dlib::sum_cols(dlib::squared(x))) <= 0 || dlib::min(dlib::sum_cols(dlib::squared(centres))) <= 0)
        throw std::invalid_argument("a zero row of x or of the centres has no direction (no cosine)");
    if (g.nr() != x.nr() || g.nc() != centres.nr()) throw std::invalid_argument("the gradient must be (rows of x) x (rows of centres)");
    cosine_fc_ layer(centres);
    tensor_pair below, above;
    to_tensor(x, below.output);
    below.gradient.copy_size(below.output);
    below.gradient = 0;
    layer.setup(below);
    layer.forward(below, above.output);
    dlib::resizable_tensor gradient, params_gradient;
    to_tensor(g, gradient);
    params_gradient.copy_size(layer.get_layer_params());
    layer.backward(gradient, below, params_gradient);
    return {to_matrix(above.output), to_matrix(below.gradient), to_matrix(params_gradient)};
}

double margin_loss_gradient(const loss_margin_& loss, const dlib::matrix<float>& cosines,
                            const std::vector<unsigned long>& labels, dlib::matrix<float>& gradient) {
    if (cosines.nr() < 1 || cosines.nc() < 2) throw std::invalid_argument("the margin loss needs >= 1 row of cosines over >= 2 classes");
    if (static_cast<long>(labels.size()) != cosines.nr()) throw std::invalid_argument("one label per row of cosines is needed");
    tensor_pair sub;
    to_tensor(cosines, sub.output);
    sub.gradient.copy_size(sub.output);
    const double value = loss.compute_loss_value_and_gradient(sub.output, labels.begin(), sub);
    gradient = to_matrix(sub.gradient);
    return value;
}

}  // namespace pfd

// Bindings: fine-tuning runs (the loop, validation and files are orchestrated in Python).
#include "bindings.h"

#include "model_io.h"
#include "conversion.h"
#include "fast_conv.h"
#include "net_io.h"
#include "sampler.h"
#include "training.h"

#include <pybind11/stl.h>

#include <cstring>
#include <optional>

namespace pfd {

namespace {

// A (rows, cols) float32 array as a dlib matrix (checked: dtype, layout, shape).
dlib::matrix<float> float_matrix(const py::handle& obj, const char* name, py::ssize_t cols = -1) {
    const auto a = checked_array<float>(obj, name, {-1, cols});
    return dlib::mat(a.data(), a.shape(0), a.shape(1));
}

py::array_t<float> to_array(const dlib::matrix<float>& m) {
    py::array_t<float> out({static_cast<py::ssize_t>(m.nr()), static_cast<py::ssize_t>(m.nc())});
    std::copy(m.begin(), m.end(), out.mutable_data());
    return out;
}

}  // namespace

void bind_training(py::module_& m) {
    py::class_<loss_margin_>(m, "MarginLoss",
                             "Softmax margin loss over cosines (insightface's combined form with m1 = 1): the true "
                             "class's logit is s*(cos(theta + angular_margin) - cosine_margin), the others s*cos(theta). "
                             "ArcFace: angular_margin; CosFace: cosine_margin.",
                             py::module_local())
        .def(py::init<double, double, double>(), py::arg("scale"), py::arg("angular_margin") = 0.0, py::arg("cosine_margin") = 0.0)
        .def_property_readonly("scale", &loss_margin_::scale)
        .def_property_readonly("angular_margin", &loss_margin_::angular_margin)
        .def_property_readonly("cosine_margin", &loss_margin_::cosine_margin)
        .def("loss_and_gradient", [](const loss_margin_& self, const py::array& cosines, const py::object& labels) {
                 const auto c = float_matrix(cosines, "cosines");
                 const auto label_values = checked_labels(labels, static_cast<size_t>(c.nr()));
                 dlib::matrix<float> gradient;
                 const double loss = margin_loss_gradient(self, c, label_values, gradient);
                 return py::make_tuple(loss, to_array(gradient));
             }, py::arg("cosines").noconvert(), py::arg("labels"),
             "(mean loss, d loss / d cosines) for (n, classes) float32 cosines and n labels.");

    m.def("cosine_layer", [](const py::array& x, const py::array& centres, const py::array& gradient) {
              const auto pass = run_cosine_layer(float_matrix(x, "x"), float_matrix(centres, "centres"), float_matrix(gradient, "gradient"));
              return py::make_tuple(to_array(pass.cosines), to_array(pass.x_gradient), to_array(pass.centre_gradient));
          }, py::arg("x").noconvert(), py::arg("centres").noconvert(), py::arg("gradient").noconvert(),
          "The margin runs' class layer (cosine_fc_) on its own: (cosines (n, c), d/dx (n, d), d/dcentres (c, d)) for "
          "float32 x (n, d), centres (c, d) and a gradient (n, c) with respect to the cosines.");

    py::class_<face_trainer>(m, "FaceTrainer", "One fine-tuning run of the face net (dlib's sgd; loss_metric, or margin_loss with a cosine class "
                                              "layer starting from class_centres; fast_path=False: dlib's con_ and dnn_trainer "
                                              "unchanged, the reference).",
                              py::module_local())
        .def(py::init([](const std::string& base_path, bool train_bn_net, const py::array& chips,
                         const py::object& labels, int first_level,
                         double learning_rate, int identities_per_batch, int images_per_identity, bool augment,
                         int head_feature_copies, std::uint64_t seed, int threads, bool fast_path, bool stop_backprop,
                         const std::optional<loss_margin_>& margin_loss, const py::object& class_centres) {
                 train_data data;
                 data.chips = checked_chips(chips);
                 data.labels = checked_labels(labels, data.chips.size());
                 train_options options;
                 options.first_trained_level = first_level;
                 options.learning_rate = learning_rate;
                 options.identities_per_batch = identities_per_batch;
                 options.images_per_identity = images_per_identity;
                 options.augment = augment;
                 options.head_feature_copies = head_feature_copies;
                 options.seed = seed;
                 options.threads = threads;
                 options.fast_path = fast_path;
                 options.stop_backprop = stop_backprop;
                 if (margin_loss.has_value() != !class_centres.is_none())
                     throw py::value_error("a margin loss needs class_centres (one row per label), and only a margin loss takes them");
                 if (margin_loss) {
                     options.margin.enabled = true;
                     options.margin.scale = margin_loss->scale();
                     options.margin.angular_margin = margin_loss->angular_margin();
                     options.margin.cosine_margin = margin_loss->cosine_margin();
                     options.margin.centres = float_matrix(class_centres, "class_centres", descriptor_size);
                 }
                 const auto bytes = read_model_bytes(base_path, "dlib face recognition network (.dat)");
                 py::gil_scoped_release release;
                 return make_trainer(bytes, base_path, train_bn_net, std::move(data), options);
             }),
             py::arg("base_path"), py::arg("train_bn_net"), py::arg("chips").noconvert(), py::arg("labels"),
             py::arg("first_level"), py::arg("learning_rate"), py::arg("identities_per_batch"),
             py::arg("images_per_identity"), py::arg("augment"), py::arg("head_feature_copies"), py::arg("seed"),
             py::arg("threads"), py::arg("fast_path") = true, py::arg("stop_backprop") = true,
             py::arg("margin_loss") = py::none(), py::arg("class_centres") = py::none())
        .def("train", [](face_trainer& self, long steps) {
                 if (steps < 0) throw py::value_error("steps must be >= 0");
                 py::gil_scoped_release release;
                 return self.train(steps);
             }, py::arg("steps"), "Runs `steps` mini-batches; returns their mean loss.")
        .def_property_readonly("step", &face_trainer::step)
        .def_property_readonly("backward_counts", [](face_trainer& self) {
                 py::gil_scoped_release release;
                 return self.backward_counts();
             },
             "The last train() call's backward work per fine-tuning level (NUM_LEVELS entries, 0 = stem .. "
             "NUM_LEVELS-1 = head): for the convolution levels, how many convolution backward passes computed a "
             "gradient (summed over replicas); for the head, how many backward passes ran through it. Empty where "
             "the convolutions do not count (fast_path=False, CUDA). from_level:K shows 0 below K.")
        .def_property("learning_rate", &face_trainer::learning_rate, &face_trainer::set_learning_rate)
        .def("embedder", [](face_trainer& self, int threads) {
                 py::gil_scoped_release release;
                 return new face_embedder(self.testing_net(), threads);
             }, py::arg("threads"), "A FaceEmbedderCore on the current model (affine testing net).")
        .def("affine_bytes", [](face_trainer& self, double descriptor_scale) {
                 std::string bytes;
                 {
                     py::gil_scoped_release release;
                     bytes = export_affine_net(self, descriptor_scale);
                 }
                 return py::bytes(bytes);
             }, py::arg("descriptor_scale") = 1.0,
             "The current model as an affine .dat (what dlib.face_recognition_model_v1 loads), its descriptors "
             "multiplied by descriptor_scale (ValueError unless finite and > 0).")
        .def("bn_bytes", [](face_trainer& self, double descriptor_scale) {
                 std::string bytes;
                 {
                     py::gil_scoped_release release;
                     bytes = export_training_net(self, descriptor_scale);
                 }
                 return py::bytes(bytes);
             }, py::arg("descriptor_scale") = 1.0,
             "The current bn_con training net (.dat bytes), its descriptors multiplied by descriptor_scale; empty "
             "when the run trains the affine net.")
        .def("validation_loss", [](face_trainer& self, const py::array& chips, const py::object& labels, long batch_size) {
                 const auto all = checked_chips(chips);
                 const auto all_labels = checked_labels(labels, all.size());
                 py::gil_scoped_release release;
                 return mean_metric_loss(self.testing_net(), all, all_labels, batch_size);
             }, py::arg("chips").noconvert(), py::arg("labels"), py::arg("batch_size"),
             "Mean loss_metric loss of the current model (inference mode) over consecutive mini-batches.")
        .def("checkpoint", [](face_trainer& self) {
                 std::string bytes;
                 {
                     py::gil_scoped_release release;
                     bytes = self.checkpoint();
                 }
                 return py::bytes(bytes);
             })
        .def("restore", [](face_trainer& self, const py::bytes& data) {
                 std::string bytes = data;
                 py::gil_scoped_release release;
                 try {
                     self.restore(bytes);
                 } catch (const std::exception& e) {
                     throw model_format_error(std::string("checkpoint does not match this run: ") + e.what());
                 }
             })
        .def("parameters", [](face_trainer& self) {
                 py::dict out;
                 for (auto& [idx, values] : self.parameters()) {
                     py::array_t<float> a(static_cast<py::ssize_t>(values.size()));
                     std::memcpy(a.mutable_data(), values.data(), values.size() * sizeof(float));
                     out[py::int_(idx)] = a;
                 }
                 return out;
             }, "{layer index: learnable parameters} of every computational layer (empty for affine layers).")
        .def("class_centres", [](face_trainer& self) { return to_array(self.class_centres()); },
             "A margin run's class layer as trained: (classes, 128) float32, one row per label (0 rows for loss_metric).");

    m.def("set_training_conv_kernel", &set_fast_conv_kernel, py::arg("name"),
          "The convolution kernel of the training nets' forward pass and stride-1 data gradients, for the "
          "whole process: 'auto' (the fastest this CPU runs; the default), 'avx512', 'avx2' or 'blas' "
          "(im2col + GEMM, the path before the direct kernels). ValueError for a name this CPU cannot run.");
    m.def("training_conv_kernel", &fast_conv_kernel_name, "The training nets' convolution kernel in use.");
    m.def("identity_batches",
          [](const py::object& labels, int identities, int per_identity, std::uint64_t seed) {
              const auto label_values = checked_labels(labels, py::len(labels));
              return disjoint_batches(label_values, identities, per_identity, seed);
          },
          py::arg("labels"), py::arg("identities"), py::arg("per_identity"), py::arg("seed") = 0,
          "Disjoint evaluation mini-batches (lists of indices): `identities` identities x `per_identity` faces "
          "each, every face at most once (see cpp/sampler.h).");

    py::dict levels;
    for (int k = 0; k < face_net_levels::num_levels; ++k) levels[py::int_(k)] = face_net_levels::top_layer_of_level(k);
    m.attr("LEVEL_TOP_LAYER") = levels;
    m.attr("NUM_LEVELS") = face_net_levels::num_levels;
}

}  // namespace pfd

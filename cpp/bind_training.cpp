// Bindings: fine-tuning runs (the loop, validation and files are orchestrated in Python).
#include "bindings.h"

#include "model_io.h"
#include "conversion.h"
#include "net_io.h"
#include "training.h"

#include <pybind11/stl.h>

#include <cstring>

namespace pfd {

void bind_training(py::module_& m) {
    py::class_<face_trainer>(m, "FaceTrainer", "One fine-tuning run of the face net (loss_metric, dlib's sgd; fast_path=False: dlib's con_ and "
                                              "dnn_trainer unchanged, the reference).")
        .def(py::init([](const std::string& base_path, bool train_bn_net, const u8_array& chips,
                         const std::vector<unsigned long>& labels, const std::string& strategy, int first_level,
                         double learning_rate, int identities_per_batch, int images_per_identity, bool augment,
                         int head_feature_copies, std::uint64_t seed, int threads, bool fast_path) {
                 if (chips.ndim() != 4 || chips.shape(1) != chip_size || chips.shape(2) != chip_size || chips.shape(3) != 3)
                     throw py::value_error("expected training chips as a (N, 150, 150, 3) uint8 array");
                 train_options options;
                 options.strategy = strategy;
                 options.first_trained_level = first_level;
                 options.learning_rate = learning_rate;
                 options.identities_per_batch = identities_per_batch;
                 options.images_per_identity = images_per_identity;
                 options.augment = augment;
                 options.head_feature_copies = head_feature_copies;
                 options.seed = seed;
                 options.threads = threads;
                 options.fast_path = fast_path;
                 train_data data;
                 data.chips = chips_from_bytes(chips.data(), chips.shape(0));
                 data.labels = labels;
                 const auto bytes = read_model_bytes(base_path, "dlib face recognition network (.dat)");
                 py::gil_scoped_release release;
                 return make_trainer(bytes, base_path, train_bn_net, std::move(data), options);
             }),
             py::arg("base_path"), py::arg("train_bn_net"), py::arg("chips").noconvert(), py::arg("labels"),
             py::arg("strategy"), py::arg("first_level"), py::arg("learning_rate"), py::arg("identities_per_batch"),
             py::arg("images_per_identity"), py::arg("augment"), py::arg("head_feature_copies"), py::arg("seed"),
             py::arg("threads"), py::arg("fast_path") = true)
        .def("train", [](face_trainer& self, long steps) {
                 py::gil_scoped_release release;
                 return self.train(steps);
             }, py::arg("steps"), "Runs `steps` mini-batches; returns their mean loss.")
        .def_property_readonly("step", &face_trainer::step)
        .def_property("learning_rate", &face_trainer::learning_rate, &face_trainer::set_learning_rate)
        .def("embedder", [](face_trainer& self, int threads) {
                 py::gil_scoped_release release;
                 return new face_embedder(self.testing_net(), threads);
             }, py::arg("threads"), "A FaceEmbedderCore on the current model (affine testing net).")
        .def("affine_bytes", [](face_trainer& self) {
                 std::string bytes;
                 {
                     py::gil_scoped_release release;
                     bytes = serialize_net(self.testing_net());
                 }
                 return py::bytes(bytes);
             }, "The current model as an affine .dat (what dlib.face_recognition_model_v1 loads).")
        .def("bn_bytes", [](face_trainer& self) {
                 std::string bytes;
                 {
                     py::gil_scoped_release release;
                     bytes = self.training_net_bytes();
                 }
                 return py::bytes(bytes);
             }, "The current bn_con training net (.dat bytes); empty when the run trains the affine net.")
        .def("validation_loss", [](face_trainer& self, const u8_array& chips, const std::vector<unsigned long>& labels,
                                    long batch_size) {
                 if (chips.ndim() != 4 || chips.shape(0) != static_cast<py::ssize_t>(labels.size()) || batch_size < 2)
                     throw py::value_error("expected (N,150,150,3) chips with N labels and batch_size >= 2");
                 const auto all = chips_from_bytes(chips.data(), chips.shape(0));
                 py::gil_scoped_release release;
                 const face_test_net net = self.testing_net();
                 double total = 0;
                 long batches = 0;
                 for (size_t b = 0; b + batch_size <= all.size(); b += batch_size, ++batches) {
                     const std::vector<chip_type> chunk(all.begin() + b, all.begin() + b + batch_size);
                     const std::vector<unsigned long> chunk_labels(labels.begin() + b, labels.begin() + b + batch_size);
                     total += metric_loss(net, chunk, chunk_labels);
                 }
                 return batches ? total / batches : 0.0;
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
             }, "{layer index: learnable parameters} of every computational layer (empty for affine layers).");

    py::dict levels;
    for (int k = 0; k < face_net_levels::num_levels; ++k) levels[py::int_(k)] = face_net_levels::top_layer_of_level(k);
    m.attr("LEVEL_TOP_LAYER") = levels;
}

}  // namespace pfd

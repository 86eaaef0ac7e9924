// Bindings: affine <-> bn conversion of the face net and its measurements.
#include "bindings.h"

#include "conversion.h"
#include "model_io.h"

#include <pybind11/stl.h>

#include <cstring>

namespace pfd {

namespace {

const char* const face_net_what = "dlib face recognition network (.dat)";

py::bytes as_bytes(const std::string& s) { return py::bytes(s.data(), s.size()); }

class calibrator {
public:
    calibrator(const std::string& affine_path, int threads)
        : stats_(load_affine_net(read_model_bytes(affine_path, face_net_what), affine_path), threads) {}
    void add(const py::array& chips) {
        auto batch = checked_chips(chips);
        py::gil_scoped_release release;
        stats_.add(batch);
    }
    py::list statistics() const {
        py::list out;
        for (const auto& s : stats_.result()) {
            py::array_t<double> mean(static_cast<py::ssize_t>(s.mean.size())), var(static_cast<py::ssize_t>(s.var.size()));
            std::memcpy(mean.mutable_data(), s.mean.data(), s.mean.size() * sizeof(double));
            std::memcpy(var.mutable_data(), s.var.data(), s.var.size() * sizeof(double));
            out.append(py::make_tuple(mean, var, s.count));
        }
        return out;
    }
    long faces() const { return stats_.faces(); }

private:
    bn_input_statistics stats_;
};

}  // namespace

void bind_conversion(py::module_& m) {
    m.def("net_kind",
          [](const std::string& path) {
              return detect_net_kind(read_model_bytes(path, face_net_what), path) == net_kind::affine ? "affine" : "bn";
          },
          py::arg("path"), "'affine' or 'bn' for a face-net file; ModelFormatError for anything else.");

    m.def("scaled_descriptor_net",
          [](const std::string& path, double factor) {
              const auto bytes = read_model_bytes(path, face_net_what);
              std::string out;
              {
                  py::gil_scoped_release release;
                  out = scaled_descriptor_net(bytes, path, factor);
              }
              return py::bytes(out);
          },
          py::arg("path"), py::arg("factor"),
          "The face net in `path` (either kind) with every descriptor multiplied by `factor`, as .dat bytes.");

    py::class_<calibrator>(m, "BnCalibrator", "Per-channel mean/variance of every BN layer's input, streamed.", py::module_local())
        .def(py::init<const std::string&, int>(), py::arg("affine_path"), py::arg("threads"))
        .def("add", &calibrator::add, py::arg("chips").noconvert(), "Accumulates a (N,150,150,3) uint8 batch.")
        .def("statistics", &calibrator::statistics, "[(mean (K,), variance (K,), count)] per BN layer, by layer index.")
        .def_property_readonly("faces", &calibrator::faces);

    m.def("affine_to_bn",
          [](const std::string& affine_path, const py::object& statistics) {
              const auto affine = load_affine_net(read_model_bytes(affine_path, face_net_what), affine_path);
              std::vector<channel_stats> stats;
              if (!statistics.is_none()) {
                  try {
                      for (const auto& item : statistics.cast<py::list>()) {
                          const auto t = item.cast<py::tuple>();
                          if (t.size() < 2) throw py::cast_error();
                          channel_stats s;
                          s.mean = t[0].cast<std::vector<double>>();
                          s.var = t[1].cast<std::vector<double>>();
                          stats.push_back(std::move(s));
                      }
                  } catch (const py::cast_error&) {
                      throw py::type_error("statistics: expected a list of (mean, variance, ...) per batch-norm layer");
                  }
              }
              std::string bytes;
              {
                  py::gil_scoped_release release;
                  auto net = affine_to_bn(affine, statistics.is_none() ? nullptr : &stats);
                  bytes = serialize_net(net);
              }
              return as_bytes(bytes);
          },
          py::arg("affine_path"), py::arg("statistics") = py::none(),
          "Serialized (clean) bn_con training net from an affine file; exact without statistics, calibrated with.");

    m.def("bn_to_affine",
          [](const std::string& bn_path) {
              auto bn = load_bn_net(read_model_bytes(bn_path, face_net_what), bn_path);
              std::string bytes;
              {
                  py::gil_scoped_release release;
                  const face_test_net affine = bn;  // dlib's own bn_ -> affine_ conversion
                  bytes = serialize_net(affine);
              }
              return as_bytes(bytes);
          },
          py::arg("bn_path"), "Serialized affine testing net (loadable by dlib.face_recognition_model_v1).");

    m.def("bn_net_descriptors",
          [](const std::string& bn_path, const py::array& chips, long batch_size) {
              if (batch_size < 1) throw py::value_error("batch_size must be >= 1");
              const auto batch = checked_chips(chips);
              const auto net = load_bn_net(read_model_bytes(bn_path, face_net_what), bn_path);
              py::array_t<float> out({static_cast<py::ssize_t>(batch.size()), static_cast<py::ssize_t>(descriptor_size)});
              std::vector<float> values;
              {
                  py::gil_scoped_release release;
                  values = train_mode_descriptors(net, batch, batch_size);
              }
              std::memcpy(out.mutable_data(), values.data(), values.size() * sizeof(float));
              return out;
          },
          py::arg("bn_path"), py::arg("chips").noconvert(), py::arg("batch_size") = 25,
          "Descriptors of the bn net itself over consecutive batches of batch_size: batch_size 1 is dlib's "
          "inference mode (running statistics), > 1 training mode (each batch's own statistics).");

    m.def("metric_loss",
          [](const std::string& path, const py::array& chips, const py::object& label_list) {
              const auto batch = checked_chips(chips);
              const auto labels = checked_labels(label_list, batch.size());
              const auto bytes = read_model_bytes(path, face_net_what);
              py::gil_scoped_release release;
              if (detect_net_kind(bytes, path) == net_kind::bn) return metric_loss(load_bn_net(bytes, path), batch, labels);
              return metric_loss(load_affine_net(bytes, path), batch, labels);
          },
          py::arg("path"), py::arg("chips").noconvert(), py::arg("labels"),
          "loss_metric's loss of one mini-batch (a bn net runs in training mode).");
}

}  // namespace pfd

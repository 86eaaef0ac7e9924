// Bindings: affine <-> bn conversion of the face net and its measurements.
#include "bindings.h"

#include "conversion.h"
#include "folded_net.h"
#include "model_io.h"

#include <pybind11/stl.h>

#include <cstring>
#include <memory>

namespace pfd {

namespace {

const char* const face_net_what = "dlib face recognition network (.dat)";

py::bytes as_bytes(const std::string& s) { return py::bytes(s.data(), s.size()); }

py::array_t<float> float_array(const std::vector<float>& values, std::vector<py::ssize_t> shape) {
    py::array_t<float> out(shape);
    std::memcpy(out.mutable_data(), values.data(), values.size() * sizeof(float));
    return out;
}

// One folded op as a dict: kind, window/stride/padding, channels, relu, tag, and its parameters
// (conv: weights (ky, kx, in, out) + bias (out,); fc: weights (in, out) + bias; scale_shift: scale, shift).
py::dict op_as_dict(const folded_face_net::op& o) {
    static const char* names[] = {"conv", "scale_shift", "relu", "max_pool", "avg_pool", "tag", "skip", "add_tag", "global_avg", "fc"};
    py::dict d;
    d["kind"] = names[static_cast<int>(o.kind)];
    d["relu"] = o.relu;
    d["tag"] = o.tag;
    d["window"] = py::make_tuple(o.window_y, o.window_x);
    d["stride"] = py::make_tuple(o.stride_y, o.stride_x);
    d["padding"] = py::make_tuple(o.pad_y, o.pad_x);
    d["in_channels"] = o.in_channels;
    d["out_channels"] = o.out_channels;
    using kind = folded_face_net::op_kind;
    if (o.kind == kind::conv)
        d["weights"] = float_array(o.weights, {o.window_y, o.window_x, o.in_channels, o.out_channels});
    else if (o.kind == kind::fc)
        d["weights"] = float_array(o.weights, {o.in_channels, o.out_channels});
    else if (o.kind == kind::scale_shift)
        d["weights"] = float_array(o.weights, {static_cast<py::ssize_t>(o.weights.size())});
    if (o.kind == kind::conv || o.kind == kind::fc || o.kind == kind::scale_shift)
        d["bias"] = float_array(o.bias, {static_cast<py::ssize_t>(o.bias.size())});
    return d;
}

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

    m.def("folded_net_graph",
          [](const std::string& path) {
              const auto bytes = read_model_bytes(path, face_net_what);
              std::unique_ptr<folded_face_net> folded;
              {
                  py::gil_scoped_release release;
                  folded = std::make_unique<folded_face_net>(load_test_net(bytes, path));
              }
              py::list ops;
              for (const auto& o : folded->ops()) ops.append(op_as_dict(o));
              const auto means = folded->input_means();
              py::dict graph;
              graph["input_size"] = folded->input_size();
              graph["input_means"] = py::make_tuple(means[0], means[1], means[2]);
              graph["ops"] = ops;
              return graph;
          },
          py::arg("path"),
          "The face net in `path` (either kind; a bn net through its exact affine form) as the folded "
          "pass runs it: {'input_size', 'input_means' (R, G, B), 'ops': [dict per op]}, each affine "
          "folded into its convolution, each ReLU marked on the op it follows.");

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

    m.def("interpolated_net",
          [](const std::string& base_path, const std::string& tuned_path, double alpha) {
              const auto base = read_model_bytes(base_path, face_net_what);
              const auto tuned = read_model_bytes(tuned_path, face_net_what);
              std::string out;
              {
                  py::gil_scoped_release release;
                  out = interpolated_net(base, base_path, tuned, tuned_path, alpha);
              }
              return py::bytes(out);
          },
          py::arg("base_path"), py::arg("tuned_path"), py::arg("alpha"),
          "WiSE-FT: the affine net whose every parameter is (1 - alpha) x base's + alpha x tuned's, as .dat bytes.");

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

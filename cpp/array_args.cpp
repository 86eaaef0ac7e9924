#include "array_args.h"

#include <pybind11/stl.h>

#include <cstdint>

namespace pfd {

namespace {

std::string shape_text(const py::array& a) {
    std::string out = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) out += (i ? ", " : "") + std::to_string(a.shape(i));
    return out + (a.ndim() == 1 ? ",)" : ")");
}

std::string shape_text(std::initializer_list<py::ssize_t> shape) {
    std::string out = "(";
    size_t i = 0;
    for (const auto d : shape) out += (i++ ? ", " : "") + (d < 0 ? std::string("N") : std::to_string(d));
    return out + (shape.size() == 1 ? ",)" : ")");
}

}  // namespace

template <typename T>
py::array_t<T, py::array::c_style> checked_array(const py::handle& obj, const char* name,
                                                 std::initializer_list<py::ssize_t> shape) {
    const std::string expected = std::string(py::str(py::dtype::of<T>())) + " array shaped " + shape_text(shape);
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(std::string(name) + ": expected a numpy " + expected + ", got " +
                             std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    const auto array = py::reinterpret_borrow<py::array>(obj);
    if (!py::isinstance<py::array_t<T>>(obj))  // dtype, byte order included; never converted silently
        throw py::type_error(std::string(name) + ": expected a numpy " + expected + ", got dtype " +
                             std::string(py::str(array.dtype())));
    if (array.ndim() != static_cast<py::ssize_t>(shape.size()))
        throw py::value_error(std::string(name) + ": expected a " + expected + ", got shape " + shape_text(array));
    size_t axis = 0;
    for (const auto d : shape) {
        if (d >= 0 && array.shape(axis) != d)
            throw py::value_error(std::string(name) + ": expected a " + expected + ", got shape " + shape_text(array));
        ++axis;
    }
    if (!(array.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + ": the array must be C-contiguous (use numpy.ascontiguousarray)");
    return py::reinterpret_borrow<py::array_t<T, py::array::c_style>>(obj);
}

template py::array_t<unsigned char, py::array::c_style> checked_array(const py::handle&, const char*, std::initializer_list<py::ssize_t>);
template py::array_t<float, py::array::c_style> checked_array(const py::handle&, const char*, std::initializer_list<py::ssize_t>);
template py::array_t<double, py::array::c_style> checked_array(const py::handle&, const char*, std::initializer_list<py::ssize_t>);
template py::array_t<std::int64_t, py::array::c_style> checked_array(const py::handle&, const char*, std::initializer_list<py::ssize_t>);

std::vector<chip_type> checked_chips(const py::handle& obj, const char* name) {
    const auto chips = checked_array<unsigned char>(obj, name, {-1, chip_size, chip_size, 3});
    return chips_from_bytes(chips.data(), chips.shape(0));
}

rgb_image_view checked_rgb_image(const py::handle& obj, const char* name) {
    const auto image = checked_array<unsigned char>(obj, name, {-1, -1, 3});
    if (image.shape(0) == 0 || image.shape(1) == 0)
        throw py::value_error(std::string(name) + ": the image has no pixels (shape " + shape_text(image) + ")");
    return rgb_image_view(image.data(), image.shape(0), image.shape(1));
}

std::vector<dlib::point> checked_landmarks(const py::handle& obj, const char* name) {
    const auto points = checked_array<std::int64_t>(obj, name, {-1, 2});
    if (points.shape(0) != 5 && points.shape(0) != 68)
        throw py::value_error(std::string(name) + ": expected 5 or 68 landmarks, got " + std::to_string(points.shape(0)));
    std::vector<dlib::point> parts;
    const auto p = points.unchecked<2>();
    for (py::ssize_t i = 0; i < points.shape(0); ++i) parts.emplace_back(p(i, 0), p(i, 1));
    return parts;
}

std::vector<unsigned long> checked_labels(const py::handle& obj, size_t expected, const char* name) {
    std::vector<unsigned long> labels;
    try {
        labels = obj.cast<std::vector<unsigned long>>();
    } catch (const py::cast_error&) {
        throw py::type_error(std::string(name) + ": expected a sequence of non-negative integers");
    }
    if (labels.size() != expected)
        throw py::value_error(std::string(name) + ": expected " + std::to_string(expected) + " labels (one per chip), got " +
                              std::to_string(labels.size()));
    return labels;
}

}  // namespace pfd

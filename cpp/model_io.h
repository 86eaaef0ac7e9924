// Reading dlib model files with every failure turned into one clear exception.
#pragma once

#include <dlib/serialize.h>

#include <new>
#include <sstream>
#include <stdexcept>
#include <string>

namespace pfd {

// Raised for every missing, unreadable, truncated, corrupt or wrong-kind model file.
// The bindings translate it into pyfacedlib.ModelFormatError.
class model_format_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Whole file as bytes; throws model_format_error when it is missing, unreadable or empty.
std::string read_model_bytes(const std::string& path, const std::string& expected);

// Deserializes `bytes` (read from `path`) into `model`. Any dlib serialization error, allocation
// failure or leftover bytes become a model_format_error naming the file and what was expected.
template <typename model_type>
void deserialize_model(const std::string& bytes, const std::string& path, const std::string& expected,
                       model_type& model) {
    std::istringstream in(bytes);
    const auto fail = [&](const std::string& why) {
        throw model_format_error("'" + path + "' is not a valid " + expected + ": " + why);
    };
    try {
        dlib::deserialize(model, in);
    } catch (const dlib::serialization_error& e) {
        fail(std::string("dlib could not read it (") + e.what() + ")");
    } catch (const std::bad_alloc&) {
        fail("it declares sizes no real model has (corrupt or a different kind of file)");
    } catch (const std::length_error&) {
        fail("it declares sizes no real model has (corrupt or a different kind of file)");
    } catch (const std::exception& e) {
        fail(std::string("dlib could not read it (") + e.what() + ")");
    }
    if (!in) fail("the file ends early (truncated)");
    in.peek();
    if (!in.eof()) {
        const auto consumed = static_cast<long long>(in.tellg());
        fail(std::to_string(static_cast<long long>(bytes.size()) - consumed) +
             " bytes follow the end of the model (a different kind of file, or corrupt)");
    }
}

template <typename model_type>
void load_model(const std::string& path, const std::string& expected, model_type& model) {
    deserialize_model(read_model_bytes(path, expected), path, expected, model);
}

}  // namespace pfd

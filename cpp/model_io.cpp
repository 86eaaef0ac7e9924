#include "model_io.h"

#include <fstream>
#include <iterator>

namespace pfd {

std::string read_model_bytes(const std::string& path, const std::string& expected) {
    std::ifstream file(path, std::ios::binary);
    if (!file) throw model_format_error("cannot open '" + path + "' (expected " + expected + ")");
    std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
    if (file.bad()) throw model_format_error("cannot read '" + path + "' (expected " + expected + ")");
    if (bytes.empty()) throw model_format_error("'" + path + "' is empty (expected " + expected + ")");
    return bytes;
}

}  // namespace pfd

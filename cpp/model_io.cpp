#include "model_io.h"

#include <filesystem>
#include <fstream>
#include <iterator>

namespace pfd {

std::string read_model_bytes(const std::string& path, const std::string& expected) {
    std::error_code error;
    const auto status = std::filesystem::status(path, error);
    if (!error && std::filesystem::exists(status) && !std::filesystem::is_regular_file(status))
        throw model_format_error("'" + path + "' is not a file (" +
                                 (std::filesystem::is_directory(status) ? "a directory" : "not a regular file") +
                                 "; expected " + expected + ")");
    std::ifstream file(path, std::ios::binary);
    if (!file) throw model_format_error("cannot open '" + path + "' (expected " + expected + ")");
    std::string bytes;
    try {
        bytes.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    } catch (const std::exception& e) {
        throw model_format_error("cannot read '" + path + "' (" + e.what() + "; expected " + expected + ")");
    }
    if (file.bad()) throw model_format_error("cannot read '" + path + "' (expected " + expected + ")");
    if (bytes.empty()) throw model_format_error("'" + path + "' is empty (expected " + expected + ")");
    return bytes;
}

}  // namespace pfd

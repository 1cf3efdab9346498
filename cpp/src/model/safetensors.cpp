// safetensors reader (see tensormask/io.h): header with nlohmann-json, every field validated.
#include "tensormask/io.h"

#include <ATen/ops/empty.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>
#include <vector>

namespace tensormask::io {
namespace {

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw std::runtime_error("safetensors " + source + ": " + what);
}

// dtype name → (scalar type, bytes per element)
std::pair<at::ScalarType, int64_t> parse_dtype(const std::string& name, const std::string& source,
                                               const std::string& tensor) {
  static const std::map<std::string, std::pair<at::ScalarType, int64_t>> kTypes = {
      {"F64", {at::kDouble, 8}}, {"F32", {at::kFloat, 4}}, {"F16", {at::kHalf, 2}},  {"BF16", {at::kBFloat16, 2}},
      {"I64", {at::kLong, 8}},   {"I32", {at::kInt, 4}},   {"I16", {at::kShort, 2}}, {"I8", {at::kChar, 1}},
      {"U8", {at::kByte, 1}},    {"BOOL", {at::kBool, 1}}};
  const auto it = kTypes.find(name);
  if (it == kTypes.end()) fail(source, "tensor '" + tensor + "' has unsupported dtype '" + name + "'");
  return it->second;
}

}  // namespace

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& source) {
  if (bytes.size() < 8) fail(source, "truncated: " + std::to_string(bytes.size()) + " bytes, no 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  if (header_len > bytes.size() - 8)
    fail(source, "truncated: header of " + std::to_string(header_len) + " bytes but only " +
                     std::to_string(bytes.size() - 8) + " follow");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_len));
  } catch (const nlohmann::json::exception& e) {
    fail(source, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(source, "header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - header_len;
  const char* data = bytes.data() + 8 + header_len;

  SafetensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(source, "__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail(source, "__metadata__ value '" + k + "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets") ||
        !entry["dtype"].is_string() || !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2)
      fail(source, "tensor '" + name + "' needs {\"dtype\": str, \"shape\": [...], \"data_offsets\": [begin, end]}");
    const auto [dtype, itemsize] = parse_dtype(entry["dtype"].get<std::string>(), source, name);
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) fail(source, "tensor '" + name + "' has a shape entry that is not a non-negative integer");
      const auto v = d.get<uint64_t>();
      if (v > (uint64_t{1} << 40) || (v != 0 && numel > (uint64_t{1} << 40) / v))
        fail(source, "tensor '" + name + "' is implausibly large");
      numel *= v;
      shape.push_back(static_cast<int64_t>(v));
    }
    const auto& offs = entry["data_offsets"];
    if (!offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
      fail(source, "tensor '" + name + "' has data_offsets that are not non-negative integers");
    const auto begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
    if (begin > end || end > data_size)
      fail(source, "tensor '" + name + "' has data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                       "] outside the " + std::to_string(data_size) + "-byte buffer (truncated file?)");
    if (end - begin != numel * static_cast<uint64_t>(itemsize))
      fail(source, "tensor '" + name + "' has " + std::to_string(end - begin) + " bytes but its shape and dtype need " +
                       std::to_string(numel * itemsize));
    ranges.emplace_back(begin, end);
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
    if (end > begin) std::memcpy(t.data_ptr(), data + begin, end - begin);  // little-endian host assumed
    out.tensors.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail(source, "tensors have overlapping data_offsets");
  return out;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("model file not found or unreadable: " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_safetensors(ss.str(), path);
}

}  // namespace tensormask::io

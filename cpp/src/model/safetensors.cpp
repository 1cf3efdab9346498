// safetensors reader (see tensormask/io.h): every field of a file users hand us is validated before
// it is used, so a malformed or hostile file gives one std::runtime_error ("safetensors FILE: problem")
// and never a read outside the buffer or an allocation beyond the file's size. The layout rules are
// those of the reference implementation (huggingface/safetensors): header ≤ 100 MB, tensors stored
// back to back from offset 0 to the end of the file, size = product(shape) × dtype size.
#include "tensormask/io.h"

#include <ATen/ops/empty.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

#include "json_util.h"

namespace tensormask::io {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit
constexpr size_t kMaxRank = 16;
constexpr uint64_t kMaxElements = uint64_t{1} << 40;  // per tensor; the file size bounds it anyway

[[noreturn]] void fail(const std::string& source, const std::string& what) {
  throw std::runtime_error("safetensors " + source + ": " + what);
}

std::string tensor_name(const std::string& name) { return "'" + detail::printable(name) + "'"; }

// dtype name → (scalar type, bytes per element)
std::pair<at::ScalarType, uint64_t> parse_dtype(const std::string& name, const std::string& source,
                                                const std::string& tensor) {
  static const std::map<std::string, std::pair<at::ScalarType, uint64_t>> kTypes = {
      {"F64", {at::kDouble, 8}}, {"F32", {at::kFloat, 4}}, {"F16", {at::kHalf, 2}},  {"BF16", {at::kBFloat16, 2}},
      {"I64", {at::kLong, 8}},   {"I32", {at::kInt, 4}},   {"I16", {at::kShort, 2}}, {"I8", {at::kChar, 1}},
      {"U8", {at::kByte, 1}},    {"BOOL", {at::kBool, 1}}};
  const auto it = kTypes.find(name);
  if (it == kTypes.end()) fail(source, "tensor " + tensor_name(tensor) + " has unsupported dtype " + tensor_name(name));
  return it->second;
}

struct Entry {
  uint64_t begin, end;
  std::string name;
  at::ScalarType dtype;
  std::vector<int64_t> shape;
};

Entry parse_entry(const std::string& name, const json& entry, uint64_t data_size, const std::string& source) {
  if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets") ||
      !entry["dtype"].is_string() || !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
      entry["data_offsets"].size() != 2)
    fail(source, "tensor " + tensor_name(name) + " needs {\"dtype\": str, \"shape\": [...], \"data_offsets\": [begin, end]}");
  const auto [dtype, itemsize] = parse_dtype(entry["dtype"].get<std::string>(), source, name);
  const auto& dims = entry["shape"];
  if (dims.size() > kMaxRank)
    fail(source, "tensor " + tensor_name(name) + " has " + std::to_string(dims.size()) + " dimensions (at most " +
                     std::to_string(kMaxRank) + ")");
  Entry e{0, 0, name, dtype, {}};
  uint64_t numel = 1;
  for (const auto& d : dims) {
    if (!d.is_number_unsigned())  // nlohmann stores non-negative integers as unsigned; -1, 2.5, "3" are not
      fail(source, "tensor " + tensor_name(name) + " has a shape entry that is not a non-negative integer: " + detail::printable_json(d));
    const auto v = d.get<uint64_t>();
    if (v > kMaxElements || (v != 0 && numel > kMaxElements / v))  // also keeps numel × itemsize in range
      fail(source, "tensor " + tensor_name(name) + " has an implausibly large shape " + detail::printable_json(dims));
    numel *= v;
    e.shape.push_back(static_cast<int64_t>(v));
  }
  const auto& offs = entry["data_offsets"];
  if (!offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
    fail(source, "tensor " + tensor_name(name) + " has data_offsets that are not non-negative integers: " + detail::printable_json(offs));
  e.begin = offs[0].get<uint64_t>();
  e.end = offs[1].get<uint64_t>();
  const std::string range = "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.begin > e.end) fail(source, "tensor " + tensor_name(name) + " has data_offsets " + range + " with begin > end");
  if (e.end > data_size)
    fail(source, "tensor " + tensor_name(name) + " has data_offsets " + range + " outside the " + std::to_string(data_size) +
                     "-byte data buffer (truncated file?)");
  if (e.end - e.begin != numel * itemsize)
    fail(source, "tensor " + tensor_name(name) + " has " + std::to_string(e.end - e.begin) +
                     " bytes but its shape and dtype need " + std::to_string(numel * itemsize));
  return e;
}

}  // namespace

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& source) {
  if (bytes.size() < 8) fail(source, "truncated: " + std::to_string(bytes.size()) + " bytes, no 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[i]);
  if (header_len > bytes.size() - 8)
    fail(source, "truncated: header of " + std::to_string(header_len) + " bytes but only " +
                     std::to_string(bytes.size() - 8) + " follow");
  if (header_len > kMaxHeaderBytes)
    fail(source, "header of " + std::to_string(header_len) + " bytes exceeds the limit of " +
                     std::to_string(kMaxHeaderBytes));
  json header;
  try {
    header = detail::parse_json_bounded(std::string_view(bytes).substr(8, header_len));
  } catch (const std::runtime_error& e) {
    fail(source, std::string("header: ") + e.what());
  }
  if (!header.is_object()) fail(source, "header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - header_len;
  const char* data = bytes.data() + 8 + header_len;

  SafetensorsFile out;
  std::vector<Entry> entries;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(source, "__metadata__ is not an object of strings");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail(source, "__metadata__ value " + tensor_name(k) + " is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, entry, data_size, source));
  }
  // The data buffer is the tensors back to back: no overlap, no gap, nothing after the last one.
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  uint64_t pos = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    if (e.begin < pos)
      fail(source, "tensors " + tensor_name(entries[i - 1].name) + " and " + tensor_name(e.name) + " have overlapping data_offsets");
    if (e.begin > pos)
      fail(source, "tensor " + tensor_name(e.name) + " starts at byte " + std::to_string(e.begin) + " of the data buffer, " +
                       std::to_string(e.begin - pos) + " bytes after the previous tensor ends (gaps are not allowed)");
    pos = e.end;
  }
  if (pos != data_size)
    fail(source, std::to_string(data_size - pos) + " bytes after the last tensor's data (the header does not describe the file)");
  for (const auto& e : entries) {
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), data + e.begin, e.end - e.begin);  // little-endian host assumed
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw std::runtime_error("model file is a directory: " + path);
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("model file not found or unreadable: " + path);
  std::string bytes;
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size < (uintmax_t{1} << 32)) bytes.reserve(size);
  char buf[1 << 16];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) bytes.append(buf, static_cast<size_t>(f.gcount()));
  if (f.bad()) throw std::runtime_error("error reading model file: " + path);
  return parse_safetensors(bytes, path);
}

}  // namespace tensormask::io

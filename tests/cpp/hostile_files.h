// Hostile model files for the C++ reader tests (tests/cpp/test_io_hostile.cpp): a valid small exported
// model — a tiny TensorMask's random float32 weights written as safetensors by hand (not by the reader
// under test) and its config JSON — and `make_case(i)`, the i-th deterministic mutation of it, one of
// kKinds kinds in turn: bit flips, truncations, header-length edits, edited header numbers, offsets,
// shapes, dtypes and names, metadata and whole headers replaced (deep nesting, non-UTF-8, duplicate keys),
// special float values and bytes edited in the data, and config numbers, text and values edited.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "tensormask/io.h"
#include "tensormask/model.h"

namespace hostile {

namespace tmm = tensormask::model;
namespace tio = tensormask::io;

const char* const kWeights = "hostile.safetensors";
const char* const kConfig = "hostile.json";

// ---- The valid model: tiny config, random float32 weights, written by hand (not by the reader) ------
const char* const kConfigJson = R"({"format": "tensormask", "config": {"model": {
  "backbone": {"depth": 0, "tiny_channels": [8, 16, 16, 16], "norm": "GN", "gn_groups": 4, "freeze_at": 0,
               "style": "msra", "stem_channels": 64, "input_format": "RGB",
               "pixel_mean": [123.675, 116.28, 103.53], "pixel_std": [58.395, 57.12, 57.375]},
  "fpn": {"out_channels": 8, "min_level": 2, "max_level": 5, "size_divisibility": 32, "fuse_type": "avg"},
  "head": {"num_classes": 3, "num_convs": 1, "cls_channels": 8, "bbox_channels": 8, "mask_channels": 8,
           "norm": "none", "gn_groups": 32, "box_head": true, "mask_head": "bipyramid", "upscale_lambda": 1,
           "interpolation": "bilinear", "window_sizes": [3, 5], "mask_pad_val": -6.0},
  "loss": {"bbox_reg_weights": [1.5, 1.5, 0.75, 0.75]},
  "inference": {"score_thresh": 0.05, "topk_candidates": 1000, "nms_thresh": 0.5, "nms_on": "box",
                "detections_per_image": 20, "mask_threshold": 0.5, "channels_last": false}},
  "data": {"test_min_size": 64, "test_max_size": 96}},
 "category_names": ["a", "b", "c"], "contiguous_to_category_id": [1, 2, 3]})";

struct Rec {  // one header entry
  std::string name, dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

struct ValidModel {
  std::vector<Rec> recs;
  std::string data;  // the data buffer
  std::string bytes() const;
};

inline std::string render_header(const std::vector<Rec>& recs, const std::string& metadata = R"({"format": "tensormask"})") {
  std::string h = "{\"__metadata__\": " + metadata;
  for (const auto& r : recs) {
    h += ", \"" + r.name + "\": {\"dtype\": \"" + r.dtype + "\", \"shape\": [";
    for (size_t i = 0; i < r.shape.size(); ++i) h += (i ? ", " : "") + std::to_string(r.shape[i]);
    h += "], \"data_offsets\": [" + std::to_string(r.begin) + ", " + std::to_string(r.end) + "]}";
  }
  return h + "}";
}

inline std::string pack(const std::string& header, const std::string& data, uint64_t header_len) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header_len >> (8 * i)) & 0xff);
  return out + header + data;
}
inline std::string pack(const std::string& header, const std::string& data) { return pack(header, data, header.size()); }

inline std::string ValidModel::bytes() const { return pack(render_header(recs), data); }

inline tmm::ExportedConfig valid_config() { return tmm::parse_exported_config(kConfigJson, kConfig); }

inline const ValidModel& valid_model() {
  static const ValidModel m = [] {
    torch::manual_seed(0);
    tmm::TensorMask model(valid_config().model);
    std::map<std::string, at::Tensor> tensors;
    for (const auto& p : model.named_parameters()) tensors[p.key()] = torch::randn(p.value().sizes()) * 0.3;
    for (const auto& b : model.named_buffers()) tensors[b.key()] = b.value().clone();
    ValidModel v;
    for (const auto& [name, t] : tensors) {
      const at::Tensor c = t.contiguous();
      Rec r{name, c.scalar_type() == at::kLong ? "I64" : "F32", c.sizes().vec(), v.data.size(), 0};
      v.data.append(static_cast<const char*>(c.data_ptr()), c.nbytes());
      r.end = v.data.size();
      v.recs.push_back(r);
    }
    return v;
  }();
  return m;
}

// ---- Mutations ---------------------------------------------------------------------------------------
using Rng = std::mt19937_64;

inline uint64_t pick(Rng& rng, uint64_t n) { return n == 0 ? 0 : std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); }
template <typename T>
const T& pick(Rng& rng, const std::vector<T>& v) { return v[pick(rng, v.size())]; }

// Positions [begin, end) of the number / true / false tokens of a JSON text (outside strings).
inline std::vector<std::pair<size_t, size_t>> scalar_tokens(const std::string& text) {
  std::vector<std::pair<size_t, size_t>> out;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f') {
      size_t j = i + 1;
      while (j < text.size() && std::strchr("0123456789.eE+-truefals", text[j]) != nullptr) ++j;
      out.emplace_back(i, j);
      i = j - 1;
    }
  }
  return out;
}

inline const std::vector<std::string> kHostileScalars = {
    "NaN", "Infinity", "-Infinity", "-1", "0", "1e12", "1e400", "-1e400", "2.5", "true", "false", "null", "\"7\"",
    "[]", "{}", "18446744073709551615", "18446744073709551616", "9223372036854775807", "-9223372036854775808",
    "4294967296", "1e-300", "-0", "1", "3", "64", "65", "[1, 2]", "1.0e0", "0x10", "01", "\"\\u0000\"", "\"\xff\""};

inline std::string replace_scalar(Rng& rng, const std::string& text, std::string& label) {
  const auto tokens = scalar_tokens(text);
  const auto [b, e] = tokens[pick(rng, tokens.size())];
  const std::string& with = pick(rng, kHostileScalars);
  label += " token@" + std::to_string(b) + " '" + text.substr(b, e - b) + "'->" + with;
  return text.substr(0, b) + with + text.substr(e);
}

inline std::string nested(size_t depth, bool objects) {
  std::string s;
  for (size_t i = 0; i < depth; ++i) s += objects ? "{\"k\": " : "[";
  s += "1";
  for (size_t i = 0; i < depth; ++i) s += objects ? "}" : "]";
  return s;
}

inline std::string flip_bits(Rng& rng, std::string s, size_t lo, size_t hi, int flips, std::string& label) {
  for (int i = 0; i < flips && hi > lo; ++i) {
    const size_t at = lo + pick(rng, hi - lo);
    s[at] = static_cast<char>(s[at] ^ (1 << pick(rng, 8)));
    label += " flip@" + std::to_string(at);
  }
  return s;
}

// One generated case: (config text, weights bytes, config mutated?).
struct Case {
  std::string config = kConfigJson, weights;
  bool config_mutated = false;
  std::string label;
};

constexpr int kKinds = 16;

inline Case make_case(uint64_t index) {
  Rng rng(0x7e45u + index * 0x9e3779b97f4a7c15ULL);
  const ValidModel& v = valid_model();
  Case c;
  c.weights = v.bytes();
  const int kind = static_cast<int>(index % kKinds);
  c.label = "case " + std::to_string(index) + " kind " + std::to_string(kind);
  const std::string header = render_header(v.recs);
  const size_t hend = 8 + header.size();
  auto recs = v.recs;
  auto& r = recs[pick(rng, recs.size())];
  switch (kind) {
    case 0:  // bit flips in the length + header
      c.weights = flip_bits(rng, c.weights, 0, hend, 1 + static_cast<int>(pick(rng, 4)), c.label);
      break;
    case 1:  // bit flips anywhere (mostly the data: finite, NaN or huge weights)
      c.weights = flip_bits(rng, c.weights, 0, c.weights.size(), 1 + static_cast<int>(pick(rng, 8)), c.label);
      break;
    case 2: {  // truncation
      const size_t n = pick(rng, 3) == 0 ? pick(rng, hend + 16) : pick(rng, c.weights.size());
      c.label += " truncate to " + std::to_string(n);
      c.weights.resize(n);
      break;
    }
    case 3: {  // header length field: beyond the file, huge, off by a little, zero
      const std::vector<uint64_t> lens = {0, 1, header.size() - 1, header.size() + 1, header.size() + v.data.size(),
                                          header.size() + v.data.size() + 1, uint64_t{1} << 32, uint64_t{1} << 63,
                                          ~uint64_t{0}, ~uint64_t{0} - 7, 100'000'001, header.size() / 2};
      const uint64_t len = pick(rng, lens);
      c.label += " header_len " + std::to_string(len);
      c.weights = pack(header, v.data, len);
      break;
    }
    case 4:  // a number of the header replaced (offsets, shapes)
      c.weights = pack(replace_scalar(rng, header, c.label), v.data);
      break;
    case 5: {  // data_offsets: begin > end, beyond the buffer, overlapping another tensor, a gap
      const auto& other = pick(rng, v.recs);
      switch (pick(rng, 6)) {
        case 0: std::swap(r.begin, r.end); break;
        case 1: r.end += 1 + pick(rng, 1 << 20); break;
        case 2: r.begin = other.begin; r.end = other.begin + (r.end - r.begin); break;
        case 3: r.begin += 4; r.end += 4; break;
        case 4: r.begin = ~uint64_t{0} - 3; r.end = r.begin + 4; break;
        default: r.begin = r.end = v.data.size(); break;
      }
      c.label += " offsets of " + r.name + " -> [" + std::to_string(r.begin) + ", " + std::to_string(r.end) + "]";
      c.weights = pack(render_header(recs), v.data);
      break;
    }
    case 6: {  // shapes: wrong, overflowing products, too many dimensions, mismatched size
      const std::vector<std::vector<int64_t>> shapes = {
          {},  {0}, {1}, {4294967296, 4294967296, 16}, {1 << 30, 1 << 30, 1 << 30}, {3037000500, 3037000500},
          {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, {r.shape.empty() ? 1 : r.shape[0] + 1},
          {static_cast<int64_t>((r.end - r.begin) / 4)}, {int64_t{1} << 62, 0}};
      r.shape = pick(rng, shapes);
      c.label += " shape of " + r.name;
      c.weights = pack(render_header(recs), v.data);
      break;
    }
    case 7: {  // dtypes: unknown, other sizes, integer for float, spelled differently
      r.dtype = pick(rng, std::vector<std::string>{"F8_E4M3", "f32", "", "C64", "U16", "U64", "F16", "BF16", "F64", "I32",
                                                   "I64", "BOOL", "U8", "I8", "F32 ", "\\u0046\\u0033\\u0032"});
      c.label += " dtype of " + r.name + " -> " + r.dtype;
      c.weights = pack(render_header(recs), v.data);
      break;
    }
    case 8: {  // names: missing, unexpected, swapped, duplicate, non-UTF-8, control characters
      const auto& other = pick(rng, v.recs);
      std::string h;
      switch (pick(rng, 6)) {
        case 0: r.name += ".extra"; break;
        case 1: std::swap(r.name, recs[pick(rng, recs.size())].name); break;
        case 2: r.name = other.name; break;                    // duplicate key
        case 3: r.name = std::string("bad\xff\xfe") + r.name; break;  // not UTF-8
        case 4: r.name = "line\\nbreak\\u0007" + r.name; break;
        default: r.name = "__metadata__"; break;
      }
      c.label += " renamed";
      c.weights = pack(render_header(recs), v.data);
      break;
    }
    case 9: {  // metadata: non-strings, deep nesting, not an object
      const std::vector<std::string> metas = {
          R"({"format": 1})", R"({"format": null})", R"({"a": {"b": "c"}})", "[]", "\"x\"", "null",
          "{\"deep\": " + nested(60, false) + "}", "{\"deep\": " + nested(100000, false) + "}",
          "{\"deep\": " + nested(5000, true) + "}", R"({"format": "tensormask", "format": "x"})",
          R"({"k": "\ud800"})", "{\"k\": \"\xc3\x28\"}", R"({"k": "ok\u0000"})"};
      const std::string& m = pick(rng, metas);
      c.label += " metadata " + m.substr(0, 40);
      c.weights = pack(render_header(v.recs, m), v.data);
      break;
    }
    case 10: {  // header replaced by other JSON / garbage
      const std::vector<std::string> headers = {
          "", " ", "{", "[]", "null", "{\"a\": 1}", nested(200000, false), nested(70, true), "{\"a\": \"\xff\"}",
          std::string(1 << 16, ' ') + "{}", "{}", "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}",
          "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}",
          "{\"a\": {\"dtype\": \"F32\", \"shape\": \"1\", \"data_offsets\": [0, 4]}}",
          "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}",
          "{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}",
          "{\"a\": {\"dtype\": \"F32\", \"shape\": [1.0], \"data_offsets\": [0, 4]}}", "\xef\xbb\xbf{}"};
      const std::string& h = pick(rng, headers);
      c.label += " header " + std::to_string(h.size()) + " bytes";
      c.weights = pack(h, pick(rng, 2) ? v.data : std::string(4, '\0'));
      break;
    }
    case 11: {  // special float values in the data: NaN, inf, huge finite, denormals
      const std::vector<uint32_t> bits = {0x7fc00000u, 0x7f800000u, 0xff800000u, 0x7f7fffffu, 0xff7fffffu, 0x00000001u,
                                          0x5f000000u /* 9.2e18 */};
      size_t at = 8 + header.size() + r.begin;
      for (const auto& rec : v.recs)  // a float tensor
        if (rec.dtype == "F32" && rec.end > rec.begin) {
          at = 8 + header.size() + rec.begin + 4 * pick(rng, (rec.end - rec.begin) / 4);
          if (pick(rng, 3) == 0) break;
        }
      const uint32_t b = pick(rng, bits);
      std::memcpy(c.weights.data() + at, &b, 4);
      c.label += " float bits at " + std::to_string(at);
      break;
    }
    case 12: {  // bytes appended / inserted / removed in the data
      const size_t at = 8 + header.size() + pick(rng, v.data.size());
      const int op = static_cast<int>(pick(rng, 3));
      if (op == 0) c.weights += std::string(1 + pick(rng, 64), 'x');
      else if (op == 1) c.weights.insert(at, std::string(1 + pick(rng, 8), '\0'));
      else c.weights.erase(at, 1 + pick(rng, 8));
      c.label += " data edit " + std::to_string(op);
      break;
    }
    case 13:  // a config number replaced (NaN, inf, negative, absurd, wrong type)
      c.config = replace_scalar(rng, c.config, c.label);
      c.config_mutated = true;
      break;
    case 14: {  // config: bit flips, truncation, nesting, duplicate keys
      c.config_mutated = true;
      switch (pick(rng, 5)) {
        case 0: c.config = flip_bits(rng, c.config, 0, c.config.size(), 1 + static_cast<int>(pick(rng, 3)), c.label); break;
        case 1: c.config.resize(pick(rng, c.config.size())); c.label += " truncated"; break;
        case 2: c.config = "{\"x\": " + nested(1 + pick(rng, 100000), pick(rng, 2)) + ", " + c.config.substr(1); c.label += " nested"; break;
        case 3: c.config = "{\"format\": \"tensormask\", " + c.config.substr(1); c.label += " duplicate key"; break;
        default: c.config.insert(pick(rng, c.config.size()), "\xc0\xaf"); c.label += " non-UTF-8"; break;
      }
      break;
    }
    default: {  // config: values of the wrong kind for a section / list / string
      c.config_mutated = true;
      const std::vector<std::pair<std::string, std::string>> edits = {
          {"\"window_sizes\": [3, 5]", "\"window_sizes\": []"},
          {"\"window_sizes\": [3, 5]", "\"window_sizes\": [3, 3]"},
          {"\"window_sizes\": [3, 5]", "\"window_sizes\": [0, 5]"},
          {"\"window_sizes\": [3, 5]", "\"window_sizes\": [3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 33, 35]"},
          {"\"window_sizes\": [3, 5]", "\"window_sizes\": [100000]"},
          {"\"tiny_channels\": [8, 16, 16, 16]", "\"tiny_channels\": [8, 16]"},
          {"\"pixel_std\": [58.395, 57.12, 57.375]", "\"pixel_std\": [0, 1, 1]"},
          {"\"head\": {", "\"head\": 5, \"x\": {"},
          {"\"mask_head\": \"bipyramid\"", "\"mask_head\": \"upscale_aligned\", \"upscale_lambda\": 0"},
          {"\"mask_head\": \"bipyramid\"", "\"mask_head\": [\"bipyramid\"]"},
          {"\"category_names\": [\"a\", \"b\", \"c\"]", "\"category_names\": [\"a\", 2, \"c\"]"},
          {"\"category_names\": [\"a\", \"b\", \"c\"]", "\"category_names\": [\"a\"]"},
          {"\"contiguous_to_category_id\": [1, 2, 3]", "\"contiguous_to_category_id\": [1, 2, 1e400]"},
          {"\"num_classes\": 3", "\"num_classes\": 1000000000000"},
          {"\"cls_channels\": 8", "\"cls_channels\": 4096, \"x\": 0"},
          {"\"norm\": \"none\"", "\"norm\": \"GN\", \"gn_groups\": 3"},
          {"\"gn_groups\": 4", "\"gn_groups\": 3"},
          {"\"format\": \"tensormask\"", "\"format\": \"pickle\""},
          {"\"size_divisibility\": 32", "\"size_divisibility\": 4611686018427387904"},
          {"\"test_max_size\": 96", "\"test_max_size\": 1000000000"}};
      const auto& [from, to] = pick(rng, edits);
      const size_t at = c.config.find(from);
      c.config = c.config.substr(0, at) + to + c.config.substr(at + from.size());
      c.label += " config edit " + to.substr(0, 40);
      break;
    }
  }
  return c;
}

}  // namespace hostile

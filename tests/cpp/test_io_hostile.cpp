// Hostile model files through the C++ readers: thousands of mutations of a valid small exported model
// (its safetensors weights and its JSON config) — bit flips, truncations, header-length edits, edited
// offsets, shapes, dtypes and names, deeply nested / non-UTF-8 / duplicate-key JSON, hostile config
// numbers — generated deterministically in-process. Each case goes the way of `tensormask_infer`
// (parse config → build model → parse weights → strict load → forward on a small image) and must either
// work or stop with one std::runtime_error: one line of printable ASCII naming the file it came from.
// A crash, a sanitizer report (`make sanitize` runs this test under ASan + UBSan) or any other exception
// fails the test.
//
// TENSORMASK_HOSTILE_CASES sets the number of generated cases (default 1000; `make sanitize` runs 4000).
#include <gtest/gtest.h>

#ifdef TENSORMASK_WITH_MODEL
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "tensormask/io.h"
#include "tensormask/model.h"

namespace tmm = tensormask::model;
namespace tio = tensormask::io;

namespace {

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

std::string render_header(const std::vector<Rec>& recs, const std::string& metadata = R"({"format": "tensormask"})") {
  std::string h = "{\"__metadata__\": " + metadata;
  for (const auto& r : recs) {
    h += ", \"" + r.name + "\": {\"dtype\": \"" + r.dtype + "\", \"shape\": [";
    for (size_t i = 0; i < r.shape.size(); ++i) h += (i ? ", " : "") + std::to_string(r.shape[i]);
    h += "], \"data_offsets\": [" + std::to_string(r.begin) + ", " + std::to_string(r.end) + "]}";
  }
  return h + "}";
}

std::string pack(const std::string& header, const std::string& data, uint64_t header_len) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header_len >> (8 * i)) & 0xff);
  return out + header + data;
}
std::string pack(const std::string& header, const std::string& data) { return pack(header, data, header.size()); }

std::string ValidModel::bytes() const { return pack(render_header(recs), data); }

tmm::ExportedConfig valid_config() { return tmm::parse_exported_config(kConfigJson, kConfig); }

const ValidModel& valid_model() {
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

// ---- Running one case the way tensormask_infer does ------------------------------------------------
enum class Outcome { kLoaded, kRefused };

bool one_printable_line(const std::string& s) {
  if (s.empty() || s.size() > 2000) return false;
  for (char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
  return true;
}

// Runs `stage`; a std::runtime_error must be one printable line naming `file` (when given).
// Returns false (refused) on such an error; any other exception fails the test.
bool stage_ok(const std::string& what, const char* file, const std::function<void()>& stage, const std::string& label,
              std::string& error) {
  try {
    stage();
    return true;
  } catch (const c10::Error& e) {
    ADD_FAILURE() << label << ": " << what << " raised an unchecked c10::Error: " << e.what_without_backtrace();
  } catch (const std::runtime_error& e) {
    error = e.what();
    EXPECT_TRUE(one_printable_line(error)) << label << ": " << what << ": message not one printable line: " << error;
    if (file) {
      EXPECT_NE(error.find(file), std::string::npos) << label << ": " << what << ": message does not name " << file << ": " << error;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << label << ": " << what << " raised " << typeid(e).name() << ": " << e.what();
  }
  return false;
}

struct Runner {
  std::shared_ptr<tmm::TensorMask> valid;  // the valid config's model, reused for weight mutations
  int forwards_left = 0;                   // forward passes are the slow part: a bounded number
  std::string last_error;

  Outcome run(const std::string& config_text, const std::string& weights, bool config_mutated, const std::string& label) {
    tmm::ExportedConfig cfg;
    if (!stage_ok("parse config", kConfig, [&] { cfg = tmm::parse_exported_config(config_text, kConfig); }, label, last_error))
      return Outcome::kRefused;
    std::shared_ptr<tmm::TensorMask> model = valid;
    if (config_mutated) {
      const auto& h = cfg.model.head;
      if (h.num_classes > 64 || h.cls_channels > 64 || h.mask_channels > 64 || h.bbox_channels > 64 ||
          cfg.model.fpn.out_channels > 64 || cfg.test_max_size > 512)
        return Outcome::kLoaded;  // allowed, but too big to build in a unit test
      if (!stage_ok("build model", nullptr, [&] { model = std::make_shared<tmm::TensorMask>(cfg.model); }, label, last_error))
        return Outcome::kRefused;
    }
    tio::SafetensorsFile file;
    if (!stage_ok("parse weights", kWeights, [&] { file = tio::parse_safetensors(weights, kWeights); }, label, last_error))
      return Outcome::kRefused;
    if (!stage_ok("load weights", kWeights, [&] { model->load_weights(file.tensors, kWeights); }, label, last_error))
      return Outcome::kRefused;
    if (forwards_left > 0) {
      --forwards_left;
      const at::Tensor image = torch::randint(0, 256, {3, 48, 64}, torch::kByte);
      try {
        const auto size = tmm::resized_shape(48, 64, cfg.test_min_size, cfg.test_max_size);
        const auto dets = model->forward({tmm::resize_image(image, size[0], size[1])}, {{48, 64}});
        EXPECT_EQ(dets.size(), 1u) << label;
        EXPECT_LE(dets[0].scores.size(0), cfg.model.inference.detections_per_image) << label;
        EXPECT_EQ(dets[0].masks.size(1), 48) << label;
      } catch (const std::exception& e) {
        ADD_FAILURE() << label << ": forward of a loaded model threw: " << e.what();
      }
    }
    return Outcome::kLoaded;
  }
};

// ---- Mutations ---------------------------------------------------------------------------------------
using Rng = std::mt19937_64;

uint64_t pick(Rng& rng, uint64_t n) { return n == 0 ? 0 : std::uniform_int_distribution<uint64_t>(0, n - 1)(rng); }
template <typename T>
const T& pick(Rng& rng, const std::vector<T>& v) { return v[pick(rng, v.size())]; }

// Positions [begin, end) of the number / true / false tokens of a JSON text (outside strings).
std::vector<std::pair<size_t, size_t>> scalar_tokens(const std::string& text) {
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

const std::vector<std::string> kHostileScalars = {
    "NaN", "Infinity", "-Infinity", "-1", "0", "1e12", "1e400", "-1e400", "2.5", "true", "false", "null", "\"7\"",
    "[]", "{}", "18446744073709551615", "18446744073709551616", "9223372036854775807", "-9223372036854775808",
    "4294967296", "1e-300", "-0", "1", "3", "64", "65", "[1, 2]", "1.0e0", "0x10", "01", "\"\\u0000\"", "\"\xff\""};

std::string replace_scalar(Rng& rng, const std::string& text, std::string& label) {
  const auto tokens = scalar_tokens(text);
  const auto [b, e] = tokens[pick(rng, tokens.size())];
  const std::string& with = pick(rng, kHostileScalars);
  label += " token@" + std::to_string(b) + " '" + text.substr(b, e - b) + "'->" + with;
  return text.substr(0, b) + with + text.substr(e);
}

std::string nested(size_t depth, bool objects) {
  std::string s;
  for (size_t i = 0; i < depth; ++i) s += objects ? "{\"k\": " : "[";
  s += "1";
  for (size_t i = 0; i < depth; ++i) s += objects ? "}" : "]";
  return s;
}

std::string flip_bits(Rng& rng, std::string s, size_t lo, size_t hi, int flips, std::string& label) {
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

Case make_case(uint64_t index) {
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

int hostile_cases() {
  const char* env = std::getenv("TENSORMASK_HOSTILE_CASES");
  return env ? std::max(1, std::atoi(env)) : 1000;
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(HostileFiles, ValidModelLoads) {
  Runner runner;
  runner.forwards_left = 1;
  runner.valid = std::make_shared<tmm::TensorMask>(valid_config().model);
  EXPECT_EQ(runner.run(kConfigJson, valid_model().bytes(), false, "valid"), Outcome::kLoaded) << runner.last_error;
  EXPECT_EQ(runner.run(kConfigJson, valid_model().bytes(), true, "valid (rebuilt)"), Outcome::kLoaded) << runner.last_error;
}

// The generated cases; a summary per kind goes to stdout.
TEST(HostileFiles, GeneratedCasesLoadOrFailCleanly) {
  at::set_num_threads(1);
  const int n = hostile_cases();
  Runner runner;
  runner.valid = std::make_shared<tmm::TensorMask>(valid_config().model);
  runner.forwards_left = std::max(20, n / 8);
  std::vector<int> loaded(kKinds), refused(kKinds);
  for (int i = 0; i < n; ++i) {
    const Case c = make_case(static_cast<uint64_t>(i));
    const auto outcome = runner.run(c.config, c.weights, c.config_mutated, c.label);
    (outcome == Outcome::kLoaded ? loaded : refused)[i % kKinds]++;
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "first failing case: " << c.label;
      break;
    }
  }
  int total_loaded = 0;
  std::printf("hostile files: %d cases (%d forward passes)\n", n, std::max(20, n / 8) - runner.forwards_left);
  for (int k = 0; k < kKinds; ++k) {
    std::printf("  kind %2d: %4d refused, %4d loaded\n", k, refused[k], loaded[k]);
    total_loaded += loaded[k];
  }
  std::printf("  total: %d refused with a clean one-line error, %d loaded\n", n - total_loaded, total_loaded);
  // The weight mutations that cannot pass the checks are all refused.
  for (int k : {2, 3, 10}) EXPECT_EQ(loaded[k], 0) << "kind " << k;
}

// Specific cases of the issue, each with the problem the message must name.
TEST(HostileFiles, SpecificErrors) {
  const ValidModel& v = valid_model();
  const std::string header = render_header(v.recs);
  auto weights_error = [](const std::string& bytes) { return error_of([&] { tio::parse_safetensors(bytes, kWeights); }); };
  auto with = [&](const std::function<void(std::vector<Rec>&)>& edit) {
    auto recs = v.recs;
    edit(recs);
    return pack(render_header(recs), v.data);
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {v.bytes().substr(0, 5), "truncated: 5 bytes"},
      {pack(header, v.data, header.size() + v.data.size() + 1), "truncated: header of"},
      {pack(header, v.data, ~uint64_t{0}), "truncated: header of 18446744073709551615 bytes"},
      {pack(std::string(100'000'001, ' '), ""), "exceeds the limit"},
      {v.bytes().substr(0, v.bytes().size() - 1), "outside the"},
      {with([](auto& r) { std::swap(r[0].begin, r[0].end); }), "begin > end"},
      {with([](auto& r) { r[1] = {r[1].name, r[0].dtype, r[0].shape, r[0].begin, r[0].end}; }), "overlapping"},
      {with([](auto& r) { r[0].shape = {4294967296, 4294967296, 16}; }), "implausibly large shape"},
      {with([](auto& r) { r[0].shape = {1 << 20, 1 << 19}; }), "but its shape and dtype need 2199023255552"},
      {with([](auto& r) { r[0].dtype = "F8_E4M3"; }), "unsupported dtype 'F8_E4M3'"},
      {with([](auto& r) { r[0].shape = std::vector<int64_t>(17, 1); }), "17 dimensions"},
      {pack(header, v.data + "junk"), "4 bytes after the last tensor"},
      {pack(render_header(v.recs, "{\"format\": 3}"), v.data), "__metadata__ value 'format' is not a string"},
      {pack(render_header(v.recs, "{\"d\": " + nested(100, false) + "}"), v.data), "nested deeper than 64"},
      {pack(render_header(v.recs, "{\"d\": \"\xff\"}"), v.data), "not valid JSON"},
      {pack(render_header(v.recs, R"({"a": "1", "a": "2"})"), v.data), "duplicate key \"a\""},
      {pack("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", "xxxx"), "not non-negative integers"},
      {pack("{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", "xxxx"), "not a non-negative integer"},
      {pack("{\"a\nb\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", "xxxx"), "not valid JSON"},
      {pack("{\"a\\nb\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", "xxxx"), "tensor 'a\\x0ab'"},
  };
  for (const auto& [bytes, expected] : cases) {
    const std::string e = weights_error(bytes);
    EXPECT_NE(e.find(expected), std::string::npos) << "expected '" << expected << "' in: " << e;
    EXPECT_EQ(e.rfind(std::string("safetensors ") + kWeights + ": ", 0), 0u) << e;
    EXPECT_TRUE(one_printable_line(e)) << e;
  }
  // Strict loading: wrong shapes for the model's parameters, integers for floats, NaN weights.
  tmm::TensorMask model(valid_config().model);
  const auto load_error = [&](const std::string& bytes) {
    return error_of([&] { model.load_weights(tio::parse_safetensors(bytes, kWeights).tensors, kWeights); });
  };
  const Rec& first = v.recs[0];
  EXPECT_NE(load_error(with([&](auto& r) {
              r[0].shape = {1, static_cast<int64_t>((first.end - first.begin) / 4)};
            })).find("'" + first.name + "' has shape"),
            std::string::npos);
  EXPECT_NE(load_error(with([](auto& r) { r[0].dtype = "I32"; })).find("has dtype Int"), std::string::npos);
  std::string nan = v.bytes();
  const uint32_t nan_bits = 0x7fc00000u;
  std::memcpy(nan.data() + 8 + header.size(), &nan_bits, 4);
  EXPECT_NE(load_error(nan).find("'" + first.name + "' holds NaN or infinite values"), std::string::npos);

  // Config numbers.
  auto config_error = [](const std::string& from, const std::string& to) {
    std::string text = kConfigJson;
    const size_t at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    text = text.substr(0, at) + to + text.substr(at + from.size());
    return error_of([&] { tmm::parse_exported_config(text, kConfig); });
  };
  const std::vector<std::tuple<std::string, std::string, std::string>> configs = {
      {"\"num_classes\": 3", "\"num_classes\": 1000000000000", "model.head.num_classes must be in 1..100000"},
      {"\"num_classes\": 3", "\"num_classes\": 1e12", "model.head.num_classes must be in 1..100000"},
      {"\"num_classes\": 3", "\"num_classes\": true", "'model.head.num_classes' must be an integer, got true"},
      {"\"num_classes\": 3", "\"num_classes\": 2.5", "must be an integer, got 2.5"},
      {"\"num_classes\": 3", "\"num_classes\": 18446744073709551615", "must be an integer in int64 range"},
      {"\"num_classes\": 3", "\"num_classes\": NaN", "not valid JSON"},
      {"\"num_classes\": 3", "\"num_classes\": 1e400", "not valid JSON"},
      {"\"window_sizes\": [3, 5]", "\"window_sizes\": [0, 5]", "model.head.window_sizes[i] must be in 1..128, got 0"},
      {"\"window_sizes\": [3, 5]", "\"window_sizes\": []", "model.head.window_sizes must hold 1..16 sizes"},
      {"\"score_thresh\": 0.05", "\"score_thresh\": -0.5", "model.inference.score_thresh must be a finite number in [0, 1]"},
      {"\"nms_thresh\": 0.5", "\"nms_thresh\": Infinity", "not valid JSON"},
      {"\"mask_pad_val\": -6.0", "\"mask_pad_val\": \"x\"", "'model.head.mask_pad_val' must be a finite number"},
      {"\"cls_channels\": 8", "\"cls_channels\": -8", "model.head.cls_channels must be in 1..4096, got -8"},
      {"\"num_convs\": 1, \"cls_channels\": 8, \"bbox_channels\": 8, \"mask_channels\": 8",
       "\"num_convs\": 32, \"cls_channels\": 4096, \"bbox_channels\": 4096, \"mask_channels\": 4096", "parameters (limit"},
      {"\"test_max_size\": 96", "\"test_max_size\": 1000000", "data.test_max_size must be in 1..8192"},
      {"\"pixel_std\": [58.395, 57.12, 57.375]", "\"pixel_std\": [1, 1]", "'model.backbone.pixel_std' must be a list of 3"},
      {"\"category_names\": [\"a\", \"b\", \"c\"]", "\"category_names\": [\"a\", 2, \"c\"]", "'category_names' must be a list whose items are each a string"},
      {"\"format\": \"tensormask\", ", "\"x\": " + nested(1000, false) + ", ", "nested deeper than 64"},
      {"\"format\": \"tensormask\", ", "\"config\": {}, ", "duplicate key \"config\""},
      {"\"format\": \"tensormask\"", "\"format\": \"\xff\"", "not valid JSON"},
  };
  for (const auto& [from, to, expected] : configs) {
    const std::string e = config_error(from, to);
    EXPECT_NE(e.find(expected), std::string::npos) << "expected '" << expected << "' in: " << e;
    EXPECT_EQ(e.rfind(std::string(kConfig) + ": ", 0), 0u) << e;
    EXPECT_TRUE(one_printable_line(e)) << e;
  }
}

// The readers of files name the file in their errors (the path as given).
TEST(HostileFiles, ErrorsNameTheFile) {
  const auto dir = std::filesystem::temp_directory_path() / ("tm_hostile_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string weights = (dir / "evil model.safetensors").string(), config = (dir / "evil.json").string();
  std::ofstream(weights, std::ios::binary) << valid_model().bytes().substr(0, 100);
  std::ofstream(config, std::ios::binary) << "{\"config\": " << nested(500, true) << "}";
  EXPECT_NE(error_of([&] { tio::read_safetensors(weights); }).find("safetensors " + weights + ": truncated"), std::string::npos);
  EXPECT_NE(error_of([&] { tmm::load_exported_config(config); }).find(config + ": JSON refused: nested deeper"), std::string::npos);
  EXPECT_NE(error_of([&] { tmm::load_model(weights, valid_config().model); }).find(weights), std::string::npos);
  EXPECT_NE(error_of([&] { tio::read_safetensors(dir.string()); }).find("is a directory: " + dir.string()), std::string::npos);
  EXPECT_NE(error_of([&] { tmm::load_exported_config((dir / "none.json").string()); }).find("not found"), std::string::npos);
  std::filesystem::remove_all(dir);
}
#endif  // TENSORMASK_WITH_MODEL

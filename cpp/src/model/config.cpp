// The JSON written by `tensormask export` → ModelConfig / ExportedConfig (nlohmann-json), with the
// checks of the Python constructors (backbone.py, fpn.py, heads.py), strict value types (no `true` for a
// number, no 2.5 for an integer) and bounds on every size, so that a hostile config is refused with one
// line naming the key instead of allocating an absurd model.
#include "tensormask/model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <set>
#include <sstream>
#include <stdexcept>

#include "json_util.h"

namespace tensormask::model {
namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

std::string join(const std::vector<std::string>& items) {
  std::string s;
  for (const auto& it : items) s += (s.empty() ? "" : ", ") + it;
  return s;
}

void check_choice(const std::string& key, const std::string& value, const std::vector<std::string>& known) {
  if (std::find(known.begin(), known.end(), value) == known.end())
    fail("unsupported " + key + " '" + value + "' (supported: " + join(known) + ")");
}

// Limits on the sizes a config may ask for (far above any real TensorMask; see docs/reliability.md).
constexpr int64_t kMaxChannels = 4096;
constexpr int64_t kMaxClasses = 100000;
constexpr int64_t kMaxConvs = 32;
constexpr size_t kMaxWindowSizes = 16;
constexpr int64_t kMaxWindowSize = 128;
constexpr int64_t kMaxTestSize = 8192;   // the resized image: at most 8192² pixels
constexpr int64_t kMaxSizeDivisibility = 4096;
constexpr int64_t kMaxCandidates = 10'000'000;
constexpr int64_t kMaxDetections = 10000;
constexpr double kMaxParameters = 1e9;   // ~4 GB of float32 weights
constexpr uintmax_t kMaxConfigBytes = 64 << 20;

// One JSON value → a C++ value of the config, strictly typed; throws the expected type on mismatch.
struct WrongType {
  std::string expected;
};
void read(const json& v, int64_t& out) {
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw WrongType{"an integer in int64 range"};
  if (v.is_number_integer()) {
    out = v.get<int64_t>();
    return;
  }
  if (v.is_number_float()) {  // 800.0 is accepted as 800; 2.5 and 1e30 are not
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= 9007199254740992.0) {
      out = static_cast<int64_t>(d);
      return;
    }
  }
  throw WrongType{"an integer"};
}
void read(const json& v, double& out) {
  if (!v.is_number() || !std::isfinite(v.get<double>())) throw WrongType{"a finite number"};
  out = v.get<double>();
}
void read(const json& v, bool& out) {
  if (!v.is_boolean()) throw WrongType{"true or false"};
  out = v.get<bool>();
}
void read(const json& v, std::string& out) {
  if (!v.is_string()) throw WrongType{"a string"};
  out = v.get<std::string>();
}
template <typename T, size_t N>
void read(const json& v, std::array<T, N>& out) {
  if (!v.is_array() || v.size() != N) throw WrongType{"a list of " + std::to_string(N)};
  try {
    for (size_t i = 0; i < N; ++i) read(v[i], out[i]);
  } catch (const WrongType& e) {
    throw WrongType{"a list of " + std::to_string(N) + " whose items are each " + e.expected};
  }
}
template <typename T>
void read(const json& v, std::vector<T>& out) {
  if (!v.is_array()) throw WrongType{"a list"};
  std::vector<T> items(v.size());
  try {
    for (size_t i = 0; i < v.size(); ++i) read(v[i], items[i]);
  } catch (const WrongType& e) {
    throw WrongType{"a list whose items are each " + e.expected};
  }
  out = std::move(items);
}

// Reads section[key] into `out` when present (keys absent keep the Python defaults).
template <typename T>
void get(const json& section, const char* key, const std::string& path, T& out) {
  if (!section.contains(key)) return;
  try {
    read(section.at(key), out);
  } catch (const WrongType& e) {
    fail("config key '" + path + (path.empty() ? "" : ".") + key + "' must be " + e.expected + ", got " +
         detail::printable_json(section.at(key)));
  }
}

void check_range(const std::string& key, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi)
    fail(key + " must be in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got " + std::to_string(v));
}

void check_finite(const std::string& key, double v, double lo = -std::numeric_limits<double>::infinity(),
                  double hi = std::numeric_limits<double>::infinity()) {
  if (!std::isfinite(v) || v < lo || v > hi) {
    std::ostringstream ss;
    ss << key << " must be a finite number";
    if (std::isfinite(lo) || std::isfinite(hi)) ss << " in [" << lo << ", " << hi << "]";
    ss << ", got " << v;
    fail(ss.str());
  }
}

// A rough count of the model's parameters (its large terms), to refuse before allocating a config whose
// sizes are each allowed but multiply into an absurd model.
double approx_parameters(const ModelConfig& c) {
  const auto& b = c.backbone;
  const auto& f = c.fpn;
  const auto& h = c.head;
  const double C = static_cast<double>(f.out_channels), A = static_cast<double>(h.window_sizes.size());
  double n = b.depth == 0 ? 0.0 : 45e6 + 2e3 * static_cast<double>(b.stem_channels);  // ResNet-101 ≈ 42.5M
  if (b.depth == 0)
    for (int64_t w : b.tiny_channels) n += 20.0 * static_cast<double>(w) * static_cast<double>(w);
  n += static_cast<double>(f.max_level - f.min_level + 1) * (9 * C * C + 2048 * C);
  const double lam = h.mask_head.rfind("upscale", 0) == 0 ? static_cast<double>(std::max<int64_t>(h.upscale_lambda, 1)) : 1.0;
  for (int64_t ch : {h.cls_channels, h.bbox_channels, h.mask_channels}) {
    const double x = static_cast<double>(ch);
    n += static_cast<double>(h.num_convs) * 9 * x * x + 9 * C * x;
  }
  const double cls_in = h.num_convs > 0 ? static_cast<double>(h.cls_channels) : C;
  const double mask_in = h.num_convs > 0 ? static_cast<double>(h.mask_channels) : C;
  n += 9 * cls_in * A * static_cast<double>(h.num_classes) + 9 * mask_in * mask_in;
  for (int64_t v : h.window_sizes) n += mask_in * (static_cast<double>(v) / lam) * (static_cast<double>(v) / lam);
  return n;
}

const json& section(const json& parent, const char* key, const std::string& path) {
  static const json empty = json::object();
  if (!parent.contains(key)) return empty;
  const auto& s = parent.at(key);
  if (!s.is_object()) fail("config key '" + path + key + "' must be a mapping");
  return s;
}

}  // namespace

void validate(const ModelConfig& cfg) {
  const auto& b = cfg.backbone;
  if (b.depth != 0 && b.depth != 18 && b.depth != 34 && b.depth != 50 && b.depth != 101)
    fail("unsupported model.backbone.depth " + std::to_string(b.depth) + " (supported: 0 (tiny), 18, 34, 50, 101)");
  check_choice("model.backbone.style", b.style, {"msra", "torchvision"});
  check_choice("model.backbone.norm", b.norm, {"FrozenBN", "BN", "GN", "none"});
  check_choice("model.backbone.input_format", b.input_format, {"RGB", "BGR"});
  if (b.freeze_at < 0 || b.freeze_at > 5) fail("model.backbone.freeze_at must be in 0..5");
  check_range("model.backbone.stem_channels", b.stem_channels, 1, kMaxChannels);
  for (int64_t w : b.tiny_channels) check_range("model.backbone.tiny_channels[i]", w, 1, kMaxChannels);
  if (b.norm == "GN") check_range("model.backbone.gn_groups", b.gn_groups, 1, kMaxChannels);
  for (double m : b.pixel_mean) check_finite("model.backbone.pixel_mean[i]", m);
  for (double s : b.pixel_std) {
    check_finite("model.backbone.pixel_std[i]", s);
    if (s == 0.0) fail("model.backbone.pixel_std must be non-zero");
  }
  const auto& f = cfg.fpn;
  check_choice("model.fpn.fuse_type", f.fuse_type, {"avg", "sum"});
  if (f.min_level < 2 || f.min_level > 5) fail("model.fpn.min_level must be in 2..5");
  if (f.max_level < 5 || f.max_level > 12) fail("model.fpn.max_level must be in 5..12");
  check_range("model.fpn.out_channels", f.out_channels, 1, kMaxChannels);
  check_range("model.fpn.size_divisibility", f.size_divisibility, 1, kMaxSizeDivisibility);
  if (f.size_divisibility <= 0 || f.size_divisibility % 32 != 0)  // res5's stride; P6/P7 round up (detectron2)
    fail("model.fpn.size_divisibility must be a positive multiple of 32 (the res5 stride)");
  const auto& h = cfg.head;
  check_choice("model.head.mask_head", h.mask_head,
               {"simple_natural", "simple_aligned", "upscale_natural", "upscale_aligned", "bipyramid"});
  check_choice("model.head.interpolation", h.interpolation, {"bilinear", "nearest"});
  check_range("model.head.num_classes", h.num_classes, 1, kMaxClasses);
  check_range("model.head.num_convs", h.num_convs, 0, kMaxConvs);
  check_range("model.head.cls_channels", h.cls_channels, 1, kMaxChannels);
  check_range("model.head.bbox_channels", h.bbox_channels, 1, kMaxChannels);
  check_range("model.head.mask_channels", h.mask_channels, 1, kMaxChannels);
  check_choice("model.head.norm", h.norm, {"none", "GN"});
  if (h.norm == "GN") check_range("model.head.gn_groups", h.gn_groups, 1, kMaxChannels);
  check_finite("model.head.mask_pad_val", h.mask_pad_val);
  if (h.window_sizes.empty() || h.window_sizes.size() > kMaxWindowSizes)
    fail("model.head.window_sizes must hold 1.." + std::to_string(kMaxWindowSizes) + " sizes");
  std::set<int64_t> seen;
  for (auto v : h.window_sizes) {
    check_range("model.head.window_sizes[i]", v, 1, kMaxWindowSize);
    if (!seen.insert(v).second) fail("model.head.window_sizes must be distinct positive integers");
    if (h.mask_head.rfind("upscale", 0) == 0 && (h.upscale_lambda < 1 || v % h.upscale_lambda != 0))
      fail("model.head.upscale_lambda=" + std::to_string(h.upscale_lambda) + " does not divide window size " +
           std::to_string(v));
  }
  const auto& inf = cfg.inference;
  check_choice("model.inference.nms_on", inf.nms_on, {"box", "mask_box"});
  check_range("model.inference.topk_candidates", inf.topk_candidates, 0, kMaxCandidates);
  check_range("model.inference.detections_per_image", inf.detections_per_image, 0, kMaxDetections);
  check_finite("model.inference.score_thresh", inf.score_thresh, 0.0, 1.0);
  check_finite("model.inference.nms_thresh", inf.nms_thresh, 0.0, 1.0);
  check_finite("model.inference.mask_threshold", inf.mask_threshold, 0.0, 1.0);
  for (double w : cfg.bbox_reg_weights) check_finite("model.loss.bbox_reg_weights[i]", w, 1e-6, 1e6);
  const double params = approx_parameters(cfg);
  if (params > kMaxParameters) {
    std::ostringstream ss;
    ss << std::setprecision(2) << "the config describes a model of about " << params << " parameters (limit " << kMaxParameters
       << "): are num_classes, the channel counts or the window sizes right?";
    fail(ss.str());
  }
}

ExportedConfig parse_exported_config(const std::string& json_text, const std::string& source) {
  json doc;
  try {
    doc = detail::parse_json_bounded(json_text);
  } catch (const std::runtime_error& e) {
    fail(source + ": " + e.what());
  }
  try {
    if (!doc.is_object() || !doc.contains("config") || !doc["config"].is_object())
      fail("not a `tensormask export` config (no \"config\" mapping)");
    if (doc.contains("format") && doc["format"] != "tensormask")
      fail("format is " + detail::printable_json(doc["format"]) + ", expected \"tensormask\"");
    ExportedConfig out;
    const auto& root = doc["config"];
    const auto& m = section(root, "model", "");
    auto& c = out.model;
    const auto& b = section(m, "backbone", "model.");
    const std::string bp = "model.backbone";
    get(b, "depth", bp, c.backbone.depth);
    get(b, "style", bp, c.backbone.style);
    get(b, "norm", bp, c.backbone.norm);
    get(b, "freeze_at", bp, c.backbone.freeze_at);
    get(b, "stem_channels", bp, c.backbone.stem_channels);
    get(b, "tiny_channels", bp, c.backbone.tiny_channels);
    get(b, "gn_groups", bp, c.backbone.gn_groups);
    get(b, "pixel_mean", bp, c.backbone.pixel_mean);
    get(b, "pixel_std", bp, c.backbone.pixel_std);
    get(b, "input_format", bp, c.backbone.input_format);
    const auto& f = section(m, "fpn", "model.");
    const std::string fp = "model.fpn";
    get(f, "out_channels", fp, c.fpn.out_channels);
    get(f, "fuse_type", fp, c.fpn.fuse_type);
    get(f, "min_level", fp, c.fpn.min_level);
    get(f, "max_level", fp, c.fpn.max_level);
    get(f, "size_divisibility", fp, c.fpn.size_divisibility);
    const auto& h = section(m, "head", "model.");
    const std::string hp = "model.head";
    get(h, "num_classes", hp, c.head.num_classes);
    get(h, "num_convs", hp, c.head.num_convs);
    get(h, "cls_channels", hp, c.head.cls_channels);
    get(h, "bbox_channels", hp, c.head.bbox_channels);
    get(h, "mask_channels", hp, c.head.mask_channels);
    get(h, "norm", hp, c.head.norm);
    get(h, "gn_groups", hp, c.head.gn_groups);
    get(h, "box_head", hp, c.head.box_head);
    get(h, "mask_head", hp, c.head.mask_head);
    get(h, "upscale_lambda", hp, c.head.upscale_lambda);
    get(h, "interpolation", hp, c.head.interpolation);
    get(h, "window_sizes", hp, c.head.window_sizes);
    get(h, "mask_pad_val", hp, c.head.mask_pad_val);
    get(section(m, "loss", "model."), "bbox_reg_weights", "model.loss", c.bbox_reg_weights);
    const auto& inf = section(m, "inference", "model.");
    const std::string ip = "model.inference";
    get(inf, "score_thresh", ip, c.inference.score_thresh);
    get(inf, "topk_candidates", ip, c.inference.topk_candidates);
    get(inf, "nms_thresh", ip, c.inference.nms_thresh);
    get(inf, "nms_on", ip, c.inference.nms_on);
    get(inf, "detections_per_image", ip, c.inference.detections_per_image);
    get(inf, "mask_threshold", ip, c.inference.mask_threshold);
    get(inf, "channels_last", ip, c.inference.channels_last);
    const auto& d = section(root, "data", "");
    get(d, "test_min_size", "data", out.test_min_size);
    get(d, "test_max_size", "data", out.test_max_size);
    check_range("data.test_min_size", out.test_min_size, 1, kMaxTestSize);
    check_range("data.test_max_size", out.test_max_size, 1, kMaxTestSize);
    validate(c);
    const auto k = static_cast<size_t>(c.head.num_classes);
    get(doc, "category_names", "", out.category_names);
    get(doc, "contiguous_to_category_id", "", out.category_ids);
    if (out.category_names.empty())
      for (size_t i = 0; i < k; ++i) out.category_names.push_back("class_" + std::to_string(i));
    if (out.category_ids.empty())
      for (size_t i = 0; i < k; ++i) out.category_ids.push_back(static_cast<int64_t>(i) + 1);
    if (out.category_names.size() != k || out.category_ids.size() != k)
      fail("category_names/contiguous_to_category_id must have num_classes = " + std::to_string(k) + " entries");
    return out;
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(source + ": " + e.what());
  }
}

ExportedConfig load_exported_config(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw std::runtime_error("config file is a directory: " + path);
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > kMaxConfigBytes)
    throw std::runtime_error(path + ": config file of " + std::to_string(size) + " bytes (limit " +
                             std::to_string(kMaxConfigBytes) + ")");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("config file not found or unreadable: " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_exported_config(ss.str(), path);
}

}  // namespace tensormask::model

// The JSON written by `tensormask export` → ModelConfig / ExportedConfig (nlohmann-json), with the
// checks of the Python constructors (backbone.py, fpn.py, heads.py).
#include "tensormask/model.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

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

// Reads section[key] into `out` when present (keys absent keep the Python defaults).
template <typename T>
void get(const json& section, const char* key, const std::string& path, T& out) {
  if (!section.contains(key)) return;
  try {
    out = section.at(key).get<T>();
  } catch (const json::exception&) {
    fail("config key '" + path + "." + key + "' has the wrong type: " + section.at(key).dump());
  }
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
  if (b.norm == "GN" && b.gn_groups <= 0) fail("model.backbone.gn_groups must be positive");
  for (double s : b.pixel_std)
    if (s == 0.0) fail("model.backbone.pixel_std must be non-zero");
  const auto& f = cfg.fpn;
  check_choice("model.fpn.fuse_type", f.fuse_type, {"avg", "sum"});
  if (f.min_level < 2 || f.min_level > 5) fail("model.fpn.min_level must be in 2..5");
  if (f.max_level < 5 || f.max_level > 12) fail("model.fpn.max_level must be in 5..12");
  if (f.out_channels <= 0) fail("model.fpn.out_channels must be positive");
  if (f.size_divisibility <= 0 || f.size_divisibility % (int64_t{1} << f.max_level) != 0)
    fail("model.fpn.size_divisibility must be a positive multiple of 2^max_level");
  const auto& h = cfg.head;
  check_choice("model.head.mask_head", h.mask_head,
               {"simple_natural", "simple_aligned", "upscale_natural", "upscale_aligned", "bipyramid"});
  check_choice("model.head.interpolation", h.interpolation, {"bilinear", "nearest"});
  if (h.num_classes < 1 || h.num_convs < 0) fail("model.head needs num_classes >= 1 and num_convs >= 0");
  check_choice("model.head.norm", h.norm, {"none", "GN"});
  if (h.norm == "GN" && h.gn_groups <= 0) fail("model.head.gn_groups must be positive");
  if (h.window_sizes.empty()) fail("model.head.window_sizes must not be empty");
  std::set<int64_t> seen;
  for (auto v : h.window_sizes) {
    if (v < 1 || !seen.insert(v).second) fail("model.head.window_sizes must be distinct positive integers");
    if (h.mask_head.rfind("upscale", 0) == 0 && (h.upscale_lambda < 1 || v % h.upscale_lambda != 0))
      fail("model.head.upscale_lambda=" + std::to_string(h.upscale_lambda) + " does not divide window size " +
           std::to_string(v));
  }
  const auto& inf = cfg.inference;
  check_choice("model.inference.nms_on", inf.nms_on, {"box", "mask_box"});
  if (inf.topk_candidates < 0 || inf.detections_per_image < 0)
    fail("model.inference.topk_candidates and detections_per_image must be >= 0");
}

ExportedConfig parse_exported_config(const std::string& json_text, const std::string& source) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::exception& e) {
    fail(source + ": not valid JSON: " + e.what());
  }
  try {
    if (!doc.is_object() || !doc.contains("config") || !doc["config"].is_object())
      fail("not a `tensormask export` config (no \"config\" mapping)");
    if (doc.contains("format") && doc["format"] != "tensormask")
      fail("format is " + doc["format"].dump() + ", expected \"tensormask\"");
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
    if (out.test_min_size <= 0 || out.test_max_size <= 0) fail("data.test_min_size and test_max_size must be positive");
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
  std::ifstream f(path);
  if (!f) throw std::runtime_error("config file not found or unreadable: " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_exported_config(ss.str(), path);
}

}  // namespace tensormask::model

// C++ inference model: safetensors parsing errors, config errors, strict weight loading and a forward
// pass of a tiny random model producing well-formed detections.
#include <gtest/gtest.h>

#ifdef TENSORMASK_WITH_MODEL
#include <torch/torch.h>

#include <cstring>
#include <map>
#include <string>

#include "tensormask/io.h"
#include "tensormask/model.h"

namespace tmm = tensormask::model;
namespace tio = tensormask::io;

namespace {

// A safetensors buffer: 8-byte little-endian length + header + data.
std::string pack(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string floats(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), std::data(v), s.size());
  return s;
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

tmm::ModelConfig tiny_config() {
  tmm::ModelConfig c;
  c.backbone.depth = 0;
  c.backbone.tiny_channels = {8, 16, 16, 16};
  c.backbone.norm = "GN";
  c.backbone.gn_groups = 4;
  c.backbone.freeze_at = 0;
  c.fpn.out_channels = 8;
  c.fpn.max_level = 5;
  c.fpn.size_divisibility = 32;
  c.head.num_classes = 3;
  c.head.num_convs = 1;
  c.head.cls_channels = c.head.bbox_channels = c.head.mask_channels = 8;
  c.head.window_sizes = {3, 5};
  return c;
}

std::map<std::string, at::Tensor> random_weights(tmm::TensorMask& model) {
  torch::manual_seed(0);
  std::map<std::string, at::Tensor> w;
  for (const auto& p : model.named_parameters()) w[p.key()] = torch::randn(p.value().sizes()) * 0.2;
  for (const auto& b : model.named_buffers())
    w[b.key()] = b.value().is_floating_point() ? torch::rand(b.value().sizes()) + 0.5 : torch::zeros_like(b.value());
  return w;
}

}  // namespace

TEST(Safetensors, ParsesTensorsAndMetadata) {
  const auto bytes = pack(R"({"__metadata__": {"format": "tensormask"}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
                          floats({1.5f, -2.f}));
  const auto f = tio::parse_safetensors(bytes, "t");
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.metadata.at("format"), "tensormask");
  EXPECT_TRUE(torch::equal(f.tensors.at("a"), torch::tensor({1.5f, -2.f})));
}

TEST(Safetensors, Errors) {
  const std::string ok = R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})";
  EXPECT_NE(error_of([] { tio::parse_safetensors("abc", "f"); }).find("truncated"), std::string::npos);
  EXPECT_NE(error_of([&] { tio::parse_safetensors(pack(ok, floats({1.f, 2.f})).substr(0, 20), "f"); }).find("truncated"),
            std::string::npos);
  EXPECT_NE(error_of([&] { tio::parse_safetensors(pack(ok, floats({1.f})), "f"); }).find("'a'"), std::string::npos);
  EXPECT_NE(error_of([] { tio::parse_safetensors(pack("{not json", ""), "f"); }).find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of([] { tio::parse_safetensors(pack(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})",
                                                      floats({1.f, 2.f})), "f"); }).find("shape and dtype need 12"),
            std::string::npos);
  EXPECT_NE(error_of([] { tio::parse_safetensors(pack(R"({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})", "x"),
                                                 "f"); }).find("unsupported dtype 'F8_E4M3'"),
            std::string::npos);
  EXPECT_NE(error_of([] { tio::parse_safetensors(pack(R"({"a": {"dtype": "F32", "shape": [1]}})", ""), "f"); }).find("'a'"),
            std::string::npos);
  EXPECT_NE(error_of([] { tio::read_safetensors("/nonexistent/model.safetensors"); }).find("not found"), std::string::npos);
}

TEST(ModelConfig, ParsesExportJsonAndRejectsUnknownValues) {
  const auto c = tmm::parse_exported_config(
      R"({"format": "tensormask", "config": {"model": {"head": {"num_classes": 2, "mask_head": "simple_aligned"}},
          "data": {"test_min_size": 256}}, "category_names": ["a", "b"], "contiguous_to_category_id": [3, 7]})");
  EXPECT_EQ(c.model.head.num_classes, 2);
  EXPECT_EQ(c.model.head.mask_head, "simple_aligned");
  EXPECT_EQ(c.test_min_size, 256);
  EXPECT_EQ(c.test_max_size, 1333);
  EXPECT_EQ(c.category_ids[1], 7);
  EXPECT_NE(error_of([] { tmm::parse_exported_config(R"({"config": {"model": {"head": {"mask_head": "fancy"}}}})"); })
                .find("model.head.mask_head 'fancy'"),
            std::string::npos);
  EXPECT_NE(error_of([] { tmm::parse_exported_config(R"({"config": {"model": {"backbone": {"depth": "x"}}}})"); })
                .find("model.backbone.depth"),
            std::string::npos);
  EXPECT_NE(error_of([] { tmm::parse_exported_config(R"({"config": {"model": {"head": {"norm": "BN"}}}})"); })
                .find("model.head.norm 'BN'"),
            std::string::npos);
  const auto gn = tmm::parse_exported_config(
      R"({"config": {"model": {"head": {"num_classes": 1, "norm": "GN", "gn_groups": 4}}}, "category_names": ["a"]})");
  EXPECT_EQ(gn.model.head.norm, "GN");
  EXPECT_EQ(gn.model.head.gn_groups, 4);
  EXPECT_NE(error_of([] { tmm::parse_exported_config("[1, 2"); }).find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of([] { tmm::parse_exported_config(R"({"config": {}, "category_names": ["a"]})"); }).find("num_classes"),
            std::string::npos);
}

TEST(Model, ParameterNamesFollowPython) {
  auto cfg = tiny_config();
  cfg.fpn.max_level = 6;
  cfg.fpn.size_divisibility = 64;
  tmm::TensorMask model(cfg);
  std::set<std::string> names;
  for (const auto& p : model.named_parameters()) names.insert(p.key());
  for (const auto& b : model.named_buffers()) names.insert(b.key());
  for (const char* n : {"backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.stem.conv1.norm.weight",
                        "backbone.bottom_up.res3.0.shortcut.norm.bias", "backbone.fpn_lateral2.weight",
                        "backbone.fpn_output5.bias", "backbone.top_block.p6.weight", "head.cls_subnet.0.weight",
                        "head.cls_score.bias", "head.bbox_pred.weight", "head.mask_pred_03.weight", "head.mask_pred_05.bias",
                        "head.mask_fuse.0.weight"})
    EXPECT_TRUE(names.count(n)) << n;
}

TEST(Model, HeadGroupNormNamesFollowPython) {
  auto cfg = tiny_config();
  cfg.head.num_convs = 2;
  cfg.head.norm = "GN";
  cfg.head.gn_groups = 2;
  tmm::TensorMask model(cfg);
  std::set<std::string> names;
  for (const auto& p : model.named_parameters()) names.insert(p.key());
  // heads.py make_subnet with norm="GN": conv, GroupNorm, ReLU per layer
  for (const char* n : {"head.cls_subnet.0.weight", "head.cls_subnet.1.weight", "head.cls_subnet.1.bias",
                        "head.cls_subnet.3.bias", "head.cls_subnet.4.weight", "head.mask_subnet.4.bias",
                        "head.bbox_subnet.1.weight"})
    EXPECT_TRUE(names.count(n)) << n;
  EXPECT_FALSE(names.count("head.cls_subnet.2.weight"));
}

TEST(Model, StrictLoadingErrors) {
  tmm::TensorMask model(tiny_config());
  auto w = random_weights(model);
  auto missing = w;
  missing.erase("head.mask_fuse.0.weight");
  EXPECT_NE(error_of([&] { model.load_weights(missing, "m.safetensors"); }).find("missing tensors"), std::string::npos);
  EXPECT_NE(error_of([&] { model.load_weights(missing, "m.safetensors"); }).find("head.mask_fuse.0.weight"), std::string::npos);
  auto extra = w;
  extra["head.extra"] = torch::zeros({1});
  EXPECT_NE(error_of([&] { model.load_weights(extra, "m"); }).find("unexpected tensors (not in this config's model): head.extra"),
            std::string::npos);
  auto shape = w;
  shape["head.cls_score.bias"] = torch::zeros({7});
  EXPECT_NE(error_of([&] { model.load_weights(shape, "m"); }).find("'head.cls_score.bias' has shape [7]"), std::string::npos);
  EXPECT_NO_THROW(model.load_weights(w, "m"));
}

TEST(Model, ForwardGivesWellFormedDetections) {
  for (const std::string head : {"bipyramid", "simple_aligned", "simple_natural", "upscale_aligned", "upscale_natural"}) {
    auto cfg = tiny_config();
    cfg.head.mask_head = head;
    cfg.head.upscale_lambda = head.rfind("upscale", 0) == 0 ? 2 : 1;
    cfg.head.window_sizes = {4, 6};
    cfg.head.box_head = head != "simple_natural";
    cfg.inference.detections_per_image = 20;
    tmm::TensorMask model(cfg);
    model.load_weights(random_weights(model));
    const auto image = torch::randint(0, 256, {3, 70, 90}, torch::kByte);
    const auto dets = model.forward({image}, {{140, 180}});
    ASSERT_EQ(dets.size(), 1u) << head;
    const auto& d = dets[0];
    const int64_t n = d.scores.size(0);
    EXPECT_GT(n, 0) << head;
    EXPECT_LE(n, 20) << head;
    EXPECT_EQ(d.boxes.sizes(), (std::vector<int64_t>{n, 4})) << head;
    EXPECT_EQ(d.masks.sizes(), (std::vector<int64_t>{n, 140, 180})) << head;
    EXPECT_EQ(d.masks.scalar_type(), torch::kBool);
    EXPECT_EQ(d.labels.scalar_type(), torch::kLong);
    EXPECT_TRUE((d.labels >= 0).all().item<bool>() && (d.labels < 3).all().item<bool>());
    EXPECT_TRUE((d.scores.slice(0, 1) <= d.scores.slice(0, 0, n - 1)).all().item<bool>()) << head;
    EXPECT_TRUE((d.boxes.select(1, 2) <= 180.001).all().item<bool>() && (d.boxes >= 0).all().item<bool>()) << head;
  }
}

TEST(Model, ResizedShapeMatchesDetectron2Rule) {
  EXPECT_EQ(tmm::resized_shape(240, 320, 256, 448), (std::array<int64_t, 2>{256, 341}));
  EXPECT_EQ(tmm::resized_shape(100, 1000, 800, 1333), (std::array<int64_t, 2>{133, 1333}));
}
#endif  // TENSORMASK_WITH_MODEL

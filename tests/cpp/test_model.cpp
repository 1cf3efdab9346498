// C++ inference model: safetensors parsing errors, config errors, strict weight loading and a forward
// pass of a tiny random model producing well-formed detections.
#include <gtest/gtest.h>

#ifdef TENSORMASK_WITH_MODEL
#include <torch/torch.h>

#include <cstring>
#include <map>
#include <string>

#include "error_of.h"
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
  EXPECT_EQ(tmm::resized_shape(480, 640, 800, 1333), (std::array<int64_t, 2>{800, 1067}));   // 1066.67
  EXPECT_EQ(tmm::resized_shape(600, 1000, 800, 1333), (std::array<int64_t, 2>{800, 1333}));  // 799.8 after the cap
  EXPECT_EQ(tmm::resized_shape(801, 1201, 800, 1333), (std::array<int64_t, 2>{800, 1200}));  // 1199.5006
  // .5 boundaries as detectron2's float64 steps give them: 800/352·704 = 1600.0000000000002, so
  // 800·1333/1600.0000000000002 = 666.4999… → 666; 800/298·596 = 1600 exactly: 666.5 → 667.
  EXPECT_EQ(tmm::resized_shape(352, 704, 800, 1333), (std::array<int64_t, 2>{666, 1333}));
  EXPECT_EQ(tmm::resized_shape(298, 596, 800, 1333), (std::array<int64_t, 2>{667, 1333}));
}

TEST(Model, ResizeImageIsPillowBilinear) {
  // A formula image, 23×31; expected values from PIL.Image.resize((w, h), BILINEAR) (Pillow 13):
  // sum over the (3, h, w) output in C order of value·(i mod 251 + 1), and two pixels.
  const int64_t h = 23, w = 31;
  at::Tensor img = torch::empty({3, h, w}, torch::kByte);
  auto a = img.accessor<uint8_t, 3>();
  for (int64_t c = 0; c < 3; ++c)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) a[c][y][x] = static_cast<uint8_t>((x * 37 + y * 61 + c * 89 + x * y) % 256);
  struct Case {
    int64_t nh, nw, checksum, px_c1_y2_x3, px_c2_last;
  };
  for (const Case& t : {Case{40, 57, 109026226, 199, 218}, Case{9, 13, 4642218, 124, 126}, Case{23, 12, 12460303, 75, 156},
                        Case{50, 31, 73734568, 75, 218},
                        // the height shrinks by more than twice the width's shrink: Pillow 13 goes vertical first
                        Case{14, 40, 26066613, 141, 180}, Case{5, 25, 4979390, 140, 130}}) {
    const at::Tensor out = tmm::resize_image(img, t.nh, t.nw);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{3, t.nh, t.nw}));
    ASSERT_EQ(out.scalar_type(), torch::kByte);
    const at::Tensor flat = out.reshape({-1}).to(torch::kLong);
    const at::Tensor weight = torch::arange(flat.size(0), torch::kLong).remainder(251) + 1;
    EXPECT_EQ((flat * weight).sum().item<int64_t>(), t.checksum) << t.nh << "x" << t.nw;
    EXPECT_EQ(out[1][2][3].item<int64_t>(), t.px_c1_y2_x3) << t.nh << "x" << t.nw;
    EXPECT_EQ(out[2][t.nh - 1][t.nw - 1].item<int64_t>(), t.px_c2_last) << t.nh << "x" << t.nw;
  }
  EXPECT_TRUE(torch::equal(tmm::resize_image(img, h, w), img));
  EXPECT_NE(error_of([&] { tmm::resize_image(img.to(torch::kFloat), 5, 5); }).find("uint8"), std::string::npos);
}

TEST(Model, PadsTo32AndRunsP7OnSizesNotDivisibleBy128) {
  auto cfg = tiny_config();
  cfg.fpn.max_level = 7;
  cfg.fpn.size_divisibility = tmm::FPNConfig{}.size_divisibility;
  EXPECT_EQ(cfg.fpn.size_divisibility, 32);
  cfg.inference.score_thresh = 0.0;
  tmm::TensorMask model(cfg);
  model.load_weights(random_weights(model));
  std::vector<std::array<int64_t, 2>> sizes;
  // ⌈801/32⌉·32 = 832, ⌈1201/32⌉·32 = 1216 (with 128: 896×1280)
  EXPECT_EQ(model.preprocess({torch::zeros({3, 801, 1201}, torch::kByte)}, sizes).sizes(), (std::vector<int64_t>{1, 3, 832, 1216}));
  EXPECT_EQ(model.preprocess({torch::zeros({3, 352, 528}, torch::kByte)}, sizes).sizes(), (std::vector<int64_t>{1, 3, 352, 544}));
  // 70×90 pads to 96×96: P6 = ⌈3/2⌉ = 2, P7 = 1
  torch::manual_seed(1);
  const auto dets = model.forward({torch::randint(0, 256, {3, 70, 90}, torch::kByte)}, {{35, 45}});
  const auto& d = dets[0];
  ASSERT_GT(d.scores.size(0), 0);
  EXPECT_EQ(d.masks.sizes(), (std::vector<int64_t>{d.scores.size(0), 35, 45}));
  // NMS, then clipping to the output image, then empty boxes dropped: every box inside, non-empty
  EXPECT_TRUE((d.boxes.select(1, 2) > d.boxes.select(1, 0)).all().item<bool>());
  EXPECT_TRUE((d.boxes.select(1, 3) > d.boxes.select(1, 1)).all().item<bool>());
  EXPECT_TRUE((d.boxes >= 0).all().item<bool>() && (d.boxes.select(1, 2) <= 45).all().item<bool>() &&
              (d.boxes.select(1, 3) <= 35).all().item<bool>());
}
#endif  // TENSORMASK_WITH_MODEL

// Hostile model files through the C++ readers: thousands of mutations of a valid small exported model
// (its safetensors weights and its JSON config; generated in hostile_files.h) — bit flips, truncations,
// header-length edits, edited offsets, shapes, dtypes and names, deeply nested / non-UTF-8 /
// duplicate-key JSON, hostile config numbers. Each case goes the way of `tensormask_infer`
// (parse config → build model → parse weights → strict load → forward on a small image) and must either
// work or stop with one std::runtime_error: one line of printable ASCII naming the file it came from.
// A crash, a sanitizer report (`make sanitize` runs this test under ASan + UBSan) or any other exception
// fails the test.
//
// TENSORMASK_HOSTILE_CASES sets the number of generated cases (default 1000; `make sanitize` runs 4000,
// `make fuzz` 20000).
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
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "error_of.h"
#include "hostile_files.h"
#include "tensormask/io.h"
#include "tensormask/model.h"

using namespace hostile;  // NOLINT: the test's vocabulary

namespace {

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

int hostile_cases() {
  const char* env = std::getenv("TENSORMASK_HOSTILE_CASES");
  return env ? std::max(1, std::atoi(env)) : 1000;
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

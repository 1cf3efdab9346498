// tensormask_infer: standalone C++ inference with a model exported by `tensormask export`.
//
//   tensormask_infer --model model.safetensors --config model.json IMAGE... [--out DIR]
//                    [--threshold T] [--threads N] [--repeat R] [--help]
//
// Reads PNG/JPEG/BMP images with stb_image (EXIF orientation is not applied; images of more than
// kMaxImagePixels are refused from their header, before decoding), resizes them as
// `tensormask predict` does (shorter side data.test_min_size, longer ≤ data.test_max_size, Pillow's
// bilinear as detectron2), runs the model, and prints COCO-style results (bbox XYWH, score, category_id, compressed
// RLE segmentation as pycocotools writes it) as JSON to stdout, or to DIR/results.json with
// DIR/<image>_overlay.png. Errors: one line on stderr, exit status 1 (2 for bad options).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensormask/io.h"
#include "tensormask/model.h"

namespace fs = std::filesystem;
namespace tmm = tensormask::model;

namespace {

constexpr const char* kUsage =
    "usage: tensormask_infer --model MODEL.safetensors --config MODEL.json IMAGE... [--out DIR]\n"
    "                        [--threshold T] [--threads N] [--repeat R] [--help]\n"
    "\n"
    "Instance segmentation with a TensorMask model exported by `tensormask export`.\n"
    "  --model PATH     weights (.safetensors) written by `tensormask export`\n"
    "  --config PATH    the JSON written next to them (model config, test resize, categories)\n"
    "  IMAGE...         PNG/JPEG/BMP files\n"
    "  --out DIR        write DIR/results.json and DIR/<image>_overlay.png (default: JSON to stdout)\n"
    "  --threshold T    minimum score of the detections reported (default 0.5)\n"
    "  --threads N      intra-op CPU threads (default: LibTorch's choice)\n"
    "  --repeat R       run each image R times and print the median time (resize + model) to stderr\n"
    "Output: a JSON list of {file_name, image_id, category_id, category_name, bbox [x, y, w, h],\n"
    "score, segmentation {size [h, w], counts (COCO compressed RLE)}}.\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string model, config, out;
  std::vector<std::string> images;
  double threshold = 0.5;
  int threads = 0;
  int repeat = 1;
};

double parse_number(const std::string& flag, const std::string& value) {
  try {
    size_t pos = 0;
    const double v = std::stod(value, &pos);
    if (pos != value.size()) throw std::invalid_argument(value);
    return v;
  } catch (const std::exception&) {
    throw UsageError(flag + " expects a number, got '" + value + "'");
  }
}

Options parse_args(int argc, char** argv, bool& help) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (i + 1 >= argc) throw UsageError(flag + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      help = true;
      return o;
    } else if (a == "--model") {
      o.model = value(a);
    } else if (a == "--config") {
      o.config = value(a);
    } else if (a == "--out") {
      o.out = value(a);
    } else if (a == "--threshold") {
      o.threshold = parse_number(a, value(a));
    } else if (a == "--threads") {
      const double t = parse_number(a, value(a));
      if (t < 1 || t != static_cast<int>(t)) throw UsageError("--threads must be a positive integer");
      o.threads = static_cast<int>(t);
    } else if (a == "--repeat") {
      const double r = parse_number(a, value(a));
      if (r < 1 || r != static_cast<int>(r)) throw UsageError("--repeat must be a positive integer");
      o.repeat = static_cast<int>(r);
    } else if (a.rfind("--", 0) == 0) {
      throw UsageError("unknown option " + a);
    } else {
      o.images.push_back(a);
    }
  }
  if (o.model.empty()) throw UsageError("--model is required");
  if (o.config.empty()) throw UsageError("--config is required");
  if (o.images.empty()) throw UsageError("no IMAGE given");
  return o;
}

// The largest image decoded: 100 megapixels (e.g. 10000 × 10000), the limit of `tensormask predict`
// (tensormask.data.images.MAX_IMAGE_PIXELS). A PNG or JPEG header can declare 60000 × 60000 in a few
// bytes; the size is checked from the header before anything is allocated.
constexpr int64_t kMaxImagePixels = 100'000'000;

// uint8 (3, H, W) RGB.
at::Tensor read_image(const std::string& path) {
  if (!fs::is_regular_file(path)) throw std::runtime_error("image file not found: " + path);
  const auto size = fs::file_size(path);
  if (size == 0) throw std::runtime_error("cannot read image " + path + ": empty file");
  if (size > static_cast<uintmax_t>(std::numeric_limits<int>::max()))
    throw std::runtime_error("cannot read image " + path + ": file of " + std::to_string(size) + " bytes is too large");
  std::string bytes(size, '\0');
  {
    std::ifstream f(path, std::ios::binary);
    if (!f.read(bytes.data(), static_cast<std::streamsize>(size)))
      throw std::runtime_error("cannot read image " + path + ": read error");
  }
  const auto* buf = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int len = static_cast<int>(size);
  int64_t w = 0, h = 0;
  int iw = 0, ih = 0, c = 0;
  if (size >= 24 && bytes.compare(0, 8, "\x89PNG\r\n\x1a\n") == 0 && bytes.compare(12, 4, "IHDR") == 0) {
    // stb_image refuses large PNGs as "unknown image type"; the size comes from the IHDR chunk instead
    auto be32 = [&](size_t at) {
      int64_t v = 0;
      for (size_t i = at; i < at + 4; ++i) v = (v << 8) | static_cast<unsigned char>(bytes[i]);
      return v;
    };
    w = be32(16);
    h = be32(20);
  } else if (stbi_info_from_memory(buf, len, &iw, &ih, &c)) {
    w = iw;
    h = ih;
  } else {
    throw std::runtime_error("cannot read image " + path + ": " + stbi_failure_reason() + " (PNG, JPEG, BMP, GIF, TGA, PSD, PNM expected)");
  }
  if (w <= 0 || h <= 0)
    throw std::runtime_error("cannot read image " + path + ": it declares " + std::to_string(w) + "x" + std::to_string(h) + " pixels");
  if (static_cast<int64_t>(w) * h > kMaxImagePixels)
    throw std::runtime_error("cannot read image " + path + ": it declares " + std::to_string(w) + "x" + std::to_string(h) +
                             " = " + std::to_string(w * h) + " pixels, more than the limit of " +
                             std::to_string(kMaxImagePixels) + "; refused before decoding");
  unsigned char* data = stbi_load_from_memory(buf, len, &iw, &ih, &c, 3);
  if (data == nullptr)
    throw std::runtime_error("cannot read image " + path + ": corrupt or truncated (stb_image: " + stbi_failure_reason() + ")");
  at::Tensor t = at::from_blob(data, {ih, iw, 3}, at::kByte).permute({2, 0, 1}).clone();
  stbi_image_free(data);
  return t;
}

// pycocotools' compressed RLE string of a (H, W) bool mask (column-major runs, starting with zeros).
std::string rle_counts(const at::Tensor& mask) {
  const at::Tensor fortran = mask.t().contiguous();  // (W, H): column-major order of the mask
  const bool* p = fortran.data_ptr<bool>();
  std::vector<long> counts;
  bool cur = false;
  long run = 0;
  for (int64_t i = 0; i < fortran.numel(); ++i) {
    if (p[i] != cur) {
      counts.push_back(run);
      run = 0;
      cur = p[i];
    }
    ++run;
  }
  counts.push_back(run);
  std::string s;
  for (size_t i = 0; i < counts.size(); ++i) {
    long x = counts[i];
    if (i > 2) x -= counts[i - 2];
    bool more = true;
    while (more) {
      long ch = x & 0x1f;
      x >>= 5;
      more = (ch & 0x10) ? x != -1 : x != 0;
      if (more) ch |= 0x20;
      s.push_back(static_cast<char>(ch + 48));
    }
  }
  return s;
}

// 50% colour over each mask, box outlines; (3, H, W) uint8 → written as PNG.
void write_overlay(const std::string& path, const at::Tensor& image, const tmm::Detections& det) {
  static const unsigned char kColors[][3] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},
                                             {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230}};
  at::Tensor img = image.permute({1, 2, 0}).contiguous().to(at::kFloat);  // (H, W, 3)
  const int64_t h = img.size(0), w = img.size(1);
  for (int64_t i = 0; i < det.masks.size(0); ++i) {
    const auto* col = kColors[det.labels[i].item<int64_t>() % 8];
    const at::Tensor color = at::tensor(std::vector<float>{float(col[0]), float(col[1]), float(col[2])});
    const at::Tensor m = det.masks[i].unsqueeze(-1);
    img = at::where(m, img * 0.5 + color * 0.5, img);
    const auto b = det.boxes[i].to(at::kLong).clamp(0, std::max(w, h) - 1);
    const int64_t x1 = std::min(b[0].item<int64_t>(), w - 1), y1 = std::min(b[1].item<int64_t>(), h - 1);
    const int64_t x2 = std::min(b[2].item<int64_t>(), w - 1), y2 = std::min(b[3].item<int64_t>(), h - 1);
    using at::indexing::Slice;
    img.index_put_({y1, Slice(x1, x2 + 1)}, color);
    img.index_put_({y2, Slice(x1, x2 + 1)}, color);
    img.index_put_({Slice(y1, y2 + 1), x1}, color);
    img.index_put_({Slice(y1, y2 + 1), x2}, color);
  }
  const at::Tensor out = img.round().clamp(0, 255).to(at::kByte).contiguous();
  const std::string tmp = path + ".tmp";
  if (!stbi_write_png(tmp.c_str(), static_cast<int>(w), static_cast<int>(h), 3, out.data_ptr<uint8_t>(), static_cast<int>(w * 3)))
    throw std::runtime_error("cannot write " + path);
  fs::rename(tmp, path);
}

void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw std::runtime_error("cannot write " + path);
    f << text;
    if (!f.flush()) throw std::runtime_error("cannot write " + path);
  }
  fs::rename(tmp, path);
}

int run(const Options& o) {
  if (o.threads > 0) at::set_num_threads(o.threads);
  const tmm::ExportedConfig cfg = tmm::load_exported_config(o.config);
  std::shared_ptr<tmm::TensorMask> model;
  try {  // errors of the config's values found while building the model (e.g. GroupNorm groups)
    model = std::make_shared<tmm::TensorMask>(cfg.model);
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(o.config + ": " + e.what());
  }
  model->load_weights(tensormask::io::read_safetensors(o.model).tensors, o.model);
  if (!o.out.empty()) fs::create_directories(o.out);
  nlohmann::json results = nlohmann::json::array();
  for (size_t i = 0; i < o.images.size(); ++i) {
    const std::string& path = o.images[i];
    const at::Tensor image = read_image(path);
    const int64_t h = image.size(1), w = image.size(2);
    tmm::Detections det;
    std::vector<double> ms;
    for (int r = 0; r < o.repeat; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto size = tmm::resized_shape(h, w, cfg.test_min_size, cfg.test_max_size);
      const at::Tensor resized = tmm::resize_image(image, size[0], size[1]);
      det = model->forward({resized}, {{h, w}})[0];
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    if (o.repeat > 1) {
      std::sort(ms.begin(), ms.end());
      const double median = ms.size() % 2 ? ms[ms.size() / 2] : (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]) / 2;
      std::cerr << "tensormask_infer: " << path << ": median " << median << " ms over " << o.repeat << " runs\n";
    }
    const at::Tensor keep = det.scores >= o.threshold;
    det = {det.boxes.index({keep}), det.scores.index({keep}), det.labels.index({keep}), det.masks.index({keep})};
    const std::string name = fs::path(path).filename().string();
    for (int64_t d = 0; d < det.scores.size(0); ++d) {
      const auto box = det.boxes[d].to(at::kDouble);
      const double x1 = box[0].item<double>(), y1 = box[1].item<double>();
      const int64_t label = det.labels[d].item<int64_t>();
      results.push_back({{"file_name", name},
                         {"image_id", i},
                         {"category_id", cfg.category_ids.at(label)},
                         {"category_name", cfg.category_names.at(label)},
                         {"bbox", {x1, y1, box[2].item<double>() - x1, box[3].item<double>() - y1}},
                         {"score", det.scores[d].item<double>()},
                         {"segmentation", {{"size", {h, w}}, {"counts", rle_counts(det.masks[d])}}}});
    }
    if (!o.out.empty())
      write_overlay((fs::path(o.out) / (fs::path(path).stem().string() + "_overlay.png")).string(), image, det);
  }
  if (o.out.empty()) {
    std::cout << results.dump() << "\n";
  } else {
    const std::string out = (fs::path(o.out) / "results.json").string();
    write_text_atomic(out, results.dump() + "\n");
    std::cerr << o.images.size() << " images → " << out << " (" << results.size() << " detections)\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool help = false;
  Options o;
  try {
    o = parse_args(argc, argv, help);
  } catch (const UsageError& e) {
    std::cerr << "tensormask_infer: error: " << e.what() << " (see --help)\n";
    return 2;
  }
  if (help) {
    std::cout << kUsage;
    return 0;
  }
  try {
    return run(o);
  } catch (const c10::Error& e) {
    std::cerr << "tensormask_infer: error: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "tensormask_infer: error: " << e.what() << "\n";
  }
  return 1;
}

// The TensorMask model (python/tensormask/modeling/tensormask.py, eval mode): preprocess, backbone +
// FPN, heads, post-processing; strict weight loading; the test-time resize of `tensormask predict`
// (detectron2's ResizeShortestEdge: its output size, PIL-bilinear pixels, detail/resample.h).
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <set>
#include <stdexcept>

#include "json_util.h"
#include "modules.h"
#include "tensormask/detail/resample.h"
#include "tensormask/io.h"

namespace tensormask::model {

class TensorMaskModelImpl {
 public:
  std::shared_ptr<BackboneWithFPN> backbone;
  std::shared_ptr<TensorMaskHead> head;
};

TensorMask::TensorMask(const ModelConfig& cfg) : cfg_(cfg), impl_(std::make_unique<TensorMaskModelImpl>()) {
  validate(cfg_);
  impl_->backbone = register_module("backbone", std::make_shared<BackboneWithFPN>(cfg_.backbone, cfg_.fpn));
  strides_ = impl_->backbone->strides;
  impl_->head = register_module("head", std::make_shared<TensorMaskHead>(cfg_.head, cfg_.fpn.out_channels,
                                                                          static_cast<int64_t>(strides_.size())));
  eval();
}

TensorMask::~TensorMask() = default;

void TensorMask::load_weights(const std::map<std::string, at::Tensor>& tensors, const std::string& source) {
  std::map<std::string, at::Tensor> own;
  for (const auto& item : named_parameters(true)) own.emplace(item.key(), item.value());
  for (const auto& item : named_buffers(true)) own.emplace(item.key(), item.value());
  std::vector<std::string> missing, unexpected;
  for (const auto& [name, t] : own)
    if (!tensors.count(name)) missing.push_back(name);
  for (const auto& [name, t] : tensors) {
    const bool counter = name.size() > 20 && name.compare(name.size() - 20, 20, ".num_batches_tracked") == 0;
    if (!own.count(name) && !counter) unexpected.push_back(name);
  }
  auto listing = [](const std::vector<std::string>& names) {
    std::string s;
    for (size_t i = 0; i < names.size() && i < 10; ++i) s += (i ? ", " : "") + detail::printable(names[i]);  // from the file
    if (names.size() > 10) s += ", ... (" + std::to_string(names.size()) + " in all)";
    return s;
  };
  if (!missing.empty())
    throw std::runtime_error(source + ": missing tensors for this config (mask_head '" + cfg_.head.mask_head + "', depth " +
                             std::to_string(cfg_.backbone.depth) + "): " + listing(missing));
  if (!unexpected.empty()) throw std::runtime_error(source + ": unexpected tensors (not in this config's model): " + listing(unexpected));
  // Every tensor is checked before any is copied: a refused file leaves the model as it was.
  for (const auto& [name, dst] : own) {
    const at::Tensor& src = tensors.at(name);
    if (src.sizes() != dst.sizes())
      throw std::runtime_error(source + ": tensor '" + name + "' has shape " + c10::str(src.sizes()) + " but the config needs " +
                               c10::str(dst.sizes()));
    if (src.is_floating_point() != dst.is_floating_point())
      throw std::runtime_error(source + ": tensor '" + name + "' has dtype " + std::string(c10::toString(src.scalar_type())) +
                               ", expected " + std::string(c10::toString(dst.scalar_type())));
    if (src.is_floating_point() && !at::isfinite(src).all().item<bool>())
      throw std::runtime_error(source + ": tensor '" + name + "' holds NaN or infinite values");
  }
  c10::InferenceMode guard(false);
  at::NoGradGuard no_grad;
  for (auto& [name, dst] : own) dst.copy_(tensors.at(name));
}

at::Tensor TensorMask::preprocess(const std::vector<at::Tensor>& images, std::vector<std::array<int64_t, 2>>& sizes) const {
  if (images.empty()) throw std::runtime_error("TensorMask: got an empty list of images");
  sizes.clear();
  int64_t hmax = 0, wmax = 0;
  for (size_t i = 0; i < images.size(); ++i) {
    const auto& im = images[i];
    if (im.dim() != 3 || im.size(0) != 3)
      throw std::runtime_error("TensorMask: image " + std::to_string(i) + " must be (3, H, W) RGB, got shape " + c10::str(im.sizes()));
    sizes.push_back({im.size(1), im.size(2)});
    hmax = std::max(hmax, im.size(1));
    wmax = std::max(wmax, im.size(2));
  }
  const int64_t div = cfg_.fpn.size_divisibility;
  const int64_t height = (hmax + div - 1) / div * div, width = (wmax + div - 1) / div * div;
  const auto& b = cfg_.backbone;
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor mean = at::tensor({static_cast<float>(b.pixel_mean[0]), static_cast<float>(b.pixel_mean[1]),
                                      static_cast<float>(b.pixel_mean[2])}, f32).view({3, 1, 1});
  const at::Tensor std = at::tensor({static_cast<float>(b.pixel_std[0]), static_cast<float>(b.pixel_std[1]),
                                     static_cast<float>(b.pixel_std[2])}, f32).view({3, 1, 1});
  at::Tensor batch = at::zeros({static_cast<int64_t>(images.size()), 3, height, width}, f32);
  using at::indexing::Slice;
  for (size_t i = 0; i < images.size(); ++i) {
    at::Tensor x = images[i].to(at::kFloat);
    if (b.input_format == "BGR") x = x.flip({0});
    batch.index_put_({static_cast<int64_t>(i), Slice(), Slice(0, x.size(1)), Slice(0, x.size(2))}, (x - mean) / std);
  }
  return batch;
}

std::vector<Detections> TensorMask::forward(const std::vector<at::Tensor>& images,
                                            const std::vector<std::array<int64_t, 2>>& output_sizes) {
  c10::InferenceMode guard;
  std::vector<std::array<int64_t, 2>> sizes;
  at::Tensor batch = preprocess(images, sizes);
  if (cfg_.inference.channels_last) batch = batch.contiguous(at::MemoryFormat::ChannelsLast);
  if (!output_sizes.empty() && output_sizes.size() != sizes.size())
    throw std::runtime_error("TensorMask: " + std::to_string(output_sizes.size()) + " output sizes for " +
                             std::to_string(sizes.size()) + " images");
  const auto features = impl_->backbone->forward(batch);
  const auto outputs = impl_->head->forward(features);
  return postprocess(cfg_, *impl_->head, strides_, outputs, sizes, output_sizes.empty() ? sizes : output_sizes);
}

std::shared_ptr<TensorMask> load_model(const std::string& weights_path, const ModelConfig& cfg) {
  auto model = std::make_shared<TensorMask>(cfg);
  model->load_weights(io::read_safetensors(weights_path).tensors, weights_path);
  return model;
}

std::array<int64_t, 2> resized_shape(int64_t h, int64_t w, int64_t short_edge, int64_t max_size) {
  // detectron2's ResizeShortestEdge.get_output_shape, its float64 operations in its order.
  const double size = static_cast<double>(short_edge);
  const double scale = size / static_cast<double>(std::min(h, w));
  double new_h = h < w ? size : scale * static_cast<double>(h);
  double new_w = h < w ? scale * static_cast<double>(w) : size;
  if (std::max(new_h, new_w) > static_cast<double>(max_size)) {
    const double cap = static_cast<double>(max_size) / std::max(new_h, new_w);
    new_h *= cap;
    new_w *= cap;
  }
  return {std::max<int64_t>(1, static_cast<int64_t>(new_h + 0.5)), std::max<int64_t>(1, static_cast<int64_t>(new_w + 0.5))};
}

at::Tensor resize_image(const at::Tensor& image, int64_t new_h, int64_t new_w) {
  c10::InferenceMode guard;
  if (image.dim() != 3 || image.scalar_type() != at::kByte || image.size(1) < 1 || image.size(2) < 1 || new_h < 1 || new_w < 1)
    throw std::runtime_error("resize_image: expected a non-empty uint8 (C, H, W) image and a positive size, got " +
                             c10::str(image.sizes()) + " -> " + std::to_string(new_h) + "x" + std::to_string(new_w));
  const at::Tensor hwc = image.permute({1, 2, 0}).contiguous();
  at::Tensor out = at::empty({new_h, new_w, image.size(0)}, hwc.options());
  detail::resize_bilinear_pil(hwc.data_ptr<uint8_t>(), static_cast<int>(image.size(1)), static_cast<int>(image.size(2)),
                              static_cast<int>(image.size(0)), out.data_ptr<uint8_t>(), static_cast<int>(new_h),
                              static_cast<int>(new_w));
  return out.permute({2, 0, 1}).contiguous();
}

}  // namespace tensormask::model

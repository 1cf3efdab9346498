// ResNet + FPN of the C++ model (python/tensormask/modeling/backbone.py, fpn.py).
#include <ATen/ATen.h>

#include <stdexcept>

#include "modules.h"

namespace tensormask::model {

Conv2d::Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride_, int64_t padding_, bool with_bias)
    : stride(stride_), padding(padding_) {
  weight = register_parameter("weight", at::zeros({out, in, kernel, kernel}), false);
  if (with_bias) bias = register_parameter("bias", at::zeros({out}), false);
}

at::Tensor Conv2d::forward(const at::Tensor& x) const {
  return at::conv2d(x, weight, bias, {stride, stride}, {padding, padding});
}

Norm::Norm(const std::string& kind_, int64_t channels, int64_t gn_groups, bool frozen) : kind(kind_), groups(gn_groups) {
  if (kind == "GN") {
    if (gn_groups <= 0 || channels % gn_groups != 0)
      throw std::runtime_error("GroupNorm with gn_groups=" + std::to_string(gn_groups) + " needs channel counts divisible by it, got " +
                               std::to_string(channels) + " channels");
    weight = register_parameter("weight", at::ones({channels}), false);
    bias = register_parameter("bias", at::zeros({channels}), false);
    return;
  }
  // FrozenBatchNorm2d has buffers only; BatchNorm2d has parameters + a step counter. Both run in eval
  // mode with their running statistics, so they compute the same function.
  if (kind == "BN" && !frozen) {
    weight = register_parameter("weight", at::ones({channels}), false);
    bias = register_parameter("bias", at::zeros({channels}), false);
  } else {
    weight = register_buffer("weight", at::ones({channels}));
    bias = register_buffer("bias", at::zeros({channels}));
  }
  running_mean = register_buffer("running_mean", at::zeros({channels}));
  running_var = register_buffer("running_var", at::ones({channels}));
  if (kind == "BN" && !frozen) register_buffer("num_batches_tracked", at::zeros({}, at::kLong));
  kind = "BN";
}

at::Tensor Norm::forward(const at::Tensor& x) const {
  if (kind == "GN") return at::group_norm(x, groups, weight, bias, 1e-5, true);
  return at::batch_norm(x, weight, bias, running_mean, running_var, false, 0.1, 1e-5, true);
}

ConvNorm::ConvNorm(int64_t in, int64_t out, int64_t kernel, int64_t stride_, int64_t padding_, const BackboneConfig& cfg,
                   bool frozen)
    : stride(stride_), padding(padding_) {
  weight = register_parameter("weight", at::zeros({out, in, kernel, kernel}), false);
  if (cfg.norm == "none")
    bias = register_parameter("bias", at::zeros({out}), false);
  else
    norm = register_module("norm", std::make_shared<Norm>(cfg.norm, out, cfg.gn_groups, frozen));
}

at::Tensor ConvNorm::forward(const at::Tensor& x) const {
  auto y = at::conv2d(x, weight, bias, {stride, stride}, {padding, padding});
  return norm ? norm->forward(y) : y;
}

namespace {

// BasicBlock (conv1 3×3/s, conv2 3×3) or BottleneckBlock (conv1 1×1, conv2 3×3, conv3 1×1), with an
// optional 1×1 projection "shortcut".
struct Block : torch::nn::Module {
  Block(int64_t in, int64_t out, int64_t stride, bool bottleneck, bool stride_in_1x1, const BackboneConfig& cfg,
        bool frozen) {
    if (in != out || stride != 1) shortcut = register_module("shortcut", std::make_shared<ConvNorm>(in, out, 1, stride, 0, cfg, frozen));
    if (bottleneck) {
      const int64_t mid = out / 4;
      const int64_t s1 = stride_in_1x1 ? stride : 1, s3 = stride_in_1x1 ? 1 : stride;
      convs.push_back(register_module("conv1", std::make_shared<ConvNorm>(in, mid, 1, s1, 0, cfg, frozen)));
      convs.push_back(register_module("conv2", std::make_shared<ConvNorm>(mid, mid, 3, s3, 1, cfg, frozen)));
      convs.push_back(register_module("conv3", std::make_shared<ConvNorm>(mid, out, 1, 1, 0, cfg, frozen)));
    } else {
      convs.push_back(register_module("conv1", std::make_shared<ConvNorm>(in, out, 3, stride, 1, cfg, frozen)));
      convs.push_back(register_module("conv2", std::make_shared<ConvNorm>(out, out, 3, 1, 1, cfg, frozen)));
    }
  }
  at::Tensor forward(const at::Tensor& x) const {
    at::Tensor out = x;
    for (size_t i = 0; i < convs.size(); ++i) {
      out = convs[i]->forward(out);
      if (i + 1 < convs.size()) out = out.relu_();
    }
    const at::Tensor sc = shortcut ? shortcut->forward(x) : x;
    return (out + sc).relu_();
  }
  std::shared_ptr<ConvNorm> shortcut;
  std::vector<std::shared_ptr<ConvNorm>> convs;
};

}  // namespace

struct BackboneWithFPN::Impl {
  std::shared_ptr<ConvNorm> stem;
  std::vector<std::vector<std::shared_ptr<Block>>> stages;  // res2..res5
  std::vector<std::shared_ptr<Conv2d>> lateral, output;    // levels min_level..5
  std::vector<std::shared_ptr<Conv2d>> top;                // p6..p_max
  FPNConfig fpn;
};

BackboneWithFPN::BackboneWithFPN(const BackboneConfig& b, const FPNConfig& f) : impl(std::make_shared<Impl>()) {
  static const std::map<int64_t, std::array<int64_t, 4>> kBlocks = {
      {0, {1, 1, 1, 1}}, {18, {2, 2, 2, 2}}, {34, {3, 4, 6, 3}}, {50, {3, 4, 6, 3}}, {101, {3, 4, 23, 3}}};
  const auto blocks = kBlocks.find(b.depth);
  if (blocks == kBlocks.end()) throw std::runtime_error("unsupported ResNet depth " + std::to_string(b.depth));
  const bool bottleneck = b.depth >= 50;
  std::array<int64_t, 4> widths = b.tiny_channels;
  int64_t stem_channels = b.tiny_channels[0];
  if (b.depth != 0) {
    widths = bottleneck ? std::array<int64_t, 4>{256, 512, 1024, 2048} : std::array<int64_t, 4>{64, 128, 256, 512};
    stem_channels = b.stem_channels;
  }
  impl->fpn = f;
  auto bottom_up = register_module("bottom_up", std::make_shared<torch::nn::Module>());
  auto stem = bottom_up->register_module("stem", std::make_shared<torch::nn::Module>());
  impl->stem = stem->register_module("conv1", std::make_shared<ConvNorm>(3, stem_channels, 7, 2, 3, b, b.freeze_at >= 1));
  int64_t in = stem_channels;
  for (int i = 0; i < 4; ++i) {
    auto stage = bottom_up->register_module("res" + std::to_string(i + 2), std::make_shared<torch::nn::Module>());
    const bool frozen = b.freeze_at >= i + 2;
    impl->stages.emplace_back();
    for (int64_t j = 0; j < blocks->second[i]; ++j) {
      const int64_t stride = (j == 0 && i > 0) ? 2 : 1;
      impl->stages.back().push_back(stage->register_module(
          std::to_string(j), std::make_shared<Block>(in, widths[i], stride, bottleneck, b.style == "msra", b, frozen)));
      in = widths[i];
    }
  }
  for (int64_t k = f.min_level; k <= 5; ++k) {
    impl->lateral.push_back(register_module("fpn_lateral" + std::to_string(k),
                                            std::make_shared<Conv2d>(widths[k - 2], f.out_channels, 1, 1, 0, true)));
    impl->output.push_back(register_module("fpn_output" + std::to_string(k),
                                           std::make_shared<Conv2d>(f.out_channels, f.out_channels, 3, 1, 1, true)));
  }
  if (f.max_level > 5) {
    auto top = register_module("top_block", std::make_shared<torch::nn::Module>());
    for (int64_t k = 6; k <= f.max_level; ++k)
      impl->top.push_back(top->register_module(
          "p" + std::to_string(k), std::make_shared<Conv2d>(k == 6 ? widths[3] : f.out_channels, f.out_channels, 3, 2, 1, true)));
  }
  for (int64_t k = f.min_level; k <= f.max_level; ++k) strides.push_back(int64_t{1} << k);
}

std::vector<at::Tensor> BackboneWithFPN::forward(const at::Tensor& x) const {
  const auto& f = impl->fpn;
  if (x.size(2) % f.size_divisibility || x.size(3) % f.size_divisibility)
    throw std::runtime_error("input not divisible by size_divisibility=" + std::to_string(f.size_divisibility));
  at::Tensor h = at::max_pool2d(impl->stem->forward(x).relu_(), {3, 3}, {2, 2}, {1, 1});
  std::vector<at::Tensor> res;  // res2..res5
  for (const auto& stage : impl->stages) {
    for (const auto& block : stage) h = block->forward(h);
    res.push_back(h);
  }
  const int64_t n_in = 6 - f.min_level;  // levels min_level..5
  std::vector<at::Tensor> results(n_in);
  at::Tensor prev = impl->lateral[n_in - 1]->forward(res[3]);
  results[n_in - 1] = impl->output[n_in - 1]->forward(prev);
  for (int64_t i = n_in - 2; i >= 0; --i) {
    const int64_t k = f.min_level + i;
    at::Tensor lateral = impl->lateral[i]->forward(res[k - 2]);
    at::Tensor top_down = at::upsample_nearest2d(prev, {prev.size(2) * 2, prev.size(3) * 2}, 2.0, 2.0);
    prev = lateral + top_down;
    if (f.fuse_type == "avg") prev = prev / 2;
    results[i] = impl->output[i]->forward(prev);
  }
  if (!impl->top.empty()) {
    at::Tensor p = impl->top[0]->forward(res[3]);
    results.push_back(p);
    for (size_t i = 1; i < impl->top.size(); ++i) {
      p = impl->top[i]->forward(at::relu(p));
      results.push_back(p);
    }
  }
  return results;
}

}  // namespace tensormask::model

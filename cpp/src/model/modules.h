// Internal torch::nn modules of the C++ TensorMask model (see tensormask/model.h). Parameter and
// buffer names follow python/tensormask/modeling/ so the exported state_dict loads 1:1.
#pragma once

#include "tensormask/model.h"

#include <torch/nn/module.h>

#include <memory>
#include <string>
#include <vector>

namespace tensormask::model {

// nn.Conv2d: weight (O, I, k, k), optional bias (O,); forward = at::conv2d as F.conv2d.
struct Conv2d : torch::nn::Module {
  Conv2d(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, bool bias);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight, bias;
  int64_t stride, padding;
};

// FrozenBatchNorm2d / BatchNorm2d (eval: running statistics) or GroupNorm.
// Buffers/params: weight, bias (+ running_mean, running_var; + num_batches_tracked for an unfrozen BN).
struct Norm : torch::nn::Module {
  Norm(const std::string& kind, int64_t channels, int64_t gn_groups, bool frozen);
  at::Tensor forward(const at::Tensor& x) const;
  std::string kind;
  int64_t groups;
  at::Tensor weight, bias, running_mean, running_var;
};

// backbone.py ConvNorm: a conv (bias only without norm) with a child "norm".
struct ConvNorm : torch::nn::Module {
  ConvNorm(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding, const BackboneConfig& cfg,
           bool frozen);
  at::Tensor forward(const at::Tensor& x) const;
  at::Tensor weight, bias;
  int64_t stride, padding;
  std::shared_ptr<Norm> norm;
};

// ResNet (basic or bottleneck blocks) + RetinaNet FPN: backbone.bottom_up.*, backbone.fpn_*,
// backbone.top_block.*. forward: (N, 3, H, W) → P_min..P_max, fine to coarse.
struct BackboneWithFPN : torch::nn::Module {
  BackboneWithFPN(const BackboneConfig& b, const FPNConfig& f);
  std::vector<at::Tensor> forward(const at::Tensor& x) const;
  std::vector<int64_t> strides;
  struct Impl;
  std::shared_ptr<Impl> impl;
};

// The head's raw outputs (heads.py HeadOutputs, dense_masks=False).
struct HeadOutputs {
  std::vector<at::Tensor> cls_logits;     // L × (N, A·K, H_k, W_k)
  std::vector<at::Tensor> box_deltas;     // L × (N, A·4, H_k, W_k); empty without a box head
  std::vector<at::Tensor> mask_features;  // L × (N, C, H', W'): input of the mask_pred_XX convs
};

// heads.py TensorMaskHead (+ bipyramid.py mask_fuse) with sparse mask decoding for post-processing.
struct TensorMaskHead : torch::nn::Module {
  TensorMaskHead(const HeadConfig& cfg, int64_t in_channels, int64_t num_levels);
  HeadOutputs forward(const std::vector<at::Tensor>& features) const;
  // Natural mask logits (P, V, V) of windows (P, 3) rows (n, y, x) of one (level, window size):
  // postprocess.py decode_head_windows.
  at::Tensor decode_windows(const at::Tensor& features, int64_t level, int64_t window_idx,
                            const at::Tensor& windows) const;
  HeadConfig cfg;
  int64_t num_levels;
  struct Impl;
  std::shared_ptr<Impl> impl;
};

// postprocess.py postprocess: detections of a batch from the head outputs.
std::vector<Detections> postprocess(const ModelConfig& cfg, const TensorMaskHead& head,
                                    const std::vector<int64_t>& strides, const HeadOutputs& outputs,
                                    const std::vector<std::array<int64_t, 2>>& input_sizes,
                                    const std::vector<std::array<int64_t, 2>>& output_sizes);

}  // namespace tensormask::model

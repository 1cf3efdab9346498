// Class, box and mask heads (python/tensormask/modeling/heads.py) with the tensor bipyramid's fusion
// (bipyramid.py, Fig. 8) and the sparse mask decoding of post-processing (postprocess.py
// decode_head_windows, ops/decode.py).
#include <ATen/ATen.h>

#include <cstdio>

#include "modules.h"
#include "tensormask/ops.h"

namespace tensormask::model {
namespace {

// make_subnet: num_convs × (3×3 conv [+ GroupNorm] + ReLU). Without norm the convs are named "0", "2", ...
// (ReLU at odd indices); with norm "GN" the convs are "0", "3", ... and the norms "1", "4", ....
struct Subnet : torch::nn::Module {
  Subnet(int64_t in, int64_t channels, int64_t num_convs, const HeadConfig& cfg) {
    const bool gn = cfg.norm == "GN";
    const int64_t stride = gn ? 3 : 2;
    for (int64_t i = 0; i < num_convs; ++i, in = channels) {
      convs.push_back(register_module(std::to_string(stride * i), std::make_shared<Conv2d>(in, channels, 3, 1, 1, true)));
      if (gn) norms.push_back(register_module(std::to_string(stride * i + 1), std::make_shared<Norm>("GN", channels, cfg.gn_groups, false)));
    }
  }
  at::Tensor forward(at::Tensor x) const {
    for (size_t i = 0; i < convs.size(); ++i) {
      x = convs[i]->forward(x);
      if (!norms.empty()) x = norms[i]->forward(x);
      x = at::relu(x);
    }
    return x;
  }
  std::vector<std::shared_ptr<Conv2d>> convs;
  std::vector<std::shared_ptr<Norm>> norms;
};

std::string mask_pred_name(int64_t size) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "mask_pred_%02lld", static_cast<long long>(size));
  return buf;
}

// gather_natural_windows: the 1×1 conv evaluated at the window positions → (P, V, U).
at::Tensor gather_natural(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& bias,
                          const at::Tensor& windows, int64_t V, int64_t U) {
  using at::indexing::Slice;
  const at::Tensor f = features.index({windows.select(1, 0), Slice(), windows.select(1, 1), windows.select(1, 2)});
  return at::addmm(bias, f, weight.t()).reshape({-1, V, U});
}

}  // namespace

struct TensorMaskHead::Impl {
  std::shared_ptr<Subnet> cls_subnet, bbox_subnet, mask_subnet;
  std::shared_ptr<Conv2d> cls_score, bbox_pred, mask_fuse;
  std::vector<std::shared_ptr<Conv2d>> mask_pred;  // one per window size
  bool bipyramid = false;
  int64_t lam = 1;
};

TensorMaskHead::TensorMaskHead(const HeadConfig& cfg_, int64_t in_channels, int64_t num_levels_)
    : cfg(cfg_), num_levels(num_levels_), impl(std::make_shared<Impl>()) {
  const int64_t A = static_cast<int64_t>(cfg.window_sizes.size()), K = cfg.num_classes;
  impl->bipyramid = cfg.mask_head == "bipyramid";
  impl->lam = cfg.mask_head.rfind("upscale", 0) == 0 ? cfg.upscale_lambda : 1;
  impl->cls_subnet = register_module("cls_subnet", std::make_shared<Subnet>(in_channels, cfg.cls_channels, cfg.num_convs, cfg));
  const int64_t cls_in = cfg.num_convs > 0 ? cfg.cls_channels : in_channels;
  impl->cls_score = register_module("cls_score", std::make_shared<Conv2d>(cls_in, A * K, 3, 1, 1, true));
  if (cfg.box_head) {
    impl->bbox_subnet = register_module("bbox_subnet", std::make_shared<Subnet>(in_channels, cfg.bbox_channels, cfg.num_convs, cfg));
    const int64_t bbox_in = cfg.num_convs > 0 ? cfg.bbox_channels : in_channels;
    impl->bbox_pred = register_module("bbox_pred", std::make_shared<Conv2d>(bbox_in, A * 4, 3, 1, 1, true));
  }
  impl->mask_subnet = register_module("mask_subnet", std::make_shared<Subnet>(in_channels, cfg.mask_channels, cfg.num_convs, cfg));
  const int64_t mask_in = cfg.num_convs > 0 ? cfg.mask_channels : in_channels;
  for (int64_t v : cfg.window_sizes) {
    const int64_t coarse = v / impl->lam;
    impl->mask_pred.push_back(register_module(mask_pred_name(v), std::make_shared<Conv2d>(mask_in, coarse * coarse, 1, 1, 0, true)));
  }
  if (impl->bipyramid) {
    auto fuse = register_module("mask_fuse", std::make_shared<torch::nn::Module>());
    impl->mask_fuse = fuse->register_module("0", std::make_shared<Conv2d>(mask_in, mask_in, 3, 1, 1, true));
  }
}

HeadOutputs TensorMaskHead::forward(const std::vector<at::Tensor>& features) const {
  if (static_cast<int64_t>(features.size()) != num_levels)
    throw std::runtime_error("TensorMaskHead: expected " + std::to_string(num_levels) + " feature maps, got " +
                             std::to_string(features.size()));
  HeadOutputs out;
  for (const auto& x : features) {
    out.cls_logits.push_back(impl->cls_score->forward(impl->cls_subnet->forward(x)));
    if (impl->bbox_pred) out.box_deltas.push_back(impl->bbox_pred->forward(impl->bbox_subnet->forward(x)));
    out.mask_features.push_back(impl->mask_subnet->forward(x));
  }
  if (impl->bipyramid) {  // Fig. 8: every level upsampled to the finest, plus the finest, then mask_fuse
    const at::Tensor finest = out.mask_features[0];
    const int64_t h0 = finest.size(2), w0 = finest.size(3);
    std::vector<at::Tensor> fused;
    for (size_t k = 0; k < out.mask_features.size(); ++k) {
      at::Tensor up = out.mask_features[k];
      if (k > 0) {
        const int64_t f = int64_t{1} << k;
        if (up.size(2) * f < h0 || up.size(3) * f < w0)
          throw std::runtime_error("tensor bipyramid: level " + std::to_string(k) + " is smaller than the finest level");
        up = at::upsample_bilinear2d(up, {up.size(2) * f, up.size(3) * f}, false, std::nullopt, std::nullopt);
        using at::indexing::Slice;
        up = up.index({Slice(), Slice(), Slice(0, h0), Slice(0, w0)});
      }
      fused.push_back(at::relu(impl->mask_fuse->forward(up + finest)));
    }
    out.mask_features = std::move(fused);
  }
  return out;
}

at::Tensor TensorMaskHead::decode_windows(const at::Tensor& features, int64_t level, int64_t window_idx,
                                          const at::Tensor& windows) const {
  const auto& conv = impl->mask_pred[window_idx];
  const int64_t v = cfg.window_sizes[window_idx];
  const at::Tensor weight = conv->weight.reshape({conv->weight.size(0), conv->weight.size(1)});
  const auto& head = cfg.mask_head;
  const double pad = cfg.mask_pad_val;
  if (impl->bipyramid) return ops::decode_windows(features, weight, conv->bias, windows, v, v, int64_t{1} << level, true, "bilinear", pad);
  if (head == "simple_natural") return gather_natural(features, weight, conv->bias, windows, v, v);
  if (head == "simple_aligned") return ops::decode_windows(features, weight, conv->bias, windows, v, v, 1, true, "bilinear", pad);
  const int64_t lam = impl->lam, coarse = v / lam;
  if (head == "upscale_natural") {
    const at::Tensor c = gather_natural(features, weight, conv->bias, windows, coarse, coarse);
    if (lam == 1) return c;
    return at::upsample_bilinear2d(c.unsqueeze(1), {lam * coarse, lam * coarse}, false, std::nullopt, std::nullopt).squeeze(1);
  }
  return ops::decode_windows(features, weight, conv->bias, windows, coarse, coarse, lam, false, cfg.interpolation, pad);
}

}  // namespace tensormask::model

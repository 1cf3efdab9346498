// Inference post-processing (paper §4.3, §A.4; python/tensormask/modeling/postprocess.py, same steps
// and the same ATen calls): score threshold, top-k, box decoding (Box2BoxTransform) or mask boxes,
// class-aware NMS on the unclipped boxes, the top detections_per_image, boxes scaled to the output size,
// clipped and empty ones dropped (detectron2's order), sparse mask decoding of the kept windows, pasting.
#include <ATen/ATen.h>

#include <cmath>

#include "modules.h"
#include "tensormask/ops.h"

namespace tensormask::model {
namespace {

using at::indexing::None;
using at::indexing::Slice;

// heads.py permute_to_N_HWA_K: (N, A·K, H, W) → (N, H·W·A, K).
at::Tensor permute_to_N_HWA_K(const at::Tensor& x, int64_t k) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  return x.view({n, c / k, k, h, w}).permute({0, 3, 4, 1, 2}).reshape({n, -1, k});
}

// Rows (level, window_size_idx, y, x) of flat window indices (losses.py window_index_table[win]).
at::Tensor window_index(const at::Tensor& win, const std::vector<std::array<int64_t, 2>>& level_sizes, int64_t A) {
  at::Tensor out = at::zeros({win.size(0), 4}, win.options());
  int64_t offset = 0;
  for (size_t k = 0; k < level_sizes.size(); ++k) {
    const int64_t h = level_sizes[k][0], w = level_sizes[k][1], count = h * w * A;
    const at::Tensor in = (win >= offset) & (win < offset + count);
    const at::Tensor r = win - offset;
    out.select(1, 0).masked_fill_(in, static_cast<int64_t>(k));
    out.select(1, 1).copy_(at::where(in, r % A, out.select(1, 1)));
    out.select(1, 2).copy_(at::where(in, r.div(A * w, "floor"), out.select(1, 2)));
    out.select(1, 3).copy_(at::where(in, r.div(A, "floor") % w, out.select(1, 3)));
    offset += count;
  }
  return out;
}

// targets.py window_boxes: XYXY of windows centred at (y·s_k, x·s_k), side window_sizes[a]·s_k.
at::Tensor window_boxes(const at::Tensor& index, const std::vector<int64_t>& strides, const std::vector<int64_t>& sizes) {
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor s = at::tensor(std::vector<float>(strides.begin(), strides.end()), f32).index({index.select(1, 0)});
  const at::Tensor side = at::tensor(std::vector<float>(sizes.begin(), sizes.end()), f32).index({index.select(1, 1)}) * s;
  const at::Tensor cy = index.select(1, 2).to(at::kFloat) * s, cx = index.select(1, 3).to(at::kFloat) * s;
  const at::Tensor half = side / 2;
  return at::stack({cx - half, cy - half, cx + half, cy + half}, 1);
}

// box_coder.py Box2BoxTransform.apply_deltas for (R, 4) deltas.
at::Tensor apply_deltas(const at::Tensor& deltas_in, const at::Tensor& boxes_in, const std::array<double, 4>& w) {
  static const double scale_clamp = std::log(1000.0 / 16);
  const at::Tensor deltas = deltas_in.to(at::kFloat), boxes = boxes_in.to(at::kFloat);
  const at::Tensor widths = boxes.select(1, 2) - boxes.select(1, 0);
  const at::Tensor heights = boxes.select(1, 3) - boxes.select(1, 1);
  const at::Tensor ctr_x = boxes.select(1, 0) + 0.5 * widths;
  const at::Tensor ctr_y = boxes.select(1, 1) + 0.5 * heights;
  const at::Tensor dx = deltas.slice(1, 0, deltas.size(1), 4) / w[0];
  const at::Tensor dy = deltas.slice(1, 1, deltas.size(1), 4) / w[1];
  const at::Tensor dw = at::clamp(deltas.slice(1, 2, deltas.size(1), 4) / w[2], std::nullopt, scale_clamp);
  const at::Tensor dh = at::clamp(deltas.slice(1, 3, deltas.size(1), 4) / w[3], std::nullopt, scale_clamp);
  const at::Tensor px = dx * widths.unsqueeze(1) + ctr_x.unsqueeze(1);
  const at::Tensor py = dy * heights.unsqueeze(1) + ctr_y.unsqueeze(1);
  const at::Tensor pw = at::exp(dw) * widths.unsqueeze(1);
  const at::Tensor ph = at::exp(dh) * heights.unsqueeze(1);
  return at::stack({px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph}, -1).reshape(deltas.sizes());
}

// Sigmoid masks of windows (rows (level, a, y, x)) of one image, in row order.
std::vector<at::Tensor> decode_soft_masks(const TensorMaskHead& head, const std::vector<at::Tensor>& mask_features,
                                          int64_t image, const at::Tensor& index) {
  std::vector<at::Tensor> out(index.size(0));
  for (int64_t k = 0; k < static_cast<int64_t>(mask_features.size()); ++k) {
    for (int64_t a = 0; a < static_cast<int64_t>(head.cfg.window_sizes.size()); ++a) {
      const at::Tensor sel = at::nonzero((index.select(1, 0) == k) & (index.select(1, 1) == a)).squeeze(1);
      if (sel.numel() == 0) continue;
      const at::Tensor rows = at::cat({at::full_like(sel.unsqueeze(1), image), index.index({sel}).slice(1, 2)}, 1);
      const at::Tensor probs = head.decode_windows(mask_features[k], k, a, rows).sigmoid();
      const auto* ids = sel.data_ptr<int64_t>();
      for (int64_t i = 0; i < sel.size(0); ++i) out[ids[i]] = probs[i];
    }
  }
  return out;
}

// postprocess.py _mask_boxes (§A.4): bounding boxes of the window-grid pixels ≥ threshold.
at::Tensor mask_boxes(const std::vector<at::Tensor>& soft, const at::Tensor& wboxes, double threshold) {
  std::vector<at::Tensor> boxes;
  for (size_t i = 0; i < soft.size(); ++i) {
    const at::Tensor& m = soft[i];
    const at::Tensor wb = wboxes[static_cast<int64_t>(i)];
    const at::Tensor sigma = (wb[2] - wb[0]) / m.size(0);
    const auto nz = at::nonzero(m >= threshold);
    if (nz.size(0) == 0) {
      const at::Tensor c = at::stack({(wb[0] + wb[2]) / 2, (wb[1] + wb[3]) / 2});
      boxes.push_back(at::cat({c, c}));
      continue;
    }
    const at::Tensor ys = nz.select(1, 0), xs = nz.select(1, 1);
    boxes.push_back(at::stack({wb[0] + xs.min() * sigma, wb[1] + ys.min() * sigma, wb[0] + (xs.max() + 1) * sigma,
                               wb[1] + (ys.max() + 1) * sigma}));
  }
  return boxes.empty() ? at::zeros({0, 4}, wboxes.options()) : at::stack(boxes);
}

}  // namespace

std::vector<Detections> postprocess(const ModelConfig& mcfg, const TensorMaskHead& head, const std::vector<int64_t>& strides,
                                    const HeadOutputs& outputs, const std::vector<std::array<int64_t, 2>>& input_sizes,
                                    const std::vector<std::array<int64_t, 2>>& output_sizes) {
  const auto& cfg = mcfg.inference;
  const int64_t K = head.cfg.num_classes, A = static_cast<int64_t>(head.cfg.window_sizes.size());
  std::vector<std::array<int64_t, 2>> level_sizes;
  std::vector<at::Tensor> flat_logits, flat_deltas;
  for (const auto& x : outputs.cls_logits) {
    level_sizes.push_back({x.size(2), x.size(3)});
    flat_logits.push_back(permute_to_N_HWA_K(x, K));
  }
  for (const auto& x : outputs.box_deltas) flat_deltas.push_back(permute_to_N_HWA_K(x, 4));
  const at::Tensor logits = at::cat(flat_logits, 1);
  const at::Tensor deltas = flat_deltas.empty() ? at::Tensor() : at::cat(flat_deltas, 1);
  std::vector<Detections> results;
  for (size_t n = 0; n < input_sizes.size(); ++n) {
    const int64_t h_in = input_sizes[n][0], w_in = input_sizes[n][1];
    const int64_t h_out = output_sizes[n][0], w_out = output_sizes[n][1];
    const at::Tensor scores = logits[n].flatten().sigmoid();
    at::Tensor cand = at::nonzero(scores > cfg.score_thresh).squeeze(1);
    // Decreasing score, equal scores in index order (stable), as Python's top_candidates.
    auto [sorted_scores, order] = scores.index({cand}).sort(/*stable=*/true, /*dim=*/-1, /*descending=*/true);
    cand = cand.index({order.slice(0, 0, cfg.topk_candidates)});
    const at::Tensor cand_scores = sorted_scores.slice(0, 0, cfg.topk_candidates);
    const at::Tensor labels = cand % K;
    const at::Tensor win = cand.div(K, "floor");
    at::Tensor index = window_index(win, level_sizes, A);
    at::Tensor wboxes = window_boxes(index, strides, head.cfg.window_sizes);
    std::vector<at::Tensor> soft;
    bool have_soft = false;
    at::Tensor boxes;
    if (cfg.nms_on == "mask_box" || !deltas.defined()) {
      soft = decode_soft_masks(head, outputs.mask_features, static_cast<int64_t>(n), index);
      have_soft = true;
      boxes = mask_boxes(soft, wboxes, cfg.mask_threshold);
    } else {
      boxes = apply_deltas(deltas[n].index({win}).to(at::kFloat), wboxes, mcfg.bbox_reg_weights);
    }
    // postprocess.py select_detections: NMS on the unclipped boxes, the first detections_per_image,
    // scaled to the output size, clipped to it (Boxes.clip), empty boxes dropped (nonempty(0)).
    const double sx = static_cast<double>(w_out) / static_cast<double>(w_in);
    const double sy = static_cast<double>(h_out) / static_cast<double>(h_in);
    const at::Tensor scale = at::tensor({static_cast<float>(sx), static_cast<float>(sy), static_cast<float>(sx),
                                         static_cast<float>(sy)}, boxes.options());
    at::Tensor keep = ops::batched_nms(boxes, cand_scores, labels, cfg.nms_thresh).slice(0, 0, cfg.detections_per_image);
    boxes = boxes.index({keep}) * scale;
    boxes = at::stack({boxes.select(1, 0).clamp(0, w_out), boxes.select(1, 1).clamp(0, h_out),
                       boxes.select(1, 2).clamp(0, w_out), boxes.select(1, 3).clamp(0, h_out)}, 1);
    const at::Tensor nonempty = at::nonzero(((boxes.select(1, 2) - boxes.select(1, 0)) > 0) &
                                            ((boxes.select(1, 3) - boxes.select(1, 1)) > 0)).squeeze(1);
    keep = keep.index({nonempty});
    boxes = boxes.index({nonempty});
    index = index.index({keep});
    wboxes = wboxes.index({keep});
    if (have_soft) {
      std::vector<at::Tensor> kept;
      const auto* ids = keep.data_ptr<int64_t>();
      for (int64_t i = 0; i < keep.size(0); ++i) kept.push_back(soft[ids[i]]);
      soft = std::move(kept);
    } else {
      soft = decode_soft_masks(head, outputs.mask_features, static_cast<int64_t>(n), index);
    }
    wboxes = wboxes * scale.to(wboxes.scalar_type());  // masks are pasted in their (unclipped) windows
    at::Tensor masks = at::zeros({keep.size(0), h_out, w_out}, at::TensorOptions().dtype(at::kBool));
    std::vector<int64_t> sizes;
    for (const auto& m : soft) sizes.push_back(m.size(0));
    std::vector<int64_t> unique(sizes);
    std::sort(unique.begin(), unique.end());
    unique.erase(std::unique(unique.begin(), unique.end()), unique.end());
    for (int64_t size : unique) {
      std::vector<int64_t> sel;
      std::vector<at::Tensor> grids;
      for (size_t i = 0; i < sizes.size(); ++i)
        if (sizes[i] == size) {
          sel.push_back(static_cast<int64_t>(i));
          grids.push_back(soft[i]);
        }
      const at::Tensor sel_t = at::tensor(sel, at::TensorOptions().dtype(at::kLong));
      masks.index_put_({sel_t}, ops::paste_masks(at::stack(grids).to(at::kFloat), wboxes.index({sel_t}).to(at::kFloat),
                                                  h_out, w_out, cfg.mask_threshold));
    }
    results.push_back({boxes, cand_scores.index({keep}), labels.index({keep}), masks});
  }
  return results;
}

}  // namespace tensormask::model

// assign_windows (paper §4.2, footnote 3): schema and CPU kernel of the dense label assignment of the
// sliding windows of one image. The rule itself lives in tensormask/detail/assign.h and is shared
// with the CUDA kernel.
//
// Work: one pass over the window positions for the crowd test (parallel), then, per non-crowd box and
// level, only the handful of positions whose centre lies within center_thresh·s_k of the box centre
// (O(G·L·A) candidates); uniqueness is resolved by sorting the (window, box) matches.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "tensormask/detail/assign.h"
#include "tensormask/ops.h"

namespace tensormask::ops {
namespace {

using detail::AssignRule;
using detail::WindowGrid;

at::Tensor assign_windows_cpu(const at::Tensor& gt_boxes, const at::Tensor& gt_is_crowd, const at::Tensor& crowd_mask,
                              at::IntArrayRef level_sizes, at::IntArrayRef strides, at::IntArrayRef window_sizes,
                              double scale_thresh, double center_thresh, bool deduct_unit, bool uniqueness,
                              bool fallback) {
  constexpr const char* op = "assign_windows";
  detail::check_assign_tensors(gt_boxes, gt_is_crowd, crowd_mask, op);
  const WindowGrid g = detail::make_window_grid(level_sizes, strides, window_sizes, op);
  const AssignRule rule = detail::make_assign_rule(g, scale_thresh, center_thresh, deduct_unit, fallback, op);
  const int64_t R = g.offset[g.num_levels];
  const int64_t A = g.num_sizes;
  at::Tensor matched = at::empty({R}, gt_boxes.options().dtype(at::kLong));
  if (R == 0) return matched;
  int64_t* out = matched.mutable_data_ptr<int64_t>();

  // 1. Every window negative, or ignored when its centre pixel is in a crowd region. Windows of one
  //    position are contiguous (offset_k is a multiple of A): position p holds windows p·A .. p·A+A−1.
  const at::Tensor crowd = detail::bool_as_byte(crowd_mask);
  const uint8_t* crowd_data = crowd.numel() > 0 ? crowd.const_data_ptr<uint8_t>() : nullptr;
  const int64_t Hc = crowd.size(0), Wc = crowd.size(1);
  const int64_t positions = R / A;
  at::parallel_for(0, positions, 8192, [&](int64_t begin, int64_t end) {
    int k = detail::level_of(g, begin * A);
    for (int64_t p = begin; p < end; ++p) {
      while (p * A >= g.offset[k + 1]) ++k;
      bool in_crowd = false;
      if (crowd_data != nullptr) {
        const int64_t local = p - g.offset[k] / A;
        in_crowd = detail::centre_in_crowd(g, k, local / g.width[k], local % g.width[k], crowd_data, Hc, Wc);
      }
      const int64_t label = detail::resolve_label(in_crowd, 0, detail::kNegative, uniqueness);
      for (int64_t a = 0; a < A; ++a) out[p * A + a] = label;
    }
  });

  // 2. (window, box) pairs satisfying containment + size + centrality, boxes in index order.
  const int64_t G = gt_boxes.size(0);
  if (G == 0) return matched;
  const at::Tensor boxes = gt_boxes.to(at::kDouble).contiguous();
  const at::Tensor is_crowd = detail::bool_as_byte(gt_is_crowd);
  const double* box_data = boxes.const_data_ptr<double>();
  const uint8_t* crowd_flags = is_crowd.const_data_ptr<uint8_t>();
  std::vector<std::pair<int64_t, int64_t>> pairs;
  pairs.reserve(static_cast<size_t>(G) * 8 * A);
  for (int64_t b = 0; b < G; ++b) {
    if (crowd_flags[b] != 0) continue;  // crowd boxes never make a window positive
    for (int k = 0; k < g.num_levels; ++k) {
      detail::for_each_match(rule, g, k, box_data + 4 * b, [&](int64_t w) { pairs.emplace_back(w, b); });
    }
  }

  // 3. Uniqueness: group the matches by window (stable: boxes stay in index order within a window).
  std::stable_sort(pairs.begin(), pairs.end(), [](const auto& l, const auto& r) { return l.first < r.first; });
  for (size_t i = 0; i < pairs.size();) {
    size_t j = i + 1;
    while (j < pairs.size() && pairs[j].first == pairs[i].first) ++j;
    const int64_t w = pairs[i].first;
    out[w] = detail::resolve_label(out[w] == detail::kIgnore, static_cast<int64_t>(j - i), pairs[i].second,
                                   uniqueness);
    i = j;
  }
  return matched;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tensormask, m) {
  m.def(
      "assign_windows(Tensor gt_boxes, Tensor gt_is_crowd, Tensor crowd_mask, int[] level_sizes, int[] strides, "
      "int[] window_sizes=[11, 15], float scale_thresh=2., float center_thresh=1., bool deduct_unit=True, "
      "bool uniqueness=True, bool fallback=True) -> Tensor");
}

TORCH_LIBRARY_IMPL(tensormask, CPU, m) { m.impl("assign_windows", &assign_windows_cpu); }

// Labels are not differentiable: skip autograd (the output never requires grad).
TORCH_LIBRARY_IMPL(tensormask, Autograd, m) {
  m.impl("assign_windows", torch::CppFunction::makeFallthrough());
}

}  // namespace tensormask::ops

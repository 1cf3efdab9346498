// assign_windows CUDA kernels (paper §4.2). The rule lives in tensormask/detail/assign.h, shared with
// the CPU kernel (cpp/src/ops/assign_windows.cpp).
//
// Three passes, deterministic whatever the scheduling:
//   1. count/last buffers are zero / -1 (memset);
//   2. one thread per (non-crowd box, level) visits the few candidate windows around the box centre
//      and, for each window satisfying (i)+(ii), atomicAdds the window's count and atomicMaxes the box
//      index (both order-independent; when count == 1 the max is the only box);
//   3. one thread per window: crowd test of its centre pixel and the final label.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "launch.cuh"
#include "tensormask/detail/assign.h"

namespace tensormask::ops {
namespace {

using detail::AssignRule;
using detail::WindowGrid;

// One thread per (box b, level k): the few candidate windows around the box centre (detail::
// for_each_match, the same enumeration as the CPU kernel).
__global__ void match_kernel(const double* __restrict__ boxes, const uint8_t* __restrict__ is_crowd, int64_t G,
                             WindowGrid g, AssignRule rule, int* __restrict__ count, int* __restrict__ last) {
  TENSORMASK_KERNEL_LOOP(i, G * g.num_levels) {
    const int b = static_cast<int>(i / g.num_levels);
    const int k = static_cast<int>(i % g.num_levels);
    if (is_crowd[b] != 0) continue;  // crowd boxes never make a window positive
    detail::for_each_match(rule, g, k, boxes + 4 * static_cast<int64_t>(b), [&](int64_t w) {
      atomicAdd(count + w, 1);
      atomicMax(last + w, b);
    });
  }
}

__global__ void label_kernel(const int* __restrict__ count, const int* __restrict__ last,
                             const uint8_t* __restrict__ crowd, int64_t Hc, int64_t Wc, WindowGrid g, bool uniqueness,
                             int64_t* __restrict__ out, int64_t R) {
  TENSORMASK_KERNEL_LOOP(w, R) {
    bool in_crowd = false;
    if (crowd != nullptr) {
      const int k = detail::level_of(g, w);
      const int64_t pos = (w - g.offset[k]) / g.num_sizes;
      in_crowd = detail::centre_in_crowd(g, k, pos / g.width[k], pos % g.width[k], crowd, Hc, Wc);
    }
    out[w] = detail::resolve_label(in_crowd, count[w], last[w], uniqueness);
  }
}

at::Tensor assign_windows_cuda(const at::Tensor& gt_boxes, const at::Tensor& gt_is_crowd, const at::Tensor& crowd_mask,
                               at::IntArrayRef level_sizes, at::IntArrayRef strides, at::IntArrayRef window_sizes,
                               double scale_thresh, double center_thresh, bool deduct_unit, bool uniqueness,
                               bool fallback) {
  constexpr const char* op = "assign_windows";
  detail::check_assign_tensors(gt_boxes, gt_is_crowd, crowd_mask, op);
  const WindowGrid g = detail::make_window_grid(level_sizes, strides, window_sizes, op);
  const AssignRule rule = detail::make_assign_rule(g, scale_thresh, center_thresh, deduct_unit, fallback, op);
  const int64_t G = gt_boxes.size(0);
  TORCH_CHECK_VALUE(G <= std::numeric_limits<int>::max(), op, ": too many boxes (", G, ")");
  const int64_t R = g.offset[g.num_levels];
  const c10::cuda::CUDAGuard guard(gt_boxes.device());
  at::Tensor matched = at::empty({R}, gt_boxes.options().dtype(at::kLong));
  if (R == 0) return matched;
  const auto stream = at::cuda::getCurrentCUDAStream();

  const at::Tensor count = at::zeros({R}, gt_boxes.options().dtype(at::kInt));
  const at::Tensor last = at::full({R}, -1, gt_boxes.options().dtype(at::kInt));
  if (G > 0) {
    const at::Tensor boxes = gt_boxes.to(at::kDouble).contiguous();
    const at::Tensor is_crowd = detail::bool_as_byte(gt_is_crowd);
    const int64_t pairs = G * g.num_levels;
    match_kernel<<<tensormask::cuda::grid_for(pairs), tensormask::cuda::kThreads, 0, stream>>>(
        boxes.const_data_ptr<double>(), is_crowd.const_data_ptr<uint8_t>(), G, g, rule, count.mutable_data_ptr<int>(),
        last.mutable_data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  const at::Tensor crowd = detail::bool_as_byte(crowd_mask);
  const uint8_t* crowd_data = crowd.numel() > 0 ? crowd.const_data_ptr<uint8_t>() : nullptr;
  label_kernel<<<tensormask::cuda::grid_for(R), tensormask::cuda::kThreads, 0, stream>>>(
      count.const_data_ptr<int>(), last.const_data_ptr<int>(), crowd_data, crowd.size(0), crowd.size(1), g, uniqueness,
      matched.mutable_data_ptr<int64_t>(), R);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return matched;
}

}  // namespace

TORCH_LIBRARY_IMPL(tensormask, CUDA, m) { m.impl("assign_windows", &assign_windows_cuda); }

}  // namespace tensormask::ops

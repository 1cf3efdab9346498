// Class-aware box NMS (paper §4.3): the IoU test and the argument checks, shared by the CPU kernel
// (cpp/src/ops/nms.cpp) and the CUDA kernel (cuda/nms.cu) so that both keep exactly the same boxes.
//
// Boxes are XYXY in continuous image coordinates, area (x2 − x1)·(y2 − y1) as torchvision. The IoU
// is evaluated in float64 with explicitly rounded operations (no FMA contraction on the device), so
// the CPU and CUDA kernels and a float64 reference agree bit for bit on float32/float64 inputs.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

#include "tensormask/detail/exact_math.h"

namespace tensormask::detail::nms {

// Boxes per block of the CUDA suppression mask: one bit per box in a 64-bit word.
constexpr int kBlockBoxes = 64;

C10_HOST_DEVICE inline double max_d(double a, double b) { return a > b ? a : b; }
C10_HOST_DEVICE inline double min_d(double a, double b) { return a < b ? a : b; }

// IoU of boxes a and b (x1, y1, x2, y2):
//   inter = max(0, min(ax2, bx2) − max(ax1, bx1)) · max(0, min(ay2, by2) − max(ay1, by1))
//   union = area(a) + area(b) − inter,  area = (x2 − x1)·(y2 − y1)
//   IoU   = inter / union, or 0 when union ≤ 0 (e.g. two zero-area boxes).
C10_HOST_DEVICE inline double box_iou(const double* a, const double* b) {
  const double w = max_d(0.0, sub_rn(min_d(a[2], b[2]), max_d(a[0], b[0])));
  const double h = max_d(0.0, sub_rn(min_d(a[3], b[3]), max_d(a[1], b[1])));
  const double inter = mul_rn(w, h);
  const double area_a = mul_rn(sub_rn(a[2], a[0]), sub_rn(a[3], a[1]));
  const double area_b = mul_rn(sub_rn(b[2], b[0]), sub_rn(b[3], b[1]));
  const double uni = sub_rn(add_rn(area_a, area_b), inter);
  return uni > 0.0 ? inter / uni : 0.0;
}

// Whether a kept box a suppresses box b: same class and IoU > threshold.
C10_HOST_DEVICE inline bool suppresses(const double* a, int64_t class_a, const double* b, int64_t class_b,
                                       double iou_threshold) {
  return class_a == class_b && box_iou(a, b) > iou_threshold;
}

inline void check_same_device(const at::Tensor& t, const char* arg, const at::Tensor& ref, const char* ref_arg,
                              const char* op) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": `", arg, "` is on ", t.device(), " but `", ref_arg, "` is on ",
                    ref.device(), "; all tensors must be on the same device");
}

// Validates the arguments of batched_nms.
inline void check_nms_args(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold, const char* op) {
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4, op,
                    ": `boxes` must be a (R, 4) tensor of XYXY boxes, got shape ", boxes.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(boxes.scalar_type()), op, ": `boxes` must be a floating point tensor, got ",
                   boxes.scalar_type());
  const int64_t R = boxes.size(0);
  TORCH_CHECK_VALUE(scores.dim() == 1 && scores.size(0) == R, op, ": `scores` must have shape (R,) with R = ", R,
                    " (the number of boxes), got shape ", scores.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(scores.scalar_type()), op, ": `scores` must be a floating point tensor, got ",
                   scores.scalar_type());
  TORCH_CHECK_VALUE(idxs.dim() == 1 && idxs.size(0) == R, op, ": `idxs` must have shape (R,) with R = ", R,
                    " (the number of boxes), got shape ", idxs.sizes());
  TORCH_CHECK_TYPE(idxs.scalar_type() == at::kLong, op, ": `idxs` must be an int64 tensor of class ids, got ",
                   idxs.scalar_type());
  TORCH_CHECK_VALUE(!std::isnan(iou_threshold), op, ": `iou_threshold` must be a number, got nan");
  check_same_device(scores, "scores", boxes, "boxes", op);
  check_same_device(idxs, "idxs", boxes, "boxes", op);
}

}  // namespace tensormask::detail::nms

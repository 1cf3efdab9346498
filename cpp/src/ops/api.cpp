// C++ API: thin calls into the dispatcher (see tensormask/ops.h).
#include "tensormask/ops.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace tensormask::ops {
namespace {

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using ShiftSig = at::Tensor(const at::Tensor&, int64_t, double);
using UpSig = at::Tensor(const at::Tensor&, int64_t, c10::string_view, double);
using UpBackwardSig = at::Tensor(const at::Tensor&, int64_t, c10::string_view, c10::SymInt, c10::SymInt,
                                 c10::SymInt, c10::SymInt);

}  // namespace

at::Tensor align2nat(const at::Tensor& x, int64_t alpha, double pad_val) {
  static const auto handle = op<ShiftSig>("tensormask::align2nat");
  return handle.call(x, alpha, pad_val);
}

at::Tensor nat2align(const at::Tensor& x, int64_t alpha, double pad_val) {
  static const auto handle = op<ShiftSig>("tensormask::nat2align");
  return handle.call(x, alpha, pad_val);
}

at::Tensor up_align2nat(const at::Tensor& x, int64_t lam, std::string_view mode, double pad_val) {
  static const auto handle = op<UpSig>("tensormask::up_align2nat");
  return handle.call(x, lam, c10::string_view(mode.data(), mode.size()), pad_val);
}

at::Tensor swap_align2nat(const at::Tensor& x, int64_t lam, std::string_view mode, double pad_val) {
  static const auto handle = op<UpSig>("tensormask::swap_align2nat");
  return handle.call(x, lam, c10::string_view(mode.data(), mode.size()), pad_val);
}

at::Tensor up_align2nat_backward(const at::Tensor& grad, int64_t lam, std::string_view mode, c10::SymInt V,
                                 c10::SymInt U, c10::SymInt H, c10::SymInt W) {
  static const auto handle = op<UpBackwardSig>("tensormask::up_align2nat_backward");
  return handle.call(grad, lam, c10::string_view(mode.data(), mode.size()), std::move(V), std::move(U),
                     std::move(H), std::move(W));
}

at::Tensor swap_align2nat_backward(const at::Tensor& grad, int64_t lam, std::string_view mode, c10::SymInt V,
                                   c10::SymInt U, c10::SymInt H, c10::SymInt W) {
  static const auto handle = op<UpBackwardSig>("tensormask::swap_align2nat_backward");
  return handle.call(grad, lam, c10::string_view(mode.data(), mode.size()), std::move(V), std::move(U),
                     std::move(H), std::move(W));
}

at::Tensor swap_align2nat_windows(const at::Tensor& x, const at::Tensor& windows, int64_t lam, bool subsample,
                                  std::string_view mode, double pad_val) {
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool, c10::string_view, double);
  static const auto handle = op<Sig>("tensormask::swap_align2nat_windows");
  return handle.call(x, windows, lam, subsample, c10::string_view(mode.data(), mode.size()), pad_val);
}

at::Tensor swap_align2nat_windows_backward(const at::Tensor& grad, const at::Tensor& windows, int64_t lam,
                                           bool subsample, std::string_view mode, c10::SymInt N, c10::SymInt V,
                                           c10::SymInt U, c10::SymInt H, c10::SymInt W) {
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool, c10::string_view, c10::SymInt,
                         c10::SymInt, c10::SymInt, c10::SymInt, c10::SymInt);
  static const auto handle = op<Sig>("tensormask::swap_align2nat_windows_backward");
  return handle.call(grad, windows, lam, subsample, c10::string_view(mode.data(), mode.size()), std::move(N),
                     std::move(V), std::move(U), std::move(H), std::move(W));
}

bool compiled_with_cuda() {
#ifdef TENSORMASK_WITH_CUDA
  return true;
#else
  return false;
#endif
}

at::Tensor assign_windows(const at::Tensor& gt_boxes, const at::Tensor& gt_is_crowd, const at::Tensor& crowd_mask,
                          c10::IntArrayRef level_sizes, c10::IntArrayRef strides, c10::IntArrayRef window_sizes,
                          double scale_thresh, double center_thresh, bool deduct_unit, bool uniqueness,
                          bool fallback) {
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::IntArrayRef, c10::IntArrayRef,
                         c10::IntArrayRef, double, double, bool, bool, bool);
  static const auto handle = op<Sig>("tensormask::assign_windows");
  return handle.call(gt_boxes, gt_is_crowd, crowd_mask, level_sizes, strides, window_sizes, scale_thresh,
                     center_thresh, deduct_unit, uniqueness, fallback);
}

at::Tensor crop_windows(const at::Tensor& masks, const at::Tensor& gt_index, const at::Tensor& centers,
                        double sigma_vu, int64_t V, int64_t U) {
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, int64_t, int64_t);
  static const auto handle = op<Sig>("tensormask::crop_windows");
  return handle.call(masks, gt_index, centers, sigma_vu, V, U);
}

at::Tensor decode_windows(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& bias,
                          const at::Tensor& windows, int64_t V, int64_t U, int64_t lam, bool subsample,
                          std::string_view mode, double pad_val) {
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t,
                         int64_t, bool, c10::string_view, double);
  static const auto handle = op<Sig>("tensormask::decode_windows");
  return handle.call(features, weight, bias, windows, V, U, lam, subsample, c10::string_view(mode.data(), mode.size()),
                     pad_val);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> decode_windows_backward(const at::Tensor& grad, const at::Tensor& features,
                                                                      const at::Tensor& weight, const at::Tensor& windows,
                                                                      int64_t V, int64_t U, int64_t lam, bool subsample,
                                                                      std::string_view mode) {
  using Sig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                              const at::Tensor&, int64_t, int64_t, int64_t, bool,
                                                              c10::string_view);
  static const auto handle = op<Sig>("tensormask::decode_windows_backward");
  return handle.call(grad, features, weight, windows, V, U, lam, subsample, c10::string_view(mode.data(), mode.size()));
}

at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold) {
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double);
  static const auto handle = op<Sig>("tensormask::batched_nms");
  return handle.call(boxes, scores, idxs, iou_threshold);
}

at::Tensor paste_masks(const at::Tensor& masks, const at::Tensor& boxes, int64_t image_h, int64_t image_w,
                       double threshold) {
  using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt, c10::SymInt, double);
  static const auto handle = op<Sig>("tensormask::paste_masks");
  return handle.call(masks, boxes, c10::SymInt(image_h), c10::SymInt(image_w), threshold);
}

}  // namespace tensormask::ops

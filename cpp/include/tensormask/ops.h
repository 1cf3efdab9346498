// Public C++ API of the TensorMask ops. Each function calls the op registered in the PyTorch
// dispatcher (namespace `tensormask`), so CPU/CUDA kernels and autograd are picked exactly as from
// Python's torch.ops.tensormask.*.
//
// 4D tensors are stored batched as (N, V, U, H, W): (V, U) is the window sub-tensor with unit σ_VU,
// (H, W) the spatial sub-tensor with unit σ_HW (paper §3.1).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include <string_view>
#include <tuple>

namespace tensormask::ops {

// Natural from aligned representation (paper eq. 1), α = σ_VU/σ_HW a positive integer:
//   out(n,v,u,y,x) = x(n,v,u, y + α(v−⌊V/2⌋), x + α(u−⌊U/2⌋)),  pad_val where that is outside.
// x: (N, V, U, H, W) float → same shape.
at::Tensor align2nat(const at::Tensor& x, int64_t alpha = 1, double pad_val = 0.0);

// Aligned from natural representation (inverse relation of align2nat):
//   out(n,v,u,y,x) = x(n,v,u, y − α(v−⌊V/2⌋), x − α(u−⌊U/2⌋)).
at::Tensor nat2align(const at::Tensor& x, int64_t alpha = 1, double pad_val = 0.0);

// Upsample the aligned (V̂, Û) sub-tensor by λ ("bilinear" or "nearest") then align2nat (Fig. 4).
// x: (N, V̂, Û, H, W) with σ_VU = λσ_HW → (N, λV̂, λÛ, H, W) with σ_VU = σ_HW.
at::Tensor up_align2nat(const at::Tensor& x, int64_t lam, std::string_view mode = "bilinear",
                        double pad_val = -6.0);

// up_align2nat followed by subsampling (H, W) by λ, fused (Fig. 5): the units of the VU and HW
// domains are swapped. x: (N, V̂, Û, H, W) → (N, λV̂, λÛ, ⌈H/λ⌉, ⌈W/λ⌉).
at::Tensor swap_align2nat(const at::Tensor& x, int64_t lam, std::string_view mode = "bilinear",
                          double pad_val = -6.0);

// Gradients of up_align2nat / swap_align2nat w.r.t. x, from the output gradient `grad`.
// The input window size (V̂, Û) and spatial size (H, W) are given because they are not recoverable
// from the output shape (⌈H/λ⌉).
at::Tensor up_align2nat_backward(const at::Tensor& grad, int64_t lam, std::string_view mode, c10::SymInt V,
                                 c10::SymInt U, c10::SymInt H, c10::SymInt W);
at::Tensor swap_align2nat_backward(const at::Tensor& grad, int64_t lam, std::string_view mode, c10::SymInt V,
                                   c10::SymInt U, c10::SymInt H, c10::SymInt W);

// The natural masks of a list of windows of swap_align2nat (subsample = true) or up_align2nat
// (subsample = false): out[p] = op(x, lam, mode, pad_val)[n, :, :, y, x] for windows[p] = (n, y, x),
// differentiable w.r.t. x without the dense output (training computes mask logits at positive
// windows only). x: (N, V̂, Û, H, W), windows: (P, 3) int64 → (P, λV̂, λÛ).
at::Tensor swap_align2nat_windows(const at::Tensor& x, const at::Tensor& windows, int64_t lam, bool subsample = true,
                                  std::string_view mode = "bilinear", double pad_val = -6.0);
at::Tensor swap_align2nat_windows_backward(const at::Tensor& grad, const at::Tensor& windows, int64_t lam,
                                           bool subsample, std::string_view mode, c10::SymInt N, c10::SymInt V,
                                           c10::SymInt U, c10::SymInt H, c10::SymInt W);

// True when libtensormask was built with its CUDA kernels.
bool compiled_with_cuda();

// ---- Label assignment (paper §4.2) -----------------------------------------------------------------
// Window labels of assign_windows: a GT index ≥ 0 (positive), or one of these.
inline constexpr int64_t kWindowNegative = -1;
inline constexpr int64_t kWindowIgnore = -2;

// Dense label assignment of the sliding windows of one image (DeepMask-style rule, §4.2, footnote 3).
// Level k (stride strides[k], feature map level_sizes[2k] × level_sizes[2k+1]) has a window of side
// window_sizes[a]·s_k centred at image pixel (y·s_k, x·s_k) for every (y, x, a); windows are numbered
// level after level, (y, x, a) row-major inside a level. A window is positive for non-crowd box m
// when (i) it contains m's tight box and max(m_w, m_h)·scale_thresh ≥ side − (deduct_unit ? s_k : 0)
// (with the fallback, max(m_w, m_h)·scale_thresh is raised to min(window_sizes)·s_0 − (deduct_unit ?
// s_0 : 0)), (ii) |centre(m) − centre|₂ ≤ center_thresh·s_k, (iii) no other box satisfies (i)+(ii).
// Windows with several such boxes are negative (uniqueness) or ignored (!uniqueness); windows whose
// centre pixel lies in crowd_mask are ignored unless positive.
// gt_boxes (G, 4) float XYXY image pixels (x2/y2 exclusive edges), gt_is_crowd (G,) bool,
// crowd_mask (Himg, Wimg) bool/uint8 or 0×0 → matched (R,) int64: GT index, kWindowNegative or
// kWindowIgnore.
at::Tensor assign_windows(const at::Tensor& gt_boxes, const at::Tensor& gt_is_crowd, const at::Tensor& crowd_mask,
                          c10::IntArrayRef level_sizes, c10::IntArrayRef strides,
                          c10::IntArrayRef window_sizes = {11, 15}, double scale_thresh = 2.0,
                          double center_thresh = 1.0, bool deduct_unit = true, bool uniqueness = true,
                          bool fallback = true);

// Binary mask targets of P positive windows: for window p (mask masks[gt_index[p]], centre
// centers[p] = (cy, cx) image pixels) and window pixel (v, u) of unit sigma_vu image pixels, one
// bilinear sample of the mask at (cy − V·σ/2 + (v + ½)σ, cx − U·σ/2 + (u + ½)σ) (pixel i's centre at
// i + ½; zero outside the image), thresholded at 0.5.
// masks (G, Himg, Wimg) bool/uint8/float, gt_index (P,) int64, centers (P, 2) float → (P, V, U) float32.
at::Tensor crop_windows(const at::Tensor& masks, const at::Tensor& gt_index, const at::Tensor& centers,
                        double sigma_vu, int64_t V, int64_t U);

// ---- Sparse mask decoding (inference and the training mask loss, paper §3.5–3.6, §4.3) -----------------------------------------
// Natural masks of P windows computed straight from the mask features, without the dense conv output:
//   out[p] = op(conv1x1(features, weight, bias).reshape(N, V, U, H, W), lam, mode, pad_val)[n, :, :, y, x]
// for windows[p] = (n, y, x) in the op's output grid, op = swap_align2nat (subsample) or up_align2nat.
// The 1×1 conv is evaluated only at the (channel, position) pairs the windows read. Differentiable in
// features, weight and bias (training's mask loss at the positive windows); once, not twice.
// features (N, C, H, W) float, weight (V·U, C), bias (V·U,) (features' dtype), windows (P, 3) int64
// → (P, λV, λU). Work per window ≈ 4·λV·λU·C MACs (see tensormask/detail/decode.h).
at::Tensor decode_windows(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& bias,
                          const at::Tensor& windows, int64_t V, int64_t U, int64_t lam, bool subsample = true,
                          std::string_view mode = "bilinear", double pad_val = -6.0);

// Gradient of decode_windows for grad (P, λV, λU) of its output → (grad_features (N, C, H, W),
// grad_weight (V·U, C), grad_bias (V·U,)), ≈ 2× the forward's work; padding has no gradient.
std::tuple<at::Tensor, at::Tensor, at::Tensor> decode_windows_backward(const at::Tensor& grad, const at::Tensor& features,
                                                                      const at::Tensor& weight, const at::Tensor& windows,
                                                                      int64_t V, int64_t U, int64_t lam, bool subsample,
                                                                      std::string_view mode);

// ---- Post-processing (paper §4.3) ------------------------------------------------------------------
// Class-aware greedy NMS: boxes (R, 4) float XYXY image pixels, scores (R,) float, idxs (R,) int64
// class ids → keep (K,) int64 indices of the kept boxes by decreasing score (stable: equal scores keep
// the lower index first). A box is suppressed by a kept, higher-ranked box of the same class with
// IoU > iou_threshold; areas are (x2 − x1)·(y2 − y1), and the IoU of boxes whose union is ≤ 0 is 0.
at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                       double iou_threshold);

// Paste soft masks into the image and threshold them, as Mask R-CNN: masks (P, M, M) float
// probabilities, each grid covering its box boxes[p] = (x1, y1, x2, y2) image pixels → (P, image_h,
// image_w) bool. Pixel (i, j) is True when its centre (j + ½, i + ½) lies in [x1, x2) × [y1, y2) and
// the bilinear sample of the grid at ((j + ½ − x1)/(x2 − x1)·M − ½, (i + ½ − y1)/(y2 − y1)·M − ½)
// (zero outside the grid) is ≥ threshold. Non-square (P, Mh, Mw) grids work alike.
at::Tensor paste_masks(const at::Tensor& masks, const at::Tensor& boxes, int64_t image_h, int64_t image_w,
                       double threshold = 0.5);

}  // namespace tensormask::ops

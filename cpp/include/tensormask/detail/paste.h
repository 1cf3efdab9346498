// Mask pasting (paper §4.3, "the same method as Mask R-CNN"): the per-pixel sampling math and the
// argument checks, shared by the CPU kernel (cpp/src/ops/paste_masks.cpp) and the CUDA kernel
// (cuda/paste_masks.cu) so that both produce exactly the same bits.
//
// Mask p is an Mh×Mw grid of probabilities covering its box [x1, x2) × [y1, y2) (image pixels). Image
// pixel (i, j) has its centre at (j + ½, i + ½); it is inside the box when x1 ≤ j + ½ < x2 and
// y1 ≤ i + ½ < y2, and then takes the bilinear sample of the grid at grid coordinates
//   gx = (j + ½ − x1)/(x2 − x1)·Mw − ½,   gy = (i + ½ − y1)/(y2 − y1)·Mh − ½
// (grid cell k centred at k + ½, as grid_sample with align_corners=False), grid values outside the
// grid being 0 (zero padding), thresholded with value ≥ threshold. Pixels outside the box are False.
//
// Everything is evaluated in float64 with explicitly rounded operations (no FMA contraction on the
// device). The interpolation is evaluated rows first:
//   r(k)  = (1 − fy)·m(y0, k) + fy·m(y0 + 1, k)
//   value = (1 − fx)·r(x0)    + fx·r(x0 + 1)
// with y0 = ⌊gy⌋, fy = gy − y0 (same for x), which lets the CPU kernel hoist r out of the row loop.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

#include "tensormask/detail/exact_math.h"

namespace tensormask::detail::paste {

// Half-open range [lo, hi) of pixel indices.
struct PixelRange {
  int64_t lo, hi;
};

// Smallest pixel index i ≥ 0 with i + ½ ≥ edge, clamped to [0, n].
C10_HOST_DEVICE inline int64_t first_pixel_from(double edge, int64_t n) {
  const double t = ::ceil(edge - 0.5);
  if (t <= 0.0) return 0;
  if (t >= static_cast<double>(n)) return n;
  return static_cast<int64_t>(t);
}

// Pixels i ∈ [0, n) of one axis whose centre i + ½ lies in [e1, e2). Empty for e2 ≤ e1 or NaN.
C10_HOST_DEVICE inline PixelRange pixel_range(double e1, double e2, int64_t n) {
  if (!(e2 > e1)) return {0, 0};
  return {first_pixel_from(e1, n), first_pixel_from(e2, n)};
}

// Two linear-interpolation taps i0, i0 + 1 with weights w0 = 1 − f, w1 = f.
struct Tap {
  int64_t i0;
  double w0, w1;
};

// Taps of image pixel i on an axis where the box spans [e1, e2) and the grid has m cells:
// g = (i + ½ − e1)/(e2 − e1)·m − ½.
C10_HOST_DEVICE inline Tap axis_tap(int64_t i, double e1, double e2, int64_t m) {
  const double t = sub_rn(static_cast<double>(i) + 0.5, e1) / sub_rn(e2, e1);
  const double g = sub_rn(mul_rn(t, static_cast<double>(m)), 0.5);
  const double f = ::floor(g);
  const double frac = sub_rn(g, f);
  return {static_cast<int64_t>(f), sub_rn(1.0, frac), frac};
}

// r(k): column k (0 ≤ k < Mw) of the grid interpolated between rows ty.i0 and ty.i0 + 1 (0 outside).
template <typename scalar_t>
C10_HOST_DEVICE inline double interp_rows(const scalar_t* mask, int64_t Mh, int64_t Mw, const Tap& ty, int64_t k) {
  const double a = (ty.i0 >= 0 && ty.i0 < Mh) ? static_cast<double>(mask[ty.i0 * Mw + k]) : 0.0;
  const double b = (ty.i0 + 1 >= 0 && ty.i0 + 1 < Mh) ? static_cast<double>(mask[(ty.i0 + 1) * Mw + k]) : 0.0;
  return add_rn(mul_rn(ty.w0, a), mul_rn(ty.w1, b));
}

// Combination of the two row-interpolated columns.
C10_HOST_DEVICE inline double interp_cols(const Tap& tx, double left, double right) {
  return add_rn(mul_rn(tx.w0, left), mul_rn(tx.w1, right));
}

// The bilinear sample of an Mh×Mw grid (row-major) at taps (ty, tx), zero padding.
template <typename scalar_t>
C10_HOST_DEVICE inline double bilinear(const scalar_t* mask, int64_t Mh, int64_t Mw, const Tap& ty, const Tap& tx) {
  const double left = (tx.i0 >= 0 && tx.i0 < Mw) ? interp_rows(mask, Mh, Mw, ty, tx.i0) : 0.0;
  const double right = (tx.i0 + 1 >= 0 && tx.i0 + 1 < Mw) ? interp_rows(mask, Mh, Mw, ty, tx.i0 + 1) : 0.0;
  return interp_cols(tx, left, right);
}

inline void check_same_device(const at::Tensor& t, const char* arg, const at::Tensor& ref, const char* ref_arg,
                              const char* op) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": `", arg, "` is on ", t.device(), " but `", ref_arg, "` is on ",
                    ref.device(), "; all tensors must be on the same device");
}

// Validates the arguments of paste_masks.
inline void check_paste_args(const at::Tensor& masks, const at::Tensor& boxes, int64_t image_h, int64_t image_w,
                             double threshold, const char* op) {
  TORCH_CHECK_VALUE(masks.dim() == 3, op, ": `masks` must be a 3D (P, M, M) tensor, got shape ", masks.sizes());
  TORCH_CHECK_VALUE(masks.size(1) >= 1 && masks.size(2) >= 1, op,
                    ": `masks` must have a mask resolution of at least 1×1, got shape ", masks.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(masks.scalar_type()), op, ": `masks` must be a floating point tensor, got ",
                   masks.scalar_type());
  const int64_t P = masks.size(0);
  TORCH_CHECK_VALUE(boxes.dim() == 2 && boxes.size(1) == 4 && boxes.size(0) == P, op,
                    ": `boxes` must have shape (P, 4) with P = ", P, " (the number of masks), got shape ",
                    boxes.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(boxes.scalar_type()), op, ": `boxes` must be a floating point tensor, got ",
                   boxes.scalar_type());
  TORCH_CHECK_VALUE(image_h >= 0, op, ": `image_h` must be non-negative, got ", image_h);
  TORCH_CHECK_VALUE(image_w >= 0, op, ": `image_w` must be non-negative, got ", image_w);
  TORCH_CHECK_VALUE(!std::isnan(threshold), op, ": `threshold` must be a number, got nan");
  check_same_device(boxes, "boxes", masks, "masks", op);
}

}  // namespace tensormask::detail::paste

// Argument validation and output-shape rules shared by the CPU and CUDA kernels of the 4D tensor ops.
// Bad values raise c10::ValueError (Python ValueError), bad dtypes c10::TypeError, each naming the
// argument.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include "tensormask/detail/sampling.h"

namespace tensormask::detail {

inline void check_4d_tensor(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK_VALUE(t.dim() == 5, op, ": `", arg, "` must be a 5D tensor (N, V, U, H, W), got ", t.dim(),
                    "D with shape ", t.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": `", arg,
                   "` must be a floating point tensor, got ", t.scalar_type());
}

inline void check_positive(int64_t value, const char* op, const char* arg) {
  TORCH_CHECK_VALUE(value >= 1, op, ": `", arg, "` must be a positive integer, got ", value);
}

// Parses the interpolation mode of up_align2nat / swap_align2nat; returns true for "nearest".
inline bool parse_nearest(c10::string_view mode, const char* op) {
  if (mode == "bilinear") return false;
  if (mode == "nearest") return true;
  TORCH_CHECK_VALUE(false, op, ": `mode` must be \"bilinear\" or \"nearest\", got \"", std::string(mode), "\"");
  return false;
}

// Geometry of swap_align2nat (subsample = true, stride λ) or up_align2nat (stride 1) for an input of
// window size (Vi, Ui) and spatial size (Hi, Wi).
inline SwapGeometry make_geometry(int64_t Vi, int64_t Ui, int64_t Hi, int64_t Wi, int64_t lam, bool nearest,
                                  bool subsample) {
  SwapGeometry g;
  g.Vi = Vi;
  g.Ui = Ui;
  g.Hi = Hi;
  g.Wi = Wi;
  g.lam = lam;
  g.stride = subsample ? lam : 1;
  g.nearest = nearest;
  g.Vo = lam * Vi;
  g.Uo = lam * Ui;
  g.Ho = subsample ? (Hi + lam - 1) / lam : Hi;
  g.Wo = subsample ? (Wi + lam - 1) / lam : Wi;
  return g;
}

// Validates the arguments of the backward ops: `grad` must have the forward output's shape.
inline SwapGeometry check_backward(const at::Tensor& grad, int64_t lam, c10::string_view mode, int64_t V,
                                   int64_t U, int64_t H, int64_t W, bool subsample, const char* op) {
  check_4d_tensor(grad, op, "grad");
  check_positive(lam, op, "lam");
  TORCH_CHECK_VALUE(V >= 0 && U >= 0 && H >= 0 && W >= 0, op, ": input sizes must be non-negative");
  const SwapGeometry g = make_geometry(V, U, H, W, lam, parse_nearest(mode, op), subsample);
  TORCH_CHECK_VALUE(grad.size(1) == g.Vo && grad.size(2) == g.Uo && grad.size(3) == g.Ho && grad.size(4) == g.Wo,
                    op, ": `grad` has shape ", grad.sizes(), " but the forward output is (N, ", g.Vo, ", ", g.Uo,
                    ", ", g.Ho, ", ", g.Wo, ")");
  return g;
}

// Validates a (P, 3) int64 list of windows (n, y, x) of an output grid N × Ho × Wo on `device`;
// the range check reads the data (one device synchronisation on CUDA).
inline void check_window_rows(const at::Tensor& windows, int64_t N, int64_t Ho, int64_t Wo, const at::Device& device,
                              const char* op) {
  TORCH_CHECK_VALUE(windows.dim() == 2 && windows.size(1) == 3, op,
                    ": `windows` must be a (P, 3) tensor of rows (n, y, x), got shape ", windows.sizes());
  TORCH_CHECK_TYPE(windows.scalar_type() == at::kLong, op, ": `windows` must be int64, got ", windows.scalar_type());
  TORCH_CHECK_VALUE(windows.device() == device, op, ": `windows` is on ", windows.device(), " but the input is on ",
                    device);
  if (windows.size(0) == 0) return;
  const at::Tensor w = windows.cpu();
  const auto a = w.accessor<int64_t, 2>();
  for (int64_t p = 0; p < w.size(0); ++p) {
    TORCH_CHECK_VALUE(a[p][0] >= 0 && a[p][0] < N && a[p][1] >= 0 && a[p][1] < Ho && a[p][2] >= 0 && a[p][2] < Wo, op,
                      ": `windows` row ", p, " = (", a[p][0], ", ", a[p][1], ", ", a[p][2],
                      ") is out of range: need 0 <= n < ", N, ", 0 <= y < ", Ho, ", 0 <= x < ", Wo,
                      " (the output grid)");
  }
}

// Validates the arguments of swap_align2nat_windows; returns the geometry of the full op.
inline SwapGeometry check_windows_forward(const at::Tensor& x, const at::Tensor& windows, int64_t lam, bool subsample,
                                          c10::string_view mode, const char* op) {
  check_4d_tensor(x, op, "x");
  check_positive(lam, op, "lam");
  const SwapGeometry g = make_geometry(x.size(1), x.size(2), x.size(3), x.size(4), lam, parse_nearest(mode, op), subsample);
  check_window_rows(windows, x.size(0), g.Ho, g.Wo, x.device(), op);
  return g;
}

// Validates the arguments of swap_align2nat_windows_backward (`grad` is (P, λV̂, λÛ)).
inline SwapGeometry check_windows_backward(const at::Tensor& grad, const at::Tensor& windows, int64_t lam,
                                           bool subsample, c10::string_view mode, int64_t N, int64_t V, int64_t U,
                                           int64_t H, int64_t W, const char* op) {
  check_positive(lam, op, "lam");
  TORCH_CHECK_TYPE(at::isFloatingType(grad.scalar_type()), op, ": `grad` must be a floating point tensor, got ",
                   grad.scalar_type());
  const SwapGeometry g = make_geometry(V, U, H, W, lam, parse_nearest(mode, op), subsample);
  TORCH_CHECK_VALUE(grad.dim() == 3 && grad.size(1) == g.Vo && grad.size(2) == g.Uo, op, ": `grad` must be (P, ", g.Vo,
                    ", ", g.Uo, "), got ", grad.sizes());
  check_window_rows(windows, N, g.Ho, g.Wo, grad.device(), op);
  TORCH_CHECK_VALUE(windows.size(0) == grad.size(0), op, ": `windows` has ", windows.size(0), " rows for ",
                    grad.size(0), " gradients");
  return g;
}

}  // namespace tensormask::detail

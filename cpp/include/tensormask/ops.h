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

// True when libtensormask was built with its CUDA kernels.
bool compiled_with_cuda();

}  // namespace tensormask::ops

// swap_align2nat_windows CUDA kernels: one thread per output pixel of a window; the backward scatters
// with atomics (training gradients on CUDA need not be bitwise deterministic). Sampling math:
// tensormask/detail/sampling.h (shared with the CPU kernels).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launch.cuh"
#include "tensormask/detail/checks.h"
#include "tensormask/detail/sampling.h"

namespace tensormask::ops {
namespace {

using detail::SwapGeometry;

template <typename scalar_t, typename acc_t>
__global__ void windows_forward_kernel(const scalar_t* __restrict__ in, const int64_t* __restrict__ windows,
                                       scalar_t* __restrict__ out, int64_t total, SwapGeometry g, acc_t pad) {
  const int64_t image = g.Vi * g.Ui * g.Hi * g.Wi;
  TENSORMASK_KERNEL_LOOP(i, total) {
    const int64_t u = i % g.Uo, v = (i / g.Uo) % g.Vo, p = i / (g.Uo * g.Vo);
    const int64_t n = windows[3 * p], y = windows[3 * p + 1], x = windows[3 * p + 2];
    const detail::RowTerms<acc_t> terms = detail::swap_align2nat_row<acc_t>(g, v, u, y);
    out[i] = static_cast<scalar_t>(detail::swap_align2nat_at<scalar_t, acc_t>(in + n * image, g, terms, u, x, pad));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void windows_backward_kernel(const scalar_t* __restrict__ gout, const int64_t* __restrict__ windows,
                                        scalar_t* __restrict__ gin, int64_t total, SwapGeometry g) {
  const int64_t image = g.Vi * g.Ui * g.Hi * g.Wi;
  const acc_t cu = detail::spatial_offset<acc_t>(g.Uo);
  TENSORMASK_KERNEL_LOOP(i, total) {
    const int64_t u = i % g.Uo, v = (i / g.Uo) % g.Vo, p = i / (g.Uo * g.Vo);
    const int64_t n = windows[3 * p], y = windows[3 * p + 1], x = windows[3 * p + 2];
    const acc_t gv = acc_t(gout[i]);
    if (gv == acc_t(0)) continue;
    const detail::RowTerms<acc_t> terms = detail::swap_align2nat_row<acc_t>(g, v, u, y);
    const detail::Taps<acc_t> tx = detail::linear_taps<acc_t>(acc_t(x * g.stride + u) + cu);
    scalar_t* img = gin + n * image;
    for (int k = 0; k < terms.count; ++k) {
      if (terms.offset[k] < 0) continue;
      const acc_t wk = gv * terms.weight[k];
      if (tx.i0 >= 0 && tx.i0 < g.Wi) gpuAtomicAdd(img + terms.offset[k] + tx.i0, static_cast<scalar_t>(wk * tx.w0));
      if (tx.w1 != acc_t(0) && tx.i0 + 1 >= 0 && tx.i0 + 1 < g.Wi)
        gpuAtomicAdd(img + terms.offset[k] + tx.i0 + 1, static_cast<scalar_t>(wk * tx.w1));
    }
  }
}

at::Tensor windows_forward_cuda(const at::Tensor& x, const at::Tensor& windows, int64_t lam, bool subsample,
                                c10::string_view mode, double pad_val) {
  const SwapGeometry g = detail::check_windows_forward(x, windows, lam, subsample, mode, "swap_align2nat_windows");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor in = x.contiguous();
  const at::Tensor rows = windows.contiguous();
  at::Tensor out = at::empty({rows.size(0), g.Vo, g.Uo}, in.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "swap_align2nat_windows_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    windows_forward_kernel<scalar_t, acc_t><<<tensormask::cuda::grid_for(total), tensormask::cuda::kThreads, 0, stream>>>(
        in.const_data_ptr<scalar_t>(), rows.const_data_ptr<int64_t>(), out.mutable_data_ptr<scalar_t>(), total, g,
        static_cast<acc_t>(pad_val));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor windows_backward_cuda(const at::Tensor& grad, const at::Tensor& windows, int64_t lam, bool subsample,
                                 c10::string_view mode, int64_t N, int64_t V, int64_t U, int64_t H, int64_t W) {
  const SwapGeometry g = detail::check_windows_backward(grad, windows, lam, subsample, mode, N, V, U, H, W,
                                                         "swap_align2nat_windows_backward");
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor gout = grad.contiguous();
  const at::Tensor rows = windows.contiguous();
  at::Tensor gin = at::zeros({N, V, U, H, W}, gout.options());
  const int64_t total = gout.numel();
  if (total == 0 || gin.numel() == 0) return gin;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gout.scalar_type(), "swap_align2nat_windows_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    windows_backward_kernel<scalar_t, acc_t><<<tensormask::cuda::grid_for(total), tensormask::cuda::kThreads, 0, stream>>>(
        gout.const_data_ptr<scalar_t>(), rows.const_data_ptr<int64_t>(), gin.mutable_data_ptr<scalar_t>(), total, g);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return gin;
}

}  // namespace

TORCH_LIBRARY_IMPL(tensormask, CUDA, m) {
  m.impl("swap_align2nat_windows", &windows_forward_cuda);
  m.impl("swap_align2nat_windows_backward", &windows_backward_cuda);
}

}  // namespace tensormask::ops

// up_align2nat / swap_align2nat CUDA kernels (Fig. 4, Fig. 5). One thread per output element for the
// forward; the backward is a gather, one thread per input element, so it is deterministic and needs
// no atomics. Sampling math: tensormask/detail/sampling.h (shared with the CPU kernels).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launch.cuh"
#include "tensormask/detail/checks.h"
#include "tensormask/detail/sampling.h"

namespace tensormask::ops {
namespace {

using detail::SwapGeometry;

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, int64_t total,
                               SwapGeometry g, acc_t pad) {
  const int64_t image = g.Vi * g.Ui * g.Hi * g.Wi;
  TENSORMASK_KERNEL_LOOP(i, total) {
    const int64_t x = i % g.Wo, y = (i / g.Wo) % g.Ho, u = (i / (g.Wo * g.Ho)) % g.Uo;
    const int64_t v = (i / (g.Wo * g.Ho * g.Uo)) % g.Vo, n = i / (g.Wo * g.Ho * g.Uo * g.Vo);
    const detail::RowTerms<acc_t> terms = detail::swap_align2nat_row<acc_t>(g, v, u, y);
    out[i] = static_cast<scalar_t>(detail::swap_align2nat_at<scalar_t, acc_t>(in + n * image, g, terms, u, x, pad));
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ gout, scalar_t* __restrict__ gin, int64_t total,
                                SwapGeometry g) {
  const int64_t image_out = g.Vo * g.Uo * g.Ho * g.Wo;
  TENSORMASK_KERNEL_LOOP(i, total) {
    const int64_t x = i % g.Wi, y = (i / g.Wi) % g.Hi, u = (i / (g.Wi * g.Hi)) % g.Ui;
    const int64_t v = (i / (g.Wi * g.Hi * g.Ui)) % g.Vi, n = i / (g.Wi * g.Hi * g.Ui * g.Vi);
    gin[i] = static_cast<scalar_t>(detail::swap_align2nat_grad<scalar_t, acc_t>(gout + n * image_out, g, v, u, y, x));
  }
}

at::Tensor forward_cuda(const at::Tensor& x, int64_t lam, c10::string_view mode, double pad_val, bool subsample,
                        const char* op) {
  detail::check_4d_tensor(x, op, "x");
  detail::check_positive(lam, op, "lam");
  const bool nearest = detail::parse_nearest(mode, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor in = x.contiguous();
  const SwapGeometry g = detail::make_geometry(in.size(1), in.size(2), in.size(3), in.size(4), lam, nearest, subsample);
  at::Tensor out = at::empty({in.size(0), g.Vo, g.Uo, g.Ho, g.Wo}, in.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "swap_align2nat_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t, acc_t><<<tensormask::cuda::grid_for(total), tensormask::cuda::kThreads, 0, stream>>>(
        in.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), total, g, static_cast<acc_t>(pad_val));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor backward_cuda(const at::Tensor& grad, int64_t lam, c10::string_view mode, int64_t V, int64_t U, int64_t H,
                         int64_t W, bool subsample, const char* op) {
  const SwapGeometry g = detail::check_backward(grad, lam, mode, V, U, H, W, subsample, op);
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor gout = grad.contiguous();
  at::Tensor gin = at::empty({gout.size(0), V, U, H, W}, gout.options());
  const int64_t total = gin.numel();
  if (total == 0) return gin;
  if (gout.numel() == 0) return gin.zero_();
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gout.scalar_type(), "swap_align2nat_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t, acc_t><<<tensormask::cuda::grid_for(total), tensormask::cuda::kThreads, 0, stream>>>(
        gout.const_data_ptr<scalar_t>(), gin.mutable_data_ptr<scalar_t>(), total, g);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return gin;
}

at::Tensor up_align2nat_cuda(const at::Tensor& x, int64_t lam, c10::string_view mode, double pad_val) {
  return forward_cuda(x, lam, mode, pad_val, /*subsample=*/false, "up_align2nat");
}
at::Tensor swap_align2nat_cuda(const at::Tensor& x, int64_t lam, c10::string_view mode, double pad_val) {
  return forward_cuda(x, lam, mode, pad_val, /*subsample=*/true, "swap_align2nat");
}
at::Tensor up_align2nat_backward_cuda(const at::Tensor& grad, int64_t lam, c10::string_view mode, int64_t V,
                                      int64_t U, int64_t H, int64_t W) {
  return backward_cuda(grad, lam, mode, V, U, H, W, /*subsample=*/false, "up_align2nat_backward");
}
at::Tensor swap_align2nat_backward_cuda(const at::Tensor& grad, int64_t lam, c10::string_view mode, int64_t V,
                                        int64_t U, int64_t H, int64_t W) {
  return backward_cuda(grad, lam, mode, V, U, H, W, /*subsample=*/true, "swap_align2nat_backward");
}

}  // namespace

TORCH_LIBRARY_IMPL(tensormask, CUDA, m) {
  m.impl("up_align2nat", &up_align2nat_cuda);
  m.impl("swap_align2nat", &swap_align2nat_cuda);
  m.impl("up_align2nat_backward", &up_align2nat_backward_cuda);
  m.impl("swap_align2nat_backward", &swap_align2nat_backward_cuda);
}

}  // namespace tensormask::ops

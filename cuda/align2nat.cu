// align2nat / nat2align CUDA kernels (paper eq. 1). Sampling math: tensormask/detail/sampling.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launch.cuh"
#include "tensormask/detail/checks.h"
#include "tensormask/detail/sampling.h"

namespace tensormask::ops {
namespace {

template <typename scalar_t>
__global__ void shift_kernel(const scalar_t* __restrict__ in, scalar_t* __restrict__ out, int64_t total, int64_t V,
                             int64_t U, int64_t H, int64_t W, int64_t shift, scalar_t pad) {
  TENSORMASK_KERNEL_LOOP(i, total) {
    const int64_t x = i % W, y = (i / W) % H, u = (i / (W * H)) % U, v = (i / (W * H * U)) % V;
    const int64_t n = i / (W * H * U * V);
    const int64_t s = detail::shift_source(V, U, H, W, shift, v, u, y, x);
    out[i] = s >= 0 ? in[n * V * U * H * W + s] : pad;
  }
}

at::Tensor shift_cuda(const at::Tensor& x, int64_t alpha, double pad_val, int64_t direction, const char* op) {
  detail::check_4d_tensor(x, op, "x");
  detail::check_positive(alpha, op, "alpha");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in, at::MemoryFormat::Contiguous);
  const int64_t total = out.numel();
  if (total == 0) return out;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "align2nat_cuda", [&] {
    shift_kernel<scalar_t><<<tensormask::cuda::grid_for(total), tensormask::cuda::kThreads, 0, stream>>>(
        in.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), total, in.size(1), in.size(2), in.size(3),
        in.size(4), direction * alpha, static_cast<scalar_t>(pad_val));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor align2nat_cuda(const at::Tensor& x, int64_t alpha, double pad_val) {
  return shift_cuda(x, alpha, pad_val, +1, "align2nat");
}

at::Tensor nat2align_cuda(const at::Tensor& x, int64_t alpha, double pad_val) {
  return shift_cuda(x, alpha, pad_val, -1, "nat2align");
}

}  // namespace

TORCH_LIBRARY_IMPL(tensormask, CUDA, m) {
  m.impl("align2nat", &align2nat_cuda);
  m.impl("nat2align", &nat2align_cuda);
}

}  // namespace tensormask::ops

// crop_windows CUDA kernel: one thread per window pixel. The sampling formula lives in
// tensormask/detail/assign.h, shared with the CPU kernel (cpp/src/ops/crop_windows.cpp).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "launch.cuh"
#include "tensormask/detail/assign.h"

namespace tensormask::ops {
namespace {

template <typename scalar_t>
__global__ void crop_kernel(const scalar_t* __restrict__ masks, const int64_t* __restrict__ gt_index,
                            const double* __restrict__ centers, int64_t H, int64_t W, double sigma_vu, int64_t V,
                            int64_t U, float* __restrict__ out, int64_t total) {
  TENSORMASK_KERNEL_LOOP(i, total) {
    const int64_t u = i % U, v = (i / U) % V, p = i / (U * V);
    const scalar_t* mask = masks + gt_index[p] * H * W;
    out[i] = detail::crop_value(mask, H, W, centers[2 * p], centers[2 * p + 1], sigma_vu, V, U, v, u);
  }
}

at::Tensor crop_windows_cuda(const at::Tensor& masks, const at::Tensor& gt_index, const at::Tensor& centers,
                             double sigma_vu, int64_t V, int64_t U) {
  constexpr const char* op = "crop_windows";
  detail::check_crop_args(masks, gt_index, centers, sigma_vu, V, U, op);
  const int64_t P = gt_index.size(0), G = masks.size(0), H = masks.size(1), W = masks.size(2);
  const c10::cuda::CUDAGuard guard(masks.device());
  at::Tensor out = at::empty({P, V, U}, masks.options().dtype(at::kFloat));
  if (P == 0) return out;
  const at::Tensor index = gt_index.contiguous();
  {  // one synchronisation, like the CPU kernel's check of every index
    const at::Tensor range = at::stack({index.min(), index.max()}).cpu();
    const int64_t lo = range[0].item<int64_t>(), hi = range[1].item<int64_t>();
    TORCH_CHECK_VALUE(lo >= 0 && hi < G, op, ": `gt_index` must be in [0, G) = [0, ", G, "), got values in [", lo,
                      ", ", hi, "]");
  }
  const at::Tensor ctr = centers.to(at::kDouble).contiguous();
  const at::Tensor m = detail::bool_as_byte(masks);
  const int64_t total = out.numel();
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kByte, at::kHalf, at::kBFloat16, m.scalar_type(), "crop_windows_cuda", [&] {
    crop_kernel<scalar_t><<<tensormask::cuda::grid_for(total), tensormask::cuda::kThreads, 0, stream>>>(
        m.const_data_ptr<scalar_t>(), index.const_data_ptr<int64_t>(), ctr.const_data_ptr<double>(), H, W, sigma_vu, V,
        U, out.mutable_data_ptr<float>(), total);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tensormask, CUDA, m) { m.impl("crop_windows", &crop_windows_cuda); }

}  // namespace tensormask::ops

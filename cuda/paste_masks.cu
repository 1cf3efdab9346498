// paste_masks CUDA kernel (paper §4.3): the output is zero-filled, then blocks (x, p) cover the pixels
// of box p with a grid-stride loop, one thread per pixel inside the box: O(P·box area) work. The
// sampling math lives in tensormask/detail/paste.h, shared with the CPU kernel
// (cpp/src/ops/paste_masks.cpp), so both give the same bits.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "launch.cuh"
#include "tensormask/detail/paste.h"

namespace tensormask::ops {
namespace {

using detail::paste::PixelRange;
using detail::paste::Tap;

template <typename scalar_t>
__global__ void paste_kernel(const scalar_t* __restrict__ masks, const double* __restrict__ boxes, int64_t P,
                             int64_t Mh, int64_t Mw, int64_t H, int64_t W, double threshold, bool* __restrict__ out) {
  for (int64_t p = blockIdx.y; p < P; p += gridDim.y) {
    const double* box = boxes + 4 * p;
    const PixelRange rx = detail::paste::pixel_range(box[0], box[2], W);
    const PixelRange ry = detail::paste::pixel_range(box[1], box[3], H);
    const int64_t bw = rx.hi - rx.lo;
    const int64_t n = bw * (ry.hi - ry.lo);
    const scalar_t* mask = masks + p * Mh * Mw;
    bool* img = out + p * H * W;
    for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
         k += static_cast<int64_t>(blockDim.x) * gridDim.x) {
      const int64_t i = ry.lo + k / bw, j = rx.lo + k % bw;
      const Tap ty = detail::paste::axis_tap(i, box[1], box[3], Mh);
      const Tap tx = detail::paste::axis_tap(j, box[0], box[2], Mw);
      img[i * W + j] = detail::paste::bilinear(mask, Mh, Mw, ty, tx) >= threshold;
    }
  }
}

at::Tensor paste_masks_cuda(const at::Tensor& masks, const at::Tensor& boxes, int64_t image_h, int64_t image_w,
                            double threshold) {
  constexpr const char* op = "paste_masks";
  detail::paste::check_paste_args(masks, boxes, image_h, image_w, threshold, op);
  const c10::cuda::CUDAGuard guard(masks.device());
  const int64_t P = masks.size(0), Mh = masks.size(1), Mw = masks.size(2);
  at::Tensor out = at::zeros({P, image_h, image_w}, masks.options().dtype(at::kBool));
  if (out.numel() == 0) return out;
  const at::Tensor m = masks.contiguous();
  const at::Tensor bx = boxes.to(at::kDouble).contiguous();
  // About 4096 blocks in all, at least 4 per box: the box sizes are only known on the device.
  const int64_t per_box = std::min<int64_t>(1024, std::max<int64_t>(4, 4096 / P));
  const dim3 grid(static_cast<unsigned>(per_box), static_cast<unsigned>(std::min<int64_t>(P, 65535)));
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(), "paste_masks_cuda", [&] {
    paste_kernel<scalar_t><<<grid, tensormask::cuda::kThreads, 0, stream>>>(
        m.const_data_ptr<scalar_t>(), bx.const_data_ptr<double>(), P, Mh, Mw, image_h, image_w, threshold,
        out.mutable_data_ptr<bool>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(tensormask, CUDA, m) { m.impl("paste_masks", &paste_masks_cuda); }

}  // namespace tensormask::ops

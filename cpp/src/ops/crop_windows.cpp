// crop_windows: schema and CPU kernel of the ground-truth mask crop of the positive windows (the mask
// targets of §4.2): detectron2's BitMasks.crop_and_resize, RoIAlign (aligned, ceil(σ)² samples per
// window pixel) of the matched mask, thresholded at 0.5; O(P·V·U·ceil(σ)²) work, the masks are only
// read where sampled. The sampling formula lives in
// tensormask/detail/assign.h and is shared with the CUDA kernel.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "tensormask/detail/assign.h"
#include "tensormask/ops.h"

namespace tensormask::ops {
namespace {

at::Tensor crop_windows_cpu(const at::Tensor& masks, const at::Tensor& gt_index, const at::Tensor& centers,
                            double sigma_vu, int64_t V, int64_t U) {
  constexpr const char* op = "crop_windows";
  detail::check_crop_args(masks, gt_index, centers, sigma_vu, V, U, op);
  const int64_t P = gt_index.size(0), G = masks.size(0), H = masks.size(1), W = masks.size(2);
  at::Tensor out = at::empty({P, V, U}, masks.options().dtype(at::kFloat));
  if (P == 0) return out;
  const at::Tensor index = gt_index.contiguous();
  const int64_t* idx = index.const_data_ptr<int64_t>();
  for (int64_t p = 0; p < P; ++p) {
    TORCH_CHECK_VALUE(idx[p] >= 0 && idx[p] < G, op, ": `gt_index` must be in [0, G) = [0, ", G, "), got ", idx[p],
                      " at position ", p);
  }
  const at::Tensor ctr = centers.to(at::kDouble).contiguous();
  const double* c = ctr.const_data_ptr<double>();
  const at::Tensor m = detail::bool_as_byte(masks);
  float* dst = out.mutable_data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kByte, at::kHalf, at::kBFloat16, m.scalar_type(), "crop_windows_cpu", [&] {
    const scalar_t* src = m.const_data_ptr<scalar_t>();
    at::parallel_for(0, P * V, std::max<int64_t>(1, 4096 / U), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t p = r / V, v = r % V;
        const scalar_t* mask = src + idx[p] * H * W;
        for (int64_t u = 0; u < U; ++u) {
          dst[r * U + u] = detail::crop_value(mask, H, W, c[2 * p], c[2 * p + 1], sigma_vu, V, U, v, u);
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tensormask, m) {
  m.def("crop_windows(Tensor masks, Tensor gt_index, Tensor centers, float sigma_vu, int V, int U) -> Tensor");
}

TORCH_LIBRARY_IMPL(tensormask, CPU, m) { m.impl("crop_windows", &crop_windows_cpu); }

// Mask targets are not differentiable: skip autograd (the output never requires grad).
TORCH_LIBRARY_IMPL(tensormask, Autograd, m) { m.impl("crop_windows", torch::CppFunction::makeFallthrough()); }

}  // namespace tensormask::ops

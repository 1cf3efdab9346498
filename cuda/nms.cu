// batched_nms CUDA kernels (paper §4.3): the classic bitmask NMS, class-aware. The IoU test lives in
// tensormask/detail/nms.h, shared with the CPU kernel (cpp/src/ops/nms.cpp).
//
//   1. order = stable descending sort of the scores (ties: lower index first), boxes gathered in
//      that order (float64) with their class ids;
//   2. mask_kernel: block (row block rb, column block cb ≥ rb) of 64×64 sorted boxes; thread t sets
//      bit j of word mask[(rb·64 + t)·C + cb] when sorted box rb·64 + t suppresses sorted box
//      cb·64 + j (same class, IoU > threshold, and j after t in the order). C = ⌈R/64⌉ words a row;
//      words with cb < rb are never written nor read;
//   3. reduce_kernel: one block walks the 64-box blocks in order. Thread 0 resolves the 64 boxes of
//      block nb sequentially from the `removed` word and the diagonal words of their rows; then every
//      thread ORs the rows of the boxes kept there into the `removed` words it owns (cb > nb). Two
//      __syncthreads per 64 boxes, no atomics, no copy of the mask to the host;
//   4. keep = order[kept] (one synchronisation for the output size).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "launch.cuh"
#include "tensormask/detail/nms.h"

namespace tensormask::ops {
namespace {

using detail::nms::kBlockBoxes;

// Number of boxes in 64-box block `block` of R boxes.
__device__ inline int64_t block_size(int64_t R, int64_t block) {
  const int64_t left = R - block * kBlockBoxes;
  return left < kBlockBoxes ? left : kBlockBoxes;
}

__global__ void mask_kernel(const double* __restrict__ boxes, const int64_t* __restrict__ classes, int64_t R,
                            int64_t col_blocks, double iou_threshold, unsigned long long* __restrict__ mask) {
  const int64_t rb = blockIdx.y, cb = blockIdx.x;
  if (cb < rb) return;
  const int64_t row_n = block_size(R, rb);
  const int64_t col_n = block_size(R, cb);

  __shared__ double col_boxes[kBlockBoxes * 4];
  __shared__ int64_t col_classes[kBlockBoxes];
  const int t = threadIdx.x;
  if (t < col_n) {
    const int64_t j = cb * kBlockBoxes + t;
    for (int k = 0; k < 4; ++k) col_boxes[t * 4 + k] = boxes[j * 4 + k];
    col_classes[t] = classes[j];
  }
  __syncthreads();
  if (t >= row_n) return;

  const int64_t i = rb * kBlockBoxes + t;
  double own[4];
  for (int k = 0; k < 4; ++k) own[k] = boxes[i * 4 + k];
  const int64_t own_class = classes[i];
  unsigned long long bits = 0;
  for (int j = (cb == rb ? t + 1 : 0); j < col_n; ++j) {
    if (detail::nms::suppresses(own, own_class, col_boxes + j * 4, col_classes[j], iou_threshold)) {
      bits |= 1ULL << j;
    }
  }
  mask[i * col_blocks + cb] = bits;
}

__global__ void reduce_kernel(const unsigned long long* __restrict__ mask, int64_t R, int64_t col_blocks,
                              unsigned long long* __restrict__ removed, bool* __restrict__ kept) {
  __shared__ unsigned long long kept_word;
  for (int64_t nb = 0; nb < col_blocks; ++nb) {
    __syncthreads();  // the previous block's ORs into removed[nb] are visible
    const int64_t n = block_size(R, nb);
    if (threadIdx.x == 0) {
      unsigned long long rem = removed[nb];
      unsigned long long word = 0;
      for (int64_t b = 0; b < n; ++b) {
        if (!((rem >> b) & 1ULL)) {
          word |= 1ULL << b;
          rem |= mask[(nb * kBlockBoxes + b) * col_blocks + nb];
        }
      }
      kept_word = word;
    }
    __syncthreads();
    const unsigned long long word = kept_word;
    if (threadIdx.x < n) kept[nb * kBlockBoxes + threadIdx.x] = (word >> threadIdx.x) & 1ULL;
    for (int64_t cb = nb + 1 + threadIdx.x; cb < col_blocks; cb += blockDim.x) {
      unsigned long long acc = removed[cb];
      for (unsigned long long w = word; w != 0; w &= w - 1) {
        const int b = __ffsll(static_cast<long long>(w)) - 1;
        acc |= mask[(nb * kBlockBoxes + b) * col_blocks + cb];
      }
      removed[cb] = acc;
    }
  }
}

at::Tensor batched_nms_cuda(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold) {
  constexpr const char* op = "batched_nms";
  detail::nms::check_nms_args(boxes, scores, idxs, iou_threshold, op);
  const c10::cuda::CUDAGuard guard(boxes.device());
  const int64_t R = boxes.size(0);
  if (R == 0) return at::empty({0}, boxes.options().dtype(at::kLong));
  const int64_t col_blocks = (R + kBlockBoxes - 1) / kBlockBoxes;
  TORCH_CHECK_VALUE(col_blocks <= 65535, op, ": too many boxes (", R, "), at most ", 65535 * kBlockBoxes);

  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true));
  const at::Tensor sorted_boxes = boxes.index_select(0, order).to(at::kDouble).contiguous();
  const at::Tensor sorted_classes = idxs.index_select(0, order).contiguous();
  at::Tensor mask = at::empty({R, col_blocks}, boxes.options().dtype(at::kLong));
  at::Tensor removed = at::zeros({col_blocks}, boxes.options().dtype(at::kLong));
  at::Tensor kept = at::empty({R}, boxes.options().dtype(at::kBool));
  auto* mask_ptr = reinterpret_cast<unsigned long long*>(mask.mutable_data_ptr<int64_t>());
  const auto stream = at::cuda::getCurrentCUDAStream();

  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(col_blocks));
  mask_kernel<<<grid, kBlockBoxes, 0, stream>>>(sorted_boxes.const_data_ptr<double>(),
                                                sorted_classes.const_data_ptr<int64_t>(), R, col_blocks,
                                                iou_threshold, mask_ptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  reduce_kernel<<<1, 128, 0, stream>>>(mask_ptr, R, col_blocks,
                                       reinterpret_cast<unsigned long long*>(removed.mutable_data_ptr<int64_t>()),
                                       kept.mutable_data_ptr<bool>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return order.masked_select(kept);
}

}  // namespace

TORCH_LIBRARY_IMPL(tensormask, CUDA, m) { m.impl("batched_nms", &batched_nms_cuda); }

}  // namespace tensormask::ops

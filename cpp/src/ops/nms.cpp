// batched_nms (paper §4.3): schema and CPU kernel of class-aware greedy box NMS. The IoU test lives in
// tensormask/detail/nms.h and is shared with the CUDA kernel (cuda/nms.cu).
//
// Order: a stable descending sort of the scores (ties: lower index first; NaN as torch.sort, i.e. as
// the largest score). The boxes are then bucketed by class, keeping that order inside each class, and
// every class runs the usual greedy loop independently (classes in parallel): a box is kept unless a
// kept box of its class that precedes it in the order overlaps it with IoU > iou_threshold. No
// coordinate offset trick, so the result is exact for any coordinates, negative ones included.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <unordered_map>
#include <vector>

#include "tensormask/detail/nms.h"
#include "tensormask/ops.h"

namespace tensormask::ops {
namespace {

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold) {
  constexpr const char* op = "batched_nms";
  detail::nms::check_nms_args(boxes, scores, idxs, iou_threshold, op);
  const int64_t R = boxes.size(0);
  if (R == 0) return at::empty({0}, boxes.options().dtype(at::kLong));

  const at::Tensor order = std::get<1>(at::sort(scores, /*stable=*/true, /*dim=*/0, /*descending=*/true)).contiguous();
  const at::Tensor box = boxes.to(at::kDouble).contiguous();
  const at::Tensor cls = idxs.contiguous();
  const int64_t* ord = order.const_data_ptr<int64_t>();
  const double* b = box.const_data_ptr<double>();
  const int64_t* c = cls.const_data_ptr<int64_t>();

  // Bucket the sorted positions by class (buckets keep the score order).
  std::vector<std::vector<int64_t>> buckets;
  {
    std::unordered_map<int64_t, size_t> bucket_of;
    bucket_of.reserve(64);
    for (int64_t r = 0; r < R; ++r) {
      const int64_t i = ord[r];
      auto [it, inserted] = bucket_of.try_emplace(c[i], buckets.size());
      if (inserted) buckets.emplace_back();
      buckets[it->second].push_back(i);
    }
  }

  // Greedy suppression inside each class; removed[i] for original box index i.
  std::vector<uint8_t> removed(static_cast<size_t>(R), 0);
  at::parallel_for(0, static_cast<int64_t>(buckets.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const std::vector<int64_t>& bucket = buckets[static_cast<size_t>(k)];
      const size_t n = bucket.size();
      for (size_t p = 0; p < n; ++p) {
        const int64_t i = bucket[p];
        if (removed[i]) continue;
        const double* bi = b + 4 * i;
        for (size_t q = p + 1; q < n; ++q) {
          const int64_t j = bucket[q];
          if (!removed[j] && detail::nms::box_iou(bi, b + 4 * j) > iou_threshold) removed[j] = 1;
        }
      }
    }
  });

  std::vector<int64_t> keep;
  keep.reserve(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) {
    if (!removed[ord[r]]) keep.push_back(ord[r]);
  }
  at::Tensor out = at::empty({static_cast<int64_t>(keep.size())}, boxes.options().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), out.mutable_data_ptr<int64_t>());
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tensormask, m) {
  m.def("batched_nms(Tensor boxes, Tensor scores, Tensor idxs, float iou_threshold) -> Tensor");
}

TORCH_LIBRARY_IMPL(tensormask, CPU, m) { m.impl("batched_nms", &batched_nms_cpu); }

// Indices are not differentiable: skip autograd (the output never requires grad).
TORCH_LIBRARY_IMPL(tensormask, Autograd, m) { m.impl("batched_nms", torch::CppFunction::makeFallthrough()); }

}  // namespace tensormask::ops

// paste_masks (paper §4.3): schema and CPU kernel pasting soft masks into the image and thresholding
// them, as Mask R-CNN's paste_masks_in_image (bilinear, align_corners=False, zero padding). The
// sampling math lives in tensormask/detail/paste.h and is shared with the CUDA kernel.
//
// Work: O(P·Mw) for the column taps of every mask, then one pass over the (mask, image row) pairs in
// parallel: a row crossing the box interpolates the grid rows once (O(Mw)) and its box columns
// (O(box width)); the rest of the output is only zero-filled, and every output byte is written once.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "tensormask/detail/paste.h"
#include "tensormask/ops.h"

namespace tensormask::ops {
namespace {

using detail::paste::PixelRange;
using detail::paste::Tap;

at::Tensor paste_masks_cpu(const at::Tensor& masks, const at::Tensor& boxes, int64_t image_h, int64_t image_w,
                           double threshold) {
  constexpr const char* op = "paste_masks";
  detail::paste::check_paste_args(masks, boxes, image_h, image_w, threshold, op);
  const int64_t P = masks.size(0), Mh = masks.size(1), Mw = masks.size(2), H = image_h, W = image_w;
  at::Tensor out = at::empty({P, H, W}, masks.options().dtype(at::kBool));
  if (out.numel() == 0) return out;
  const at::Tensor bx = boxes.to(at::kDouble).contiguous();
  const double* b = bx.const_data_ptr<double>();

  // Box pixel ranges, and per box column its two taps into the row buffer of the row loop below:
  // slot k + 1 holds grid column k, slots 0 and Mw + 1 are the zero padding.
  std::vector<PixelRange> rx(static_cast<size_t>(P)), ry(static_cast<size_t>(P));
  std::vector<int64_t> col_offset(static_cast<size_t>(P) + 1, 0);
  for (int64_t p = 0; p < P; ++p) {
    rx[p] = detail::paste::pixel_range(b[4 * p], b[4 * p + 2], W);
    ry[p] = detail::paste::pixel_range(b[4 * p + 1], b[4 * p + 3], H);
    if (ry[p].lo == ry[p].hi) rx[p] = {0, 0};  // no row inside: no column table needed
    col_offset[p + 1] = col_offset[p] + (rx[p].hi - rx[p].lo);
  }
  struct ColumnTap {
    int64_t slot0, slot1;  // row-buffer slots of taps x0 and x0 + 1
    double w0, w1;
  };
  std::vector<ColumnTap> cols(static_cast<size_t>(col_offset[P]));
  at::parallel_for(0, P, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      for (int64_t j = rx[p].lo; j < rx[p].hi; ++j) {
        const Tap t = detail::paste::axis_tap(j, b[4 * p], b[4 * p + 2], Mw);
        auto slot = [&](int64_t x) { return x < 0 ? 0 : (x >= Mw ? Mw + 1 : x + 1); };
        cols[col_offset[p] + j - rx[p].lo] = {slot(t.i0), slot(t.i0 + 1), t.w0, t.w1};
      }
    }
  });

  const at::Tensor m = masks.contiguous();
  bool* dst = out.mutable_data_ptr<bool>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m.scalar_type(), "paste_masks_cpu", [&] {
    const scalar_t* src = m.const_data_ptr<scalar_t>();
    at::parallel_for(0, P * H, std::max<int64_t>(1, 65536 / std::max<int64_t>(W, 1)), [&](int64_t begin, int64_t end) {
      std::vector<double> rowbuf(static_cast<size_t>(Mw) + 2, 0.0);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t p = r / H, i = r % H;
        bool* row = dst + r * W;
        const PixelRange x = rx[p];
        if (i < ry[p].lo || i >= ry[p].hi || x.lo == x.hi) {
          std::memset(row, 0, static_cast<size_t>(W));
          continue;
        }
        std::memset(row, 0, static_cast<size_t>(x.lo));
        std::memset(row + x.hi, 0, static_cast<size_t>(W - x.hi));
        const scalar_t* mask = src + p * Mh * Mw;
        const Tap ty = detail::paste::axis_tap(i, b[4 * p + 1], b[4 * p + 3], Mh);
        for (int64_t k = 0; k < Mw; ++k) rowbuf[k + 1] = detail::paste::interp_rows(mask, Mh, Mw, ty, k);
        const ColumnTap* c = cols.data() + col_offset[p];
        for (int64_t j = x.lo; j < x.hi; ++j) {
          const ColumnTap& t = c[j - x.lo];
          row[j] = detail::paste::interp_cols(Tap{0, t.w0, t.w1}, rowbuf[t.slot0], rowbuf[t.slot1]) >= threshold;
        }
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tensormask, m) {
  m.def("paste_masks(Tensor masks, Tensor boxes, SymInt image_h, SymInt image_w, float threshold=0.5) -> Tensor");
}

TORCH_LIBRARY_IMPL(tensormask, CPU, m) { m.impl("paste_masks", &paste_masks_cpu); }

// Binary masks are not differentiable: skip autograd (the output never requires grad).
TORCH_LIBRARY_IMPL(tensormask, Autograd, m) { m.impl("paste_masks", torch::CppFunction::makeFallthrough()); }

}  // namespace tensormask::ops

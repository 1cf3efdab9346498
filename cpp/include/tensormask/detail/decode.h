// Sparse mask decoding (decode_windows): the natural masks of a list of windows, computed straight from
// the features of the mask head, without the dense (N, V̂·Û, H, W) conv output and without the dense
// swap_align2nat / up_align2nat output. Shared by the CPU and CUDA kernels.
//
// Model. With A = conv1x1(features) read as the aligned tensor (N, V̂, Û, H, W),
//   A[n, iv, iu, iy, ix] = bias[iv·Û + iu] + Σ_c weight[iv·Û + iu, c] · features[n, c, iy, ix],
// the natural mask of window (n, y, x) of the output grid is
//   out[v, u] = op(A)[n, v, u, y, x]        op = swap_align2nat (stride λ) or up_align2nat (stride 1),
// i.e. (sampling.h) Σ over ≤ 4 taps (iv, iy) of axis (v, y) and ≤ 4 taps (iu, ix) of axis (u, x) of
// w_v·w_u·A[n, iv, iu, iy, ix], a tap outside A contributing pad_val.
//
// Separability. On axis (v, y) the taps of output v are iv ∈ window_taps(v) and iy = y·s + d with
// d ∈ linear_taps(v + c) (c = spatial_offset(Vo), so the spatial sample y·s + v + c has integer part
// y·s + ⌊v + c⌋ and the same fraction for every window): the set of (iv, d) pairs an axis reads, their
// weights and which output reads which pair do NOT depend on the window. An AxisPlan lists them once
// per call; a window only adds its base y·s (and the test iy ∈ [0, H)).
// Every (pair a of axis V, pair b of axis U) is read by output (v(a), u(b)), so the distinct aligned
// values a window needs are exactly the Kv × Ku products: the kernels compute the table
//   T[a][b] = A[n, iv_a, iu_b, y·s + d_a, x·s + d_b]   (pad_val when (iy, ix) is outside the map)
// once (one C-long dot product each), plus a padding row a = Kv and column b = Ku (pad_val) that the
// taps with iv ∉ [0, V̂) (iu ∉ [0, Û)) point at, and then every output is Σ_{≤4×4} w_a·w_b·T[a][b].
//
// Work per window. Kv = #pairs of axis V:
//   bilinear, λ ≥ 2: ≤ V̂·(2λ + 1) (each iv is read by the 2λ outputs v whose sample lies within one
//     window unit of it, whose spatial taps span 2λ + 1 rows) ≈ 2·Vo;
//   bilinear, λ = 1: V̂ (odd V̂: one spatial tap) or 2·V̂ (even V̂);
//   nearest: ≤ V̂·(λ + 1) ≈ Vo.
// Dot products: Kv·Ku·C ≈ 4·Vo·Uo·C MACs (bilinear λ ≥ 2; Vo·Uo·C for simple_aligned), instead of
// 16·Vo·Uo·C for one dot product per tap of every output, and instead of H·W·V̂·Û·C (dense conv) +
// 16·N·Vo·Uo·Ho·Wo (dense swap_align2nat) for the dense path. Plus 16·Vo·Uo for the interpolation
// (the CPU kernel computes the dot products in blocks of 8 float pixels of a feature row, so a run of
// taps shorter than a block costs a full block: runs are 2λ + 1 long for bilinear λ ≥ 2, i.e. ≈ 1.1×
// the useful work at λ = 32, 1.4× at λ = 8, 1.6× at λ = 2; 1 long at λ = 1, 8×, where the work is
// tiny anyway). Memory per window: (Kv + 1)·(Ku + 1) accumulators.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "tensormask/detail/checks.h"
#include "tensormask/detail/sampling.h"

namespace tensormask::detail {

// Taps per output index of one axis: 2 window taps × 2 spatial taps.
constexpr int kDecodeTaps = 4;

// Window-independent decoding plan of one axis pair, (V, H) or (U, W).
template <typename acc_t>
struct AxisPlan {
  // The distinct (window index, spatial offset) pairs with a non-zero weight and an in-range window
  // index, sorted by (offset, window index) or by (window index, offset): pair a reads window index
  // chan[a] at spatial position base + shift[a] (base = y·s for a window at output row y).
  std::vector<int64_t> shift, chan;
  // tap[v·4 + i] (i < 4): pair index read by output v, or count() (the padding pair: window index
  // outside the input) — with weight[v·4 + i] (0 for unused slots).
  std::vector<int64_t> tap;
  std::vector<acc_t> weight;

  int64_t count() const { return static_cast<int64_t>(shift.size()); }
};

// Plan of an axis with input window size `in_size` (V̂) and output window size `out_size` (λV̂), with
// exactly the sampling of swap_align2nat_row / swap_align2nat_at (window_taps, linear_taps,
// spatial_offset). Pairs sorted by (offset, window index), or by (window index, offset) when
// `by_channel`: then the pairs of one window index are consecutive, with increasing offsets.
template <typename acc_t>
AxisPlan<acc_t> make_axis_plan(int64_t in_size, int64_t out_size, int64_t lam, bool nearest, bool by_channel) {
  struct Raw {
    int64_t shift, chan;
    acc_t weight;
  };
  // pairs are (offset, window index) or (window index, offset) for sorting
  auto key = [by_channel](int64_t shift, int64_t chan) {
    return by_channel ? std::make_pair(chan, shift) : std::make_pair(shift, chan);
  };
  const acc_t c = spatial_offset<acc_t>(out_size);
  std::vector<Raw> raw(static_cast<size_t>(out_size * kDecodeTaps), Raw{0, -1, acc_t(0)});
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t v = 0; v < out_size; ++v) {
    const Taps<acc_t> tw = window_taps<acc_t>(v, lam, nearest);
    const Taps<acc_t> ts = linear_taps<acc_t>(acc_t(v) + c);
    int k = 0;
    for (int i = 0; i < 2; ++i) {
      const acc_t ww = i ? tw.w1 : tw.w0;
      for (int j = 0; j < 2; ++j) {
        const acc_t w = ww * (j ? ts.w1 : ts.w0);
        if (w == acc_t(0)) continue;
        Raw& r = raw[static_cast<size_t>(v * kDecodeTaps + k++)];
        r = Raw{ts.i0 + j, tw.i0 + i, w};
        if (r.chan >= 0 && r.chan < in_size) pairs.push_back(key(r.shift, r.chan));
      }
    }
  }
  std::sort(pairs.begin(), pairs.end());
  pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
  AxisPlan<acc_t> plan;
  const int64_t K = static_cast<int64_t>(pairs.size());
  plan.shift.reserve(K);
  plan.chan.reserve(K);
  for (const auto& [first, second] : pairs) {
    plan.shift.push_back(by_channel ? second : first);
    plan.chan.push_back(by_channel ? first : second);
  }
  plan.tap.resize(raw.size());
  plan.weight.resize(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    const Raw& r = raw[i];
    int64_t idx = K;  // padding pair
    if (r.weight != acc_t(0) && r.chan >= 0 && r.chan < in_size) {
      idx = std::lower_bound(pairs.begin(), pairs.end(), key(r.shift, r.chan)) - pairs.begin();
    }
    plan.tap[i] = idx;
    plan.weight[i] = r.weight;
  }
  return plan;
}

// Sizes of a decode_windows call after validation.
struct DecodeShape {
  int64_t N, C, H, W, P;
  SwapGeometry g;  // geometry of the dense op (input window V̂ × Û, output window Vo × Uo, grid Ho × Wo)
};

// Validates everything but the window coordinates (which need the data: check_window_rows).
// Bad ranks, sizes, values and devices raise ValueError, bad dtypes TypeError, naming the argument.
// An undefined `bias` is not checked (the backward has none).
inline DecodeShape check_decode_args(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& bias,
                                     const at::Tensor& windows, int64_t V, int64_t U, int64_t lam, bool subsample,
                                     c10::string_view mode, const char* op) {
  TORCH_CHECK_VALUE(features.dim() == 4, op, ": `features` must be a 4D tensor (N, C, H, W), got ", features.dim(),
                    "D with shape ", features.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(features.scalar_type()), op, ": `features` must be a floating point tensor, got ",
                   features.scalar_type());
  TORCH_CHECK_VALUE(weight.dim() == 2, op, ": `weight` must be a 2D tensor (V·U, C), got ", weight.dim(),
                    "D with shape ", weight.sizes());
  TORCH_CHECK_VALUE(!bias.defined() || bias.dim() == 1, op, ": `bias` must be a 1D tensor (V·U,), got ", bias.dim(),
                    "D with shape ", bias.sizes());
  TORCH_CHECK_VALUE(windows.dim() == 2 && windows.size(1) == 3, op,
                    ": `windows` must be a 2D tensor (P, 3) of rows (n, y, x), got shape ", windows.sizes());
  TORCH_CHECK_TYPE(weight.scalar_type() == features.scalar_type(), op, ": `weight` must have the dtype of `features` (",
                   features.scalar_type(), "), got ", weight.scalar_type());
  TORCH_CHECK_TYPE(!bias.defined() || bias.scalar_type() == features.scalar_type(), op,
                   ": `bias` must have the dtype of `features` (", features.scalar_type(), "), got ", bias.scalar_type());
  TORCH_CHECK_TYPE(windows.scalar_type() == at::kLong, op, ": `windows` must be an int64 tensor, got ",
                   windows.scalar_type());
  TORCH_CHECK_VALUE(weight.device() == features.device(), op, ": `weight` is on ", weight.device(),
                    " but `features` is on ", features.device());
  TORCH_CHECK_VALUE(!bias.defined() || bias.device() == features.device(), op, ": `bias` is on ", bias.device(),
                    " but `features` is on ", features.device());
  TORCH_CHECK_VALUE(windows.device() == features.device(), op, ": `windows` is on ", windows.device(),
                    " but `features` is on ", features.device());
  check_positive(V, op, "V");
  check_positive(U, op, "U");
  check_positive(lam, op, "lam");
  const bool nearest = parse_nearest(mode, op);
  TORCH_CHECK_VALUE(weight.size(0) == V * U, op, ": `weight` must have V·U = ", V, "·", U, " = ", V * U,
                    " rows, got ", weight.size(0));
  TORCH_CHECK_VALUE(weight.size(1) == features.size(1), op, ": `weight` must have C = ", features.size(1),
                    " columns (the channels of `features`), got ", weight.size(1));
  TORCH_CHECK_VALUE(!bias.defined() || bias.size(0) == V * U, op, ": `bias` must have V·U = ", V * U,
                    " elements, got ", bias.size(0));
  DecodeShape s;
  s.N = features.size(0);
  s.C = features.size(1);
  s.H = features.size(2);
  s.W = features.size(3);
  s.P = windows.size(0);
  s.g = make_geometry(V, U, s.H, s.W, lam, nearest, subsample);
  return s;
}

// decode_windows_backward: the arguments of the forward (without bias) plus `grad`, the gradient of its
// output: (P, λV, λU) with the dtype and device of `features`.
inline DecodeShape check_decode_backward_args(const at::Tensor& grad, const at::Tensor& features,
                                              const at::Tensor& weight, const at::Tensor& windows, int64_t V,
                                              int64_t U, int64_t lam, bool subsample, c10::string_view mode,
                                              const char* op) {
  const DecodeShape s = check_decode_args(features, weight, at::Tensor(), windows, V, U, lam, subsample, mode, op);
  TORCH_CHECK_VALUE(grad.dim() == 3 && grad.size(0) == s.P && grad.size(1) == s.g.Vo && grad.size(2) == s.g.Uo, op,
                    ": `grad` must have the output's shape (P, λV, λU) = (", s.P, ", ", s.g.Vo, ", ", s.g.Uo,
                    "), got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == features.scalar_type(), op, ": `grad` must have the dtype of `features` (",
                   features.scalar_type(), "), got ", grad.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == features.device(), op, ": `grad` is on ", grad.device(), " but `features` is on ",
                    features.device());
  return s;
}

// Elements of the tap table of one window, (Kv + 1)·(Ku + 1), the padding row and column included.
template <typename acc_t>
inline int64_t table_size(const AxisPlan<acc_t>& pv, const AxisPlan<acc_t>& pu) {
  return (pv.count() + 1) * (pu.count() + 1);
}

}  // namespace tensormask::detail

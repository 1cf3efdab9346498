// Sampling geometry of the 4D tensor ops (paper §3.4–§3.6), shared by the CPU and CUDA kernels so
// that both compute exactly the same numbers. Everything here is per element and allocation-free.
//
// Tensors are (N, V, U, H, W): (V, U) is the window sub-tensor (unit σ_VU), (H, W) the spatial
// sub-tensor (unit σ_HW). Index math is int64.
#pragma once

#include <c10/macros/Macros.h>
#include <cmath>
#include <cstdint>

namespace tensormask::detail {

// ---------------------------------------------------------------------------------------------------
// align2nat / nat2align (eq. 1): an integer shift of the spatial axes by α·(window offset).
// The window offset of index v on an axis of size V is v − ⌊V/2⌋ (the centre sample is 0).
// align2nat: F(v,u,y,x) = F̂(v,u, y + α(v−⌊V/2⌋), x + α(u−⌊U/2⌋))   (direction = +1)
// nat2align: F̂(v,u,y,x) = F(v,u, y − α(v−⌊V/2⌋), x − α(u−⌊U/2⌋))   (direction = −1)
// ---------------------------------------------------------------------------------------------------
C10_HOST_DEVICE inline int64_t window_offset(int64_t v, int64_t size) { return v - size / 2; }

// Offset of the input element that output (v, u, y, x) copies, inside one image of window size (V, U)
// and spatial size (H, W); -1 when it falls outside (the output is pad_val). shift = +α (align2nat) or
// −α (nat2align).
C10_HOST_DEVICE inline int64_t shift_source(int64_t V, int64_t U, int64_t H, int64_t W, int64_t shift, int64_t v,
                                            int64_t u, int64_t y, int64_t x) {
  // A shift of magnitude ≥ max(H, W) moves every off-centre sample outside the map, so clamping it
  // there changes no result and keeps shift·offset from overflowing for huge α (e.g. α near 2^63).
  const int64_t limit = H > W ? H : W;
  shift = shift > limit ? limit : (shift < -limit ? -limit : shift);
  const int64_t sy = y + shift * window_offset(v, V);
  const int64_t sx = x + shift * window_offset(u, U);
  return (sy >= 0 && sy < H && sx >= 0 && sx < W) ? ((v * U + u) * H + sy) * W + sx : -1;
}

// ---------------------------------------------------------------------------------------------------
// up_align2nat / swap_align2nat (Fig. 4, Fig. 5). Output (N, Vo=λV̂, Uo=λÛ, Ho, Wo) reads the input
// (N, V̂, Û, H, W) at
//   window:  sv = (v + 0.5)/λ − 0.5            (bilinear)   or  ⌊sv + 0.5⌋   (nearest, "unaligned")
//   spatial: sy = y·s + v − Vo/2 + 0.5          s = λ for swap_align2nat (Ho = ⌈H/λ⌉),
//                                               s = 1 for up_align2nat   (Ho = H)
// and likewise (su, sx) for (u, x). Bilinear mode interpolates linearly on all four axes (16
// neighbours); a neighbour outside the input contributes pad_val with its weight.
// ---------------------------------------------------------------------------------------------------
struct SwapGeometry {
  int64_t Vi, Ui, Hi, Wi;  // input window and spatial sizes
  int64_t Vo, Uo, Ho, Wo;  // output sizes
  int64_t lam;             // window upscale λ
  int64_t stride;          // spatial subsample s (λ or 1)
  bool nearest;            // nearest-neighbour interpolation on (V̂, Û)
};

// Two taps of a 1D linear interpolation at s: indices i0, i0+1 with weights w0, w1 (w1 may be 0).
template <typename acc_t>
struct Taps {
  int64_t i0;
  acc_t w0, w1;
};

template <typename acc_t>
C10_HOST_DEVICE inline Taps<acc_t> linear_taps(acc_t s) {
  const acc_t f = ::floor(s);
  const acc_t frac = s - f;
  return {static_cast<int64_t>(f), acc_t(1) - frac, frac};
}

// Weight that a linear interpolation at s gives to integer index i (0 if i is not a tap).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t linear_weight(acc_t s, int64_t i) {
  const Taps<acc_t> t = linear_taps(s);
  if (i == t.i0) return t.w0;
  if (i == t.i0 + 1) return t.w1;
  return acc_t(0);
}

// Window-axis taps of output index v (size Vo = λ·Vi).
template <typename acc_t>
C10_HOST_DEVICE inline Taps<acc_t> window_taps(int64_t v, int64_t lam, bool nearest) {
  if (nearest) {
    // ⌊(v + 0.5)/λ − 0.5 + 0.5⌋ = ⌊v/λ + 0.5/λ⌋ = v div λ for v >= 0
    return {v / lam, acc_t(1), acc_t(0)};
  }
  return linear_taps<acc_t>((acc_t(v) + acc_t(0.5)) / acc_t(lam) - acc_t(0.5));
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t window_weight(int64_t v, int64_t vi, int64_t lam, bool nearest) {
  if (nearest) return (v / lam == vi) ? acc_t(1) : acc_t(0);
  return linear_weight<acc_t>((acc_t(v) + acc_t(0.5)) / acc_t(lam) - acc_t(0.5), vi);
}

// Spatial sample position: sy = y·s + v − Vo/2 + 0.5 = t + c with t = y·s + v (an integer) and
// c = 0.5 − Vo/2 (an integer or a half-integer): exact in floating point.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t spatial_offset(int64_t window_size_out) {
  return acc_t(0.5) - acc_t(window_size_out) / acc_t(2);
}

// Forward, split in two so the CPU kernel can hoist per-row work: the (v, u, y) taps of an output row
// give at most 8 weighted input rows (an input row offset, or -1 for a row outside the input that
// contributes pad_val); each output element then interpolates along x between two taps of those rows.
template <typename acc_t>
struct RowTerms {
  int64_t offset[8];  // element offset of input row (iv, iu, iy, 0) in the image, or -1 (padding)
  acc_t weight[8];
  int count;
};

template <typename acc_t>
C10_HOST_DEVICE inline RowTerms<acc_t> swap_align2nat_row(const SwapGeometry& g, int64_t v, int64_t u, int64_t y) {
  const Taps<acc_t> tv = window_taps<acc_t>(v, g.lam, g.nearest);
  const Taps<acc_t> tu = window_taps<acc_t>(u, g.lam, g.nearest);
  const Taps<acc_t> ty = linear_taps<acc_t>(acc_t(y * g.stride + v) + spatial_offset<acc_t>(g.Vo));
  RowTerms<acc_t> r;
  r.count = 0;
  for (int a = 0; a < 2; ++a) {
    const acc_t wv = a ? tv.w1 : tv.w0;
    const int64_t iv = tv.i0 + a;
    for (int b = 0; b < 2; ++b) {
      const acc_t wu = b ? tu.w1 : tu.w0;
      const int64_t iu = tu.i0 + b;
      for (int c = 0; c < 2; ++c) {
        const acc_t wy = c ? ty.w1 : ty.w0;
        const int64_t iy = ty.i0 + c;
        const acc_t w = wv * wu * wy;
        if (w == acc_t(0)) continue;
        const bool inside = iv >= 0 && iv < g.Vi && iu >= 0 && iu < g.Ui && iy >= 0 && iy < g.Hi;
        r.offset[r.count] = inside ? ((iv * g.Ui + iu) * g.Hi + iy) * g.Wi : -1;
        r.weight[r.count] = w;
        ++r.count;
      }
    }
  }
  return r;
}

// Value of output element (v, u, y, x) given its row terms; `in` points at the image (Vi,Ui,Hi,Wi).
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t swap_align2nat_at(const scalar_t* in, const SwapGeometry& g, const RowTerms<acc_t>& r,
                                               int64_t u, int64_t x, acc_t pad_val) {
  const Taps<acc_t> tx = linear_taps<acc_t>(acc_t(x * g.stride + u) + spatial_offset<acc_t>(g.Uo));
  const int64_t ix0 = tx.i0, ix1 = tx.i0 + 1;
  const bool in0 = ix0 >= 0 && ix0 < g.Wi, in1 = ix1 >= 0 && ix1 < g.Wi;
  acc_t val = 0;
  for (int k = 0; k < r.count; ++k) {
    const int64_t off = r.offset[k];
    const acc_t v0 = (off >= 0 && in0) ? acc_t(in[off + ix0]) : pad_val;
    acc_t s = tx.w0 * v0;
    if (tx.w1 != acc_t(0)) s += tx.w1 * ((off >= 0 && in1) ? acc_t(in[off + ix1]) : pad_val);
    val += r.weight[k] * s;
  }
  return val;
}

C10_HOST_DEVICE inline int64_t floor_div(int64_t a, int64_t b) {  // b > 0
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}
C10_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }
C10_HOST_DEVICE inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
C10_HOST_DEVICE inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Enumerates the (window index o, spatial index p) output pairs of one axis pair (V,H) or (U,W) that
// read input (window index wi, spatial index si) with a non-zero weight, calling f(o, p, weight).
// Work is O(number of such pairs + a few), independent of λ for swap_align2nat.
template <typename acc_t, typename F>
C10_HOST_DEVICE inline void for_each_reader(int64_t wi, int64_t si, int64_t win_out, int64_t sp_out,
                                            int64_t lam, int64_t stride, bool nearest, F&& f) {
  const acc_t c = spatial_offset<acc_t>(win_out);
  // The spatial sample t + c must lie in (si − 1, si + 1): at most three integers t.
  const int64_t t_lo = static_cast<int64_t>(::ceil(acc_t(si - 1) - c));
  const int64_t t_hi = static_cast<int64_t>(::floor(acc_t(si + 1) - c));
  // Window outputs whose sample can touch wi lie in [λ(wi−1), λ(wi+2)].
  const int64_t o_lo = max64(0, lam * (wi - 1));
  const int64_t o_hi = min64(win_out - 1, lam * (wi + 2));
  for (int64_t t = t_lo; t <= t_hi; ++t) {
    const acc_t ws = linear_weight<acc_t>(acc_t(t) + c, si);
    if (ws == acc_t(0)) continue;
    // o = t − p·stride with o in [o_lo, o_hi], p in [0, sp_out)
    const int64_t p_lo = max64(0, ceil_div(t - o_hi, stride));
    const int64_t p_hi = min64(sp_out - 1, floor_div(t - o_lo, stride));
    for (int64_t p = p_lo; p <= p_hi; ++p) {
      const int64_t o = t - p * stride;
      const acc_t ww = window_weight<acc_t>(o, wi, lam, nearest);
      if (ww == acc_t(0)) continue;
      f(o, p, ww * ws);
    }
  }
}

// Calls f(o, weight) for every window index o of an output axis of size win_out whose sample reads
// input window index wi with a non-zero weight.
template <typename acc_t, typename F>
C10_HOST_DEVICE inline void for_each_window_reader(int64_t wi, int64_t win_out, int64_t lam, bool nearest, F&& f) {
  const int64_t o_hi = min64(win_out - 1, lam * (wi + 2));
  for (int64_t o = max64(0, lam * (wi - 1)); o <= o_hi; ++o) {
    const acc_t w = window_weight<acc_t>(o, wi, lam, nearest);
    if (w != acc_t(0)) f(o, w);
  }
}

// Backward as a gather (deterministic, no atomics): gradient of input element (vi, ui, yi, xi) of one
// image from the output gradient `gout` of that image (Vo, Uo, Ho, Wo), contiguous.
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline acc_t swap_align2nat_grad(const scalar_t* gout, const SwapGeometry& g, int64_t vi,
                                                 int64_t ui, int64_t yi, int64_t xi) {
  acc_t acc = 0;
  for_each_reader<acc_t>(vi, yi, g.Vo, g.Ho, g.lam, g.stride, g.nearest, [&](int64_t v, int64_t y, acc_t wvy) {
    for_each_reader<acc_t>(ui, xi, g.Uo, g.Wo, g.lam, g.stride, g.nearest, [&](int64_t u, int64_t x, acc_t wux) {
      acc += wvy * wux * acc_t(gout[((v * g.Uo + u) * g.Ho + y) * g.Wo + x]);
    });
  });
  return acc;
}

}  // namespace tensormask::detail

// The test-time image resize of detectron2 (ResizeTransform.apply_image on a uint8 image:
// PIL.Image.resize(..., BILINEAR)), reimplemented from Pillow's published algorithm (libImaging
// Resample.c) so that tensormask_infer gives the same pixels as the Python path without Python:
//
// * per output column xx (rows alike): scale = in / out, filterscale = max(scale, 1) (a downscale widens
//   the triangle filter: antialiasing), support = filterscale, centre = (xx + ½)·scale, taps
//   x ∈ [⌊centre − support + ½⌋, ⌊centre + support + ½⌋) ∩ [0, in), weights tri((x − centre + ½) / filterscale)
//   normalised to sum 1, then fixed point: round-half-away(w·2^22);
// * two passes, each output clamp((2^21 + Σ pixel·weight) >> 22, 0, 255) — the intermediate image is
//   uint8, as Pillow's; a pass is skipped when its size is unchanged. Horizontal first, except that
//   Pillow 13 goes vertical first when the height shrinks by more than twice the width's shrink
//   (h − out_h > 0 and h − out_h > 2·(w − out_w)); older Pillows always go horizontal first.
//
// Plain C++ on interleaved HWC uint8 buffers (no ATen), so the exact bits are testable anywhere.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace tensormask::detail {

namespace pil {

constexpr int kPrecisionBits = 32 - 8 - 2;

struct Coeffs {
  int ksize = 0;
  std::vector<int> first, count;   // per output index: first input index, number of taps
  std::vector<int32_t> weights;    // out_size × ksize fixed-point weights
};

inline double triangle(double x) {
  x = x < 0.0 ? -x : x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

inline Coeffs precompute(int in_size, int out_size) {
  Coeffs c;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = filterscale;  // the bilinear filter's support is 1
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);  // truncation, as Pillow
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = triangle((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double w = ww != 0.0 ? k[x] / ww : k[x];
      c.weights[static_cast<size_t>(xx) * c.ksize + x] =
          static_cast<int32_t>(w < 0 ? -0.5 + w * (1 << kPrecisionBits) : 0.5 + w * (1 << kPrecisionBits));
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  const int32_t s = v >> kPrecisionBits;  // arithmetic shift: floor
  return static_cast<uint8_t>(s < 0 ? 0 : (s > 255 ? 255 : s));
}

}  // namespace pil

// PIL.Image.resize((out_w, out_h), BILINEAR) of an interleaved uint8 image `in` (h × w × channels,
// row-major) into `out` (out_h × out_w × channels). Sizes must be positive.
inline void resize_bilinear_pil(const uint8_t* in, int h, int w, int channels, uint8_t* out, int out_h, int out_w) {
  const bool horizontal = out_w != w, vertical = out_h != h;
  if (horizontal && vertical && h - out_h > 0 && h - out_h > 2 * (w - out_w)) {
    // Pillow ≥ 13 runs the vertical pass first when the height shrinks by more than twice what the
    // width shrinks (ImagingResampleInner); the uint8 intermediate makes the order visible.
    std::vector<uint8_t> temp(static_cast<size_t>(out_h) * w * channels);
    resize_bilinear_pil(in, h, w, channels, temp.data(), out_h, w);
    resize_bilinear_pil(temp.data(), out_h, w, channels, out, out_h, out_w);
    return;
  }
  std::vector<uint8_t> temp;
  const uint8_t* src = in;
  int src_w = w;
  if (horizontal) {
    const pil::Coeffs c = pil::precompute(w, out_w);
    uint8_t* dst = vertical ? (temp.resize(static_cast<size_t>(h) * out_w * channels), temp.data()) : out;
    for (int y = 0; y < h; ++y) {
      const uint8_t* row = in + static_cast<size_t>(y) * w * channels;
      for (int xx = 0; xx < out_w; ++xx) {
        const int32_t* k = &c.weights[static_cast<size_t>(xx) * c.ksize];
        for (int ch = 0; ch < channels; ++ch) {
          int32_t ss = 1 << (pil::kPrecisionBits - 1);
          for (int x = 0; x < c.count[xx]; ++x) ss += row[static_cast<size_t>(x + c.first[xx]) * channels + ch] * k[x];
          dst[(static_cast<size_t>(y) * out_w + xx) * channels + ch] = pil::clip8(ss);
        }
      }
    }
    if (!vertical) return;
    src = temp.data();
    src_w = out_w;
  }
  if (vertical) {
    const pil::Coeffs c = pil::precompute(h, out_h);
    for (int yy = 0; yy < out_h; ++yy) {
      const int32_t* k = &c.weights[static_cast<size_t>(yy) * c.ksize];
      for (int xx = 0; xx < src_w; ++xx) {
        for (int ch = 0; ch < channels; ++ch) {
          int32_t ss = 1 << (pil::kPrecisionBits - 1);
          for (int y = 0; y < c.count[yy]; ++y)
            ss += src[(static_cast<size_t>(y + c.first[yy]) * src_w + xx) * channels + ch] * k[y];
          out[(static_cast<size_t>(yy) * out_w + xx) * channels + ch] = pil::clip8(ss);
        }
      }
    }
    return;
  }
  std::copy(in, in + static_cast<size_t>(h) * w * channels, out);
}

}  // namespace tensormask::detail

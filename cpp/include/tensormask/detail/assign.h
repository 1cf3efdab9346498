// Label assignment of the sliding windows (paper §4.2, footnote 3) and the ground-truth mask crop,
// shared by the CPU kernels (cpp/src/ops/assign_windows.cpp, crop_windows.cpp) and the CUDA kernels
// (cuda/assign_windows.cu, crop_windows.cu) so that both compute exactly the same labels. All
// geometry is in float64 image pixels: with float32 boxes and integer strides/window sizes every
// test below is exact, hence identical on CPU, CUDA and a float64 reference.
//
// Windows. FPN level k has stride s_k and a feature map (H_k, W_k); window a at level k has side
// side = window_size[a]·s_k and is centred at image pixel (y·s_k, x·s_k). Windows are numbered level
// after level, and inside a level in (y, x, a) row-major order: index = offset_k + (y·W_k + x)·A + a.
//
// The rule, for a non-crowd ground-truth box m = [x1, x2) × [y1, y2) (tight box of the mask, x2/y2
// exclusive pixel edges, i.e. the continuous extent [x1, x2] × [y1, y2]):
//   (i)   containment: c − side/2 ≤ x1, x2 ≤ c + side/2 (and likewise for y), and the size test
//         size(m) ≥ side − (deduct_unit ? s_k : 0), where size(m) = max(x2−x1, y2−y1)·scale_thresh,
//         raised to min_window_size when it is smaller and the fallback is on (footnote 3);
//   (ii)  centrality: |centre(m) − c|₂ ≤ center_thresh·s_k;
//   (iii) uniqueness: m is the only non-crowd box satisfying (i) and (ii) for the window.
// Label: the box index if positive; otherwise kIgnore if the window's centre pixel lies in a crowd
// region or (uniqueness off) several boxes satisfy (i)+(ii); otherwise kNegative.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

namespace tensormask::detail {

constexpr int64_t kNegative = -1;  // negative window (background)
constexpr int64_t kIgnore = -2;    // ignored window: no classification loss

constexpr int kMaxLevels = 16;
constexpr int kMaxWindowSizes = 16;
// Bound on level sizes, strides and window sizes: keeps H·W·A, y·s and window_size·s far from int64
// overflow (2^28·2^28·16 = 2^60).
constexpr int64_t kMaxGridValue = int64_t{1} << 28;

// The windows of all levels of one image. Passed by value to the CUDA kernels.
struct WindowGrid {
  int num_levels;                         // L
  int num_sizes;                          // A
  int64_t height[kMaxLevels];             // H_k
  int64_t width[kMaxLevels];              // W_k
  int64_t stride[kMaxLevels];             // s_k, image pixels
  int64_t offset[kMaxLevels + 1];         // index of the first window of level k; offset[L] = R
  int64_t window_size[kMaxWindowSizes];   // in units of the level's stride
};

// Thresholds of the rule.
struct AssignRule {
  double scale_thresh;     // size test: max(m_w, m_h)·scale_thresh ≥ side − unit
  double center_thresh;    // centrality radius, in units of s_k
  double min_window_size;  // fallback size: smallest side at level 0 − (deduct_unit ? s_0 : 0)
  bool deduct_unit;        // subtract s_k from the window side in the size test
  bool fallback;           // footnote 3
};

// Level of window index w (linear search; L ≤ kMaxLevels).
C10_HOST_DEVICE inline int level_of(const WindowGrid& g, int64_t w) {
  int k = 0;
  while (k + 1 < g.num_levels && w >= g.offset[k + 1]) ++k;
  return k;
}

// Crowd test of the window position (y, x) at level k: is its centre pixel (y·s_k, x·s_k) inside the
// crowd mask (Hc, Wc) (uint8, row-major)? Pixels outside the mask are not crowd.
C10_HOST_DEVICE inline bool centre_in_crowd(const WindowGrid& g, int k, int64_t y, int64_t x,
                                            const uint8_t* crowd, int64_t Hc, int64_t Wc) {
  const int64_t py = y * g.stride[k], px = x * g.stride[k];
  return py < Hc && px < Wc && crowd[py * Wc + px] != 0;
}

// The size a box brings to the size test: max side·scale_thresh, raised to min_window_size by the
// fallback.
C10_HOST_DEVICE inline double box_size_for_test(const AssignRule& r, const double* box) {
  const double w = box[2] - box[0], h = box[3] - box[1];
  const double s = (w > h ? w : h) * r.scale_thresh;
  return (r.fallback && s < r.min_window_size) ? r.min_window_size : s;
}

// Inclusive range [lo, hi] of the positions along one axis (size n, stride s) that can hold a window
// centre within `radius` of c. Widened by one on each side so rounding never drops a candidate: the
// exact test is window_matches. Empty (lo > hi) for a non-finite c.
struct AxisRange {
  int64_t lo, hi;
};

C10_HOST_DEVICE inline AxisRange candidate_range(double c, double radius, int64_t s, int64_t n) {
  double lo = ::ceil((c - radius) / double(s)) - 1.0;
  double hi = ::floor((c + radius) / double(s)) + 1.0;
  if (!(lo <= hi) || n <= 0) return {0, -1};  // NaN
  lo = lo > 0.0 ? lo : 0.0;
  hi = hi < double(n - 1) ? hi : double(n - 1);
  if (lo > hi) return {0, -1};
  return {static_cast<int64_t>(lo), static_cast<int64_t>(hi)};
}

// (ii) centrality of position (y, x) at level k for a box of centre (bcy, bcx).
C10_HOST_DEVICE inline bool is_central(const AssignRule& r, const WindowGrid& g, int k, int64_t y, int64_t x,
                                       double bcy, double bcx) {
  const double s = double(g.stride[k]);
  const double dy = bcy - double(y) * s, dx = bcx - double(x) * s;
  const double radius = r.center_thresh * s;
  return dy * dy + dx * dx <= radius * radius;
}

// (i) containment and size test of window (k, y, x, a) for `box` (x1, y1, x2, y2), whose size for the
// test is `size` (box_size_for_test).
C10_HOST_DEVICE inline bool contains_box(const AssignRule& r, const WindowGrid& g, int k, int64_t y, int64_t x,
                                         int a, const double* box, double size) {
  const double s = double(g.stride[k]);
  const double side = double(g.window_size[a]) * s;
  if (!(size >= side - (r.deduct_unit ? s : 0.0))) return false;
  const double half = side / 2.0, cy = double(y) * s, cx = double(x) * s;
  return cx - half <= box[0] && cy - half <= box[1] && box[2] <= cx + half && box[3] <= cy + half;
}

// Calls f(window index) for every window of level k that satisfies (i) and (ii) for `box`. Work is
// O(candidate positions · A), independent of the feature map size.
template <typename F>
C10_HOST_DEVICE inline void for_each_match(const AssignRule& r, const WindowGrid& g, int k, const double* box, F&& f) {
  const double bcx = (box[0] + box[2]) / 2.0, bcy = (box[1] + box[3]) / 2.0;
  const double size = box_size_for_test(r, box);
  const double radius = r.center_thresh * double(g.stride[k]);
  const AxisRange ry = candidate_range(bcy, radius, g.stride[k], g.height[k]);
  const AxisRange rx = candidate_range(bcx, radius, g.stride[k], g.width[k]);
  for (int64_t y = ry.lo; y <= ry.hi; ++y) {
    for (int64_t x = rx.lo; x <= rx.hi; ++x) {
      if (!is_central(r, g, k, y, x, bcy, bcx)) continue;
      for (int a = 0; a < g.num_sizes; ++a) {
        if (contains_box(r, g, k, y, x, a, box, size)) f(g.offset[k] + (y * g.width[k] + x) * g.num_sizes + a);
      }
    }
  }
}

// Final label of a window from its crowd flag and the number of boxes satisfying (i)+(ii) (`count`;
// `gt` is the box when count == 1).
C10_HOST_DEVICE inline int64_t resolve_label(bool crowd, int64_t count, int64_t gt, bool uniqueness) {
  if (count == 1) return gt;
  if (crowd || (count > 1 && !uniqueness)) return kIgnore;
  return kNegative;
}

// ---------------------------------------------------------------------------------------------------
// crop_windows: detectron2's BitMasks.crop_and_resize, i.e. RoIAlign(aligned=True, sampling_ratio=0)
// of the binary mask over the window box, then >= 0.5.
// The window centred at (cy, cx) with V×U pixels of unit σ is the box [cx − U·σ/2, cx + U·σ/2) ×
// [cy − V·σ/2, cy + V·σ/2). Its pixel (v, u) is the bin [top + v·σ, top + (v+1)·σ) (same for x) and
// averages n_y × n_x bilinear samples, n = ceil(σ) per axis (RoIAlign's adaptive ceil(roi_h / V)),
// sample iy of bin v at image coordinate top + v·σ + (iy + 0.5)·σ/n, i.e. at pixel-index coordinate
// (image coordinate − 0.5): image pixel i's centre is at i + 0.5 (aligned=True).
// Each sample follows torchvision's roi_align bilinear rule: 0 if the coordinate is < −1 or > H
// (W) on either axis; else clamped to [0, H−1] (border pixels extend half a pixel and more).
// ---------------------------------------------------------------------------------------------------

// Bound on σ_VU: a window pixel averages ceil(σ)² samples (128² for the baseline head at P7).
constexpr double kMaxCropSigma = 1024.0;

// Samples per bin along one axis: RoIAlign's adaptive count ceil(roi_size / pooled_size) = ceil(σ).
C10_HOST_DEVICE inline int64_t crop_samples(double sigma) {
  const double n = ::ceil(sigma);
  return n < 1.0 ? 1 : static_cast<int64_t>(n);
}

// Pixel-index coordinate of sample i (of n) of window pixel v along one axis.
C10_HOST_DEVICE inline double crop_coord(double centre, double sigma, int64_t size, int64_t v, int64_t i, int64_t n) {
  return centre - double(size) * sigma / 2.0 - 0.5 + double(v) * sigma + (double(i) + 0.5) * sigma / double(n);
}

// Bilinear sample of the (H, W) row-major mask at pixel-index coordinates (sy, sx), torchvision's
// roi_align rule: 0 outside [−1, H] × [−1, W] (and for NaN), coordinates clamped to the image.
template <typename scalar_t>
C10_HOST_DEVICE inline double bilinear_roi_align(const scalar_t* mask, int64_t H, int64_t W, double sy, double sx) {
  if (!(sy >= -1.0 && sy <= double(H) && sx >= -1.0 && sx <= double(W))) return 0.0;  // also NaN
  if (sy <= 0.0) sy = 0.0;
  if (sx <= 0.0) sx = 0.0;
  int64_t y0 = static_cast<int64_t>(sy), x0 = static_cast<int64_t>(sx), y1, x1;
  if (y0 >= H - 1) {
    y0 = y1 = H - 1;
    sy = double(y0);
  } else {
    y1 = y0 + 1;
  }
  if (x0 >= W - 1) {
    x0 = x1 = W - 1;
    sx = double(x0);
  } else {
    x1 = x0 + 1;
  }
  const double ly = sy - double(y0), lx = sx - double(x0), hy = 1.0 - ly, hx = 1.0 - lx;
  auto at = [&](int64_t yy, int64_t xx) -> double { return static_cast<double>(mask[yy * W + xx]); };
  return hy * hx * at(y0, x0) + hy * lx * at(y0, x1) + ly * hx * at(y1, x0) + ly * lx * at(y1, x1);
}

// Binary crop value of window pixel (v, u): the mean of its n_y·n_x samples, >= 0.5.
template <typename scalar_t>
C10_HOST_DEVICE inline float crop_value(const scalar_t* mask, int64_t H, int64_t W, double cy, double cx,
                                        double sigma, int64_t V, int64_t U, int64_t v, int64_t u) {
  if (H <= 0 || W <= 0) return 0.0f;
  const int64_t n = crop_samples(sigma);
  double sum = 0.0;
  for (int64_t iy = 0; iy < n; ++iy) {
    const double sy = crop_coord(cy, sigma, V, v, iy, n);
    for (int64_t ix = 0; ix < n; ++ix) sum += bilinear_roi_align(mask, H, W, sy, crop_coord(cx, sigma, U, u, ix, n));
  }
  return sum / double(n * n) >= 0.5 ? 1.0f : 0.0f;
}

// ---------------------------------------------------------------------------------------------------
// Host-side argument checks shared by the CPU and CUDA launchers: bad values raise c10::ValueError,
// bad dtypes c10::TypeError, each naming the argument.
// ---------------------------------------------------------------------------------------------------

// A contiguous tensor of the same bytes, bool reinterpreted as uint8 (bool is stored as one byte 0/1).
inline at::Tensor bool_as_byte(const at::Tensor& t) {
  return (t.scalar_type() == at::kBool ? t.view(at::kByte) : t).contiguous();
}

inline void check_same_device(const at::Tensor& t, const char* arg, const at::Tensor& ref, const char* ref_arg,
                              const char* op) {
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": `", arg, "` is on ", t.device(), " but `", ref_arg,
                    "` is on ", ref.device(), "; all tensors must be on the same device");
}

// Window grid from the flattened level sizes [H_0, W_0, H_1, W_1, ...], the strides and the window
// sizes (in units of the stride).
inline WindowGrid make_window_grid(c10::IntArrayRef level_sizes, c10::IntArrayRef strides,
                                   c10::IntArrayRef window_sizes, const char* op) {
  const int64_t L = static_cast<int64_t>(strides.size());
  const int64_t A = static_cast<int64_t>(window_sizes.size());
  TORCH_CHECK_VALUE(L >= 1 && L <= kMaxLevels, op, ": `strides` must have 1 to ", kMaxLevels,
                    " entries (one per level), got ", L);
  TORCH_CHECK_VALUE(static_cast<int64_t>(level_sizes.size()) == 2 * L, op,
                    ": `level_sizes` must be [H_0, W_0, H_1, W_1, ...] with 2 entries per level (",
                    2 * L, " for ", L, " strides), got ", level_sizes.size(), " entries");
  TORCH_CHECK_VALUE(A >= 1 && A <= kMaxWindowSizes, op, ": `window_sizes` must have 1 to ", kMaxWindowSizes,
                    " entries, got ", A);
  WindowGrid g{};
  g.num_levels = static_cast<int>(L);
  g.num_sizes = static_cast<int>(A);
  for (int64_t a = 0; a < A; ++a) {
    TORCH_CHECK_VALUE(window_sizes[a] >= 1 && window_sizes[a] <= kMaxGridValue, op,
                      ": `window_sizes` must be positive and at most ", kMaxGridValue, ", got ", window_sizes);
    g.window_size[a] = window_sizes[a];
  }
  g.offset[0] = 0;
  for (int64_t k = 0; k < L; ++k) {
    TORCH_CHECK_VALUE(strides[k] >= 1 && strides[k] <= kMaxGridValue, op, ": `strides` must be positive and at most ",
                      kMaxGridValue, ", got ", strides);
    TORCH_CHECK_VALUE(level_sizes[2 * k] >= 0 && level_sizes[2 * k + 1] >= 0, op,
                      ": `level_sizes` must be non-negative, got ", level_sizes);
    TORCH_CHECK_VALUE(level_sizes[2 * k] <= kMaxGridValue && level_sizes[2 * k + 1] <= kMaxGridValue, op,
                      ": `level_sizes` must be at most ", kMaxGridValue, ", got ", level_sizes);
    g.stride[k] = strides[k];
    g.height[k] = level_sizes[2 * k];
    g.width[k] = level_sizes[2 * k + 1];
    // H·W·A ≤ 2^60 cannot overflow; the running sum over 16 levels can.
    const int64_t level_windows = g.height[k] * g.width[k] * A;
    TORCH_CHECK_VALUE(level_windows <= INT64_MAX - g.offset[k], op, ": `level_sizes` ", level_sizes,
                      " give more than 2^63 windows");
    g.offset[k + 1] = g.offset[k] + level_windows;
  }
  return g;
}

inline AssignRule make_assign_rule(const WindowGrid& g, double scale_thresh, double center_thresh, bool deduct_unit,
                                   bool fallback, const char* op) {
  TORCH_CHECK_VALUE(std::isfinite(scale_thresh) && scale_thresh > 0, op,
                    ": `scale_thresh` must be a positive finite number, got ", scale_thresh);
  TORCH_CHECK_VALUE(std::isfinite(center_thresh) && center_thresh >= 0, op,
                    ": `center_thresh` must be a non-negative finite number, got ", center_thresh);
  int64_t smallest = g.window_size[0];
  for (int a = 1; a < g.num_sizes; ++a) smallest = g.window_size[a] < smallest ? g.window_size[a] : smallest;
  AssignRule r;
  r.scale_thresh = scale_thresh;
  r.center_thresh = center_thresh;
  r.min_window_size = double(smallest * g.stride[0] - (deduct_unit ? g.stride[0] : 0));
  r.deduct_unit = deduct_unit;
  r.fallback = fallback;
  return r;
}

// gt_boxes (G, 4) floating, gt_is_crowd (G,) bool/uint8, crowd_mask (Hc, Wc) bool/uint8, one device.
inline void check_assign_tensors(const at::Tensor& gt_boxes, const at::Tensor& gt_is_crowd,
                                 const at::Tensor& crowd_mask, const char* op) {
  TORCH_CHECK_VALUE(gt_boxes.dim() == 2 && gt_boxes.size(1) == 4, op,
                    ": `gt_boxes` must be a (G, 4) tensor of XYXY boxes, got shape ", gt_boxes.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(gt_boxes.scalar_type()), op,
                   ": `gt_boxes` must be a floating point tensor, got ", gt_boxes.scalar_type());
  TORCH_CHECK_VALUE(gt_is_crowd.dim() == 1 && gt_is_crowd.size(0) == gt_boxes.size(0), op,
                    ": `gt_is_crowd` must have shape (G,) = (", gt_boxes.size(0), ",), got ", gt_is_crowd.sizes());
  TORCH_CHECK_TYPE(gt_is_crowd.scalar_type() == at::kBool || gt_is_crowd.scalar_type() == at::kByte, op,
                   ": `gt_is_crowd` must be a bool or uint8 tensor, got ", gt_is_crowd.scalar_type());
  TORCH_CHECK_VALUE(crowd_mask.dim() == 2, op, ": `crowd_mask` must be a 2D (H, W) tensor (0×0 for none), got shape ",
                    crowd_mask.sizes());
  TORCH_CHECK_TYPE(crowd_mask.scalar_type() == at::kBool || crowd_mask.scalar_type() == at::kByte, op,
                   ": `crowd_mask` must be a bool or uint8 tensor, got ", crowd_mask.scalar_type());
  check_same_device(gt_is_crowd, "gt_is_crowd", gt_boxes, "gt_boxes", op);
  check_same_device(crowd_mask, "crowd_mask", gt_boxes, "gt_boxes", op);
}

// masks (G, H, W) bool/uint8/floating, gt_index (P,) int64, centers (P, 2) floating, one device.
inline void check_crop_args(const at::Tensor& masks, const at::Tensor& gt_index, const at::Tensor& centers,
                            double sigma_vu, int64_t V, int64_t U, const char* op) {
  TORCH_CHECK_VALUE(masks.dim() == 3, op, ": `masks` must be a 3D (G, H, W) tensor, got shape ", masks.sizes());
  const auto mt = masks.scalar_type();
  TORCH_CHECK_TYPE(mt == at::kBool || mt == at::kByte || at::isFloatingType(mt), op,
                   ": `masks` must be a bool, uint8 or floating point tensor, got ", mt);
  TORCH_CHECK_VALUE(gt_index.dim() == 1, op, ": `gt_index` must be a 1D (P,) tensor, got shape ", gt_index.sizes());
  TORCH_CHECK_TYPE(gt_index.scalar_type() == at::kLong, op, ": `gt_index` must be an int64 tensor, got ",
                   gt_index.scalar_type());
  TORCH_CHECK_VALUE(centers.dim() == 2 && centers.size(1) == 2 && centers.size(0) == gt_index.size(0), op,
                    ": `centers` must have shape (P, 2) = (", gt_index.size(0), ", 2), got ", centers.sizes());
  TORCH_CHECK_TYPE(at::isFloatingType(centers.scalar_type()), op,
                   ": `centers` must be a floating point tensor, got ", centers.scalar_type());
  TORCH_CHECK_VALUE(std::isfinite(sigma_vu) && sigma_vu > 0 && sigma_vu <= kMaxCropSigma, op,
                    ": `sigma_vu` must be a positive number at most ", kMaxCropSigma, " (pixels), got ", sigma_vu);
  TORCH_CHECK_VALUE(V >= 1, op, ": `V` must be a positive integer, got ", V);
  TORCH_CHECK_VALUE(U >= 1, op, ": `U` must be a positive integer, got ", U);
  check_same_device(gt_index, "gt_index", masks, "masks", op);
  check_same_device(centers, "centers", masks, "masks", op);
}

}  // namespace tensormask::detail

// decode_windows: schema, CPU kernels (forward and backward) and autograd of sparse mask decoding.
//
// The natural masks of P windows straight from the mask-head features: the 1×1 conv `mask_pred_XX`
// is evaluated only at the (channel, position) pairs the windows read, then interpolated exactly as
// swap_align2nat / up_align2nat would. The plan (which pairs, which weights) and the work bounds are
// described in tensormask/detail/decode.h; the sampling itself is that of tensormask/detail/sampling.h.
//
// CPU kernel, per window (windows in parallel, at::parallel_for), reading the features in place (NCHW):
//   1. The tap table T (see decode.h) is filled feature row by feature row: the pairs of axis V are
//      sorted by spatial offset d, so the 1–3 pairs (iv, d) that read row iy = y·s + d are consecutive;
//      the pairs of axis U are sorted by window index, so the pairs (iu, d_u) of one iu form runs of
//      consecutive columns ix = x·s + d_u (≈ 2λ + 1 long for bilinear λ ≥ 2).
//   2. For each such row group and each run, in blocks of L = 32 bytes of pixels (8 floats): the ≤ 3
//      conv channels iv·Û + iu at those L pixels, Σ_c weight[ch, c] · features[n, c, iy, ix..ix+L),
//      as L-wide vector multiply-adds, one vector load of features per channel c shared by the ≤ 3
//      channels (conv_block). No transposition of the features is needed.
//   3. out[v, u] = Σ_{i,j < 4} w_v[i]·w_u[j]·T[tap_v[i]][tap_u[j]], the padding row/column of T (and
//      the entries outside the map) holding pad_val.
//
// Backward (decode_windows_backward; training computes the mask loss at the positive windows only, so
// the dense V̂·Û-channel conv output and its gradient are never built), per window:
//   1. the gradient of the tap table, gT[a][b] = Σ_{v,u} grad[v, u]·Σ_{i: tap_v[i]=a} w_v[i]·Σ_{j: tap_u[j]=b} w_u[j];
//   2. for every entry inside the map (iy, ix), channel ch = iv_a·Û + iu_b, f = features[n, :, iy, ix]:
//      grad_bias[ch] += gT,  grad_weight[ch, :] += gT·f,  grad_features[n, :, iy, ix] += gT·weight[ch, :]
//      (padding has no gradient), ≈ 2× the forward's multiply-adds.
//   Per image, its features and their gradient are held channels-last in acc_t (one contiguous C-vector
//   per pixel: step 2 is two C-long multiply-adds per entry), transposed from and to NCHW in the thread.
//   Images in parallel: a thread owns the features gradient of its images and one weight/bias gradient
//   per image, summed in image order at the end, and takes the windows in their order: bitwise
//   deterministic whatever the number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "tensormask/detail/decode.h"
#include "tensormask/ops.h"

namespace tensormask::ops {
namespace {

constexpr const char* kOp = "decode_windows";

// Pixels per block of the CPU kernel: 32 bytes, as two 16-byte vectors (GCC/Clang vector extensions,
// one SSE register each on baseline x86-64; 32-byte vector types would be lowered through memory).
template <typename acc_t>
constexpr int64_t kLanes = 32 / sizeof(acc_t);

// out[g·L + j] = Σ_c w[g][c] · f[c·plane + j] for G ≤ 3 weight rows and j < L = kLanes: G channel rows
// of the 1×1 conv at L consecutive pixels of one feature row (NCHW, plane = H·W), read in place.
// f[c·plane + j] must be readable for every j < L. Not inlined: inside the large kernel GCC spills the
// accumulators to the stack.
template <int G, typename scalar_t, typename acc_t>
__attribute__((noinline)) void conv_block(const acc_t* const* w, const scalar_t* f, int64_t plane, int64_t C,
                                          acc_t* out) {
  typedef acc_t Vec __attribute__((vector_size(16)));
  constexpr int64_t H = 16 / sizeof(acc_t);  // lanes of one Vec; L = 2·H
  Vec lo0{}, hi0{}, lo1{}, hi1{}, lo2{}, hi2{};
  for (int64_t c = 0; c < C; ++c) {
    Vec flo, fhi;
    const scalar_t* fc = f + c * plane;
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      std::memcpy(&flo, fc, sizeof(Vec));
      std::memcpy(&fhi, fc + H, sizeof(Vec));
    } else {
      for (int64_t j = 0; j < H; ++j) {
        flo[j] = static_cast<acc_t>(fc[j]);
        fhi[j] = static_cast<acc_t>(fc[H + j]);
      }
    }
    const acc_t w0 = w[0][c];
    lo0 += flo * w0;
    hi0 += fhi * w0;
    if constexpr (G > 1) {
      const acc_t w1 = w[1][c];
      lo1 += flo * w1;
      hi1 += fhi * w1;
    }
    if constexpr (G > 2) {
      const acc_t w2 = w[2][c];
      lo2 += flo * w2;
      hi2 += fhi * w2;
    }
  }
  std::memcpy(out, &lo0, sizeof(Vec));
  std::memcpy(out + H, &hi0, sizeof(Vec));
  if constexpr (G > 1) {
    std::memcpy(out + 2 * H, &lo1, sizeof(Vec));
    std::memcpy(out + 3 * H, &hi1, sizeof(Vec));
  }
  if constexpr (G > 2) {
    std::memcpy(out + 4 * H, &lo2, sizeof(Vec));
    std::memcpy(out + 5 * H, &hi2, sizeof(Vec));
  }
}

// The same for n ≤ L pixels with scalar loads (the last columns of the map, where L are not readable).
template <typename scalar_t, typename acc_t>
void conv_block_tail(const acc_t* const* w, int count, const scalar_t* f, int64_t plane, int64_t C, int64_t n,
                     acc_t* out) {
  constexpr int64_t L = kLanes<acc_t>;
  std::fill(out, out + count * L, acc_t(0));
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* fc = f + c * plane;
    for (int g = 0; g < count; ++g) {
      const acc_t wc = w[g][c];
      for (int64_t j = 0; j < n; ++j) out[g * L + j] += wc * static_cast<acc_t>(fc[j]);
    }
  }
}

// A run of pairs of axis U with one window index iu and consecutive spatial offsets: pairs b0 + j,
// offsets shift + j, j < len ≤ kLanes.
struct URun {
  int64_t b0, len, chan, shift;
};

template <typename scalar_t>
void decode_cpu_kernel(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& bias,
                       const int64_t* win, const detail::DecodeShape& s, double pad_val, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t L = kLanes<acc_t>;
  const detail::SwapGeometry& g = s.g;
  // Axis V by spatial offset (the pairs of one feature row are consecutive), axis U by window index.
  const auto pv = detail::make_axis_plan<acc_t>(g.Vi, g.Vo, g.lam, g.nearest, /*by_channel=*/false);
  const auto pu = detail::make_axis_plan<acc_t>(g.Ui, g.Uo, g.lam, g.nearest, /*by_channel=*/true);
  const int64_t Kv = pv.count(), Ku = pu.count(), row = Ku + 1;
  const int64_t C = s.C, H = s.H, W = s.W, Ui = g.Ui, stride = g.stride, plane = H * W;
  const acc_t pad = static_cast<acc_t>(pad_val);

  std::vector<URun> runs;
  for (int64_t b = 0; b < Ku;) {
    int64_t e = b + 1;
    while (e < Ku && e - b < L && pu.chan[e] == pu.chan[b] && pu.shift[e] == pu.shift[e - 1] + 1) ++e;
    runs.push_back({b, e - b, pu.chan[b], pu.shift[b]});
    b = e;
  }

  const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
  const at::Tensor feat_t = features.contiguous();
  const at::Tensor w_t = weight.to(acc_type).contiguous();
  const at::Tensor b_t = bias.to(acc_type).contiguous();
  const scalar_t* feat = feat_t.const_data_ptr<scalar_t>();
  const acc_t* wt = w_t.const_data_ptr<acc_t>();
  const acc_t* bs = b_t.const_data_ptr<acc_t>();
  scalar_t* dst = out.mutable_data_ptr<scalar_t>();
  const int64_t out_size = g.Vo * g.Uo;

  at::parallel_for(0, s.P, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> table(static_cast<size_t>((Kv + 1) * row));
    acc_t vals[3 * L];
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = win[3 * p], y0 = win[3 * p + 1] * stride, x0 = win[3 * p + 2] * stride;
      const scalar_t* img = feat + n * C * plane;
      // 1–2. The tap table; entries outside the map, the padding row and column stay pad_val.
      std::fill(table.begin(), table.end(), pad);
      for (int64_t a0 = 0; a0 < Kv;) {  // pairs a0.. of axis V sharing feature row iy, ≤ 3 at a time
        int64_t a1 = a0 + 1;
        while (a1 < Kv && a1 - a0 < 3 && pv.shift[a1] == pv.shift[a0]) ++a1;
        const int64_t iy = y0 + pv.shift[a0];
        const int count = static_cast<int>(a1 - a0);
        if (iy >= 0 && iy < H) {
          for (const URun& r : runs) {
            // columns of the run inside the map: ix = x0 + r.shift + j, j in [j0, j1)
            const int64_t ix = x0 + r.shift;
            const int64_t j0 = std::max<int64_t>(0, -ix), j1 = std::min<int64_t>(r.len, W - ix);
            if (j0 >= j1) continue;
            const acc_t* wr[3];
            for (int k = 0; k < count; ++k) wr[k] = wt + (pv.chan[a0 + k] * Ui + r.chan) * C;
            const scalar_t* f = img + iy * W + ix + j0;
            if (ix + j0 + L <= W) {
              switch (count) {
                case 1: conv_block<1>(wr, f, plane, C, vals); break;
                case 2: conv_block<2>(wr, f, plane, C, vals); break;
                default: conv_block<3>(wr, f, plane, C, vals); break;
              }
            } else {
              conv_block_tail(wr, count, f, plane, C, j1 - j0, vals);
            }
            for (int k = 0; k < count; ++k) {
              const acc_t bias_k = bs[pv.chan[a0 + k] * Ui + r.chan];
              acc_t* t = table.data() + (a0 + k) * row + r.b0;
              for (int64_t j = j0; j < j1; ++j) t[j] = bias_k + vals[k * L + j - j0];
            }
          }
        }
        a0 = a1;
      }
      // 3. interpolation.
      scalar_t* o = dst + p * out_size;
      for (int64_t v = 0; v < g.Vo; ++v) {
        const int64_t* tv = pv.tap.data() + v * detail::kDecodeTaps;
        const acc_t* wv = pv.weight.data() + v * detail::kDecodeTaps;
        for (int64_t u = 0; u < g.Uo; ++u) {
          const int64_t* tu = pu.tap.data() + u * detail::kDecodeTaps;
          const acc_t* wu = pu.weight.data() + u * detail::kDecodeTaps;
          acc_t acc = 0;
          for (int i = 0; i < detail::kDecodeTaps; ++i) {
            if (wv[i] == acc_t(0)) continue;
            const acc_t* t = table.data() + tv[i] * row;
            acc_t r = 0;
            for (int j = 0; j < detail::kDecodeTaps; ++j) r += wu[j] * t[tu[j]];
            acc += wv[i] * r;
          }
          o[v * g.Uo + u] = static_cast<scalar_t>(acc);
        }
      }
    }
  });
}

at::Tensor decode_windows_cpu(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& windows, int64_t V, int64_t U, int64_t lam, bool subsample,
                              c10::string_view mode, double pad_val) {
  const detail::DecodeShape s = detail::check_decode_args(features, weight, bias, windows, V, U, lam, subsample, mode, kOp);
  detail::check_window_rows(windows, s.N, s.g.Ho, s.g.Wo, features.device(), kOp);
  const at::Tensor win = windows.contiguous();
  at::Tensor out = at::empty({s.P, s.g.Vo, s.g.Uo}, features.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "decode_windows_cpu", [&] {
    decode_cpu_kernel<scalar_t>(features, weight, bias, win.const_data_ptr<int64_t>(), s, pad_val, out);
  });
  return out;
}

template <typename scalar_t>
void decode_backward_cpu_kernel(const at::Tensor& grad, const at::Tensor& features, const at::Tensor& weight,
                                const int64_t* win, const detail::DecodeShape& s, at::Tensor& grad_features,
                                at::Tensor& grad_weight, at::Tensor& grad_bias) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kT = detail::kDecodeTaps;
  const detail::SwapGeometry& g = s.g;
  const auto pv = detail::make_axis_plan<acc_t>(g.Vi, g.Vo, g.lam, g.nearest, /*by_channel=*/false);
  const auto pu = detail::make_axis_plan<acc_t>(g.Ui, g.Uo, g.lam, g.nearest, /*by_channel=*/true);
  const int64_t Kv = pv.count(), Ku = pu.count(), row = Ku + 1;
  const int64_t N = s.N, C = s.C, H = s.H, W = s.W, Ui = g.Ui, stride = g.stride, K = g.Vi * g.Ui, plane = H * W;
  const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
  const at::Tensor feat_t = features.contiguous();
  const at::Tensor w_t = weight.to(acc_type).contiguous();  // (K, C)
  const at::Tensor g_t = grad.to(acc_type).contiguous();
  const scalar_t* feat = feat_t.const_data_ptr<scalar_t>();
  const acc_t* wt = w_t.const_data_ptr<acc_t>();
  const acc_t* go = g_t.const_data_ptr<acc_t>();
  scalar_t* gf_out = grad_features.mutable_data_ptr<scalar_t>();  // (N, C, H, W)
  // Per-image weight (K, C) / bias (K) gradients, summed in image order below.
  std::vector<acc_t> gw_img(static_cast<size_t>(N * K * C), acc_t(0)), gb_img(static_cast<size_t>(N * K), acc_t(0));
  std::vector<std::vector<int64_t>> by_image(static_cast<size_t>(N));
  for (int64_t p = 0; p < s.P; ++p) by_image[static_cast<size_t>(win[3 * p])].push_back(p);
  const int64_t out_size = g.Vo * g.Uo;

  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> table(static_cast<size_t>((Kv + 1) * row)), r(static_cast<size_t>(row));
    // One image channels-last in acc_t: its features and the gradient of its features.
    std::vector<acc_t> f_hwc, g_hwc;
    for (int64_t n = begin; n < end; ++n) {
      scalar_t* gf_img = gf_out + n * C * plane;
      const auto& windows = by_image[static_cast<size_t>(n)];
      if (windows.empty()) {
        std::fill(gf_img, gf_img + C * plane, scalar_t(0));
        continue;
      }
      const scalar_t* img = feat + n * C * plane;
      f_hwc.resize(static_cast<size_t>(plane * C));
      g_hwc.assign(static_cast<size_t>(plane * C), acc_t(0));
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t i = 0; i < plane; ++i) f_hwc[static_cast<size_t>(i * C + c)] = static_cast<acc_t>(img[c * plane + i]);
      }
      acc_t* gw = gw_img.data() + n * K * C;
      acc_t* gb = gb_img.data() + n * K;
      for (const int64_t p : windows) {
        const int64_t y0 = win[3 * p + 1] * stride, x0 = win[3 * p + 2] * stride;
        const acc_t* gp = go + p * out_size;
        // 1. gT, output row by output row: r[b] = Σ_u grad[v, u]·Σ_{j: tap_u[j]=b} w_u[j], then
        //    gT[tap_v[i]] += w_v[i]·r.
        std::fill(table.begin(), table.end(), acc_t(0));
        for (int64_t v = 0; v < g.Vo; ++v) {
          std::fill(r.begin(), r.end(), acc_t(0));
          bool any = false;
          for (int64_t u = 0; u < g.Uo; ++u) {
            const acc_t gv = gp[v * g.Uo + u];
            if (gv == acc_t(0)) continue;
            any = true;
            for (int j = 0; j < kT; ++j) r[pu.tap[u * kT + j]] += gv * pu.weight[u * kT + j];
          }
          if (!any) continue;
          for (int i = 0; i < kT; ++i) {
            const acc_t wv = pv.weight[v * kT + i];
            if (wv == acc_t(0)) continue;
            acc_t* t = table.data() + pv.tap[v * kT + i] * row;
            for (int64_t b = 0; b < row; ++b) t[b] += wv * r[b];
          }
        }
        // 2. The entries inside the map (the padding row Kv and column Ku have no gradient).
        for (int64_t a = 0; a < Kv; ++a) {
          const int64_t iy = y0 + pv.shift[a];
          if (iy < 0 || iy >= H) continue;
          const acc_t* t = table.data() + a * row;
          for (int64_t b = 0; b < Ku; ++b) {
            const int64_t ix = x0 + pu.shift[b];
            const acc_t gt = t[b];
            if (gt == acc_t(0) || ix < 0 || ix >= W) continue;
            const int64_t ch = pv.chan[a] * Ui + pu.chan[b];
            const int64_t pixel = iy * W + ix;
            const acc_t* f = f_hwc.data() + pixel * C;
            acc_t* gfp = g_hwc.data() + pixel * C;
            const acc_t* wc = wt + ch * C;
            acc_t* gwc = gw + ch * C;
            gb[ch] += gt;
            for (int64_t c = 0; c < C; ++c) {
              gwc[c] += gt * f[c];
              gfp[c] += gt * wc[c];
            }
          }
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t i = 0; i < plane; ++i) gf_img[c * plane + i] = static_cast<scalar_t>(g_hwc[static_cast<size_t>(i * C + c)]);
      }
    }
  });
  acc_t* gw_out = grad_weight.mutable_data_ptr<acc_t>();  // (K, C)
  acc_t* gb_out = grad_bias.mutable_data_ptr<acc_t>();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t i = 0; i < K * C; ++i) gw_out[i] += gw_img[static_cast<size_t>(n * K * C + i)];
    for (int64_t i = 0; i < K; ++i) gb_out[i] += gb_img[static_cast<size_t>(n * K + i)];
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> decode_windows_backward_cpu(
    const at::Tensor& grad, const at::Tensor& features, const at::Tensor& weight, const at::Tensor& windows, int64_t V,
    int64_t U, int64_t lam, bool subsample, c10::string_view mode) {
  constexpr const char* op = "decode_windows_backward";
  const detail::DecodeShape s =
      detail::check_decode_backward_args(grad, features, weight, windows, V, U, lam, subsample, mode, op);
  detail::check_window_rows(windows, s.N, s.g.Ho, s.g.Wo, features.device(), op);
  const at::Tensor win = windows.contiguous();
  const auto acc_opts = features.options().dtype(at::toOpMathType(features.scalar_type()));
  at::Tensor gf = at::empty({s.N, s.C, s.H, s.W}, features.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor gw = at::zeros({V * U, s.C}, acc_opts);
  at::Tensor gb = at::zeros({V * U}, acc_opts);
  if (s.P == 0 || features.numel() == 0) {
    gf.zero_();
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "decode_windows_backward_cpu", [&] {
      decode_backward_cpu_kernel<scalar_t>(grad, features, weight, win.const_data_ptr<int64_t>(), s, gf, gw, gb);
    });
  }
  const auto dtype = features.scalar_type();
  return {gf, gw.to(dtype), gb.to(dtype)};
}

// Autograd: the backward is decode_windows_backward. It is not differentiable itself (a second
// derivative raises instead of silently returning zeros).
class DecodeWindowsFunction : public torch::autograd::Function<DecodeWindowsFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& features, const at::Tensor& weight,
                            const at::Tensor& bias, const at::Tensor& windows, int64_t V, int64_t U, int64_t lam,
                            bool subsample, c10::string_view mode, double pad_val) {
    ctx->save_for_backward({features, weight, windows});
    ctx->saved_data["V"] = V;
    ctx->saved_data["U"] = U;
    ctx->saved_data["lam"] = lam;
    ctx->saved_data["subsample"] = subsample;
    ctx->saved_data["mode"] = std::string(mode);
    at::AutoDispatchBelowADInplaceOrView guard;
    using Sig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                           int64_t, int64_t, bool, c10::string_view, double);
    static const auto handle =
        c10::Dispatcher::singleton().findSchemaOrThrow("tensormask::decode_windows", "").typed<Sig>();
    return handle.call(features, weight, bias, windows, V, U, lam, subsample, mode, pad_val);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    torch::autograd::variable_list out(10);
    if (!grads[0].defined()) return out;
    const auto [gf, gw, gb] = decode_windows_backward(
        grads[0].contiguous(), saved[0], saved[1], saved[2], ctx->saved_data["V"].toInt(), ctx->saved_data["U"].toInt(),
        ctx->saved_data["lam"].toInt(), ctx->saved_data["subsample"].toBool(), ctx->saved_data["mode"].toStringRef());
    out[0] = gf;
    out[1] = gw;
    out[2] = gb;
    return out;
  }
};

at::Tensor decode_windows_autograd(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& bias,
                                   const at::Tensor& windows, int64_t V, int64_t U, int64_t lam, bool subsample,
                                   c10::string_view mode, double pad_val) {
  return DecodeWindowsFunction::apply(features, weight, bias, windows, V, U, lam, subsample, mode, pad_val);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> decode_windows_backward_autograd(
    const at::Tensor& grad, const at::Tensor& features, const at::Tensor& weight, const at::Tensor& windows, int64_t V,
    int64_t U, int64_t lam, bool subsample, c10::string_view mode) {
  TORCH_CHECK(!(at::GradMode::is_enabled() && (grad.requires_grad() || features.requires_grad() || weight.requires_grad())),
              "decode_windows: double backward (a derivative of the gradient, create_graph=True) is not supported; "
              "use the dense mask head (conv + swap_align2nat) for gradient penalties");
  at::AutoDispatchBelowADInplaceOrView guard;
  return decode_windows_backward(grad, features, weight, windows, V, U, lam, subsample,
                                 std::string_view(mode.data(), mode.size()));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tensormask, m) {
  m.def(
      "decode_windows(Tensor features, Tensor weight, Tensor bias, Tensor windows, int V, int U, int lam, "
      "bool subsample=True, str mode=\"bilinear\", float pad_val=-6.) -> Tensor");
  m.def(
      "decode_windows_backward(Tensor grad, Tensor features, Tensor weight, Tensor windows, int V, int U, int lam, "
      "bool subsample, str mode) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tensormask, CPU, m) {
  m.impl("decode_windows", &decode_windows_cpu);
  m.impl("decode_windows_backward", &decode_windows_backward_cpu);
}

TORCH_LIBRARY_IMPL(tensormask, Autograd, m) {
  m.impl("decode_windows", &decode_windows_autograd);
  m.impl("decode_windows_backward", &decode_windows_backward_autograd);
}

}  // namespace tensormask::ops

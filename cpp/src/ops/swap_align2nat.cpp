// up_align2nat (Fig. 4) and swap_align2nat (Fig. 5): schema, CPU kernels and autograd.
// swap_align2nat is up_align2nat whose output is subsampled by λ on (H, W), computed in one pass with
// O(output) work: the λ²-times larger intermediate of up_align2nat is never built. up_align2nat is
// the same kernel with spatial stride 1. The sampling math lives in tensormask/detail/sampling.h and
// is shared with the CUDA kernels.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "tensormask/detail/checks.h"
#include "tensormask/detail/sampling.h"
#include "tensormask/ops.h"

namespace tensormask::ops {
namespace {

using detail::SwapGeometry;

at::Tensor forward_cpu(const at::Tensor& x, int64_t lam, c10::string_view mode, double pad_val, bool subsample,
                       const char* op) {
  detail::check_4d_tensor(x, op, "x");
  detail::check_positive(lam, op, "lam");
  const bool nearest = detail::parse_nearest(mode, op);
  const at::Tensor in = x.contiguous();
  const int64_t N = in.size(0);
  const SwapGeometry g = detail::make_geometry(in.size(1), in.size(2), in.size(3), in.size(4), lam, nearest, subsample);
  at::Tensor out = at::empty({N, g.Vo, g.Uo, g.Ho, g.Wo}, in.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "swap_align2nat_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* src = in.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    const acc_t pad = static_cast<acc_t>(pad_val);
    const int64_t rows = N * g.Vo * g.Uo * g.Ho;
    const int64_t image = g.Vi * g.Ui * g.Hi * g.Wi;
    const acc_t cu = detail::spatial_offset<acc_t>(g.Uo);
    at::parallel_for(0, rows, std::max<int64_t>(1, 2048 / g.Wo), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(static_cast<size_t>(g.Wo));
      for (int64_t r = begin; r < end; ++r) {
        const int64_t y = r % g.Ho, u = (r / g.Ho) % g.Uo, v = (r / (g.Ho * g.Uo)) % g.Vo;
        const int64_t n = r / (g.Ho * g.Uo * g.Vo);
        const scalar_t* img = src + n * image;
        const detail::RowTerms<acc_t> terms = detail::swap_align2nat_row<acc_t>(g, v, u, y);
        // sx = x·s + u + c has the same fractional part along the row: the x taps are
        // ix0 = x·s + tx.i0 and ix0 + 1 with constant weights. Interior x: both taps inside.
        const detail::Taps<acc_t> tx = detail::linear_taps<acc_t>(acc_t(u) + cu);
        const int64_t last = tx.w1 != acc_t(0) ? 1 : 0;
        const int64_t x_lo = std::min(g.Wo, std::max<int64_t>(0, detail::ceil_div(-tx.i0, g.stride)));
        const int64_t x_hi = std::max(x_lo, std::min(g.Wo, detail::floor_div(g.Wi - 1 - last - tx.i0, g.stride) + 1));
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int k = 0; k < terms.count; ++k) {
          const acc_t w = terms.weight[k];
          if (terms.offset[k] < 0) {  // the whole input row is outside: padding
            for (int64_t xo = 0; xo < g.Wo; ++xo) acc[xo] += w * pad;
            continue;
          }
          const scalar_t* in_row = img + terms.offset[k];
          auto tap = [&](int64_t ix) { return (ix >= 0 && ix < g.Wi) ? acc_t(in_row[ix]) : pad; };
          for (int64_t xo = 0; xo < x_lo; ++xo) {
            const int64_t ix = xo * g.stride + tx.i0;
            acc[xo] += w * (tx.w0 * tap(ix) + (last ? tx.w1 * tap(ix + 1) : acc_t(0)));
          }
          const scalar_t* p = in_row + tx.i0;
          if (last) {
            for (int64_t xo = x_lo; xo < x_hi; ++xo) {
              const int64_t ix = xo * g.stride;
              acc[xo] += w * (tx.w0 * acc_t(p[ix]) + tx.w1 * acc_t(p[ix + 1]));
            }
          } else {
            for (int64_t xo = x_lo; xo < x_hi; ++xo) acc[xo] += w * (tx.w0 * acc_t(p[xo * g.stride]));
          }
          for (int64_t xo = x_hi; xo < g.Wo; ++xo) {
            const int64_t ix = xo * g.stride + tx.i0;
            acc[xo] += w * (tx.w0 * tap(ix) + (last ? tx.w1 * tap(ix + 1) : acc_t(0)));
          }
        }
        scalar_t* row = dst + r * g.Wo;
        for (int64_t xo = 0; xo < g.Wo; ++xo) row[xo] = static_cast<scalar_t>(acc[xo]);
      }
    });
  });
  return out;
}

at::Tensor backward_cpu(const at::Tensor& grad, int64_t lam, c10::string_view mode, int64_t V, int64_t U, int64_t H,
                        int64_t W, bool subsample, const char* op) {
  const SwapGeometry g = detail::check_backward(grad, lam, mode, V, U, H, W, subsample, op);
  const at::Tensor gout = grad.contiguous();
  const int64_t N = gout.size(0);
  at::Tensor gin = at::empty({N, V, U, H, W}, gout.options().memory_format(at::MemoryFormat::Contiguous));
  if (gin.numel() == 0) return gin;
  if (gout.numel() == 0) return gin.zero_();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gout.scalar_type(), "swap_align2nat_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* src = gout.const_data_ptr<scalar_t>();
    scalar_t* dst = gin.mutable_data_ptr<scalar_t>();
    const int64_t rows = N * V * U * H;
    const int64_t image_out = g.Vo * g.Uo * g.Ho * g.Wo;
    const acc_t cu = detail::spatial_offset<acc_t>(g.Uo);
    // Each thread owns whole input rows (n, v̂, û, ŷ) and accumulates, in a fixed order, every output
    // row (v, u, y) that reads it: bitwise deterministic whatever the number of threads, no atomics,
    // and O(8 × output) work like the forward.
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> acc(static_cast<size_t>(W));
      for (int64_t r = begin; r < end; ++r) {
        const int64_t yi = r % H, ui = (r / H) % U, vi = (r / (H * U)) % V, n = r / (H * U * V);
        const scalar_t* img = src + n * image_out;
        std::fill(acc.begin(), acc.end(), acc_t(0));
        detail::for_each_reader<acc_t>(vi, yi, g.Vo, g.Ho, g.lam, g.stride, g.nearest, [&](int64_t v, int64_t y, acc_t wvy) {
          detail::for_each_window_reader<acc_t>(ui, g.Uo, g.lam, g.nearest, [&](int64_t u, acc_t wu) {
            const acc_t w = wvy * wu;
            const scalar_t* grow = img + ((v * g.Uo + u) * g.Ho + y) * g.Wo;
            // sx = x·s + u + c has the same fractional part along the row: constant x taps.
            const detail::Taps<acc_t> tx = detail::linear_taps<acc_t>(acc_t(u) + cu);
            for (int64_t xo = 0; xo < g.Wo; ++xo) {
              const int64_t ix0 = xo * g.stride + tx.i0;
              const acc_t gv = w * acc_t(grow[xo]);
              if (ix0 >= 0 && ix0 < W) acc[ix0] += gv * tx.w0;
              if (tx.w1 != acc_t(0) && ix0 + 1 >= 0 && ix0 + 1 < W) acc[ix0 + 1] += gv * tx.w1;
            }
          });
        });
        scalar_t* row = dst + r * W;
        for (int64_t xx = 0; xx < W; ++xx) row[xx] = static_cast<scalar_t>(acc[xx]);
      }
    });
  });
  return gin;
}

at::Tensor up_align2nat_cpu(const at::Tensor& x, int64_t lam, c10::string_view mode, double pad_val) {
  return forward_cpu(x, lam, mode, pad_val, /*subsample=*/false, "up_align2nat");
}
at::Tensor swap_align2nat_cpu(const at::Tensor& x, int64_t lam, c10::string_view mode, double pad_val) {
  return forward_cpu(x, lam, mode, pad_val, /*subsample=*/true, "swap_align2nat");
}
at::Tensor up_align2nat_backward_cpu(const at::Tensor& grad, int64_t lam, c10::string_view mode, int64_t V,
                                     int64_t U, int64_t H, int64_t W) {
  return backward_cpu(grad, lam, mode, V, U, H, W, /*subsample=*/false, "up_align2nat_backward");
}
at::Tensor swap_align2nat_backward_cpu(const at::Tensor& grad, int64_t lam, c10::string_view mode, int64_t V,
                                       int64_t U, int64_t H, int64_t W) {
  return backward_cpu(grad, lam, mode, V, U, H, W, /*subsample=*/true, "swap_align2nat_backward");
}

template <bool kSubsample>
class UpsampleAlignFunction : public torch::autograd::Function<UpsampleAlignFunction<kSubsample>> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t lam,
                            c10::string_view mode, double pad_val) {
    detail::check_4d_tensor(x, kSubsample ? "swap_align2nat" : "up_align2nat", "x");
    ctx->saved_data["lam"] = lam;
    ctx->saved_data["mode"] = std::string(mode);
    ctx->saved_data["V"] = x.sym_size(1);
    ctx->saved_data["U"] = x.sym_size(2);
    ctx->saved_data["H"] = x.sym_size(3);
    ctx->saved_data["W"] = x.sym_size(4);
    at::AutoDispatchBelowADInplaceOrView guard;
    const std::string_view m(mode.data(), mode.size());
    return kSubsample ? swap_align2nat(x, lam, m, pad_val) : up_align2nat(x, lam, m, pad_val);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const int64_t lam = ctx->saved_data["lam"].toInt();
    const std::string mode = ctx->saved_data["mode"].toStringRef();
    auto size = [&](const char* k) { return ctx->saved_data[k].toSymInt(); };
    const at::Tensor& g = grads[0];
    at::Tensor gx = kSubsample
                        ? swap_align2nat_backward(g, lam, mode, size("V"), size("U"), size("H"), size("W"))
                        : up_align2nat_backward(g, lam, mode, size("V"), size("U"), size("H"), size("W"));
    return {gx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// The backward ops are linear in `grad`; their own derivative is the forward op without padding.
// This makes double backward (e.g. gradient penalties, gradgradcheck) exact.
template <bool kSubsample>
class UpsampleAlignBackwardFunction : public torch::autograd::Function<UpsampleAlignBackwardFunction<kSubsample>> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& grad, int64_t lam,
                            c10::string_view mode, c10::SymInt V, c10::SymInt U, c10::SymInt H, c10::SymInt W) {
    ctx->saved_data["lam"] = lam;
    ctx->saved_data["mode"] = std::string(mode);
    at::AutoDispatchBelowADInplaceOrView guard;
    const std::string_view m(mode.data(), mode.size());
    return kSubsample ? swap_align2nat_backward(grad, lam, m, V, U, H, W) : up_align2nat_backward(grad, lam, m, V, U, H, W);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const int64_t lam = ctx->saved_data["lam"].toInt();
    const std::string mode = ctx->saved_data["mode"].toStringRef();
    at::Tensor gg = kSubsample ? swap_align2nat(grads[0], lam, mode, 0.0) : up_align2nat(grads[0], lam, mode, 0.0);
    return {gg, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor up_align2nat_backward_autograd(const at::Tensor& grad, int64_t lam, c10::string_view mode, c10::SymInt V,
                                          c10::SymInt U, c10::SymInt H, c10::SymInt W) {
  return UpsampleAlignBackwardFunction<false>::apply(grad, lam, mode, V, U, H, W);
}
at::Tensor swap_align2nat_backward_autograd(const at::Tensor& grad, int64_t lam, c10::string_view mode, c10::SymInt V,
                                            c10::SymInt U, c10::SymInt H, c10::SymInt W) {
  return UpsampleAlignBackwardFunction<true>::apply(grad, lam, mode, V, U, H, W);
}

at::Tensor up_align2nat_autograd(const at::Tensor& x, int64_t lam, c10::string_view mode, double pad_val) {
  return UpsampleAlignFunction<false>::apply(x, lam, mode, pad_val);
}
at::Tensor swap_align2nat_autograd(const at::Tensor& x, int64_t lam, c10::string_view mode, double pad_val) {
  return UpsampleAlignFunction<true>::apply(x, lam, mode, pad_val);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tensormask, m) {
  m.def("up_align2nat(Tensor x, int lam, str mode=\"bilinear\", float pad_val=-6.) -> Tensor");
  m.def("swap_align2nat(Tensor x, int lam, str mode=\"bilinear\", float pad_val=-6.) -> Tensor");
  m.def("up_align2nat_backward(Tensor grad, int lam, str mode, SymInt V, SymInt U, SymInt H, SymInt W) -> Tensor");
  m.def("swap_align2nat_backward(Tensor grad, int lam, str mode, SymInt V, SymInt U, SymInt H, SymInt W) -> Tensor");
}

TORCH_LIBRARY_IMPL(tensormask, CPU, m) {
  m.impl("up_align2nat", &up_align2nat_cpu);
  m.impl("swap_align2nat", &swap_align2nat_cpu);
  m.impl("up_align2nat_backward", &up_align2nat_backward_cpu);
  m.impl("swap_align2nat_backward", &swap_align2nat_backward_cpu);
}

TORCH_LIBRARY_IMPL(tensormask, Autograd, m) {
  m.impl("up_align2nat", &up_align2nat_autograd);
  m.impl("swap_align2nat", &swap_align2nat_autograd);
  m.impl("up_align2nat_backward", &up_align2nat_backward_autograd);
  m.impl("swap_align2nat_backward", &swap_align2nat_backward_autograd);
}

}  // namespace tensormask::ops

// swap_align2nat_windows: the natural masks of a list of windows of swap_align2nat / up_align2nat,
// differentiable. Training needs mask logits only at the positive windows; this computes them (and
// their gradient) without the dense λV̂·λÛ × H' × W' output. Same sampling as swap_align2nat
// (tensormask/detail/sampling.h).
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "tensormask/detail/checks.h"
#include "tensormask/detail/sampling.h"
#include "tensormask/ops.h"

namespace tensormask::ops {
namespace {

using detail::SwapGeometry;

at::Tensor windows_forward_cpu(const at::Tensor& x, const at::Tensor& windows, int64_t lam, bool subsample,
                               c10::string_view mode, double pad_val) {
  const SwapGeometry g = detail::check_windows_forward(x, windows, lam, subsample, mode, "swap_align2nat_windows");
  const at::Tensor in = x.contiguous();
  const at::Tensor rows = windows.contiguous();
  const int64_t P = rows.size(0);
  at::Tensor out = at::empty({P, g.Vo, g.Uo}, in.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "swap_align2nat_windows_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* src = in.const_data_ptr<scalar_t>();
    const int64_t* w = rows.const_data_ptr<int64_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    const int64_t image = g.Vi * g.Ui * g.Hi * g.Wi;
    const acc_t pad = static_cast<acc_t>(pad_val);
    at::parallel_for(0, P * g.Vo, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t p = r / g.Vo, v = r % g.Vo;
        const int64_t n = w[3 * p], y = w[3 * p + 1], xx = w[3 * p + 2];
        for (int64_t u = 0; u < g.Uo; ++u) {
          const detail::RowTerms<acc_t> terms = detail::swap_align2nat_row<acc_t>(g, v, u, y);
          dst[r * g.Uo + u] =
              static_cast<scalar_t>(detail::swap_align2nat_at<scalar_t, acc_t>(src + n * image, g, terms, u, xx, pad));
        }
      }
    });
  });
  return out;
}

at::Tensor windows_backward_cpu(const at::Tensor& grad, const at::Tensor& windows, int64_t lam, bool subsample,
                                c10::string_view mode, int64_t N, int64_t V, int64_t U, int64_t H, int64_t W) {
  const SwapGeometry g = detail::check_windows_backward(grad, windows, lam, subsample, mode, N, V, U, H, W,
                                                         "swap_align2nat_windows_backward");
  const at::Tensor gout = grad.contiguous();
  const at::Tensor rows = windows.contiguous();
  const at::ScalarType acc_type = at::toOpMathType(gout.scalar_type());
  at::Tensor acc = at::zeros({N, V, U, H, W}, gout.options().dtype(acc_type));
  const int64_t P = rows.size(0);
  if (P == 0 || acc.numel() == 0) return acc.to(gout.scalar_type());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gout.scalar_type(), "swap_align2nat_windows_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* src = gout.const_data_ptr<scalar_t>();
    const int64_t* w = rows.const_data_ptr<int64_t>();
    acc_t* dst = acc.mutable_data_ptr<acc_t>();
    const int64_t image = V * U * H * W;
    const acc_t cu = detail::spatial_offset<acc_t>(g.Uo);
    // One thread per image, windows and pixels in a fixed order: bitwise deterministic.
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        acc_t* img = dst + n * image;
        for (int64_t p = 0; p < P; ++p) {
          if (w[3 * p] != n) continue;
          const int64_t y = w[3 * p + 1], xx = w[3 * p + 2];
          for (int64_t v = 0; v < g.Vo; ++v) {
            for (int64_t u = 0; u < g.Uo; ++u) {
              const acc_t gv = acc_t(src[(p * g.Vo + v) * g.Uo + u]);
              if (gv == acc_t(0)) continue;
              const detail::RowTerms<acc_t> terms = detail::swap_align2nat_row<acc_t>(g, v, u, y);
              const detail::Taps<acc_t> tx = detail::linear_taps<acc_t>(acc_t(xx * g.stride + u) + cu);
              for (int k = 0; k < terms.count; ++k) {
                if (terms.offset[k] < 0) continue;  // padding has no gradient
                const acc_t wk = gv * terms.weight[k];
                if (tx.i0 >= 0 && tx.i0 < W) img[terms.offset[k] + tx.i0] += wk * tx.w0;
                if (tx.w1 != acc_t(0) && tx.i0 + 1 >= 0 && tx.i0 + 1 < W) img[terms.offset[k] + tx.i0 + 1] += wk * tx.w1;
              }
            }
          }
        }
      }
    });
  });
  return acc.to(gout.scalar_type());
}

// The backward op is linear in `grad`: its derivative is the forward op without padding.
class WindowsBackwardFunction : public torch::autograd::Function<WindowsBackwardFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& windows,
                            int64_t lam, bool subsample, c10::string_view mode, c10::SymInt N, c10::SymInt V,
                            c10::SymInt U, c10::SymInt H, c10::SymInt W) {
    ctx->saved_data["lam"] = lam;
    ctx->saved_data["subsample"] = subsample;
    ctx->saved_data["mode"] = std::string(mode);
    ctx->save_for_backward({windows});
    at::AutoDispatchBelowADInplaceOrView guard;
    return swap_align2nat_windows_backward(grad, windows, lam, subsample, std::string_view(mode.data(), mode.size()),
                                           N, V, U, H, W);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto windows = ctx->get_saved_variables()[0];
    const at::Tensor gg = swap_align2nat_windows(grads[0], windows, ctx->saved_data["lam"].toInt(),
                                                 ctx->saved_data["subsample"].toBool(),
                                                 ctx->saved_data["mode"].toStringRef(), 0.0);
    return {gg, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

class WindowsFunction : public torch::autograd::Function<WindowsFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& windows,
                            int64_t lam, bool subsample, c10::string_view mode, double pad_val) {
    detail::check_4d_tensor(x, "swap_align2nat_windows", "x");
    ctx->saved_data["lam"] = lam;
    ctx->saved_data["subsample"] = subsample;
    ctx->saved_data["mode"] = std::string(mode);
    for (int d = 0; d < 5; ++d) ctx->saved_data["size" + std::to_string(d)] = x.sym_size(d);
    ctx->save_for_backward({windows});
    at::AutoDispatchBelowADInplaceOrView guard;
    return swap_align2nat_windows(x, windows, lam, subsample, std::string_view(mode.data(), mode.size()), pad_val);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto size = [&](int d) { return ctx->saved_data["size" + std::to_string(d)].toSymInt(); };
    const at::Tensor gx = swap_align2nat_windows_backward(
        grads[0], ctx->get_saved_variables()[0], ctx->saved_data["lam"].toInt(), ctx->saved_data["subsample"].toBool(),
        ctx->saved_data["mode"].toStringRef(), size(0), size(1), size(2), size(3), size(4));
    return {gx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor windows_autograd(const at::Tensor& x, const at::Tensor& windows, int64_t lam, bool subsample,
                            c10::string_view mode, double pad_val) {
  return WindowsFunction::apply(x, windows, lam, subsample, mode, pad_val);
}

at::Tensor windows_backward_autograd(const at::Tensor& grad, const at::Tensor& windows, int64_t lam, bool subsample,
                                     c10::string_view mode, c10::SymInt N, c10::SymInt V, c10::SymInt U, c10::SymInt H,
                                     c10::SymInt W) {
  return WindowsBackwardFunction::apply(grad, windows, lam, subsample, mode, N, V, U, H, W);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tensormask, m) {
  m.def(
      "swap_align2nat_windows(Tensor x, Tensor windows, int lam, bool subsample=True, str mode=\"bilinear\", "
      "float pad_val=-6.) -> Tensor");
  m.def(
      "swap_align2nat_windows_backward(Tensor grad, Tensor windows, int lam, bool subsample, str mode, SymInt N, "
      "SymInt V, SymInt U, SymInt H, SymInt W) -> Tensor");
}

TORCH_LIBRARY_IMPL(tensormask, CPU, m) {
  m.impl("swap_align2nat_windows", &windows_forward_cpu);
  m.impl("swap_align2nat_windows_backward", &windows_backward_cpu);
}

TORCH_LIBRARY_IMPL(tensormask, Autograd, m) {
  m.impl("swap_align2nat_windows", &windows_autograd);
  m.impl("swap_align2nat_windows_backward", &windows_backward_autograd);
}

}  // namespace tensormask::ops

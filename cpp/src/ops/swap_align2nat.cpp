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
    at::parallel_for(0, rows, std::max<int64_t>(1, 2048 / g.Wo), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t y = r % g.Ho, u = (r / g.Ho) % g.Uo, v = (r / (g.Ho * g.Uo)) % g.Vo;
        const int64_t n = r / (g.Ho * g.Uo * g.Vo);
        const scalar_t* img = src + n * image;
        const detail::RowTerms<acc_t> terms = detail::swap_align2nat_row<acc_t>(g, v, u, y);
        scalar_t* row = dst + r * g.Wo;
        for (int64_t xx = 0; xx < g.Wo; ++xx) {
          row[xx] = static_cast<scalar_t>(detail::swap_align2nat_at<scalar_t, acc_t>(img, g, terms, u, xx, pad));
        }
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
    // A gather over input elements: every gradient is summed by one thread in a fixed order, so the
    // result is bitwise deterministic whatever the number of threads.
    at::parallel_for(0, rows, std::max<int64_t>(1, 1024 / std::max<int64_t>(W, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t y = r % H, u = (r / H) % U, v = (r / (H * U)) % V, n = r / (H * U * V);
        const scalar_t* img = src + n * image_out;
        scalar_t* row = dst + r * W;
        for (int64_t xx = 0; xx < W; ++xx) {
          row[xx] = static_cast<scalar_t>(detail::swap_align2nat_grad<scalar_t, acc_t>(img, g, v, u, y, xx));
        }
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
}

}  // namespace tensormask::ops

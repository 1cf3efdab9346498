// align2nat and nat2align (paper §3.4, eq. 1): schema, CPU kernel and autograd.
// They are each other's adjoint, so the backward of one is the other with pad_val = 0.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "tensormask/detail/checks.h"
#include "tensormask/detail/sampling.h"
#include "tensormask/ops.h"

namespace tensormask::ops {
namespace {

at::Tensor shift_cpu(const at::Tensor& x, int64_t alpha, double pad_val, int64_t direction, const char* op) {
  detail::check_4d_tensor(x, op, "x");
  detail::check_positive(alpha, op, "alpha");
  const at::Tensor in = x.contiguous();
  at::Tensor out = at::empty_like(in, at::MemoryFormat::Contiguous);
  const int64_t N = in.size(0), V = in.size(1), U = in.size(2), H = in.size(3), W = in.size(4);
  const int64_t rows = N * V * U * H;
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "align2nat_cpu", [&] {
    const scalar_t* src = in.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    const scalar_t pad = static_cast<scalar_t>(pad_val);
    at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(W, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t y = r % H, u = (r / H) % U, v = (r / (H * U)) % V, n = r / (H * U * V);
        const scalar_t* img = src + n * V * U * H * W;
        scalar_t* row = dst + r * W;
        for (int64_t xx = 0; xx < W; ++xx) {
          const int64_t s = detail::shift_source(V, U, H, W, direction * alpha, v, u, y, xx);
          row[xx] = s >= 0 ? img[s] : pad;
        }
      }
    });
  });
  return out;
}

at::Tensor align2nat_cpu(const at::Tensor& x, int64_t alpha, double pad_val) {
  return shift_cpu(x, alpha, pad_val, +1, "align2nat");
}

at::Tensor nat2align_cpu(const at::Tensor& x, int64_t alpha, double pad_val) {
  return shift_cpu(x, alpha, pad_val, -1, "nat2align");
}

template <bool kInverse>
class ShiftFunction : public torch::autograd::Function<ShiftFunction<kInverse>> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t alpha,
                            double pad_val) {
    ctx->saved_data["alpha"] = alpha;
    at::AutoDispatchBelowADInplaceOrView guard;
    return kInverse ? nat2align(x, alpha, pad_val) : align2nat(x, alpha, pad_val);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const int64_t alpha = ctx->saved_data["alpha"].toInt();
    // d/dx of a shift with padding is the opposite shift of the gradient, with zeros outside.
    at::Tensor gx = kInverse ? align2nat(grads[0], alpha, 0.0) : nat2align(grads[0], alpha, 0.0);
    return {gx, at::Tensor(), at::Tensor()};
  }
};

at::Tensor align2nat_autograd(const at::Tensor& x, int64_t alpha, double pad_val) {
  return ShiftFunction<false>::apply(x, alpha, pad_val);
}

at::Tensor nat2align_autograd(const at::Tensor& x, int64_t alpha, double pad_val) {
  return ShiftFunction<true>::apply(x, alpha, pad_val);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(tensormask, m) {
  m.def("align2nat(Tensor x, int alpha=1, float pad_val=0.) -> Tensor");
  m.def("nat2align(Tensor x, int alpha=1, float pad_val=0.) -> Tensor");
}

TORCH_LIBRARY_IMPL(tensormask, CPU, m) {
  m.impl("align2nat", &align2nat_cpu);
  m.impl("nat2align", &nat2align_cpu);
}

TORCH_LIBRARY_IMPL(tensormask, Autograd, m) {
  m.impl("align2nat", &align2nat_autograd);
  m.impl("nat2align", &nat2align_autograd);
}

}  // namespace tensormask::ops

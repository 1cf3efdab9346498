// C++ API: thin calls into the dispatcher (see tensormask/ops.h).
#include "tensormask/ops.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace tensormask::ops {
namespace {

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using ShiftSig = at::Tensor(const at::Tensor&, int64_t, double);
using UpSig = at::Tensor(const at::Tensor&, int64_t, c10::string_view, double);
using UpBackwardSig = at::Tensor(const at::Tensor&, int64_t, c10::string_view, c10::SymInt, c10::SymInt,
                                 c10::SymInt, c10::SymInt);

}  // namespace

at::Tensor align2nat(const at::Tensor& x, int64_t alpha, double pad_val) {
  static const auto handle = op<ShiftSig>("tensormask::align2nat");
  return handle.call(x, alpha, pad_val);
}

at::Tensor nat2align(const at::Tensor& x, int64_t alpha, double pad_val) {
  static const auto handle = op<ShiftSig>("tensormask::nat2align");
  return handle.call(x, alpha, pad_val);
}

at::Tensor up_align2nat(const at::Tensor& x, int64_t lam, std::string_view mode, double pad_val) {
  static const auto handle = op<UpSig>("tensormask::up_align2nat");
  return handle.call(x, lam, c10::string_view(mode.data(), mode.size()), pad_val);
}

at::Tensor swap_align2nat(const at::Tensor& x, int64_t lam, std::string_view mode, double pad_val) {
  static const auto handle = op<UpSig>("tensormask::swap_align2nat");
  return handle.call(x, lam, c10::string_view(mode.data(), mode.size()), pad_val);
}

at::Tensor up_align2nat_backward(const at::Tensor& grad, int64_t lam, std::string_view mode, c10::SymInt V,
                                 c10::SymInt U, c10::SymInt H, c10::SymInt W) {
  static const auto handle = op<UpBackwardSig>("tensormask::up_align2nat_backward");
  return handle.call(grad, lam, c10::string_view(mode.data(), mode.size()), std::move(V), std::move(U),
                     std::move(H), std::move(W));
}

at::Tensor swap_align2nat_backward(const at::Tensor& grad, int64_t lam, std::string_view mode, c10::SymInt V,
                                   c10::SymInt U, c10::SymInt H, c10::SymInt W) {
  static const auto handle = op<UpBackwardSig>("tensormask::swap_align2nat_backward");
  return handle.call(grad, lam, c10::string_view(mode.data(), mode.size()), std::move(V), std::move(U),
                     std::move(H), std::move(W));
}

bool compiled_with_cuda() {
#ifdef TENSORMASK_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace tensormask::ops

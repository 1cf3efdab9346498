// decode_windows CUDA kernels (sparse mask decoding; plan and work bounds: tensormask/detail/decode.h).
//
// Two kernels per chunk of windows, with a global workspace of (Kv + 1)·(Ku + 1) accumulators per
// window (the chunk is sized to keep the workspace ≤ kWorkspaceElems):
//   1. table_kernel, one thread per table entry (window p, pair a of axis V, pair b of axis U):
//      T[p][a][b] = bias[iv·Û + iu] + Σ_c weight[iv·Û + iu, c]·features[n, c, y·s + d_a, x·s + d_b]
//      (pad_val outside the map and in the padding row/column). Consecutive threads take consecutive
//      pairs b of axis U, sorted by window index then offset, so a warp reads consecutive columns of
//      one feature row (coalesced) with one or two weight rows (broadcast).
//   2. interp_kernel, one thread per output element: Σ_{≤4×4} w_v·w_u·T[p][tap_v][tap_u].
// The plan (pairs, taps, weights) is window-independent: built on the host once per call and copied
// to the device (one asynchronous copy). The window range check needs the coordinates on the host: one
// small device-to-host copy (a synchronisation) per call. Accumulation in acc_t (float for half/bfloat16/float, double for double).
//
// Backward (decode_windows_backward): the adjoint of the sampling, swap_align2nat_windows_backward (the
// dense aligned gradient (N, V̂·Û, H, W), deterministic, no atomics), then the adjoint of the 1×1 conv
// as batched matrix products (cuBLAS): on a GPU the dense gradient is cheap next to the rest of a step.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "launch.cuh"
#include "tensormask/detail/decode.h"
#include "tensormask/ops.h"

namespace tensormask::ops {
namespace {

constexpr const char* kOp = "decode_windows";
constexpr int64_t kWorkspaceElems = int64_t(1) << 24;  // per chunk: 64 MiB in float, 128 MiB in double

// Device view of the two axis plans (see detail::AxisPlan).
template <typename acc_t>
struct PlanView {
  const int64_t *shift_v, *chan_v, *tap_v, *shift_u, *chan_u, *tap_u;
  const acc_t *weight_v, *weight_u;
  int64_t Kv, Ku;
};

template <typename scalar_t, typename acc_t>
__global__ void table_kernel(const scalar_t* __restrict__ feat, const scalar_t* __restrict__ weight,
                             const scalar_t* __restrict__ bias, const int64_t* __restrict__ windows, int64_t p0,
                             int64_t total, PlanView<acc_t> plan, int64_t C, int64_t H, int64_t W, int64_t Ui,
                             int64_t stride, acc_t pad, acc_t* __restrict__ table) {
  const int64_t row = plan.Ku + 1, per_window = (plan.Kv + 1) * row;
  TENSORMASK_KERNEL_LOOP(i, total) {
    const int64_t b = i % row, a = (i / row) % (plan.Kv + 1), p = p0 + i / per_window;
    acc_t val = pad;
    if (a < plan.Kv && b < plan.Ku) {
      const int64_t n = windows[3 * p];
      const int64_t iy = windows[3 * p + 1] * stride + plan.shift_v[a];
      const int64_t ix = windows[3 * p + 2] * stride + plan.shift_u[b];
      if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
        const int64_t ch = plan.chan_v[a] * Ui + plan.chan_u[b];
        const scalar_t* w = weight + ch * C;
        const scalar_t* f = feat + (n * C * H + iy) * W + ix;
        const int64_t plane = H * W;
        acc_t acc = static_cast<acc_t>(bias[ch]);
        for (int64_t c = 0; c < C; ++c) acc += static_cast<acc_t>(w[c]) * static_cast<acc_t>(f[c * plane]);
        val = acc;
      }
    }
    table[i] = val;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void interp_kernel(const acc_t* __restrict__ table, PlanView<acc_t> plan, int64_t Vo, int64_t Uo,
                              int64_t total, scalar_t* __restrict__ out) {
  const int64_t row = plan.Ku + 1, per_window = (plan.Kv + 1) * row;
  TENSORMASK_KERNEL_LOOP(i, total) {
    const int64_t u = i % Uo, v = (i / Uo) % Vo, q = i / (Uo * Vo);
    const acc_t* t = table + q * per_window;
    const int64_t* tv = plan.tap_v + v * detail::kDecodeTaps;
    const int64_t* tu = plan.tap_u + u * detail::kDecodeTaps;
    const acc_t* wv = plan.weight_v + v * detail::kDecodeTaps;
    const acc_t* wu = plan.weight_u + u * detail::kDecodeTaps;
    acc_t acc = 0;
#pragma unroll
    for (int a = 0; a < detail::kDecodeTaps; ++a) {
      if (wv[a] == acc_t(0)) continue;
      const acc_t* r = t + tv[a] * row;
      acc_t s = 0;
#pragma unroll
      for (int b = 0; b < detail::kDecodeTaps; ++b) s += wu[b] * r[tu[b]];
      acc += wv[a] * s;
    }
    out[i] = static_cast<scalar_t>(acc);
  }
}

template <typename T>
void append(std::vector<T>& dst, const std::vector<T>& src) {
  dst.insert(dst.end(), src.begin(), src.end());
}

template <typename scalar_t>
void decode_cuda_kernel(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& bias,
                        const at::Tensor& windows, const detail::DecodeShape& s, double pad_val, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const detail::SwapGeometry& g = s.g;
  // Axis U sorted by window index: consecutive threads read one weight row and consecutive columns.
  const auto pv = detail::make_axis_plan<acc_t>(g.Vi, g.Vo, g.lam, g.nearest, /*by_channel=*/false);
  const auto pu = detail::make_axis_plan<acc_t>(g.Ui, g.Uo, g.lam, g.nearest, /*by_channel=*/true);
  const int64_t Kv = pv.count(), Ku = pu.count();

  // Upload the plan in one asynchronous copy from pinned memory (PyTorch's caching host allocator keeps
  // the buffer alive until the copy is done): the int64 arrays, then the acc_t weights.
  std::vector<int64_t> ints;
  append(ints, pv.shift);
  append(ints, pv.chan);
  append(ints, pv.tap);
  append(ints, pu.shift);
  append(ints, pu.chan);
  append(ints, pu.tap);
  std::vector<acc_t> floats;
  append(floats, pv.weight);
  append(floats, pu.weight);
  const int64_t int_bytes = static_cast<int64_t>(ints.size() * sizeof(int64_t));
  const int64_t float_bytes = static_cast<int64_t>(floats.size() * sizeof(acc_t));
  at::Tensor host = at::empty({int_bytes + float_bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(host.mutable_data_ptr<uint8_t>(), ints.data(), int_bytes);
  std::memcpy(host.mutable_data_ptr<uint8_t>() + int_bytes, floats.data(), float_bytes);
  const at::Tensor plan_d = host.to(features.device(), /*non_blocking=*/true);
  const int64_t* ip = reinterpret_cast<const int64_t*>(plan_d.const_data_ptr<uint8_t>());
  PlanView<acc_t> plan;
  plan.shift_v = ip;
  plan.chan_v = plan.shift_v + Kv;
  plan.tap_v = plan.chan_v + Kv;
  plan.shift_u = plan.tap_v + g.Vo * detail::kDecodeTaps;
  plan.chan_u = plan.shift_u + Ku;
  plan.tap_u = plan.chan_u + Ku;
  plan.weight_v = reinterpret_cast<const acc_t*>(plan_d.const_data_ptr<uint8_t>() + int_bytes);
  plan.weight_u = plan.weight_v + g.Vo * detail::kDecodeTaps;
  plan.Kv = Kv;
  plan.Ku = Ku;

  const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
  const at::Tensor feat = features.contiguous();
  const at::Tensor w = weight.contiguous();
  const at::Tensor b = bias.contiguous();
  const int64_t per_window = detail::table_size(pv, pu);
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(s.P, kWorkspaceElems / per_window));
  at::Tensor table = at::empty({chunk * per_window}, features.options().dtype(acc_type));
  const auto stream = at::cuda::getCurrentCUDAStream();
  const int64_t out_size = g.Vo * g.Uo;
  for (int64_t p0 = 0; p0 < s.P; p0 += chunk) {
    const int64_t count = std::min(chunk, s.P - p0);
    const int64_t n_table = count * per_window, n_out = count * out_size;
    table_kernel<scalar_t, acc_t><<<tensormask::cuda::grid_for(n_table), tensormask::cuda::kThreads, 0, stream>>>(
        feat.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(), b.const_data_ptr<scalar_t>(),
        windows.const_data_ptr<int64_t>(), p0, n_table, plan, s.C, s.H, s.W, g.Ui, g.stride,
        static_cast<acc_t>(pad_val), table.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    interp_kernel<scalar_t, acc_t><<<tensormask::cuda::grid_for(n_out), tensormask::cuda::kThreads, 0, stream>>>(
        table.const_data_ptr<acc_t>(), plan, g.Vo, g.Uo, n_out, out.mutable_data_ptr<scalar_t>() + p0 * out_size);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

at::Tensor decode_windows_cuda(const at::Tensor& features, const at::Tensor& weight, const at::Tensor& bias,
                               const at::Tensor& windows, int64_t V, int64_t U, int64_t lam, bool subsample,
                               c10::string_view mode, double pad_val) {
  const detail::DecodeShape s =
      detail::check_decode_args(features, weight, bias, windows, V, U, lam, subsample, mode, kOp);
  const c10::cuda::CUDAGuard guard(features.device());
  detail::check_window_rows(windows, s.N, s.g.Ho, s.g.Wo, features.device(), kOp);  // one small host copy
  const at::Tensor win = windows.contiguous();
  at::Tensor out = at::empty({s.P, s.g.Vo, s.g.Uo}, features.options().memory_format(at::MemoryFormat::Contiguous));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, features.scalar_type(), "decode_windows_cuda", [&] {
    decode_cuda_kernel<scalar_t>(features, weight, bias, win, s, pad_val, out);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> decode_windows_backward_cuda(
    const at::Tensor& grad, const at::Tensor& features, const at::Tensor& weight, const at::Tensor& windows, int64_t V,
    int64_t U, int64_t lam, bool subsample, c10::string_view mode) {
  const detail::DecodeShape s = detail::check_decode_backward_args(grad, features, weight, windows, V, U, lam, subsample,
                                                                   mode, "decode_windows_backward");
  const c10::cuda::CUDAGuard guard(features.device());
  // (N, V̂, Û, H, W) gradient of the aligned tensor A = conv1x1(features); windows checked in there.
  const at::Tensor ga = swap_align2nat_windows_backward(grad.contiguous(), windows, lam, subsample,
                                                        std::string_view(mode.data(), mode.size()), s.N, V, U, s.H, s.W)
                            .reshape({s.N, V * U, s.H * s.W});
  const at::Tensor f = features.reshape({s.N, s.C, s.H * s.W});
  at::Tensor grad_bias = ga.sum(at::IntArrayRef{0, 2});  // IntArrayRef spelled out: nvcc finds {0, 2} ambiguous with DimnameList (torch 2.11)
  at::Tensor grad_weight = at::bmm(ga, f.transpose(1, 2)).sum(0);                  // (V·U, C)
  at::Tensor grad_features = at::matmul(weight.t(), ga).reshape({s.N, s.C, s.H, s.W});  // (N, C, H, W)
  return {grad_features, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(tensormask, CUDA, m) {
  m.impl("decode_windows", &decode_windows_cuda);
  m.impl("decode_windows_backward", &decode_windows_backward_cuda);
}

}  // namespace tensormask::ops

// C++ API tests of the 4D tensor ops, through the dispatcher, on small hand-computed cases.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tensormask/ops.h"

namespace tmo = tensormask::ops;

namespace {
// x[0, v, u, y, x] = 100·(v·U + u) + y·W + x
torch::Tensor ramp(int64_t V, int64_t U, int64_t H, int64_t W) {
  auto t = torch::empty({1, V, U, H, W});
  auto a = t.accessor<float, 5>();
  for (int64_t v = 0; v < V; ++v)
    for (int64_t u = 0; u < U; ++u)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) a[0][v][u][y][x] = 100.f * (v * U + u) + y * W + x;
  return t;
}
}  // namespace

TEST(Align2Nat, HandComputed) {
  // F(v,u,y,x) = F̂(v,u, y + (v−1), x + (u−1)) for a 3×3 window, α = 1.
  const auto out = tmo::align2nat(ramp(3, 3, 3, 3), 1, -1.0);
  EXPECT_FLOAT_EQ(out[0][0][0][1][1].item<float>(), 0.f);     // F̂(0,0,0,0)
  EXPECT_FLOAT_EQ(out[0][2][2][1][1].item<float>(), 808.f);   // F̂(2,2,2,2)
  EXPECT_FLOAT_EQ(out[0][1][2][2][0].item<float>(), 507.f);   // F̂(1,2,2,1) = 100·5 + 2·3 + 1
  EXPECT_FLOAT_EQ(out[0][0][0][0][0].item<float>(), -1.f);    // outside → pad
}

TEST(Align2Nat, Nat2AlignInvertsOnValidRegion) {
  const auto x = ramp(3, 3, 5, 5);
  const auto back = tmo::nat2align(tmo::align2nat(x, 1, 0.0), 1, 0.0);
  // Centre pixel (2,2) is valid for every window offset in {−1,0,1}.
  EXPECT_TRUE(torch::equal(back.select(3, 2).select(3, 2), x.select(3, 2).select(3, 2)));
}

TEST(SwapAlign2Nat, HandComputedLambda2) {
  // V̂ = Û = 1, H = W = 2, λ = 2: output (1, 2, 2, 1, 1). Constant input 1, pad −6.
  // (v,u) = (0,0): sv = −0.25, sy = −0.5 → inside weight (0.75·0.5)² = 0.140625.
  // (v,u) = (1,1): sv = 0.25, sy = 0.5 → inside weight 0.75² = 0.5625.
  const auto out = tmo::swap_align2nat(torch::ones({1, 1, 1, 2, 2}), 2, "bilinear", -6.0);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{1, 2, 2, 1, 1}));
  EXPECT_NEAR(out[0][0][0][0][0].item<float>(), 0.140625 - 6 * 0.859375, 1e-6);
  EXPECT_NEAR(out[0][1][1][0][0].item<float>(), 0.5625 - 6 * 0.4375, 1e-6);
}

TEST(SwapAlign2Nat, LambdaOneOddWindowIsAlign2Nat) {
  const auto x = ramp(3, 3, 4, 5);
  EXPECT_TRUE(torch::allclose(tmo::swap_align2nat(x, 1, "bilinear", -6.0), tmo::align2nat(x, 1, -6.0)));
  EXPECT_TRUE(torch::allclose(tmo::up_align2nat(x, 1, "nearest", -6.0), tmo::align2nat(x, 1, -6.0)));
}

TEST(SwapAlign2Nat, BackwardThroughAutograd) {
  auto x = torch::rand({2, 3, 3, 6, 5}, torch::requires_grad());
  tmo::swap_align2nat(x, 2, "bilinear", -6.0).sum().backward();
  ASSERT_TRUE(x.grad().defined());
  EXPECT_EQ(x.grad().sizes(), x.sizes());
}

TEST(Ops, BadInputRaises) {
  EXPECT_THROW(tmo::align2nat(torch::zeros({2, 3, 3, 3})), c10::ValueError);
  EXPECT_THROW(tmo::align2nat(torch::zeros({1, 3, 3, 3, 3}, torch::kInt)), c10::TypeError);
  EXPECT_THROW(tmo::swap_align2nat(torch::zeros({1, 3, 3, 3, 3}), 0), c10::ValueError);
  EXPECT_THROW(tmo::swap_align2nat(torch::zeros({1, 3, 3, 3, 3}), 2, "bicubic"), c10::ValueError);
}

// decode_windows is linear in the weight (zero bias, zero padding) and in the features, so its
// backward must be its adjoint: ⟨g, decode(dW)⟩ = ⟨grad_weight, dW⟩ and ⟨g, decode(dF)⟩ = ⟨grad_features, dF⟩.
TEST(DecodeWindows, BackwardIsTheAdjoint) {
  torch::manual_seed(0);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const int64_t N = 2, C = 3, H = 9, W = 8, V = 3, U = 2, lam = 2;
  const auto features = torch::randn({N, C, H, W}, f64);
  const auto weight = torch::randn({V * U, C}, f64);
  const auto zero_bias = torch::zeros({V * U}, f64);
  const auto windows = torch::tensor({0, 0, 0, 1, 4, 3, 0, 2, 1, 1, 4, 3}, torch::kLong).reshape({4, 3});
  const auto out = tmo::decode_windows(features, weight, zero_bias, windows, V, U, lam, true, "bilinear", 0.0);
  const auto g = torch::randn(out.sizes(), f64);
  const auto [gf, gw, gb] = tmo::decode_windows_backward(g, features, weight, windows, V, U, lam, true, "bilinear");
  ASSERT_EQ(gf.sizes(), features.sizes());
  ASSERT_EQ(gw.sizes(), weight.sizes());
  ASSERT_EQ(gb.sizes(), zero_bias.sizes());
  const auto dw = torch::randn(weight.sizes(), f64);
  const auto df = torch::randn(features.sizes(), f64);
  const auto db = torch::randn({V * U}, f64);
  auto dot = [](const torch::Tensor& a, const torch::Tensor& b) { return (a * b).sum().item<double>(); };
  const auto dec = [&](const torch::Tensor& f, const torch::Tensor& w, const torch::Tensor& b) {
    return tmo::decode_windows(f, w, b, windows, V, U, lam, true, "bilinear", 0.0);
  };
  EXPECT_NEAR(dot(g, dec(features, dw, zero_bias)), dot(gw, dw), 1e-9);
  EXPECT_NEAR(dot(g, dec(df, weight, zero_bias)), dot(gf, df), 1e-9);
  EXPECT_NEAR(dot(g, dec(features, torch::zeros_like(weight), db)), dot(gb, db), 1e-9);
  // Through autograd from C++ (the op's Autograd kernel calls the backward op).
  auto w = weight.clone().requires_grad_(true);
  tmo::decode_windows(features, w, zero_bias, windows, V, U, lam, true, "bilinear", 0.0).mul(g).sum().backward();
  EXPECT_TRUE(torch::allclose(w.grad(), gw));
  EXPECT_THROW(tmo::decode_windows_backward(g.narrow(0, 0, 3), features, weight, windows, V, U, lam, true, "bilinear"),
               c10::ValueError);
}

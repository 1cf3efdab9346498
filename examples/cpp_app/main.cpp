// A small program linking the installed libtensormask through find_package(TensorMask): it runs the
// worked examples of docs/tensor-ops.md (align2nat, swap_align2nat) and class-aware NMS + mask
// pasting through the public C++ API, checks the hand-computed values, prints them, and exits 0.
#include <tensormask/ops.h>

#include <ATen/ATen.h>

#include <cstdio>
#include <iostream>
#include <vector>

namespace {

int g_failures = 0;

// Prints `got` and reports (without stopping) when it differs from the hand-computed `want`.
void expect_equal(const char* what, const at::Tensor& got, const at::Tensor& want) {
  std::cout << what << ":\n" << got << "\n";
  if (!got.sizes().equals(want.sizes()) || !at::equal(got, want.to(got.scalar_type()))) {
    std::cout << "  MISMATCH, expected:\n" << want << "\n";
    ++g_failures;
  }
}

at::Tensor floats(std::vector<float> values, at::IntArrayRef shape) {
  return at::tensor(values, at::kFloat).reshape(shape);
}

// docs/tensor-ops.md, align2nat worked example: x(0, v, u, y, x) = 100·(3v + u) + 4y + x, V = U = 3,
// H = W = 4, α = 1, pad_val = −1.
void check_align2nat() {
  at::Tensor x = at::zeros({1, 3, 3, 4, 4});
  for (int64_t v = 0; v < 3; ++v)
    for (int64_t u = 0; u < 3; ++u) x[0][v][u] = at::arange(16, at::kFloat).view({4, 4}) + 100 * (3 * v + u);
  at::Tensor n = tensormask::ops::align2nat(x, /*alpha=*/1, /*pad_val=*/-1.0);
  using at::indexing::Slice;
  expect_equal("align2nat window at (1, 1)", n.index({0, Slice(), Slice(), 1, 1}),
               floats({0, 101, 202, 304, 405, 506, 608, 709, 810}, {3, 3}));
  expect_equal("align2nat window at (0, 0)", n.index({0, Slice(), Slice(), 0, 0}),
               floats({-1, -1, -1, -1, 400, 501, -1, 704, 805}, {3, 3}));
}

// docs/tensor-ops.md, swap_align2nat worked example: V̂ = Û = 1, H = W = 2, λ = 2, input 1, pad −6.
void check_swap_align2nat() {
  at::Tensor out = tensormask::ops::swap_align2nat(at::ones({1, 1, 1, 2, 2}), /*lam=*/2);
  using at::indexing::Slice;
  expect_equal("swap_align2nat window at (0, 0)", out.index({0, Slice(), Slice(), 0, 0}),
               floats({-5.015625f, -4.03125f, -4.03125f, -2.0625f}, {2, 2}));
}

// Class-aware NMS at IoU 0.5: box 1 overlaps box 0 (IoU 81/119) in the same class and goes; box 2
// is box 0 in another class and stays; box 3 overlaps nothing.
void check_batched_nms() {
  at::Tensor boxes = floats({0, 0, 10, 10, 1, 1, 11, 11, 0, 0, 10, 10, 50, 50, 60, 60}, {4, 4});
  at::Tensor scores = floats({0.9f, 0.8f, 0.7f, 0.6f}, {4});
  at::Tensor classes = at::tensor(std::vector<int64_t>{0, 0, 1, 0}, at::kLong);
  expect_equal("batched_nms keep", tensormask::ops::batched_nms(boxes, scores, classes, 0.5),
               at::tensor(std::vector<int64_t>{0, 2, 3}, at::kLong));
}

// A 2×2 all-ones mask pasted into the box [2, 6) × [2, 6) of an 8×8 image: exactly the 4×4 pixels
// whose centres lie in the box are set (the border samples are 0.75² = 0.5625 ≥ 0.5).
void check_paste_masks() {
  at::Tensor pasted = tensormask::ops::paste_masks(at::ones({1, 2, 2}), floats({2, 2, 6, 6}, {1, 4}), 8, 8, 0.5);
  at::Tensor want = at::zeros({1, 8, 8}, at::kBool);
  want.index_put_({0, at::indexing::Slice(2, 6), at::indexing::Slice(2, 6)}, true);
  expect_equal("paste_masks", pasted.to(at::kInt), want.to(at::kInt));
}

}  // namespace

int main() {
  std::cout << "libtensormask CUDA kernels: " << (tensormask::ops::compiled_with_cuda() ? "yes" : "no") << "\n";
  check_align2nat();
  check_swap_align2nat();
  check_batched_nms();
  check_paste_masks();
  if (g_failures > 0) {
    std::fprintf(stderr, "tensormask_cpp_app: %d check(s) failed\n", g_failures);
    return 1;
  }
  std::cout << "tensormask_cpp_app: all checks passed\n";
  return 0;
}

// C++ API tests of the post-processing ops (paper §4.3), batched_nms and paste_masks, through the
// dispatcher, on hand-computed cases.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <vector>

#include "tensormask/ops.h"

namespace tmo = tensormask::ops;

namespace {
std::vector<int64_t> to_vector(const torch::Tensor& t) {
  const auto c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}
}  // namespace

TEST(BatchedNms, HandComputed) {
  const auto boxes = torch::tensor({{0.f, 0.f, 10.f, 10.f},     // 0: class 0, kept
                                    {1.f, 0.f, 11.f, 10.f},     // 1: class 0, IoU 90/110 with 0 → suppressed
                                    {1.f, 0.f, 11.f, 10.f},     // 2: class 1, kept (other class)
                                    {20.f, 20.f, 30.f, 30.f},   // 3: class 0, best score, kept
                                    {0.f, 0.f, 10.f, 10.f},     // 4: class 0, ties box 0, later index → suppressed
                                    {5.f, 0.f, 15.f, 10.f}});   // 5: class 0, IoU 50/150 with box 0 → kept
  const auto scores = torch::tensor({0.9f, 0.8f, 0.7f, 0.95f, 0.9f, 0.6f});
  const auto idxs = torch::tensor({0, 0, 1, 0, 0, 0}, torch::kLong);

  const auto keep = tmo::batched_nms(boxes, scores, idxs, 0.5);
  EXPECT_EQ(keep.scalar_type(), torch::kLong);
  EXPECT_EQ(to_vector(keep), (std::vector<int64_t>{3, 0, 2, 5}));
  // At 0.3, box 5 (IoU 1/3 with box 0) goes too.
  EXPECT_EQ(to_vector(tmo::batched_nms(boxes, scores, idxs, 0.3)), (std::vector<int64_t>{3, 0, 2}));
  // Empty input.
  EXPECT_EQ(tmo::batched_nms(torch::zeros({0, 4}), torch::zeros({0}), torch::zeros({0}, torch::kLong), 0.5).numel(), 0);
  // Mismatched lengths name the argument.
  EXPECT_THROW(tmo::batched_nms(boxes, scores.slice(0, 0, 5), idxs, 0.5), c10::ValueError);
}

TEST(PasteMasks, HandComputed) {
  // A 2×2 grid over the box [0, 4)² in a 4×5 image. Along each axis pixel k samples the grid at
  // k/2 − 1/4: taps (outside, g0) with weights (¼, ¾), (g0, g1) (¾, ¼), (g0, g1) (¼, ¾),
  // (g1, outside) (¾, ¼).
  // Grid [[1, 0.2], [0.6, 0]]: rows interpolated first, r_i = (0.75, 0.15), (0.9, 0.15), (0.7, 0.05), (0.45, 0),
  // then columns: row 0 → 0.5625 0.6 0.3 0.1125; row 1 → 0.675 0.7125 0.3375 0.1125;
  // row 2 → 0.525 0.5375 0.2125 0.0375; row 3 → 0.3375 0.3375 0.1125 0. Column 4 is outside the box.
  const auto masks = torch::tensor({1.f, 0.2f, 0.6f, 0.f}).reshape({1, 2, 2});
  const auto boxes = torch::tensor({{0.f, 0.f, 4.f, 4.f}});
  const auto out = tmo::paste_masks(masks, boxes, 4, 5);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{1, 4, 5}));
  ASSERT_EQ(out.scalar_type(), torch::kBool);
  const auto expected = torch::tensor({1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0}, torch::kBool)
                            .reshape({1, 4, 5});
  EXPECT_TRUE(torch::equal(out, expected)) << out;
  // Threshold 0.7: only pixel (1, 1) = 0.7125 passes.
  const auto high = tmo::paste_masks(masks, boxes, 4, 5, 0.7);
  EXPECT_EQ(high.sum().item<int64_t>(), 1);
  EXPECT_TRUE(high[0][1][1].item<bool>());
  // Mismatched box count names the argument.
  EXPECT_THROW(tmo::paste_masks(masks, torch::zeros({2, 4}), 4, 5), c10::ValueError);
}

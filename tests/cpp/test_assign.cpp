// C++ API tests of assign_windows and crop_windows (paper §4.2), on a hand-computed scene.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>

#include "tensormask/ops.h"

namespace tmo = tensormask::ops;

namespace {
// One level, stride 4, a 21×21 feature map, window sizes (11, 15): sides 44 and 60 px, size-test
// thresholds 40 and 56, fallback size 40. Position (y, x) is centred at image pixel (4y, 4x).
constexpr int64_t kW = 21, kA = 2;
int64_t index(int64_t y, int64_t x, int64_t a) { return (y * kW + x) * kA + a; }
}  // namespace

TEST(AssignWindows, HandComputedScene) {
  const auto boxes = torch::tensor({{25.f, 25.f, 55.f, 55.f},    // 0: 30×30 centred at (40, 40)
                                    {17.f, 57.f, 23.f, 63.f},    // 1: 6×6 centred at (y 60, x 20): fallback
                                    {25.f, 25.f, 55.f, 55.f}});  // 2: crowd copy of box 0
  const auto is_crowd = torch::tensor({false, false, true});
  auto crowd_mask = torch::zeros({84, 84}, torch::kUInt8);
  crowd_mask.slice(0, 0, 8).slice(1, 0, 8).fill_(1);  // centre pixels (0|4, 0|4)

  const auto m = tmo::assign_windows(boxes, is_crowd, crowd_mask, {21, 21}, {4}, {11, 15});
  ASSERT_EQ(m.sizes(), (std::vector<int64_t>{21 * 21 * 2}));
  ASSERT_EQ(m.scalar_type(), torch::kLong);

  std::set<int64_t> box0, box1, ignored;
  // Box 0: the centre position and its 4 neighbours exactly one unit (4 px) away; both windows
  // contain it (44-px window [c−22, c+22] ⊇ [25, 55] for c ∈ {36, 40, 44}) and 2·30 ≥ 56.
  for (auto [y, x] : {std::pair{10, 10}, {9, 10}, {11, 10}, {10, 9}, {10, 11}}) {
    box0.insert(index(y, x, 0));
    box0.insert(index(y, x, 1));
  }
  // Box 1: 2·6 = 12 < 40 → the fallback size 40 passes the 44-px windows only (40 < 56).
  for (auto [y, x] : {std::pair{15, 5}, {14, 5}, {16, 5}, {15, 4}, {15, 6}}) box1.insert(index(y, x, 0));
  for (int64_t y : {0, 1})
    for (int64_t x : {0, 1})
      for (int64_t a : {0, 1}) ignored.insert(index(y, x, a));

  const auto acc = m.accessor<int64_t, 1>();
  for (int64_t w = 0; w < m.size(0); ++w) {
    const int64_t expected = box0.count(w) ? 0 : box1.count(w) ? 1 : ignored.count(w) ? tmo::kWindowIgnore
                                                                                       : tmo::kWindowNegative;
    EXPECT_EQ(acc[w], expected) << "window " << w;
  }

  // Uniqueness: a second box matching (10, 10) makes it negative, or ignored without uniqueness.
  const auto two = torch::tensor({{25.f, 25.f, 55.f, 55.f}, {26.f, 25.f, 54.f, 55.f}});
  const auto none = torch::zeros({2}, torch::kBool);
  const auto empty = torch::zeros({0, 0}, torch::kUInt8);
  EXPECT_EQ(tmo::assign_windows(two, none, empty, {21, 21}, {4})[index(10, 10, 0)].item<int64_t>(),
            tmo::kWindowNegative);
  EXPECT_EQ(tmo::assign_windows(two, none, empty, {21, 21}, {4}, {11, 15}, 2.0, 1.0, true, /*uniqueness=*/false)
                [index(10, 10, 0)]
                    .item<int64_t>(),
            tmo::kWindowIgnore);
}

TEST(AssignWindows, BadArgumentsNameTheArgument) {
  const auto empty = torch::zeros({0, 0}, torch::kUInt8);
  try {
    tmo::assign_windows(torch::zeros({1, 3}), torch::zeros({1}, torch::kBool), empty, {4, 4}, {4});
    FAIL() << "expected c10::ValueError";
  } catch (const c10::ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("`gt_boxes`"), std::string::npos);
  }
  EXPECT_THROW(tmo::assign_windows(torch::zeros({1, 4}), torch::zeros({1}, torch::kBool), empty, {4, 4, 2}, {4}),
               c10::ValueError);
}

TEST(CropWindows, HandComputed) {
  // Mask 0 is the filled square [25, 55)²; the 44-px window at (40, 40) with σ = 4, V = U = 11 is the box
  // [18, 62)²: window pixel v averages image pixels 18 + 4v .. 21 + 4v per axis (RoIAlign, 4×4 samples on
  // pixel centres), all inside the square for v = 2..8, a quarter for v = 1 and 9: foreground for 2..8 only.
  auto masks = torch::zeros({2, 84, 84}, torch::kBool);
  masks[0].slice(0, 25, 55).slice(1, 25, 55).fill_(true);
  const auto crop = tmo::crop_windows(masks, torch::tensor({0, 1}), torch::tensor({{40.f, 40.f}, {40.f, 40.f}}), 4.0,
                                      11, 11);
  ASSERT_EQ(crop.sizes(), (std::vector<int64_t>{2, 11, 11}));
  auto expected = torch::zeros({11, 11});
  expected.slice(0, 2, 9).slice(1, 2, 9).fill_(1.f);
  EXPECT_TRUE(torch::equal(crop[0], expected));
  EXPECT_EQ(crop[1].sum().item<float>(), 0.f);
}

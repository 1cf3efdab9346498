// The TensorMask inference model in LibTorch (paper §4; a port of python/tensormask/modeling/ in eval
// mode): ResNet + FPN backbone, class/box/mask heads (the four baseline heads of Fig. 6 and the tensor
// bipyramid, Fig. 7b/8), and the post-processing of §4.3 calling the registered ops of ops.h. No Python
// at run time; the numbers match the Python model (same ATen calls, same order).
//
// Weights and config come from `tensormask export --weights W --out model.safetensors`, which writes
// model.safetensors (the Python state_dict; parameter names identical) and model.json (the config).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tensormask::model {

// ---- Config (the subset of tensormask.config.Config that inference needs) ---------------------------
struct BackboneConfig {
  int64_t depth = 50;                        // 18, 34, 50, 101; 0 = the tiny ResNet of the CPU demo
  std::string style = "msra";                // "msra" (stride in the 1×1) or "torchvision" (in the 3×3)
  std::string norm = "FrozenBN";             // "FrozenBN", "BN", "GN", "none"
  int64_t freeze_at = 2;                     // frozen BN layers are FrozenBN (no num_batches_tracked)
  int64_t stem_channels = 64;
  std::array<int64_t, 4> tiny_channels{16, 32, 64, 128};
  int64_t gn_groups = 32;
  std::array<double, 3> pixel_mean{103.530, 116.280, 123.675};
  std::array<double, 3> pixel_std{1.0, 1.0, 1.0};
  std::string input_format = "BGR";          // channel order the backbone expects ("RGB" or "BGR")
};

struct FPNConfig {
  int64_t out_channels = 256;
  std::string fuse_type = "avg";             // "avg" (paper) or "sum"
  int64_t min_level = 2;
  int64_t max_level = 7;
  int64_t size_divisibility = 32;            // input padding: a multiple of the res5 stride (detectron2)
};

struct HeadConfig {
  int64_t num_classes = 80;
  int64_t num_convs = 4;
  int64_t cls_channels = 256, bbox_channels = 128, mask_channels = 128;
  std::string norm = "none";                 // tower norm: "none" (paper) or "GN" (after every tower conv)
  int64_t gn_groups = 32;
  bool box_head = true;
  std::string mask_head = "bipyramid";       // simple_natural, simple_aligned, upscale_natural, upscale_aligned, bipyramid
  int64_t upscale_lambda = 1;
  std::string interpolation = "bilinear";    // "bilinear" or "nearest" (upscale_aligned only)
  std::vector<int64_t> window_sizes{11, 15}; // V_0 per window size, level-0 units
  double mask_pad_val = -6.0;
};

struct InferenceConfig {
  double score_thresh = 0.05;
  int64_t topk_candidates = 6000;
  double nms_thresh = 0.5;
  std::string nms_on = "box";                // "box" or "mask_box" (§A.4)
  int64_t detections_per_image = 100;
  double mask_threshold = 0.5;
  bool channels_last = false;                // run the network on an NHWC batch
};

struct ModelConfig {
  BackboneConfig backbone;
  FPNConfig fpn;
  HeadConfig head;
  std::array<double, 4> bbox_reg_weights{1.5, 1.5, 0.75, 0.75};  // (wx, wy, ww, wh), loss.bbox_reg_weights
  InferenceConfig inference;
};

// An exported model's JSON (`tensormask export`): the model config, the test-time resize and the
// category map (contiguous label i → category_names[i], COCO id category_ids[i]).
struct ExportedConfig {
  ModelConfig model;
  int64_t test_min_size = 800;
  int64_t test_max_size = 1333;
  std::vector<std::string> category_names;
  std::vector<int64_t> category_ids;
};

// Parse the JSON text written by `tensormask export` (`source` names it in errors). Validates what
// inference uses; unknown mask heads, norms, styles etc. throw std::runtime_error naming the key.
ExportedConfig parse_exported_config(const std::string& json_text, const std::string& source = "config");
// Read and parse a JSON file (std::runtime_error when missing/unreadable).
ExportedConfig load_exported_config(const std::string& path);
// Validate a model config (the checks the Python constructors make); throws std::runtime_error.
void validate(const ModelConfig& cfg);

// ---- Detections --------------------------------------------------------------------------------------
// One image's detections, D ≤ detections_per_image, by decreasing score.
struct Detections {
  at::Tensor boxes;   // (D, 4) float XYXY image pixels (at the output size)
  at::Tensor scores;  // (D,) float
  at::Tensor labels;  // (D,) int64 contiguous class ids
  at::Tensor masks;   // (D, H_out, W_out) bool
};

// ---- The model ---------------------------------------------------------------------------------------
class TensorMaskModelImpl;

// TensorMask in eval mode. Parameters/buffers are named as the Python model's state_dict
// (backbone.bottom_up.*, backbone.fpn_*, head.*).
class TensorMask : public torch::nn::Module {
 public:
  explicit TensorMask(const ModelConfig& cfg);
  ~TensorMask() override;

  const ModelConfig& config() const { return cfg_; }
  // Level strides s_k in image pixels (4, 8, ... for P2...).
  const std::vector<int64_t>& strides() const { return strides_; }

  // Copy `tensors` into the parameters and buffers, strictly: every model tensor must be present with
  // its exact shape, and every tensor must be used (`*.num_batches_tracked` of frozen layers aside).
  // Throws std::runtime_error naming the tensor (and `source`).
  void load_weights(const std::map<std::string, at::Tensor>& tensors, const std::string& source = "weights");

  // Normalise and batch N uint8 (or float 0–255) RGB images (3, H_i, W_i): channel order and
  // normalisation of the backbone, zero padding at the bottom/right to a multiple of
  // fpn.size_divisibility. Returns the (N, 3, H, W) float batch; `sizes` gets the (H_i, W_i).
  at::Tensor preprocess(const std::vector<at::Tensor>& images, std::vector<std::array<int64_t, 2>>& sizes) const;

  // Detections of N RGB images (3, H_i, W_i) at `output_sizes` (default: the input sizes); boxes are
  // scaled and masks pasted at that size. Runs without autograd.
  std::vector<Detections> forward(const std::vector<at::Tensor>& images,
                                  const std::vector<std::array<int64_t, 2>>& output_sizes = {});

 private:
  ModelConfig cfg_;
  std::vector<int64_t> strides_;
  std::unique_ptr<TensorMaskModelImpl> impl_;
};

// Build the model of `cfg` and load its weights from a safetensors file (see io.h).
std::shared_ptr<TensorMask> load_model(const std::string& weights_path, const ModelConfig& cfg);

// ---- Test-time transform (python/tensormask/data/transforms.py) -------------------------------------
// The size after scaling the shorter side to `short_edge`, the longer side capped at `max_size`:
// detectron2's ResizeShortestEdge.get_output_shape (its float64 operations, int(x + 0.5)), at least 1.
std::array<int64_t, 2> resized_shape(int64_t h, int64_t w, int64_t short_edge, int64_t max_size);
// `tensormask predict`'s resize: uint8 (C, H, W) → uint8 (C, new_h, new_w), Pillow's BILINEAR resample
// (detectron2's ResizeTransform on uint8 images; detail/resample.h), bit-exact with Pillow 13's
// Resample.c (pass order included). std::runtime_error for other dtypes or empty sizes.
at::Tensor resize_image(const at::Tensor& image, int64_t new_h, int64_t new_w);

}  // namespace tensormask::model

// Reading model weights: the safetensors format (https://github.com/huggingface/safetensors):
//   8-byte little-endian header length n, n bytes of JSON {name: {"dtype", "shape", "data_offsets":
//   [begin, end]}, "__metadata__": {str: str}}, then the byte buffer the offsets index.
// The header is parsed with nlohmann-json (Debian nlohmann-json3-dev); no well-kept C++ safetensors
// reader is packaged in Debian, and the format is small enough to validate completely here.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>

namespace tensormask::io {

struct SafetensorsFile {
  std::map<std::string, at::Tensor> tensors;         // CPU tensors, own storage, dtype of the file
  std::map<std::string, std::string> metadata;       // "__metadata__" (empty when absent)
};

// Parse a safetensors byte buffer; `source` names it in errors. Supported dtypes: F64, F32, F16, BF16,
// I64, I32, I16, I8, U8, BOOL. Throws std::runtime_error (naming `source` and the tensor) for a
// truncated buffer, a bad header, offsets out of range or overlapping, shape/size mismatches and
// unsupported dtypes.
SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& source = "buffer");

// Read and parse a safetensors file (std::runtime_error when missing or unreadable).
SafetensorsFile read_safetensors(const std::string& path);

}  // namespace tensormask::io

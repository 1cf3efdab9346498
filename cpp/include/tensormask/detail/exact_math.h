// IEEE round-to-nearest double arithmetic that nvcc may not contract into FMAs (the host compiler
// does not contract in ISO C++ mode), so CPU and CUDA kernels produce identical bits. Used where the
// two must agree exactly (NMS IoUs, mask pasting).
#pragma once

#include <c10/macros/Macros.h>

namespace tensormask::detail {

C10_HOST_DEVICE inline double add_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
C10_HOST_DEVICE inline double sub_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
C10_HOST_DEVICE inline double mul_rn(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}

}  // namespace tensormask::detail

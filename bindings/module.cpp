// tensormask._C: importing it loads libtensormask, whose static initialisers register the ops in the
// PyTorch dispatcher (torch.ops.tensormask.*). It only exposes small build-information helpers.
#include <pybind11/pybind11.h>

#include "tensormask/ops.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "TensorMask native library (ops are registered under torch.ops.tensormask)";
  m.def("compiled_with_cuda", &tensormask::ops::compiled_with_cuda,
        "True when the CUDA kernels were built into libtensormask");
  m.attr("__version__") = TENSORMASK_VERSION;
}

# Installs the C++ SDK of a TensorMask build tree, then configures, builds and runs the standalone
# consumer project examples/cpp_app against it (find_package(TensorMask)). Fails on the first error.
#   cmake -DBUILD_DIR=<TensorMask build> -DPREFIX=<install prefix> -DAPP_SOURCE=<examples/cpp_app>
#         -DAPP_BUILD=<consumer build dir> -DTORCH_CMAKE_PREFIX=<torch.utils.cmake_prefix_path>
#         [-DTARGETS=tensormask,tensormask_infer] [-DGENERATOR=Ninja] [-DMAKE_PROGRAM=...]
#         [-DCXX_COMPILER=...] -P RunExampleApp.cmake
# Used by the ctest test `example_app` (CMakeLists.txt) and thus by `make test-cpp` / `make test-sdk`.
foreach(_var BUILD_DIR PREFIX APP_SOURCE APP_BUILD TORCH_CMAKE_PREFIX)
  if(NOT DEFINED ${_var} OR "${${_var}}" STREQUAL "")
    message(FATAL_ERROR "RunExampleApp.cmake: -D${_var}=... is required")
  endif()
endforeach()

function(run_step what)
  message(STATUS "example_app: ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "example_app: ${what} failed (${rc})")
  endif()
endfunction()

set(_build_targets)
if(TARGETS)
  string(REPLACE "," ";" _targets "${TARGETS}")
  set(_build_targets --target ${_targets})
endif()
run_step("build ${BUILD_DIR}" "${CMAKE_COMMAND}" --build "${BUILD_DIR}" ${_build_targets})

# A clean prefix: files left by an older install must not hide a missing install rule.
file(REMOVE_RECURSE "${PREFIX}")
run_step("install component dev into ${PREFIX}"
         "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --component dev --prefix "${PREFIX}")

set(_configure_args -S "${APP_SOURCE}" -B "${APP_BUILD}" -DCMAKE_BUILD_TYPE=Release
    "-DCMAKE_PREFIX_PATH=${PREFIX};${TORCH_CMAKE_PREFIX}")
if(GENERATOR)
  list(APPEND _configure_args -G "${GENERATOR}")
endif()
if(MAKE_PROGRAM)
  list(APPEND _configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
if(CXX_COMPILER)
  list(APPEND _configure_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
# A fresh configure each time, so the consumer really finds the package just installed.
file(REMOVE "${APP_BUILD}/CMakeCache.txt")
run_step("configure ${APP_SOURCE}" "${CMAKE_COMMAND}" ${_configure_args})
run_step("build ${APP_BUILD}" "${CMAKE_COMMAND}" --build "${APP_BUILD}")
run_step("run tensormask_cpp_app" "${APP_BUILD}/tensormask_cpp_app")

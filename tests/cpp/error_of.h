// `error_of(f)`: the message of the exception `f()` throws, "" when it throws none (the C++ tests'
// way to check error messages).
#pragma once

#include <exception>
#include <string>

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// Parsing JSON from files users hand us (safetensors headers, `tensormask export` configs) with bounds,
// and quoting untrusted text in error messages. Internal to libtensormask (not installed).
//
// nlohmann-json's parser is iterative, but a hostile document can still cost memory out of proportion to
// its size (a DOM node per `[`, ~16 bytes per `0,`); `parse_json_bounded` refuses documents nested
// deeper than kMaxJsonDepth, with more than kMaxJsonValues values, or with a key repeated in an object
// (readers would silently keep the last one). Invalid UTF-8 in strings is refused by nlohmann itself.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tensormask::detail {

inline constexpr int kMaxJsonDepth = 64;
inline constexpr int64_t kMaxJsonValues = 1'000'000;

// `s` for an error message: at most `max_len` bytes (then "..."), control and non-ASCII bytes as \xNN,
// so a message stays one line of printable ASCII whatever the file held.
inline std::string printable(std::string_view s, size_t max_len = 80) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < s.size() && i < max_len; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(hex[c >> 4]);
      out.push_back(hex[c & 15]);
    }
  }
  if (s.size() > max_len) out += "...";
  return out;
}

// A JSON value for an error message (its dump, shortened; never throws).
inline std::string printable_json(const nlohmann::json& v, size_t max_len = 80) {
  return printable(v.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace), max_len);
}

// Parse `text` as one JSON document within the bounds above. Throws std::runtime_error with a one-line
// message (without the file name: callers prefix it).
inline nlohmann::json parse_json_bounded(std::string_view text) {
  using json = nlohmann::json;
  struct Refused : std::runtime_error {
    using std::runtime_error::runtime_error;
  };
  int64_t values = 0;
  std::vector<std::set<std::string>> keys;  // the keys seen in each open object
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
      case json::parse_event_t::array_start:
        if (depth >= kMaxJsonDepth)
          throw Refused("nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        if (event == json::parse_event_t::object_start) keys.emplace_back();
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second)
          throw Refused("duplicate key \"" + printable(std::string_view(parsed.get_ref<const std::string&>())) + "\"");
        break;
      default:
        break;
    }
    if (event != json::parse_event_t::key && ++values > kMaxJsonValues)
      throw Refused("more than " + std::to_string(kMaxJsonValues) + " JSON values");
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), check);
  } catch (const Refused& e) {
    throw std::runtime_error(std::string("JSON refused: ") + e.what());
  } catch (const json::exception& e) {
    throw std::runtime_error("not valid JSON: " + printable(std::string_view(e.what()), 200));
  }
}

}  // namespace tensormask::detail

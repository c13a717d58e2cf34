#pragma once

// Fields of JSON that came from a peer or from a file: a field of the wrong
// type or out of range is an error that names it, never an exception (a
// nlohmann::json accessor throws, and an uncaught throw ends the process).

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "continuum/common/result.h"

namespace continuum {

// The JSON value `v` as T (bool, an integer type or std::string); `name`
// says in the error which value it was. Integers must be whole numbers that
// fit T.
template <class T>
Result<T> JsonValue(const nlohmann::json& v, std::string_view name) {
  auto bad = [&](std::string_view want) {
    std::string got = v.dump();
    if (got.size() > 40) got = got.substr(0, 40) + "...";
    return InvalidArgument(std::string(name) + " must be " + std::string(want) + ", not " + got);
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!v.is_boolean()) return bad("true or false");
    return v.template get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    constexpr const char* kWant = std::is_unsigned_v<T> ? "a whole number >= 0 in range" : "a whole number in range";
    if (v.is_number_unsigned()) {
      uint64_t u = v.template get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<T>::max())) return bad(kWant);
      return static_cast<T>(u);
    }
    if (v.is_number_integer()) {
      int64_t i = v.template get<int64_t>();
      if constexpr (std::is_unsigned_v<T>) {
        if (i < 0 || static_cast<uint64_t>(i) > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
          return bad(kWant);
        }
      } else {
        if (i < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
            i > static_cast<int64_t>(std::numeric_limits<T>::max())) {
          return bad(kWant);
        }
      }
      return static_cast<T>(i);
    }
    return bad(kWant);
  } else {
    static_assert(std::is_same_v<T, std::string>, "JsonValue reads bool, integers and strings");
    if (!v.is_string()) return bad("a string");
    return v.template get<std::string>();
  }
}

// `key` of the object `j` as T (JsonValue), or `def` when the field is
// absent or null. `j` that is not an object is an error too.
template <class T>
Result<T> JsonField(const nlohmann::json& j, std::string_view key, T def) {
  if (!j.is_object()) return InvalidArgument("expected a JSON object, not " + std::string(j.type_name()));
  auto it = j.find(std::string(key));
  if (it == j.end() || it->is_null()) return def;
  return JsonValue<T>(*it, "field \"" + std::string(key) + "\"");
}

}  // namespace continuum

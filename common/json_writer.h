#pragma once

// Writing JSON text straight into a string, for answers built on every
// request: no DOM to allocate node by node and walk again. The output is
// byte for byte what json::Dump (nlohmann's compact dump, not ASCII-only,
// bad UTF-8 replaced) writes for the same values, so callers can switch
// without a client seeing a difference:
//
//   std::string out;
//   json::Writer w(&out);
//   w.BeginObject();
//   w.Key("id").String(id);          // escaped; bad UTF-8 -> U+FFFD
//   w.Key("created").Int(created);
//   w.Key("score").Double(0.5);      // "0.5"; NaN and infinities: null
//   w.Key("tools").Raw(tools_json);  // JSON text written as it is
//   w.EndObject();
//
// The writer checks no structure: keys, values and brackets must come in
// an order that makes JSON (a key before each member's value).

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace arbiter::json {

// Appends `text` as a JSON string, quotes included: `"` and `\` escaped,
// \b \f \n \r \t by name, other bytes below 0x20 as \u00XX, DEL and
// non-ASCII as they are, and each maximal ill-formed UTF-8 subsequence as
// U+FFFD.
void AppendString(absl::string_view text, std::string* out);

// Appends a number as nlohmann's dump writes it: the shortest digits that
// read back the same double ("0.1", "1.0", "1e-05"); "null" when it is not
// finite, as JSON has no NaN.
void AppendDouble(double value, std::string* out);

class Writer final {
 public:
  explicit Writer(std::string* out) : out_(out) {}

  Writer& BeginObject() {
    Separate();
    out_->push_back('{');
    need_comma_ = false;
    return *this;
  }
  Writer& EndObject() {
    out_->push_back('}');
    need_comma_ = true;
    return *this;
  }
  Writer& BeginArray() {
    Separate();
    out_->push_back('[');
    need_comma_ = false;
    return *this;
  }
  Writer& EndArray() {
    out_->push_back(']');
    need_comma_ = true;
    return *this;
  }
  // A member's name; its value comes next.
  Writer& Key(absl::string_view name) {
    Separate();
    AppendString(name, out_);
    out_->push_back(':');
    need_comma_ = false;
    return *this;
  }

  Writer& String(absl::string_view text) {
    Separate();
    AppendString(text, out_);
    return Wrote();
  }
  Writer& Int(int64_t value);
  Writer& Double(double value) {
    Separate();
    AppendDouble(value, out_);
    return Wrote();
  }
  Writer& Bool(bool value) {
    Separate();
    out_->append(value ? "true" : "false");
    return Wrote();
  }
  Writer& Null() {
    Separate();
    out_->append("null");
    return Wrote();
  }
  // A value that is JSON text already (a dump of a parsed value).
  Writer& Raw(absl::string_view json) {
    Separate();
    out_->append(json.data(), json.size());
    return Wrote();
  }

 private:
  // A value or key after another at the same level needs a comma; a closed
  // object or array counts as a value of its parent.
  void Separate() {
    if (need_comma_) out_->push_back(',');
  }
  Writer& Wrote() {
    need_comma_ = true;
    return *this;
  }

  std::string* const out_;
  bool need_comma_ = false;
};

}  // namespace arbiter::json

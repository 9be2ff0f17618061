#include "common/json.h"

#include <cmath>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/utf8.h"

namespace arbiter::json {

size_t DeeperThanAt(absl::string_view text, int depth) {
  int open = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;  // The escaped character, whatever it is.
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++open > depth) return i;
    } else if (c == ']' || c == '}') {
      --open;
    }
  }
  return absl::string_view::npos;
}

absl::StatusOr<nlohmann::json> Parse(absl::string_view text) {
  if (const size_t at = DeeperThanAt(text, kMaxDepth);
      at != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON: nested deeper than ", kMaxDepth,
                     " levels at byte ", at));
  }
  // Exceptions stay inside this function: the lexer reports the byte where
  // the text stops being JSON only through its parse_error.
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // e.what() repeats the type and id; the byte offset is what helps.
    std::string what = e.what();
    if (size_t colon = what.find(": "); colon != std::string::npos) {
      what = what.substr(colon + 2);
    }
    // nlohmann quotes what it last read: the caller's bytes stay out.
    if (size_t quoted = what.find("; last read"); quoted != std::string::npos) {
      what = what.substr(0, quoted);
    }
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON at byte ", e.byte, ": ", what));
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("not valid JSON: ", e.what()));
  }
}

absl::StatusOr<nlohmann::json> ParseRepairingUtf8(absl::string_view text) {
  if (IsValidUtf8(text)) return Parse(text);
  return Parse(RepairUtf8(text));
}

std::string Dump(const nlohmann::json& value, int indent) {
  return value.dump(indent, ' ', /*ensure_ascii=*/false,
                    nlohmann::json::error_handler_t::replace);
}

absl::string_view TypeName(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::null:
      return "null";
    case nlohmann::json::value_t::object:
      return "an object";
    case nlohmann::json::value_t::array:
      return "an array";
    case nlohmann::json::value_t::string:
      return "a string";
    case nlohmann::json::value_t::boolean:
      return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_float:
      return "a number";
    case nlohmann::json::value_t::binary:
      return "binary data";
    case nlohmann::json::value_t::discarded:
      return "nothing";
  }
  return "unknown";
}

View::View(const nlohmann::json& value, std::string path)
    : value_(&value), path_(std::move(path)) {}

View View::operator[](absl::string_view key) const {
  std::string path =
      path_.empty() ? std::string(key) : absl::StrCat(path_, ".", key);
  if (value_ == nullptr || !value_->is_object()) {
    return View(nullptr, std::move(path));
  }
  auto it = value_->find(key);
  return View(it == value_->end() ? nullptr : &*it, std::move(path));
}

View View::operator[](size_t index) const {
  std::string path = absl::StrCat(path_, "[", index, "]");
  if (value_ == nullptr || !value_->is_array() || index >= value_->size()) {
    return View(nullptr, std::move(path));
  }
  return View(&(*value_)[index], std::move(path));
}

size_t View::size() const {
  if (value_ == nullptr) return 0;
  return value_->is_array() || value_->is_object() ? value_->size() : 0;
}

absl::Status View::WrongType(absl::string_view expected) const {
  const absl::string_view where = path_.empty()
                                      ? absl::string_view("the document")
                                      : absl::string_view(path_);
  if (value_ == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": missing (expected ", expected, ")"));
  }
  return absl::InvalidArgumentError(absl::StrCat(where, ": expected ", expected,
                                                 ", got ", TypeName(*value_)));
}

absl::StatusOr<std::string> View::String() const {
  if (value_ == nullptr || !value_->is_string()) return WrongType("a string");
  return value_->get_ref<const std::string&>();
}

absl::StatusOr<bool> View::Bool() const {
  if (value_ == nullptr || !value_->is_boolean()) {
    return WrongType("a boolean");
  }
  return value_->get<bool>();
}

absl::StatusOr<double> View::Number() const {
  if (value_ == nullptr || !value_->is_number()) return WrongType("a number");
  const double number = value_->get<double>();
  if (!std::isfinite(number)) return WrongType("a finite number");
  return number;
}

absl::StatusOr<int64_t> View::Int() const {
  if (value_ == nullptr || !value_->is_number()) {
    return WrongType("an integer");
  }
  // Unsigned first: is_number_integer() holds for unsigned numbers too.
  if (value_->is_number_unsigned()) {
    const uint64_t number = value_->get<uint64_t>();
    if (number > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return WrongType("an integer below 2^63");
    }
    return static_cast<int64_t>(number);
  }
  if (value_->is_number_integer()) return value_->get<int64_t>();
  const double number = value_->get<double>();
  // 2^63 is exact as a double; anything at or above it does not fit.
  if (!(number == std::floor(number) && number >= -9.2233720368547758e18 &&
        number < 9.2233720368547758e18)) {
    return WrongType("an integer");
  }
  return static_cast<int64_t>(number);
}

absl::Status View::RequireObject() const {
  if (value_ == nullptr || !value_->is_object()) return WrongType("an object");
  return absl::OkStatus();
}

absl::Status View::RequireArray() const {
  if (value_ == nullptr || !value_->is_array()) return WrongType("an array");
  return absl::OkStatus();
}

namespace {

template <typename T, typename Getter>
absl::StatusOr<std::optional<T>> Optional(const View& view, Getter get) {
  if (view.is_null()) return std::optional<T>();
  auto value = get();
  if (!value.ok()) return value.status();
  return std::optional<T>(*std::move(value));
}

}  // namespace

absl::StatusOr<std::optional<std::string>> View::OptionalString() const {
  return Optional<std::string>(*this, [this] { return String(); });
}

absl::StatusOr<std::optional<bool>> View::OptionalBool() const {
  return Optional<bool>(*this, [this] { return Bool(); });
}

absl::StatusOr<std::optional<double>> View::OptionalNumber() const {
  return Optional<double>(*this, [this] { return Number(); });
}

absl::StatusOr<std::optional<int64_t>> View::OptionalInt() const {
  return Optional<int64_t>(*this, [this] { return Int(); });
}

}  // namespace arbiter::json

#include "gateway/openai/request_body.h"

#include <cstddef>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/utf8.h"

namespace arbiter::openai {
namespace {

// Outside strings, brackets nest; inside, a backslash escapes the next byte.
// Exact for any text JSON accepts (elsewhere the parser fails anyway).
struct Scan {
  bool in_string = false;
  size_t too_deep_at = std::string::npos;  // Byte that went past the limit.
};

Scan ScanJson(absl::string_view text, size_t end,
              int max_depth = kMaxJsonDepth) {
  Scan scan;
  int depth = 0;
  bool escaped = false;
  for (size_t i = 0; i < end; ++i) {
    const char c = text[i];
    if (scan.in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        scan.in_string = false;
      }
      continue;
    }
    if (c == '"') {
      scan.in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) {
        scan.too_deep_at = i;
        return scan;
      }
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return scan;
}

// Follows a parse of a body cut where a string stops being UTF-8, to say
// which field that string is: the value of the last key read, an element,
// or a member name.
class PathTracker final : public nlohmann::json_sax<nlohmann::json> {
 public:
  // "messages[0].content", or "metadata (a member name)" for a key.
  std::string Where() const {
    std::string path;
    for (size_t i = 0; i + 1 < frames_.size(); ++i) {
      Append(frames_[i], &path);
    }
    if (frames_.empty()) return "the body";
    const Frame& top = frames_.back();
    if (!top.array && !top.has_key) {
      return path.empty() ? std::string("a member name")
                          : absl::StrCat(path, " (a member name)");
    }
    Append(top, &path);
    return path;
  }

  bool null() override { return Value(); }
  bool boolean(bool) override { return Value(); }
  bool number_integer(number_integer_t) override { return Value(); }
  bool number_unsigned(number_unsigned_t) override { return Value(); }
  bool number_float(number_float_t, const string_t&) override {
    return Value();
  }
  bool string(string_t&) override { return Value(); }
  bool binary(binary_t&) override { return Value(); }
  bool start_object(std::size_t) override {
    frames_.emplace_back();
    return true;
  }
  bool key(string_t& key) override {
    frames_.back().key = ShownName(key);
    frames_.back().has_key = true;
    return true;
  }
  bool end_object() override {
    frames_.pop_back();
    return Value();
  }
  bool start_array(std::size_t) override {
    frames_.emplace_back().array = true;
    return true;
  }
  bool end_array() override {
    frames_.pop_back();
    return Value();
  }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception&) override {
    return false;
  }

 private:
  struct Frame {
    bool array = false;
    size_t index = 0;      // Arrays: the element being read.
    std::string key;       // Objects: the member being read...
    bool has_key = false;  // ...once its name was read.
  };

  static void Append(const Frame& frame, std::string* path) {
    if (frame.array) {
      absl::StrAppend(path, "[", frame.index, "]");
    } else if (path->empty()) {
      absl::StrAppend(path, frame.key);
    } else {
      absl::StrAppend(path, ".", frame.key);
    }
  }

  // A value ended: the next one is another element or needs another key.
  bool Value() {
    if (frames_.empty()) return true;
    Frame& top = frames_.back();
    if (top.array) {
      ++top.index;
    } else {
      top.has_key = false;
    }
    return true;
  }

  std::vector<Frame> frames_;
};

absl::Status NotUtf8(absl::string_view body, size_t bad) {
  if (!ScanJson(body, bad).in_string) {
    return absl::InvalidArgumentError(absl::StrCat(
        "not valid JSON at byte ", bad, ": invalid UTF-8 outside a string"));
  }
  PathTracker tracker;
  // Fails at the cut, as meant; the tracker has seen everything before it.
  (void)nlohmann::json::sax_parse(body.substr(0, bad), &tracker,
                                  nlohmann::json::input_format_t::json,
                                  /*strict=*/false);
  const std::string where = tracker.Where();
  return WithParam(absl::InvalidArgumentError(
                       absl::StrCat(where, ": invalid UTF-8 at byte ", bad,
                                    " of the body (JSON text must be UTF-8)")),
                   where);
}

}  // namespace

bool NestedDeeperThan(absl::string_view text, int depth) {
  return ScanJson(text, text.size(), depth).too_deep_at != std::string::npos;
}

std::string ShownName(absl::string_view name) {
  constexpr size_t kMaxShown = 64;
  if (name.size() <= kMaxShown) return std::string(name);
  return absl::StrCat(TruncateUtf8(name, kMaxShown), "...");
}

absl::StatusOr<nlohmann::json> ParseRequestBody(absl::string_view body) {
  try {
    if (body.find_first_not_of(" \t\r\n") == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          "the body: empty; send a JSON object (Content-Type: "
          "application/json)");
    }
    const Scan scan = ScanJson(body, body.size());
    if (scan.too_deep_at != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("the body: nested deeper than ", kMaxJsonDepth,
                       " levels at byte ", scan.too_deep_at));
    }
    if (std::optional<size_t> bad = FirstInvalidUtf8(body)) {
      return NotUtf8(body, *bad);
    }
    auto parsed = json::Parse(body);
    if (!parsed.ok()) return parsed.status();
    if (!parsed->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the body: expected a JSON object, got ", json::TypeName(*parsed)));
    }
    return parsed;
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("reading the request body: ", e.what()));
  }
}

absl::Status CheckMembers(const json::View& object,
                          std::initializer_list<absl::string_view> known) {
  const nlohmann::json* value = object.get();
  if (value == nullptr || !value->is_object()) return absl::OkStatus();
  for (const auto& [name, member] : value->items()) {
    bool found = false;
    for (absl::string_view k : known) {
      if (name == k) {
        found = true;
        break;
      }
    }
    if (found) continue;
    const std::string shown = ShownName(name);
    const std::string path =
        object.path().empty() ? shown : absl::StrCat(object.path(), ".", shown);
    return InvalidField(path, "unknown field");
  }
  return absl::OkStatus();
}

}  // namespace arbiter::openai

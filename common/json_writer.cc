#include "common/json_writer.h"

#include <array>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"

namespace arbiter::json {
namespace {

// What each byte below 0x80 needs: 0 none, a letter for its short escape,
// 'u' for \u00XX.
constexpr std::array<char, 128> EscapeTable() {
  std::array<char, 128> table = {};
  for (int c = 0; c < 0x20; ++c) table[c] = 'u';
  table['\b'] = 'b';
  table['\f'] = 'f';
  table['\n'] = 'n';
  table['\r'] = 'r';
  table['\t'] = 't';
  table['"'] = '"';
  table['\\'] = '\\';
  return table;
}

constexpr std::array<char, 128> kEscape = EscapeTable();

}  // namespace

void AppendString(absl::string_view text, std::string* out) {
  out->reserve(out->size() + text.size() + 2);
  out->push_back('"');
  size_t run = 0;  // Start of the bytes not yet copied, all plain.
  size_t i = 0;
  while (i < text.size()) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte < 0x80) {
      const char escape = kEscape[byte];
      if (escape == 0) {
        ++i;
        continue;
      }
      out->append(text.data() + run, i - run);
      if (escape == 'u') {
        constexpr char kHex[] = "0123456789abcdef";  // nlohmann's case.
        const char code[] = {
            '\\', 'u', '0', '0', kHex[byte >> 4], kHex[byte & 0xF]};
        out->append(code, sizeof(code));
      } else {
        const char code[] = {'\\', escape};
        out->append(code, sizeof(code));
      }
      run = ++i;
      continue;
    }
    const int length = Utf8SequenceAt(text, i);
    if (length > 0) {
      i += length;
      continue;
    }
    out->append(text.data() + run, i - run);
    out->append("\xEF\xBF\xBD");
    i += -length;
    run = i;
  }
  out->append(text.data() + run, text.size() - run);
  out->push_back('"');
}

void AppendDouble(double value, std::string* out) {
  if (!std::isfinite(value)) {
    out->append("null");
    return;
  }
  // nlohmann's own formatting (what its dump calls), so numbers read as
  // they did when answers were dumped from a DOM.
  std::array<char, 64> buffer;
  char* end = nlohmann::detail::to_chars(buffer.data(),
                                         buffer.data() + buffer.size(), value);
  out->append(buffer.data(), end - buffer.data());
}

Writer& Writer::Int(int64_t value) {
  Separate();
  absl::StrAppend(out_, value);
  return Wrote();
}

}  // namespace arbiter::json

#include "common/quote.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/utf8.h"

namespace arbiter {

std::string QuoteInput(absl::string_view input, size_t max_bytes) {
  const absl::string_view kept = TruncateUtf8(input, max_bytes);
  const std::string clean = RepairUtf8(kept);
  std::string out = "\"";
  for (char c : clean) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      absl::StrAppend(&out, "\\", std::string(1, c));
    } else if (c == '\n') {
      out += "\\n";
    } else if (byte < 0x20 || byte == 0x7F) {
      absl::StrAppendFormat(&out, "\\x%02x", byte);
    } else {
      out += c;
    }
  }
  out += "\"";
  if (kept.size() < input.size()) {
    absl::StrAppend(&out, "... (", input.size(), " bytes)");
  }
  return out;
}

}  // namespace arbiter

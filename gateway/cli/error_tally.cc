#include "gateway/cli/error_tally.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace arbiter::cli {

std::string ErrorTally::MaskNumbers(absl::string_view text) {
  std::string masked;
  masked.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (!absl::ascii_isdigit(text[i])) {
      masked += text[i];
      continue;
    }
    // A run of digits, and a fraction after a dot, is one number.
    while (i + 1 < text.size() && absl::ascii_isdigit(text[i + 1])) ++i;
    if (i + 2 < text.size() && text[i + 1] == '.' &&
        absl::ascii_isdigit(text[i + 2])) {
      i += 2;
      while (i + 1 < text.size() && absl::ascii_isdigit(text[i + 1])) ++i;
    }
    masked += '#';
  }
  return masked;
}

void ErrorTally::Add(absl::string_view code, absl::string_view message) {
  Kind& kind = kinds_[absl::StrCat(code, ": ", MaskNumbers(message))];
  if (kind.count++ == 0) kind.first = absl::StrCat(code, ": ", message);
  ++total_;
}

std::string ErrorTally::Render() const {
  std::vector<std::pair<std::string, const Kind*>> rows;
  for (const auto& [key, kind] : kinds_) rows.emplace_back(key, &kind);
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return a.second->count > b.second->count;
  });
  std::string out;
  for (const auto& [key, kind] : rows) {
    absl::StrAppendFormat(&out, "error x%d: %s\n", kind->count, key);
    if (kind->first != key) {
      absl::StrAppend(&out, "  first: ", kind->first, "\n");
    }
  }
  return out;
}

}  // namespace arbiter::cli

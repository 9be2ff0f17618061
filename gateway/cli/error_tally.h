#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/strings/string_view.h"

namespace arbiter::cli {

// Errors counted by kind: the status code and the message with its numbers
// masked, so that "ejected for 4.2s more" and "ejected for 3.9s more" are one
// row, not hundreds. Keeps the first message of each kind as its example.
// Not thread-safe.
//
//   ErrorTally tally;
//   tally.Add("UNAVAILABLE", "backend \"b\" ejected for 4.2s more");
//   tally.Render();  // error x1: UNAVAILABLE: backend "b" ejected for #s
//                    // more (first: ...4.2s...)
class ErrorTally final {
 public:
  void Add(absl::string_view code, absl::string_view message);
  [[nodiscard]] int64_t total() const { return total_; }
  // A line per kind, "error xN: CODE: message with # for numbers", most
  // frequent first; the first message of the kind follows when it differs.
  [[nodiscard]] std::string Render() const;

  // "# failures in #.#s" for "5 failures in 4.2s".
  [[nodiscard]] static std::string MaskNumbers(absl::string_view text);

 private:
  struct Kind {
    int64_t count = 0;
    std::string first;
  };
  std::map<std::string, Kind> kinds_;
  int64_t total_ = 0;
};

}  // namespace arbiter::cli

#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace arbiter::cli {

// Parsed "--name value", "--name=value" and "--switch" arguments plus the
// positional ones. Which names take a value is declared up front, so a
// mistyped flag is an error rather than a silent positional.
class Args final {
 public:
  // value_flags take a value; switches do not. INVALID_ARGUMENT naming an
  // unknown flag or a value flag without its value.
  static absl::StatusOr<Args> Parse(int argc, char** argv,
                                    const std::vector<std::string>& value_flags,
                                    const std::vector<std::string>& switches);

  [[nodiscard]] bool Has(const std::string& name) const {
    return values_.contains(name);
  }
  [[nodiscard]] std::string Get(const std::string& name,
                                const std::string& fallback = "") const;
  [[nodiscard]] absl::StatusOr<double> GetDouble(const std::string& name,
                                                 double fallback) const;
  [[nodiscard]] absl::StatusOr<int> GetInt(const std::string& name,
                                           int fallback) const;
  [[nodiscard]] const std::vector<std::string>& positional() const {
    return positional_;
  }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

}  // namespace arbiter::cli

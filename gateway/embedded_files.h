#pragma once

#include <vector>

#include "absl/strings/string_view.h"

namespace arbiter {

// A file compiled into the binary (the quickstart config, corpus and
// question set), so `arbiter serve` starts with nothing beside it.
struct EmbeddedFile {
  absl::string_view path;  // Relative to the quickstart folder.
  absl::string_view content;
};

[[nodiscard]] const std::vector<EmbeddedFile>& EmbeddedFiles();

}  // namespace arbiter

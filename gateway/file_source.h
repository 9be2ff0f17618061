#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace arbiter {

// Where a config's relative paths (corpus, datasets) are read from: the
// folder of the config file, or the files compiled into the binary.
class FileSource {
 public:
  virtual ~FileSource() = default;
  // NOT_FOUND naming the path when it does not exist.
  [[nodiscard]] virtual absl::StatusOr<std::string> Read(
      const std::string& path) const = 0;
  // The files directly inside a folder, as (name, content), sorted by name.
  [[nodiscard]] virtual absl::StatusOr<
      std::vector<std::pair<std::string, std::string>>>
  ReadFolder(const std::string& path) const = 0;
  // For messages: where relative paths resolve.
  [[nodiscard]] virtual std::string Describe() const = 0;
};

// Relative paths resolve against base_dir; absolute paths stand as they are.
[[nodiscard]] std::unique_ptr<FileSource> MakeDiskFileSource(
    std::string base_dir);

// The quickstart files compiled into the binary.
[[nodiscard]] std::unique_ptr<FileSource> MakeEmbeddedFileSource();

}  // namespace arbiter

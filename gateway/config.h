#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "arbiter/v1/config.pb.h"
#include "gateway/file_source.h"

namespace arbiter {

// A validated config with defaults applied, and where its relative paths
// resolve.
struct LoadedConfig {
  v1::Config config;
  std::string origin;  // The file it came from, or "embedded quickstart".
  std::shared_ptr<const FileSource> files;
};

// YAML -> JSON -> arbiter.v1.Config, without validation. INVALID_ARGUMENT
// naming the line (YAML syntax) or the field (unknown field, wrong type).
[[nodiscard]] absl::StatusOr<v1::Config> ParseConfigYaml(
    absl::string_view yaml);

// Every problem of the config, each as "path: reason", e.g.
//   routes[1].backend: unknown backend "vlm"
// Empty when the config is valid.
[[nodiscard]] std::vector<std::string> ValidateConfig(const v1::Config& config);

// Fills in the documented defaults of unset fields.
void ApplyConfigDefaults(v1::Config& config);

// Parses, validates and applies defaults. INVALID_ARGUMENT listing every
// problem, one per line.
[[nodiscard]] absl::StatusOr<LoadedConfig> LoadConfigFile(
    const std::string& path);
[[nodiscard]] absl::StatusOr<LoadedConfig> LoadEmbeddedConfig();
[[nodiscard]] absl::StatusOr<LoadedConfig> LoadConfigText(
    absl::string_view yaml, std::string origin,
    std::shared_ptr<const FileSource> files);

}  // namespace arbiter

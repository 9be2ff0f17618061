#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "arbiter/v1/config.pb.h"
#include "gateway/file_source.h"
#include "google/protobuf/generated_enum_reflection.h"

namespace arbiter {

// A validated config with defaults applied, and where its relative paths
// resolve.
struct LoadedConfig {
  v1::Config config;
  std::string origin;  // The file it came from, or "embedded quickstart".
  std::shared_ptr<const FileSource> files;
};

// YAML -> JSON -> arbiter.v1.Config, without validation. The YAML is first
// walked against the schema, so every problem comes at once, one per line
// of the INVALID_ARGUMENT message:
//   line 12: routes[1].knd: unknown field (did you mean kind?)
//   line 14: policy: duplicate key (first at line 6)
//   line 20: routes[2].kind: unknown value "rgs"; expected prompted,
//            fine_tuned or rag
// (also wrong types, numbers out of range or not finite, two members of a
// oneof, invalid UTF-8 and YAML syntax).
[[nodiscard]] absl::StatusOr<v1::Config> ParseConfigYaml(
    absl::string_view yaml);

// Every problem of the config as written, each as "path: reason", e.g.
//   routes[1].backend: unknown backend "vlm"
// Empty when the config is valid. Reads the environment: an api_key_env
// must name a variable that is set.
[[nodiscard]] std::vector<std::string> ValidateConfig(const v1::Config& config);

// Fills in the documented defaults of unset fields: the one place defaults
// live. Everything that reads a config reads it after this, as it is.
void ApplyConfigDefaults(v1::Config& config);
// The part of it for one openai backend, for code that builds one alone.
void ApplyOpenAIBackendDefaults(v1::OpenAIBackend& openai);

// What a config points at, checked without creating or writing anything:
// the corpus folder (readable, holding .md or .txt files), every sim
// backend's question set, the folder of the store file, the request-id key
// file (its keys are checked, never shown). Each problem as
// "path: reason"; empty when all is there.
[[nodiscard]] std::vector<std::string> CheckConfigReferences(
    const v1::Config& config, const FileSource& files);

// Parses, validates and applies defaults. INVALID_ARGUMENT listing every
// problem, one per line.
[[nodiscard]] absl::StatusOr<LoadedConfig> LoadConfigFile(
    const std::string& path);
[[nodiscard]] absl::StatusOr<LoadedConfig> LoadEmbeddedConfig();
[[nodiscard]] absl::StatusOr<LoadedConfig> LoadConfigText(
    absl::string_view yaml, std::string origin,
    std::shared_ptr<const FileSource> files);

// The origin, backends, routes and tasks, a line each, for banners.
[[nodiscard]] std::string DescribeConfig(const LoadedConfig& loaded);

// Closed sets (route kind, search mode, index kind, experiment unit, role)
// are proto enums. YAML, the command line, metric labels and messages spell
// a value by its name in lower case without the enum's prefix:
//   EnumName(v1::ROUTE_KIND_FINE_TUNED) == "fine_tuned"
//   ParseEnumName<v1::SearchMode>("keyword") == v1::SEARCH_MODE_KEYWORD
[[nodiscard]] std::string EnumValueName(
    const google::protobuf::EnumValueDescriptor& value);
// "prompted, fine_tuned or rag": the names a value may take (UNSPECIFIED
// is not one).
[[nodiscard]] std::string EnumNames(
    const google::protobuf::EnumDescriptor& type);
// INVALID_ARGUMENT `unknown value "x"; expected ...` for any other name.
[[nodiscard]] absl::StatusOr<int> ParseEnumValueName(
    const google::protobuf::EnumDescriptor& type, absl::string_view name);

template <typename Enum>
[[nodiscard]] std::string EnumName(Enum value) {
  const google::protobuf::EnumValueDescriptor* descriptor =
      google::protobuf::GetEnumDescriptor<Enum>()->FindValueByNumber(value);
  return descriptor != nullptr ? EnumValueName(*descriptor)
                               : std::to_string(static_cast<int>(value));
}

template <typename Enum>
[[nodiscard]] absl::StatusOr<Enum> ParseEnumName(absl::string_view name) {
  auto number =
      ParseEnumValueName(*google::protobuf::GetEnumDescriptor<Enum>(), name);
  if (!number.ok()) return number.status();
  return static_cast<Enum>(*number);
}

}  // namespace arbiter

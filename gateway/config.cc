#include "gateway/config.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "common/quote.h"
#include "common/utf8.h"
#include "gateway/auth/api_key.h"
#include "gateway/request_id_keys.h"
#include "gateway/sim/simulator.h"
#include "gateway/tls/tls_identity.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"
#include "yaml-cpp/yaml.h"

namespace arbiter {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::EnumDescriptor;
using google::protobuf::FieldDescriptor;
using Json = nlohmann::json;

constexpr char kEmbeddedConfigPath[] = "arbiter.yaml";
// What one request may be: gRPC's receive limit is twice this, in an int.
constexpr int kMaxRequestBytesLimit = 64 << 20;
// auto_memory_budget_mb is turned into bytes: 1 TiB is far beyond any host
// and far from overflowing.
constexpr int64_t kMaxMemoryBudgetMb = int64_t{1} << 20;
// A config that is mostly wrong is not listed whole.
constexpr size_t kMaxListedErrors = 100;
// No schema nests this deep; an alias loop would.
constexpr int kMaxDepth = 64;
constexpr int kDefaultChunkTokens = 200;
// backends[].openai.max_response_bytes: one answer held in memory at most.
constexpr int64_t kMaxResponseBytesLimit = int64_t{1} << 30;
// An ejected backend's first time out when unset.
constexpr double kDefaultBaseEjectionSeconds = 10;

// An openai backend's max_connections when unset.
constexpr int kDefaultMaxConnections = 64;

// Optimal string alignment distance: edits, with a swap of neighbours as
// one, so "modle" is one step from "model".
size_t EditDistance(absl::string_view a, absl::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1,
                                     std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] =
          std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

std::string Child(absl::string_view path, absl::string_view name) {
  return path.empty() ? std::string(name) : absl::StrCat(path, ".", name);
}

// Walks a YAML tree against a message's descriptor and builds the JSON that
// protobuf's parser takes (enum names in full, 64-bit integers as strings),
// collecting every problem with its line instead of stopping at the first.
class YamlWalker final {
 public:
  YamlWalker() = default;
  YamlWalker(const YamlWalker&) = delete;
  YamlWalker& operator=(const YamlWalker&) = delete;

  // An object for `type`; problems are kept for errors().
  Json Message(const YAML::Node& node, const Descriptor& type,
               const std::string& path, int line, int depth) {
    Json out = Json::object();
    if (depth > kMaxDepth) {
      Error(line, path, "nested too deeply");
      return out;
    }
    if (!node.IsMap()) {
      Error(LineOf(node, line), path,
            absl::StrCat("expected a mapping of ", FieldList(type), ", got ",
                         Describe(node)));
      return out;
    }
    std::map<std::string, int> seen;  // Key -> line.
    // Set oneof member per oneof -> (field name, line).
    std::map<const google::protobuf::OneofDescriptor*,
             std::pair<std::string, int>>
        oneofs;
    for (const auto& entry : node) {
      const int key_line = LineOf(entry.first, line);
      if (!entry.first.IsScalar()) {
        Error(key_line, path, "keys must be plain text");
        continue;
      }
      const std::string& name = entry.first.Scalar();
      const std::string field_path = Child(path, name);
      if (auto [it, inserted] = seen.emplace(name, key_line); !inserted) {
        Error(key_line, field_path,
              absl::StrCat("duplicate key (first at line ", it->second, ")"));
        continue;
      }
      const FieldDescriptor* field = type.FindFieldByName(name);
      if (field == nullptr) {
        Error(key_line, field_path, UnknownField(type, name));
        continue;
      }
      if (entry.second.IsNull()) continue;  // Unset.
      if (const auto* oneof = field->real_containing_oneof()) {
        auto [it, inserted] = oneofs.emplace(oneof, std::pair{name, key_line});
        if (!inserted) {
          Error(key_line, field_path,
                absl::StrCat("only one of ", FieldNames(*oneof),
                             " may be set; ", it->second.first,
                             " is set at line ", it->second.second));
          continue;
        }
      }
      std::optional<Json> value =
          Field(entry.second, *field, field_path, key_line, depth + 1);
      if (value.has_value()) out[field->name()] = *std::move(value);
    }
    return out;
  }

  [[nodiscard]] const std::vector<std::string>& errors() const {
    return errors_;
  }

 private:
  void Error(int line, absl::string_view path, absl::string_view reason) {
    errors_.push_back(
        path.empty() ? absl::StrCat("line ", line, ": ", reason)
                     : absl::StrCat("line ", line, ": ", path, ": ", reason));
  }

  // Null nodes carry the mark of what follows them: their key's line is
  // the one to name.
  static int LineOf(const YAML::Node& node, int fallback) {
    if (node.IsNull() || node.Mark().line < 0) return fallback;
    return node.Mark().line + 1;
  }

  static std::string Describe(const YAML::Node& node) {
    switch (node.Type()) {
      case YAML::NodeType::Map:
        return "a mapping";
      case YAML::NodeType::Sequence:
        return "a list";
      case YAML::NodeType::Scalar:
        return QuoteInput(node.Scalar());
      default:
        return "nothing";
    }
  }

  static std::string FieldList(const Descriptor& type) {
    return absl::StrCat("\"", type.name(), "\" fields");
  }

  static std::string FieldNames(
      const google::protobuf::OneofDescriptor& oneof) {
    std::vector<std::string> names;
    for (int i = 0; i < oneof.field_count(); ++i) {
      names.push_back(oneof.field(i)->name());
    }
    return absl::StrJoin(names, ", ");
  }

  static std::string UnknownField(const Descriptor& type,
                                  absl::string_view name) {
    const FieldDescriptor* closest = nullptr;
    size_t best = std::numeric_limits<size_t>::max();
    std::vector<std::string> names;
    for (int i = 0; i < type.field_count(); ++i) {
      const FieldDescriptor* field = type.field(i);
      names.push_back(field->name());
      size_t distance = EditDistance(name, field->name());
      if (distance < best) {
        best = distance;
        closest = field;
      }
    }
    if (closest != nullptr && best <= std::max<size_t>(1, name.size() / 3)) {
      return absl::StrCat("unknown field (did you mean ", closest->name(),
                          "?)");
    }
    return absl::StrCat("unknown field; expected one of ",
                        absl::StrJoin(names, ", "));
  }

  // A field's value: a list for repeated fields, a mapping for maps.
  std::optional<Json> Field(const YAML::Node& node,
                            const FieldDescriptor& field,
                            const std::string& path, int line, int depth) {
    if (field.is_map()) {
      if (!node.IsMap()) {
        Error(LineOf(node, line), path,
              absl::StrCat("expected a mapping, got ", Describe(node)));
        return std::nullopt;
      }
      const FieldDescriptor& value_field = *field.message_type()->map_value();
      Json out = Json::object();
      std::map<std::string, int> seen;
      for (const auto& entry : node) {
        const int key_line = LineOf(entry.first, line);
        if (!entry.first.IsScalar()) {
          Error(key_line, path, "keys must be plain text");
          continue;
        }
        const std::string& key = entry.first.Scalar();
        const std::string key_path = Child(path, key);
        if (auto [it, inserted] = seen.emplace(key, key_line); !inserted) {
          Error(key_line, key_path,
                absl::StrCat("duplicate key (first at line ", it->second, ")"));
          continue;
        }
        std::optional<Json> value =
            Element(entry.second, value_field, key_path, key_line, depth);
        if (value.has_value()) out[key] = *std::move(value);
      }
      return out;
    }
    if (field.is_repeated()) {
      if (!node.IsSequence()) {
        Error(LineOf(node, line), path,
              absl::StrCat("expected a list, got ", Describe(node)));
        return std::nullopt;
      }
      Json out = Json::array();
      for (size_t i = 0; i < node.size(); ++i) {
        std::optional<Json> value =
            Element(node[i], field, absl::StrCat(path, "[", i, "]"),
                    LineOf(node, line), depth);
        if (value.has_value()) out.push_back(*std::move(value));
      }
      return out;
    }
    return Element(node, field, path, line, depth);
  }

  // One value of the field's type: a message or a scalar.
  std::optional<Json> Element(const YAML::Node& node,
                              const FieldDescriptor& field,
                              const std::string& path, int line, int depth) {
    line = LineOf(node, line);
    if (field.type() == FieldDescriptor::TYPE_MESSAGE) {
      if (node.IsNull()) return Json::object();
      return Message(node, *field.message_type(), path, line, depth);
    }
    if (!node.IsScalar()) {
      Error(
          line, path,
          absl::StrCat("expected ", Expected(field), ", got ", Describe(node)));
      return std::nullopt;
    }
    const std::string& text = node.Scalar();
    switch (field.cpp_type()) {
      case FieldDescriptor::CPPTYPE_STRING:
        if (field.type() == FieldDescriptor::TYPE_BYTES) break;
        return text;
      case FieldDescriptor::CPPTYPE_BOOL:
        if (text == "true" || text == "True" || text == "TRUE") return true;
        if (text == "false" || text == "False" || text == "FALSE") {
          return false;
        }
        break;
      case FieldDescriptor::CPPTYPE_INT32:
      case FieldDescriptor::CPPTYPE_INT64: {
        int64_t value;
        if (!absl::SimpleAtoi(text, &value)) {
          if (LooksNumeric(text)) return OutOfRange(line, path, field, text);
          break;
        }
        if (field.cpp_type() == FieldDescriptor::CPPTYPE_INT32) {
          if (value < std::numeric_limits<int32_t>::min() ||
              value > std::numeric_limits<int32_t>::max()) {
            return OutOfRange(line, path, field, text);
          }
          return value;
        }
        return absl::StrCat(value);  // Proto JSON's form of 64-bit values.
      }
      case FieldDescriptor::CPPTYPE_UINT32:
      case FieldDescriptor::CPPTYPE_UINT64: {
        uint64_t value;
        if (!absl::SimpleAtoi(text, &value)) {
          if (LooksNumeric(text)) return OutOfRange(line, path, field, text);
          break;
        }
        if (field.cpp_type() == FieldDescriptor::CPPTYPE_UINT32) {
          if (value > std::numeric_limits<uint32_t>::max()) {
            return OutOfRange(line, path, field, text);
          }
          return value;
        }
        return absl::StrCat(value);
      }
      case FieldDescriptor::CPPTYPE_DOUBLE:
      case FieldDescriptor::CPPTYPE_FLOAT: {
        // YAML's .inf and .nan, C's inf and nan, and numbers too large for
        // a double (1e999 parses as infinity) are all refused.
        double value;
        const bool parsed = absl::SimpleAtod(text, &value);
        const std::string lower = absl::AsciiStrToLower(text);
        const bool yaml_special =
            absl::EndsWith(lower, ".inf") || lower == ".nan";
        if (!parsed && !yaml_special) break;
        if (!parsed || !std::isfinite(value) ||
            (field.cpp_type() == FieldDescriptor::CPPTYPE_FLOAT &&
             std::fabs(value) > std::numeric_limits<float>::max())) {
          Error(
              line, path,
              absl::StrCat("must be a finite number, got ", QuoteInput(text)));
          return std::nullopt;
        }
        return value;
      }
      case FieldDescriptor::CPPTYPE_ENUM: {
        auto number = ParseEnumValueName(*field.enum_type(), text);
        if (!number.ok()) {
          Error(line, path, number.status().message());
          return std::nullopt;
        }
        return field.enum_type()->FindValueByNumber(*number)->name();
      }
      case FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
    Error(
        line, path,
        absl::StrCat("expected ", Expected(field), ", got ", QuoteInput(text)));
    return std::nullopt;
  }

  static bool LooksNumeric(absl::string_view text) {
    if (!text.empty() && (text[0] == '-' || text[0] == '+')) {
      text.remove_prefix(1);
    }
    return !text.empty() &&
           std::all_of(text.begin(), text.end(), absl::ascii_isdigit);
  }

  std::optional<Json> OutOfRange(int line, absl::string_view path,
                                 const FieldDescriptor& field,
                                 absl::string_view text) {
    Error(line, path,
          absl::StrCat(QuoteInput(text), " is out of range for ",
                       Expected(field)));
    return std::nullopt;
  }

  static std::string Expected(const FieldDescriptor& field) {
    switch (field.cpp_type()) {
      case FieldDescriptor::CPPTYPE_INT32:
        return "a 32-bit integer";
      case FieldDescriptor::CPPTYPE_INT64:
        return "a 64-bit integer";
      case FieldDescriptor::CPPTYPE_UINT32:
        return "a non-negative 32-bit integer";
      case FieldDescriptor::CPPTYPE_UINT64:
        return "a non-negative 64-bit integer";
      case FieldDescriptor::CPPTYPE_DOUBLE:
      case FieldDescriptor::CPPTYPE_FLOAT:
        return "a number";
      case FieldDescriptor::CPPTYPE_BOOL:
        return "true or false";
      case FieldDescriptor::CPPTYPE_ENUM:
        return absl::StrCat("one of ", EnumNames(*field.enum_type()));
      case FieldDescriptor::CPPTYPE_STRING:
        return field.type() == FieldDescriptor::TYPE_BYTES
                   ? "bytes (unsupported)"
                   : "text";
      case FieldDescriptor::CPPTYPE_MESSAGE:
        return absl::StrCat("a mapping of ", FieldList(*field.message_type()));
    }
    return "a value";
  }

  std::vector<std::string> errors_;
};

// The line (from 1) and the byte within it (from 1) of a byte offset.
std::pair<int, size_t> LineAndColumn(absl::string_view text, size_t offset) {
  absl::string_view before = text.substr(0, offset);
  const int line =
      1 + static_cast<int>(std::count(before.begin(), before.end(), '\n'));
  const size_t line_start = before.rfind('\n');
  return {line, line_start == absl::string_view::npos ? offset + 1
                                                      : offset - line_start};
}

// Every parse-level problem of `yaml`; *config is set when there is none.
std::vector<std::string> ParseErrors(absl::string_view yaml,
                                     v1::Config* config) {
  if (std::optional<size_t> bad = FirstInvalidUtf8(yaml)) {
    auto [line, column] = LineAndColumn(yaml, *bad);
    return {absl::StrFormat(
        "line %d: invalid UTF-8 at byte %d of the file (byte %d of the line); "
        "a config must be UTF-8 text",
        line, *bad, column)};
  }
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return {absl::StrCat("line ", e.mark.line + 1, ", column ",
                         e.mark.column + 1, ": YAML syntax error: ", e.msg)};
  } catch (const std::exception& e) {
    return {absl::StrCat("YAML syntax error: ", e.what())};
  }
  if (!root.IsMap()) return {"the config must be a YAML mapping"};
  YamlWalker walker;
  Json as_json;
  try {
    as_json = walker.Message(root, *v1::Config::descriptor(), "", 1, 0);
  } catch (const std::exception& e) {
    // yaml-cpp throws on what it cannot represent; nothing is half-read.
    return {absl::StrCat("cannot read the YAML: ", e.what())};
  }
  if (!walker.errors().empty()) return walker.errors();
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(json::Dump(as_json),
                                                            config, options);
  if (!status.ok()) return {std::string(status.message())};
  return {};
}

// The first kMaxListedErrors of `errors`, then how many more.
std::string JoinErrors(const std::vector<std::string>& errors,
                       absl::string_view separator) {
  if (errors.size() <= kMaxListedErrors) {
    return absl::StrJoin(errors, separator);
  }
  return absl::StrCat(
      absl::StrJoin(errors.begin(), errors.begin() + kMaxListedErrors,
                    separator),
      separator, "... and ", errors.size() - kMaxListedErrors, " more");
}

std::string ErrorList(absl::string_view origin,
                      const std::vector<std::string>& errors) {
  return absl::StrCat(origin, " is invalid (", errors.size(),
                      errors.size() == 1 ? " error" : " errors", "):\n  ",
                      JoinErrors(errors, "\n  "));
}

bool IsLabelSafe(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '_' && c != '-' && c != '.') {
      return false;
    }
  }
  return true;
}

bool IsHostPort(absl::string_view address) {
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  int port;
  return absl::SimpleAtoi(address.substr(colon + 1), &port) && port >= 0 &&
         port <= 65535;
}

class Validator {
 public:
  explicit Validator(const v1::Config& config) : config_(config) {}

  std::vector<std::string> Run() {
    CheckServer();
    CheckBackends();
    CheckTasks();
    CheckRoutes();
    CheckTraining();
    CheckFallbackRoutes();
    CheckPolicy(config_.policy(), "policy");
    for (const auto& [task, policy] : config_.task_policies()) {
      std::string path = absl::StrCat("task_policies.", task);
      if (!tasks_.contains(task)) Error(path, "unknown task \"", task, "\"");
      CheckPolicy(policy, path);
    }
    CheckRetrieval();
    CheckExperiments();
    CheckAuth();
    if (config_.economics().has_window_minutes()) {
      InRange(config_.economics().window_minutes(), 1, 7 * 24 * 60,
              "economics.window_minutes");
    }
    NonNegative(config_.economics().budget_usd_per_day(),
                "economics.budget_usd_per_day");
    NonNegative(config_.statistics().half_life_seconds(),
                "statistics.half_life_seconds");
    if (config_.statistics().has_prior_strength()) {
      NonNegative(config_.statistics().prior_strength(),
                  "statistics.prior_strength");
    }
    return std::move(errors_);
  }

 private:
  template <typename... Args>
  void Error(absl::string_view path, const Args&... reason) {
    errors_.push_back(absl::StrCat(path, ": ", reason...));
  }

  void NonNegative(double value, absl::string_view path) {
    if (!(value >= 0)) Error(path, "must be >= 0");
  }

  void Probability(double value, absl::string_view path) {
    if (!(value >= 0 && value <= 1)) Error(path, "must be in [0, 1]");
  }

  void AtLeast(int64_t value, int64_t low, absl::string_view path) {
    if (value < low) Error(path, "must be >= ", low);
  }

  void InRange(int64_t value, int64_t low, int64_t high,
               absl::string_view path) {
    if (value < low || value > high) {
      Error(path, "must be in [", low, ", ", high, "]");
    }
  }

  // A key's variable must be set: a request without it would go out
  // unauthenticated.
  void KeyIsSet(const std::string& variable, absl::string_view path) {
    if (variable.empty()) return;
    const char* value = std::getenv(variable.c_str());
    if (value == nullptr) {
      Error(path, "environment variable ", variable, " is not set");
    } else if (*value == '\0') {
      Error(path, "environment variable ", variable, " is empty");
    }
  }

  // The files themselves are read when serving starts (ReadTlsIdentity).
  void CheckTls(const v1::Server& server) {
    const bool tls = server.has_tls();
    if (tls && server.tls().cert_file().empty()) {
      Error("server.tls.cert_file",
            "is required with server.tls (the PEM certificate to present)");
    }
    if (tls && server.tls().key_file().empty()) {
      Error("server.tls.key_file",
            "is required with server.tls (the certificate's PEM private key)");
    }
    if (server.metrics_tls() && !tls) {
      Error("server.metrics_tls",
            "needs server.tls: /metrics is served with its certificate");
    }
    if (server.has_metrics_basic_auth()) {
      const v1::BasicAuth& basic = server.metrics_basic_auth();
      if (basic.username().empty() ||
          basic.username().find(':') != std::string::npos) {
        Error("server.metrics_basic_auth.username",
              "must be set and hold no ':'");
      }
      auth::KeyDigest digest;
      if (!auth::ParseSha256Hex(basic.password_sha256(), &digest)) {
        Error("server.metrics_basic_auth.password_sha256",
              "must be the password's SHA-256 as 64 hex digits (printf %s "
              "\"$PASSWORD\" | sha256sum)");
      }
    }
  }

  // One key of auth.tenants[i].keys or auth.admin_keys; `seen` maps each
  // hash to where it first appeared.
  void CheckApiKey(const v1::ApiKey& key, const std::string& path,
                   std::map<std::string, std::string>& seen) {
    auth::KeyDigest digest;
    if (!auth::ParseSha256Hex(key.sha256(), &digest)) {
      Error(path + ".sha256",
            key.sha256().empty() ? "must be set (the key's SHA-256)"
                                 : "not 64 hex digits",
            " (`arbiter keys create` prints the line)");
    } else {
      const std::string hash = absl::AsciiStrToLower(key.sha256());
      auto [it, first] = seen.emplace(hash, path);
      if (!first)
        Error(path + ".sha256", "duplicate key (first at ", it->second, ")");
    }
    absl::Time expires;
    if (!key.expires().empty() && !auth::ParseExpiry(key.expires(), &expires)) {
      Error(path + ".expires",
            "must be an RFC 3339 time such as 2027-06-01T00:00:00Z, got ",
            QuoteInput(key.expires()));
    }
    if (key.label().size() > 128 || !IsValidUtf8(key.label())) {
      Error(path + ".label", "must be at most 128 characters of UTF-8");
    }
  }

  void CheckAuth() {
    if (!config_.has_auth()) return;
    const v1::Auth& auth = config_.auth();
    if (auth.mode() == v1::AUTH_MODE_NONE) {
      if (!auth.tenants().empty() || !auth.admin_keys().empty()) {
        Error("auth.mode",
              "none checks no keys; remove tenants and "
              "admin_keys, or set mode keys");
      }
      return;
    }
    std::map<std::string, std::string> seen;  // Hash -> where.
    std::set<std::string> names;
    int keys = 0;
    for (int t = 0; t < auth.tenants_size(); ++t) {
      const v1::Tenant& tenant = auth.tenants(t);
      const std::string path = absl::StrCat("auth.tenants[", t, "]");
      if (!IsLabelSafe(tenant.name())) {
        Error(path + ".name",
              "must be 1-64 characters of letters, digits, '_', '-' or '.'");
      } else if (!names.insert(tenant.name()).second) {
        Error(path + ".name", "duplicate tenant \"", tenant.name(), "\"");
      }
      for (int k = 0; k < tenant.keys_size(); ++k) {
        CheckApiKey(tenant.keys(k), absl::StrCat(path, ".keys[", k, "]"), seen);
        ++keys;
      }
      for (int r = 0; r < tenant.allowed_routes_size(); ++r) {
        const std::string& route = tenant.allowed_routes(r);
        if (!routes_.contains(route)) {
          Error(absl::StrCat(path, ".allowed_routes[", r, "]"),
                "unknown route ", QuoteInput(route));
        }
      }
      for (int k = 0; k < tenant.allowed_tasks_size(); ++k) {
        const std::string& task = tenant.allowed_tasks(k);
        if (!tasks_.contains(task)) {
          Error(absl::StrCat(path, ".allowed_tasks[", k, "]"), "unknown task ",
                QuoteInput(task));
        }
      }
      for (int c = 0; c < tenant.allowed_collections_size(); ++c) {
        const std::string& name = tenant.allowed_collections(c);
        const bool valid = !name.empty() && name.size() <= 128 &&
                           std::all_of(name.begin(), name.end(), [](char ch) {
                             return absl::ascii_isalnum(ch) || ch == '_' ||
                                    ch == '-' || ch == '.';
                           });
        if (!valid) {
          Error(absl::StrCat(path, ".allowed_collections[", c, "]"),
                "must be a collection name: 1-128 letters, digits, '_', '-' "
                "or '.'");
        }
      }
    }
    for (int k = 0; k < auth.admin_keys_size(); ++k) {
      CheckApiKey(auth.admin_keys(k), absl::StrCat("auth.admin_keys[", k, "]"),
                  seen);
      ++keys;
    }
    if (keys == 0) {
      Error("auth",
            "mode keys needs at least one tenant key or admin key "
            "(`arbiter keys create`), or say mode none");
    }
  }

  void CheckServer() {
    const v1::Server& server = config_.server();
    if (server.retry_budget().has_budget_percent() &&
        !(server.retry_budget().budget_percent() >= 0 &&
          server.retry_budget().budget_percent() <= 100)) {
      Error("server.retry_budget.budget_percent", "must be in [0, 100]");
    }
    if (server.retry_budget().has_min_concurrent()) {
      AtLeast(server.retry_budget().min_concurrent(), 0,
              "server.retry_budget.min_concurrent");
    }
    if (!server.grpc_listen().empty() && !IsHostPort(server.grpc_listen())) {
      Error("server.grpc_listen", "must be host:port, got \"",
            server.grpc_listen(), "\"");
    }
    if (!server.metrics_listen().empty() &&
        !IsHostPort(server.metrics_listen())) {
      Error("server.metrics_listen", "must be host:port, got \"",
            server.metrics_listen(), "\"");
    }
    if (!server.http_listen().empty() && server.http_listen() != "off" &&
        !IsHostPort(server.http_listen())) {
      Error("server.http_listen", "must be host:port or \"off\", got \"",
            server.http_listen(), "\"");
    }
    CheckTls(server);
    if (server.has_http_io_threads() &&
        (server.http_io_threads() < 1 || server.http_io_threads() > 256)) {
      Error("server.http_io_threads", "must be in [1, 256]");
    }
    if (server.has_http_max_connections() &&
        server.http_max_connections() < 1) {
      Error("server.http_max_connections", "must be >= 1");
    }
    if (server.has_max_in_flight()) {
      AtLeast(server.max_in_flight(), 1, "server.max_in_flight");
    }
    if (server.has_max_request_bytes() &&
        (server.max_request_bytes() < 1 ||
         server.max_request_bytes() > kMaxRequestBytesLimit)) {
      Error("server.max_request_bytes", "must be in [1, ",
            kMaxRequestBytesLimit, "] (64 MiB)");
    }
    if (server.has_decision_log_capacity()) {
      Error("server.decision_log_capacity",
            "is no longer read: the decision log is bounded by bytes, set "
            "server.decision_log_max_mb instead (default 64)");
    }
    if (server.has_decision_log_max_mb() &&
        (server.decision_log_max_mb() < 0 ||
         server.decision_log_max_mb() > 65536)) {
      Error("server.decision_log_max_mb", "must be in [0, 65536]");
    }
    // Worker pools: unset takes the default; a set value is used as it is.
    auto pool = [&](bool set, int value, int low, int high, const char* path) {
      if (set && (value < low || value > high)) {
        Error(path, "must be in [", low, ", ", high, "], got ", value);
      }
    };
    pool(server.has_retrieval_threads(), server.retrieval_threads(), 1, 256,
         "server.retrieval_threads");
    pool(server.has_retrieval_queue(), server.retrieval_queue(), 0, 1'000'000,
         "server.retrieval_queue");
    pool(server.has_ingest_threads(), server.ingest_threads(), 1, 256,
         "server.ingest_threads");
    pool(server.has_ingest_queue(), server.ingest_queue(), 0, 1'000'000,
         "server.ingest_queue");
    NonNegative(server.shutdown_grace_seconds(),
                "server.shutdown_grace_seconds");
    if (!server.request_id_key_file().empty() &&
        !server.request_id_key_env().empty()) {
      Error("server.request_id_key_env",
            "set either it or server.request_id_key_file, not both");
    }
    KeyIsSet(server.request_id_key_env(), "server.request_id_key_env");
    if (server.has_feedback_window_hours() &&
        !(server.feedback_window_hours() > 0 &&
          server.feedback_window_hours() <= 24 * 3660)) {
      Error("server.feedback_window_hours",
            "must be in (0, 87840] (ten years)");
    }
    const v1::State& state = config_.state();
    if (state.has_flush_interval_ms()) {
      InRange(state.flush_interval_ms(), 10, 60'000, "state.flush_interval_ms");
    }
  }

  void CheckRetry(const v1::Retry& retry, const std::string& path) {
    if (retry.has_max_retries()) {
      InRange(retry.max_retries(), 0, 10, path + ".max_retries");
    }
    if (retry.has_backoff_base_ms()) {
      AtLeast(retry.backoff_base_ms(), 1, path + ".backoff_base_ms");
    }
    const int base = retry.has_backoff_base_ms() ? retry.backoff_base_ms() : 25;
    if (retry.has_backoff_max_ms() && retry.backoff_max_ms() < base) {
      Error(path + ".backoff_max_ms", "must be at least backoff_base_ms (",
            base, "), got ", retry.backoff_max_ms());
    }
  }

  void CheckBackends() {
    if (config_.backends().empty()) Error("backends", "at least one is needed");
    for (int i = 0; i < config_.backends_size(); ++i) {
      const v1::Backend& backend = config_.backends(i);
      std::string path = absl::StrCat("backends[", i, "]");
      if (!IsLabelSafe(backend.name())) {
        Error(path + ".name",
              "must be 1-64 characters of letters, digits, '_', '-' or '.'");
      } else if (!backends_.insert(backend.name()).second) {
        Error(path + ".name", "duplicate backend \"", backend.name(), "\"");
      }
      CheckOutlierDetection(backend.outlier_detection(),
                            path + ".outlier_detection");
      CheckRetry(backend.retry(), path + ".retry");
      switch (backend.kind_case()) {
        case v1::Backend::kOpenai: {
          const v1::OpenAIBackend& openai = backend.openai();
          if (!absl::StartsWith(openai.base_url(), "http://") &&
              !absl::StartsWith(openai.base_url(), "https://")) {
            Error(path + ".openai.base_url",
                  "must start with http:// or https://, got \"",
                  openai.base_url(), "\"");
          }
          if (openai.has_timeout_seconds() && !(openai.timeout_seconds() > 0)) {
            Error(path + ".openai.timeout_seconds", "must be > 0");
          }
          if (openai.has_max_connections()) {
            AtLeast(openai.max_connections(), 1,
                    path + ".openai.max_connections");
          }
          KeyIsSet(openai.api_key_env(), path + ".openai.api_key_env");
          if (openai.has_max_response_bytes() &&
              (openai.max_response_bytes() < 1 ||
               openai.max_response_bytes() > kMaxResponseBytesLimit)) {
            Error(path + ".openai.max_response_bytes", "must be in [1, ",
                  kMaxResponseBytesLimit, "], got ",
                  openai.max_response_bytes());
          }
          if (openai.has_max_queued_requests()) {
            AtLeast(openai.max_queued_requests(), 0,
                    path + ".openai.max_queued_requests");
          }
          if (openai.has_max_queue_wait_ms()) {
            AtLeast(openai.max_queue_wait_ms(), 1,
                    path + ".openai.max_queue_wait_ms");
          }
          if (openai.has_event_threads()) {
            // Each thread needs a connection of its own.
            const int64_t connections = openai.has_max_connections()
                                            ? openai.max_connections()
                                            : kDefaultMaxConnections;
            if (openai.event_threads() < 1 ||
                openai.event_threads() > connections) {
              Error(path + ".openai.event_threads", "must be in [1, ",
                    connections, "] (at most max_connections), got ",
                    openai.event_threads());
            }
          }
          break;
        }
        case v1::Backend::kSim: {
          const v1::SimBackend& sim = backend.sim();
          NonNegative(sim.time_to_first_token_seconds(),
                      path + ".sim.time_to_first_token_seconds");
          NonNegative(sim.seconds_per_token(), path + ".sim.seconds_per_token");
          NonNegative(sim.output_tokens(), path + ".sim.output_tokens");
          if (sim.dataset().empty()) {
            Error(path + ".sim.dataset", "must name the question set");
          }
          for (int m = 0; m < sim.models_size(); ++m) {
            std::string model_path = absl::StrCat(path, ".sim.models[", m, "]");
            if (sim.models(m).name().empty()) {
              Error(model_path + ".name", "must not be empty");
            }
            Probability(sim.models(m).accuracy(), model_path + ".accuracy");
            for (const auto& [task, accuracy] : sim.models(m).task_accuracy()) {
              Probability(accuracy,
                          absl::StrCat(model_path, ".task_accuracy.", task));
            }
          }
          break;
        }
        case v1::Backend::KIND_NOT_SET:
          Error(path, "set one of: openai, sim");
          break;
      }
    }
  }

  void CheckTasks() {
    if (config_.tasks().empty()) Error("tasks", "at least one is needed");
    for (int i = 0; i < config_.tasks_size(); ++i) {
      const std::string& task = config_.tasks(i);
      std::string path = absl::StrCat("tasks[", i, "]");
      if (!IsLabelSafe(task)) {
        Error(path,
              "must be 1-64 characters of letters, digits, '_', '-' or '.'");
      } else if (!tasks_.insert(task).second) {
        Error(path, "duplicate task \"", task, "\"");
      }
    }
    if (!config_.default_task().empty() &&
        !tasks_.contains(config_.default_task())) {
      Error("default_task", "unknown task \"", config_.default_task(), "\"");
    }
  }

  void CheckRoutes() {
    if (config_.routes().empty()) Error("routes", "at least one is needed");
    for (int i = 0; i < config_.routes_size(); ++i) {
      const v1::Route& route = config_.routes(i);
      std::string path = absl::StrCat("routes[", i, "]");
      if (!IsLabelSafe(route.name())) {
        Error(path + ".name",
              "must be 1-64 characters of letters, digits, '_', '-' or '.'");
      } else if (!routes_.insert(route.name()).second) {
        Error(path + ".name", "duplicate route \"", route.name(), "\"");
      }
      const v1::RouteKind kind = route.kind();
      if (kind == v1::ROUTE_KIND_UNSPECIFIED) {
        Error(path + ".kind",
              "required: ", EnumNames(*v1::RouteKind_descriptor()));
      }
      if (!backends_.contains(route.backend())) {
        Error(path + ".backend", "unknown backend \"", route.backend(), "\"");
      }
      if (route.model().empty()) Error(path + ".model", "must not be empty");
      if (kind == v1::ROUTE_KIND_FINE_TUNED && !route.examples().empty()) {
        Error(path + ".examples",
              "a fine_tuned route sends the bare request; remove the examples");
      }
      for (int e = 0; e < route.examples_size(); ++e) {
        const v1::Example& example = route.examples(e);
        if (example.user().empty() || example.assistant().empty()) {
          Error(absl::StrCat(path, ".examples[", e, "]"),
                "needs both user and assistant");
        }
      }
      if (kind == v1::ROUTE_KIND_RAG) {
        if (config_.retrieval().corpus_dir().empty()) {
          Error(path + ".kind", "a rag route needs retrieval.corpus_dir");
        }
        if (route.rag().has_top_k()) {
          InRange(route.rag().top_k(), 1, 100, path + ".rag.top_k");
        }
        if (route.rag().has_max_context_tokens()) {
          AtLeast(route.rag().max_context_tokens(), 1,
                  path + ".rag.max_context_tokens");
        }
      } else if (route.has_rag()) {
        Error(path + ".rag", "only rag routes retrieve context");
      }
      const v1::Pricing& pricing = route.pricing();
      NonNegative(pricing.input_usd_per_mtok(),
                  path + ".pricing.input_usd_per_mtok");
      NonNegative(pricing.output_usd_per_mtok(),
                  path + ".pricing.output_usd_per_mtok");
      NonNegative(pricing.request_usd(), path + ".pricing.request_usd");
      NonNegative(pricing.retrieval_usd_per_query(),
                  path + ".pricing.retrieval_usd_per_query");
      NonNegative(pricing.embedding_usd_per_ktok(),
                  path + ".pricing.embedding_usd_per_ktok");
      NonNegative(pricing.hosting_usd_per_hour(),
                  path + ".pricing.hosting_usd_per_hour");
      if (route.has_max_output_tokens()) {
        AtLeast(route.max_output_tokens(), 1, path + ".max_output_tokens");
      }
    }
  }

  // After CheckRoutes: a fallback may be any other route.
  void CheckFallbackRoutes() {
    for (int i = 0; i < config_.routes_size(); ++i) {
      const v1::Route& route = config_.routes(i);
      std::set<std::string> seen;
      for (int f = 0; f < route.fallback_routes_size(); ++f) {
        const std::string& other = route.fallback_routes(f);
        const std::string path =
            absl::StrCat("routes[", i, "].fallback_routes[", f, "]");
        if (!routes_.contains(other)) {
          Error(path, "unknown route \"", other, "\"");
        } else if (other == route.name()) {
          Error(path, "a route cannot fall back to itself");
        } else if (!seen.insert(other).second) {
          Error(path, "duplicate route \"", other, "\"");
        }
      }
    }
  }

  void CheckOutlierDetection(const v1::OutlierDetection& outlier,
                             const std::string& path) {
    if (outlier.has_consecutive_failures()) {
      AtLeast(outlier.consecutive_failures(), 0,
              path + ".consecutive_failures");
    }
    if (outlier.has_failure_rate_percent() &&
        !(outlier.failure_rate_percent() >= 0 &&
          outlier.failure_rate_percent() <= 100)) {
      Error(path + ".failure_rate_percent", "must be in [0, 100]");
    }
    if (outlier.has_failure_rate_min_requests()) {
      AtLeast(outlier.failure_rate_min_requests(), 1,
              path + ".failure_rate_min_requests");
    }
    if (outlier.has_failure_rate_window_seconds() &&
        !(outlier.failure_rate_window_seconds() > 0)) {
      Error(path + ".failure_rate_window_seconds", "must be > 0");
    }
    if (outlier.has_base_ejection_seconds() &&
        !(outlier.base_ejection_seconds() > 0)) {
      Error(path + ".base_ejection_seconds", "must be > 0");
    }
    const double base = outlier.has_base_ejection_seconds()
                            ? outlier.base_ejection_seconds()
                            : kDefaultBaseEjectionSeconds;
    if (outlier.has_max_ejection_seconds() &&
        !(outlier.max_ejection_seconds() >= base)) {
      Error(path + ".max_ejection_seconds",
            "must be >= base_ejection_seconds (", base, ")");
    }
    if (outlier.has_probe_requests()) {
      AtLeast(outlier.probe_requests(), 1, path + ".probe_requests");
    }
  }

  // After CheckRoutes: a baseline may be any route, listed before or after.
  void CheckTraining() {
    for (int i = 0; i < config_.routes_size(); ++i) {
      const v1::Route& route = config_.routes(i);
      if (!route.has_training()) continue;
      const v1::Training& training = route.training();
      const std::string path = absl::StrCat("routes[", i, "].training");
      if (route.kind() != v1::ROUTE_KIND_FINE_TUNED) {
        Error(path, "only fine_tuned routes have a training cost");
      }
      NonNegative(training.cost_usd(), path + ".cost_usd");
      if (training.baseline_route().empty()) {
        Error(path + ".baseline_route",
              "a fine-tuned route needs the route it replaces, to measure "
              "savings and break-even against");
      } else if (!routes_.contains(training.baseline_route())) {
        Error(path + ".baseline_route", "unknown route \"",
              training.baseline_route(), "\"");
      } else if (training.baseline_route() == route.name()) {
        Error(path + ".baseline_route", "a route cannot be its own baseline");
      }
      absl::Time date;
      std::string error;
      if (training.date().empty()) {
        Error(path + ".date", "required (YYYY-MM-DD)");
      } else if (!absl::ParseTime("%Y-%m-%d", training.date(), &date, &error)) {
        Error(path + ".date", "must be YYYY-MM-DD, got \"", training.date(),
              "\"");
      } else if (date > absl::Now()) {
        Error(path + ".date", training.date(), " is in the future");
      }
      if (training.has_amortization_days()) {
        AtLeast(training.amortization_days(), 1, path + ".amortization_days");
      }
    }
  }

  void CheckPolicy(const v1::Policy& policy, const std::string& path) {
    if (policy.fallback().has_max_attempts()) {
      InRange(policy.fallback().max_attempts(), 1, 10,
              path + ".fallback.max_attempts");
    }
    switch (policy.strategy_case()) {
      case v1::Policy::kPinned:
        if (!routes_.contains(policy.pinned().route())) {
          Error(path + ".pinned.route", "unknown route \"",
                policy.pinned().route(), "\"");
        }
        break;
      case v1::Policy::kWeighted: {
        double total = 0;
        for (const auto& [route, weight] : policy.weighted().weights()) {
          std::string weight_path =
              absl::StrCat(path, ".weighted.weights.", route);
          if (!routes_.contains(route)) {
            Error(weight_path, "unknown route \"", route, "\"");
          }
          NonNegative(weight, weight_path);
          if (weight > 0) total += weight;
        }
        if (!(total > 0)) {
          Error(path + ".weighted.weights", "need a positive weight");
        }
        break;
      }
      case v1::Policy::kCheapestMeetingAccuracy: {
        const auto& cheapest = policy.cheapest_meeting_accuracy();
        std::string sub = path + ".cheapest_meeting_accuracy";
        Probability(cheapest.accuracy_floor(), sub + ".accuracy_floor");
        AtLeast(cheapest.min_feedback(), 0, sub + ".min_feedback");
        if (cheapest.has_explore_share()) {
          Probability(cheapest.explore_share(), sub + ".explore_share");
        }
        if (cheapest.has_confidence()) {
          Probability(cheapest.confidence(), sub + ".confidence");
        }
        break;
      }
      case v1::Policy::kBestUtility: {
        const auto& best = policy.best_utility();
        std::string sub = path + ".best_utility";
        NonNegative(best.cost_weight(), sub + ".cost_weight");
        NonNegative(best.latency_weight(), sub + ".latency_weight");
        AtLeast(best.min_feedback(), 0, sub + ".min_feedback");
        if (best.has_explore_share()) {
          Probability(best.explore_share(), sub + ".explore_share");
        }
        break;
      }
      case v1::Policy::kThompson:
        NonNegative(policy.thompson().cost_weight(),
                    path + ".thompson.cost_weight");
        NonNegative(policy.thompson().latency_weight(),
                    path + ".thompson.latency_weight");
        break;
      case v1::Policy::kBudget: {
        const auto& budget = policy.budget();
        std::string sub = path + ".budget";
        if (!(budget.target_cost_usd() > 0)) {
          Error(sub + ".target_cost_usd", "must be > 0");
        }
        if (budget.has_learning_rate() && !(budget.learning_rate() > 0)) {
          Error(sub + ".learning_rate", "must be > 0");
        }
        NonNegative(budget.initial_cost_weight(), sub + ".initial_cost_weight");
        AtLeast(budget.min_feedback(), 0, sub + ".min_feedback");
        if (budget.has_explore_share()) {
          Probability(budget.explore_share(), sub + ".explore_share");
        }
        break;
      }
      case v1::Policy::kContextual: {
        const auto& contextual = policy.contextual();
        std::string sub = path + ".contextual";
        if (contextual.has_k()) AtLeast(contextual.k(), 1, sub + ".k");
        NonNegative(contextual.cost_weight(), sub + ".cost_weight");
        NonNegative(contextual.latency_weight(), sub + ".latency_weight");
        if (contextual.has_memory_size()) {
          // Each remembered prompt costs embedding_dim floats: bound it.
          if (contextual.memory_size() < 1 ||
              contextual.memory_size() > 1'000'000) {
            Error(sub + ".memory_size", "must be in [1, 1000000]");
          }
        }
        AtLeast(contextual.min_feedback(), 0, sub + ".min_feedback");
        if (contextual.has_prior_weight()) {
          NonNegative(contextual.prior_weight(), sub + ".prior_weight");
        }
        if (contextual.has_explore_share()) {
          Probability(contextual.explore_share(), sub + ".explore_share");
        }
        break;
      }
      case v1::Policy::STRATEGY_NOT_SET:
        Error(path,
              "set one of: pinned, weighted, cheapest_meeting_accuracy, "
              "best_utility, thompson, budget, contextual");
        break;
    }
  }

  void CheckExperiments() {
    std::set<std::string> names;
    for (int i = 0; i < config_.experiments_size(); ++i) {
      const v1::Experiment& experiment = config_.experiments(i);
      std::string path = absl::StrCat("experiments[", i, "]");
      if (!IsLabelSafe(experiment.name())) {
        Error(path + ".name",
              "must be 1-64 characters of letters, digits, '_', '-' or '.'");
      } else if (!names.insert(experiment.name()).second) {
        Error(path + ".name", "duplicate experiment \"", experiment.name(),
              "\"");
      }
      if (experiment.arms_size() < 2) {
        Error(path + ".arms", "an experiment needs at least two arms");
      }
      std::set<std::string> arms;
      double total = 0;
      for (int a = 0; a < experiment.arms_size(); ++a) {
        const v1::ExperimentArm& arm = experiment.arms(a);
        std::string arm_path = absl::StrCat(path, ".arms[", a, "]");
        if (!IsLabelSafe(arm.name())) {
          Error(arm_path + ".name",
                "must be 1-64 characters of letters, digits, '_', '-' or '.'");
        } else if (!arms.insert(arm.name()).second) {
          Error(arm_path + ".name", "duplicate arm \"", arm.name(), "\"");
        }
        if (!(arm.weight() > 0)) Error(arm_path + ".weight", "must be > 0");
        total += arm.weight();
        switch (arm.target_case()) {
          case v1::ExperimentArm::kRoute:
            if (!routes_.contains(arm.route())) {
              Error(arm_path + ".route", "unknown route \"", arm.route(), "\"");
            }
            break;
          case v1::ExperimentArm::kPolicy:
            CheckPolicy(arm.policy(), arm_path + ".policy");
            break;
          case v1::ExperimentArm::TARGET_NOT_SET:
            Error(arm_path, "set one of: route, policy");
            break;
        }
      }
      if (!experiment.control().empty() &&
          !arms.contains(experiment.control())) {
        Error(path + ".control", "unknown arm \"", experiment.control(), "\"");
      }
      for (int t = 0; t < experiment.tasks_size(); ++t) {
        if (!tasks_.contains(experiment.tasks(t))) {
          Error(absl::StrCat(path, ".tasks[", t, "]"), "unknown task \"",
                experiment.tasks(t), "\"");
        }
      }
      const v1::Guardrails& guard = experiment.guardrails();
      NonNegative(guard.max_latency_p95_seconds(),
                  path + ".guardrails.max_latency_p95_seconds");
      NonNegative(guard.max_error_rate(), path + ".guardrails.max_error_rate");
      NonNegative(guard.max_cost_per_request_usd(),
                  path + ".guardrails.max_cost_per_request_usd");
      if (experiment.has_alpha() &&
          !(experiment.alpha() > 0 && experiment.alpha() < 1)) {
        Error(path + ".alpha", "must be in (0, 1)");
      }
    }
  }

  void ValidateIndex(const v1::IndexSettings& index, const std::string& path) {
    if (index.has_hnsw_m()) InRange(index.hnsw_m(), 2, 256, path + ".hnsw_m");
    for (auto [set, value, field] :
         {std::tuple{index.has_hnsw_ef_construction(),
                     index.hnsw_ef_construction(), "hnsw_ef_construction"},
          std::tuple{index.has_hnsw_ef_search(), index.hnsw_ef_search(),
                     "hnsw_ef_search"},
          std::tuple{index.has_ivf_nlist(), index.ivf_nlist(), "ivf_nlist"},
          std::tuple{index.has_ivf_nprobe(), index.ivf_nprobe(), "ivf_nprobe"},
          std::tuple{index.has_pq_m(), index.pq_m(), "pq_m"}}) {
      if (set) AtLeast(value, 1, absl::StrCat(path, ".", field));
    }
    if (index.has_pq_refine_factor() &&
        (index.pq_refine_factor() < 0 || index.pq_refine_factor() > 100)) {
      Error(path + ".pq_refine_factor",
            "must be in [0, 100] (0 or 1: no re-ranking)");
    }
    AtLeast(index.auto_exact_below(), 0, path + ".auto_exact_below");
    InRange(index.auto_memory_budget_mb(), 0, kMaxMemoryBudgetMb,
            path + ".auto_memory_budget_mb");
    Probability(index.rebuild_tombstone_share(),
                path + ".rebuild_tombstone_share");
    AtLeast(index.snapshot_every_changes(), 0,
            path + ".snapshot_every_changes");
  }

  void CheckRetrieval() {
    const v1::RetrievalSettings& retrieval = config_.retrieval();
    if (retrieval.has_max_collections() &&
        (retrieval.max_collections() < 1 ||
         retrieval.max_collections() > 10'000)) {
      Error("retrieval.max_collections", "must be in [1, 10000]");
    }
    if (retrieval.keyword_match_budget() < 0) {
      Error("retrieval.keyword_match_budget", "must be >= 0 (0: no budget)");
    }
    if (retrieval.has_chunk_tokens()) {
      AtLeast(retrieval.chunk_tokens(), 1, "retrieval.chunk_tokens");
    }
    AtLeast(retrieval.chunk_overlap_tokens(), 0,
            "retrieval.chunk_overlap_tokens");
    if (retrieval.has_chunk_tokens() && retrieval.chunk_tokens() >= 1 &&
        retrieval.chunk_overlap_tokens() >= retrieval.chunk_tokens()) {
      Error("retrieval.chunk_overlap_tokens",
            "must be smaller than chunk_tokens");
    } else if (!retrieval.has_chunk_tokens() &&
               retrieval.chunk_overlap_tokens() >= kDefaultChunkTokens) {
      Error("retrieval.chunk_overlap_tokens",
            "must be smaller than chunk_tokens (default ", kDefaultChunkTokens,
            ")");
    }
    ValidateIndex(retrieval.index(), "retrieval.index");
    for (const auto& [name, index] : retrieval.collection_index()) {
      ValidateIndex(index,
                    absl::StrCat("retrieval.collection_index[\"", name, "\"]"));
    }
    const v1::EmbeddingServer& server = retrieval.embedding_server();
    if (!server.url().empty() && !absl::StartsWith(server.url(), "http://") &&
        !absl::StartsWith(server.url(), "https://")) {
      Error("retrieval.embedding_server.url",
            "must start with http:// or https://, got \"", server.url(), "\"");
    }
    if (!server.url().empty() && server.model().empty()) {
      Error("retrieval.embedding_server.model", "is required with a url");
    }
    if (server.has_batch_size()) {
      InRange(server.batch_size(), 1, 2048,
              "retrieval.embedding_server.batch_size");
    }
    if (server.has_timeout_ms()) {
      AtLeast(server.timeout_ms(), 1, "retrieval.embedding_server.timeout_ms");
    }
    if (server.has_max_retries()) {
      InRange(server.max_retries(), 0, 10,
              "retrieval.embedding_server.max_retries");
    }
    if (!server.url().empty()) {
      KeyIsSet(server.api_key_env(), "retrieval.embedding_server.api_key_env");
    }
    if (retrieval.has_embedding_dim()) {
      InRange(retrieval.embedding_dim(), 16, 8192, "retrieval.embedding_dim");
    }
  }

  const v1::Config& config_;
  std::set<std::string> backends_;
  std::set<std::string> routes_;
  std::set<std::string> tasks_;
  std::vector<std::string> errors_;
};

}  // namespace

absl::StatusOr<v1::Config> ParseConfigYaml(absl::string_view yaml) {
  v1::Config config;
  std::vector<std::string> errors = ParseErrors(yaml, &config);
  if (!errors.empty()) {
    return absl::InvalidArgumentError(JoinErrors(errors, "\n"));
  }
  return config;
}

std::vector<std::string> ValidateConfig(const v1::Config& config) {
  return Validator(config).Run();
}

namespace {

void ApplyPolicyDefaults(v1::Policy& policy) {
  constexpr int kMinFeedback = 20;
  constexpr double kExploreShare = 0.1;
  v1::Fallback& fallback = *policy.mutable_fallback();
  if (!fallback.has_max_attempts()) fallback.set_max_attempts(3);
  if (fallback.on().empty()) {
    for (v1::FailureClass failure :
         {v1::FAILURE_CLASS_UNAVAILABLE, v1::FAILURE_CLASS_TIMEOUT,
          v1::FAILURE_CLASS_RATE_LIMITED, v1::FAILURE_CLASS_SERVER_ERROR}) {
      fallback.add_on(failure);
    }
  }
  switch (policy.strategy_case()) {
    case v1::Policy::kCheapestMeetingAccuracy: {
      auto& cheapest = *policy.mutable_cheapest_meeting_accuracy();
      if (!cheapest.has_min_feedback()) cheapest.set_min_feedback(kMinFeedback);
      if (!cheapest.has_explore_share()) {
        cheapest.set_explore_share(kExploreShare);
      }
      if (!cheapest.has_confidence()) cheapest.set_confidence(0.5);
      break;
    }
    case v1::Policy::kBestUtility: {
      auto& best = *policy.mutable_best_utility();
      if (!best.has_min_feedback()) best.set_min_feedback(kMinFeedback);
      if (!best.has_explore_share()) best.set_explore_share(kExploreShare);
      break;
    }
    case v1::Policy::kBudget: {
      auto& budget = *policy.mutable_budget();
      if (!budget.has_learning_rate()) budget.set_learning_rate(0.01);
      if (!budget.has_min_feedback()) budget.set_min_feedback(kMinFeedback);
      if (!budget.has_explore_share()) budget.set_explore_share(kExploreShare);
      break;
    }
    case v1::Policy::kContextual: {
      auto& contextual = *policy.mutable_contextual();
      if (!contextual.has_k()) contextual.set_k(20);
      if (!contextual.has_prior_weight()) contextual.set_prior_weight(5);
      if (!contextual.has_memory_size()) contextual.set_memory_size(10'000);
      if (!contextual.has_min_feedback()) {
        contextual.set_min_feedback(kMinFeedback);
      }
      if (!contextual.has_explore_share()) {
        contextual.set_explore_share(kExploreShare);
      }
      break;
    }
    case v1::Policy::kPinned:
    case v1::Policy::kWeighted:
    case v1::Policy::kThompson:
    case v1::Policy::STRATEGY_NOT_SET:
      break;
  }
}

void ApplyOutlierDefaults(v1::OutlierDetection& outlier) {
  if (!outlier.has_consecutive_failures()) outlier.set_consecutive_failures(5);
  if (!outlier.has_failure_rate_percent()) outlier.set_failure_rate_percent(50);
  if (!outlier.has_failure_rate_min_requests()) {
    outlier.set_failure_rate_min_requests(20);
  }
  if (!outlier.has_failure_rate_window_seconds()) {
    outlier.set_failure_rate_window_seconds(10);
  }
  if (!outlier.has_base_ejection_seconds()) {
    outlier.set_base_ejection_seconds(kDefaultBaseEjectionSeconds);
  }
  if (!outlier.has_max_ejection_seconds()) {
    outlier.set_max_ejection_seconds(
        std::max(300.0, outlier.base_ejection_seconds()));
  }
  if (!outlier.has_probe_requests()) outlier.set_probe_requests(2);
}

void ApplyIndexDefaults(v1::IndexSettings& index) {
  if (index.kind() == v1::INDEX_KIND_UNSPECIFIED) {
    index.set_kind(v1::INDEX_KIND_AUTO);
  }
  if (!index.has_hnsw_m()) index.set_hnsw_m(32);
  if (!index.has_hnsw_ef_construction()) index.set_hnsw_ef_construction(80);
  if (!index.has_hnsw_ef_search()) index.set_hnsw_ef_search(64);
  // ivf_nlist and pq_m stay unset: they follow the vectors when built.
  if (!index.has_ivf_nprobe()) index.set_ivf_nprobe(16);
  if (!index.has_pq_refine_factor()) index.set_pq_refine_factor(10);
  if (!index.has_auto_exact_below()) index.set_auto_exact_below(50'000);
  if (!index.has_auto_memory_budget_mb()) {
    index.set_auto_memory_budget_mb(4096);
  }
  if (!index.has_rebuild_tombstone_share()) {
    index.set_rebuild_tombstone_share(0.2);
  }
  if (!index.has_snapshot_every_changes()) {
    index.set_snapshot_every_changes(1000);
  }
}

}  // namespace

void ApplyOpenAIBackendDefaults(v1::OpenAIBackend& openai) {
  if (!openai.has_timeout_seconds()) openai.set_timeout_seconds(30);
  if (!openai.has_max_connections()) {
    openai.set_max_connections(kDefaultMaxConnections);
  }
  if (!openai.has_max_response_bytes()) {
    openai.set_max_response_bytes(int64_t{8} << 20);
  }
  if (!openai.has_max_queued_requests()) openai.set_max_queued_requests(1024);
  if (!openai.has_event_threads()) {
    openai.set_event_threads(
        std::min(2, std::max(1, openai.max_connections())));
  }
}

void ApplyConfigDefaults(v1::Config& config) {
  if (config.has_auth() && config.auth().mode() == v1::AUTH_MODE_UNSPECIFIED) {
    config.mutable_auth()->set_mode(v1::AUTH_MODE_KEYS);
  }
  // Reflection tells any caller every service: not by default behind keys.
  if (!config.server().has_reflection()) {
    config.mutable_server()->set_reflection(
        !(config.has_auth() && config.auth().mode() == v1::AUTH_MODE_KEYS));
  }
  v1::Server& server = *config.mutable_server();
  if (server.grpc_listen().empty()) server.set_grpc_listen("127.0.0.1:50051");
  if (server.metrics_listen().empty()) {
    server.set_metrics_listen("127.0.0.1:9464");
  }
  if (server.http_listen().empty()) server.set_http_listen("127.0.0.1:8080");
  if (!server.has_http_io_threads()) server.set_http_io_threads(2);
  if (!server.has_http_max_connections()) {
    server.set_http_max_connections(16384);
  }
  if (!server.has_max_in_flight()) server.set_max_in_flight(4096);
  if (!server.has_max_request_bytes()) server.set_max_request_bytes(1 << 20);
  if (!server.has_decision_log_max_mb()) server.set_decision_log_max_mb(64);
  if (!server.has_retrieval_threads()) server.set_retrieval_threads(4);
  if (!server.has_retrieval_queue()) server.set_retrieval_queue(256);
  if (!server.has_ingest_threads()) server.set_ingest_threads(2);
  if (!server.has_ingest_queue()) server.set_ingest_queue(64);
  if (!server.has_shutdown_grace_seconds()) {
    server.set_shutdown_grace_seconds(10);
  }
  if (!server.has_feedback_window_hours()) {
    server.set_feedback_window_hours(24 * 7);
  }
  if (!config.state().has_flush_interval_ms()) {
    config.mutable_state()->set_flush_interval_ms(100);
  }
  if (config.default_task().empty() && !config.tasks().empty()) {
    config.set_default_task(config.tasks(0));
  }
  v1::RetryBudget& budget = *server.mutable_retry_budget();
  if (!budget.has_budget_percent()) budget.set_budget_percent(20);
  if (!budget.has_min_concurrent()) budget.set_min_concurrent(3);
  for (v1::Backend& backend : *config.mutable_backends()) {
    if (backend.has_openai()) {
      ApplyOpenAIBackendDefaults(*backend.mutable_openai());
    }
    ApplyOutlierDefaults(*backend.mutable_outlier_detection());
    v1::Retry& retry = *backend.mutable_retry();
    if (!retry.has_max_retries()) retry.set_max_retries(0);
    if (!retry.has_backoff_base_ms()) retry.set_backoff_base_ms(25);
    if (!retry.has_backoff_max_ms()) {
      retry.set_backoff_max_ms(std::max(1000, retry.backoff_base_ms()));
    }
  }
  for (v1::Route& route : *config.mutable_routes()) {
    if (!route.has_max_output_tokens()) route.set_max_output_tokens(256);
    if (route.kind() == v1::ROUTE_KIND_RAG) {
      v1::RagSettings& rag = *route.mutable_rag();
      if (!rag.has_top_k()) rag.set_top_k(4);
      if (!rag.has_max_context_tokens()) rag.set_max_context_tokens(1024);
    }
    if (route.has_training() && !route.training().has_amortization_days()) {
      route.mutable_training()->set_amortization_days(365);
    }
  }
  ApplyPolicyDefaults(*config.mutable_policy());
  for (auto& [task, policy] : *config.mutable_task_policies()) {
    ApplyPolicyDefaults(policy);
  }
  v1::Statistics& statistics = *config.mutable_statistics();
  if (!statistics.has_prior_strength()) statistics.set_prior_strength(10);
  for (v1::Experiment& experiment : *config.mutable_experiments()) {
    if (experiment.unit() == v1::EXPERIMENT_UNIT_UNSPECIFIED) {
      experiment.set_unit(v1::EXPERIMENT_UNIT_UNIT);
    }
    if (experiment.control().empty() && experiment.arms_size() > 0) {
      experiment.set_control(experiment.arms(0).name());
    }
    if (!experiment.has_alpha()) experiment.set_alpha(0.05);
    for (v1::ExperimentArm& arm : *experiment.mutable_arms()) {
      if (arm.has_policy()) ApplyPolicyDefaults(*arm.mutable_policy());
    }
  }
  v1::Economics& economics = *config.mutable_economics();
  if (!economics.has_window_minutes()) economics.set_window_minutes(60);
  v1::RetrievalSettings& retrieval = *config.mutable_retrieval();
  if (!retrieval.has_chunk_tokens()) {
    retrieval.set_chunk_tokens(kDefaultChunkTokens);
  }
  if (!retrieval.has_chunk_overlap_tokens()) {
    retrieval.set_chunk_overlap_tokens(
        std::min(40, retrieval.chunk_tokens() / 4));
  }
  if (!retrieval.has_embedding_dim()) retrieval.set_embedding_dim(512);
  if (retrieval.search() == v1::SEARCH_MODE_UNSPECIFIED) {
    retrieval.set_search(v1::SEARCH_MODE_HYBRID);
  }
  if (!retrieval.has_max_collections()) retrieval.set_max_collections(64);
  if (!retrieval.has_keyword_match_budget()) {
    retrieval.set_keyword_match_budget(20'000);
  }
  if (retrieval.snapshot_dir().empty() && !retrieval.store_path().empty()) {
    retrieval.set_snapshot_dir(retrieval.store_path() + ".index");
  }
  ApplyIndexDefaults(*retrieval.mutable_index());
  for (auto& [name, index] : *retrieval.mutable_collection_index()) {
    ApplyIndexDefaults(index);
  }
  if (retrieval.has_embedding_server()) {
    v1::EmbeddingServer& embedding = *retrieval.mutable_embedding_server();
    if (!embedding.has_batch_size()) embedding.set_batch_size(64);
    if (!embedding.has_timeout_ms()) embedding.set_timeout_ms(10'000);
    if (!embedding.has_max_retries()) embedding.set_max_retries(3);
  }
}

std::vector<std::string> CheckConfigReferences(const v1::Config& config,
                                               const FileSource& files) {
  std::vector<std::string> errors;
  for (int i = 0; i < config.backends_size(); ++i) {
    const v1::Backend& backend = config.backends(i);
    if (!backend.has_sim()) continue;
    const std::string path = absl::StrCat("backends[", i, "].sim.dataset");
    auto text = files.Read(backend.sim().dataset());
    if (!text.ok()) {
      errors.push_back(absl::StrCat(path, ": ", text.status().message()));
      continue;
    }
    auto questions = sim::ParseQuestionSet(*text);
    if (!questions.ok()) {
      errors.push_back(absl::StrCat(path, ": question set \"",
                                    backend.sim().dataset(),
                                    "\": ", questions.status().message()));
      continue;
    }
    auto simulator =
        sim::Simulator::Create(backend.sim(), *std::move(questions));
    if (!simulator.ok()) {
      errors.push_back(absl::StrCat(path, ": ", simulator.status().message()));
    }
  }
  const v1::RetrievalSettings& retrieval = config.retrieval();
  bool needs_corpus = !retrieval.corpus_dir().empty();
  for (const v1::Route& route : config.routes()) {
    needs_corpus = needs_corpus || route.kind() == v1::ROUTE_KIND_RAG;
  }
  if (needs_corpus) {
    auto folder = files.ReadFolder(retrieval.corpus_dir());
    if (!folder.ok()) {
      errors.push_back(
          absl::StrCat("retrieval.corpus_dir: ", folder.status().message()));
    } else if (std::none_of(folder->begin(), folder->end(),
                            [](const auto& file) {
                              return file.first.ends_with(".md") ||
                                     file.first.ends_with(".txt");
                            })) {
      errors.push_back(
          absl::StrCat("retrieval.corpus_dir: no .md or .txt "
                       "files in \"",
                       retrieval.corpus_dir(), "\""));
    }
  }
  // Read to check it, never printed.
  if (!config.server().request_id_key_file().empty()) {
    auto keys = ReadRequestIdKeyFile(config.server().request_id_key_file());
    if (!keys.ok()) {
      errors.push_back(absl::StrCat("server.request_id_key_file: ",
                                    keys.status().message()));
    }
  }
  if (config.server().has_tls()) {
    if (auto tls = ReadTlsIdentity(config.server().tls()); !tls.ok()) {
      errors.push_back(std::string(tls.status().message()));
    }
  }
  // The store is opened (and created) only by `serve`; its folder must be
  // there for that.
  if (!retrieval.store_path().empty()) {
    std::error_code error;
    const std::filesystem::path store(retrieval.store_path());
    if (!std::filesystem::exists(store, error)) {
      const std::filesystem::path folder =
          store.has_parent_path() ? store.parent_path() : ".";
      if (!std::filesystem::is_directory(folder, error)) {
        errors.push_back(absl::StrCat("retrieval.store_path: folder \"",
                                      folder.string(), "\" does not exist"));
      }
    } else if (std::filesystem::is_directory(store, error)) {
      errors.push_back(absl::StrCat("retrieval.store_path: \"",
                                    retrieval.store_path(),
                                    "\" is a folder, not a file"));
    }
  }
  return errors;
}

absl::StatusOr<LoadedConfig> LoadConfigText(
    absl::string_view yaml, std::string origin,
    std::shared_ptr<const FileSource> files) {
  v1::Config config;
  std::vector<std::string> errors = ParseErrors(yaml, &config);
  if (errors.empty()) errors = ValidateConfig(config);
  if (!errors.empty()) {
    return absl::InvalidArgumentError(ErrorList(origin, errors));
  }
  ApplyConfigDefaults(config);
  return LoadedConfig{std::move(config), std::move(origin), std::move(files)};
}

absl::StatusOr<LoadedConfig> LoadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("cannot read config \"", path, "\""));
  }
  std::ostringstream text;
  text << in.rdbuf();
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  return LoadConfigText(text.str(), path,
                        MakeDiskFileSource(dir.empty() ? "." : dir.string()));
}

absl::StatusOr<LoadedConfig> LoadEmbeddedConfig() {
  std::shared_ptr<const FileSource> files = MakeEmbeddedFileSource();
  auto text = files->Read(kEmbeddedConfigPath);
  if (!text.ok()) return text.status();
  return LoadConfigText(*text, "embedded quickstart config", std::move(files));
}

std::string DescribeConfig(const LoadedConfig& loaded) {
  const v1::Config& config = loaded.config;
  std::string text = absl::StrCat("config: ", loaded.origin, "\n");
  absl::StrAppend(&text, "backends:\n");
  for (const v1::Backend& backend : config.backends()) {
    absl::StrAppend(&text, "  ", backend.name(), " (",
                    backend.has_sim() ? "sim" : backend.openai().base_url(),
                    ")\n");
  }
  absl::StrAppend(&text, "routes:\n");
  for (const v1::Route& route : config.routes()) {
    absl::StrAppendFormat(
        &text, "  %-14s %-10s backend=%s model=%s $%.2f/$%.2f per Mtok\n",
        route.name(), EnumName(route.kind()), route.backend(), route.model(),
        route.pricing().input_usd_per_mtok(),
        route.pricing().output_usd_per_mtok());
  }
  absl::StrAppend(&text, "tasks: ", absl::StrJoin(config.tasks(), ", "),
                  " (default ", config.default_task(), ")\n");
  if (config.has_auth()) {
    std::vector<std::string> tenants;
    for (const v1::Tenant& tenant : config.auth().tenants()) {
      tenants.push_back(tenant.name());
    }
    absl::StrAppend(
        &text, "auth: ", EnumName(config.auth().mode()),
        config.auth().mode() == v1::AUTH_MODE_NONE
            ? ""
            : absl::StrCat(
                  ", tenants ",
                  tenants.empty() ? "none" : absl::StrJoin(tenants, ", "), ", ",
                  config.auth().admin_keys_size(), " admin key(s)"),
        "\n");
  }
  return text;
}

std::string EnumValueName(const google::protobuf::EnumValueDescriptor& value) {
  // The prefix is what the UNSPECIFIED value's name holds before it.
  const std::string& zero = value.type()->value(0)->name();
  absl::string_view prefix = zero;
  if (!absl::ConsumeSuffix(&prefix, "UNSPECIFIED")) prefix = "";
  absl::string_view name = value.name();
  absl::ConsumePrefix(&name, prefix);
  return absl::AsciiStrToLower(name);
}

std::string EnumNames(const EnumDescriptor& type) {
  std::vector<std::string> names;
  for (int i = 0; i < type.value_count(); ++i) {
    if (type.value(i)->number() == 0) continue;
    names.push_back(EnumValueName(*type.value(i)));
  }
  if (names.size() < 2) return absl::StrJoin(names, "");
  std::string last = names.back();
  names.pop_back();
  return absl::StrCat(absl::StrJoin(names, ", "), " or ", last);
}

absl::StatusOr<int> ParseEnumValueName(const EnumDescriptor& type,
                                       absl::string_view name) {
  for (int i = 0; i < type.value_count(); ++i) {
    const google::protobuf::EnumValueDescriptor& value = *type.value(i);
    if (value.number() != 0 && EnumValueName(value) == name) {
      return value.number();
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown value ", QuoteInput(name), "; expected ", EnumNames(type)));
}

}  // namespace arbiter

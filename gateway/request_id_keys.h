#pragma once

// Where the keys that sign request ids come from: server.request_id_key_file,
// server.request_id_key_env, or, with neither, a key the caller supplies (the
// state store's). Messages name the file, line or variable, never a key.
//
//   auto keys = ResolveRequestIdKeys(config.server(), [] { return Stored(); });
//   for (const auto& warning : keys->warnings) std::cerr << warning << "\n";
//   auto signer = RequestIdSigner::Create(std::move(keys->keys), window);

#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "arbiter/v1/config.pb.h"

namespace arbiter {

struct RequestIdKeys {
  std::vector<std::string> keys;  // The first signs.
  // How many and where from, for the banner: `2 keys (the first signs)
  // from file "/etc/arbiter/request-id.keys"`.
  std::string source;
  // What the operator should fix, e.g. a key file others can read.
  std::vector<std::string> warnings;
};

// A key file: one key per line, at least RequestIdSigner::kMinKeyBytes
// long; blank lines and lines starting with '#' are skipped, whitespace
// around a key is trimmed. NOT_FOUND or PERMISSION_DENIED for a file that
// cannot be read, INVALID_ARGUMENT for a short key (with its line) or a file
// without keys; a warning when group or others may read it.
[[nodiscard]] absl::StatusOr<RequestIdKeys> ReadRequestIdKeyFile(
    const std::string& path);

// The keys of `server`'s key file or key variable (comma-separated there),
// else the one `fallback` returns. Errors start with the field's path.
[[nodiscard]] absl::StatusOr<RequestIdKeys> ResolveRequestIdKeys(
    const v1::Server& server,
    absl::FunctionRef<absl::StatusOr<std::string>()> fallback);

// RequestIdSigner::kMinKeyBytes random bytes from OpenSSL's generator.
[[nodiscard]] absl::StatusOr<std::string> RandomRequestIdKey();

}  // namespace arbiter

#pragma once

// API keys: high-entropy random strings a client presents as
// `authorization: Bearer <key>`, known to the gateway only by their SHA-256.
//
//   auto key = NewApiKey();           // "ak_" + 43 base64url characters
//   std::string line = Sha256Hex(*key);  // what the config holds
//   KeyDigest digest;
//   ParseSha256Hex(line, &digest);    // true
//   BearerToken("Bearer ak_...");     // "ak_..."

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace arbiter::auth {

inline constexpr absl::string_view kApiKeyPrefix = "ak_";
// Random bytes of a key.
inline constexpr int kApiKeyBytes = 32;

using KeyDigest = std::array<uint8_t, 32>;

// A new key from OpenSSL's RAND_bytes; INTERNAL if it has no entropy.
[[nodiscard]] absl::StatusOr<std::string> NewApiKey();

[[nodiscard]] KeyDigest Sha256(absl::string_view bytes);
// 64 lower-case hex digits.
[[nodiscard]] std::string Sha256Hex(absl::string_view bytes);
// Exactly 64 hex digits (either case) into *digest.
[[nodiscard]] bool ParseSha256Hex(absl::string_view hex, KeyDigest* digest);

// The key of an authorization header value: the scheme Bearer (any case),
// one or more spaces, the key. UNAUTHENTICATED naming what is wrong,
// never echoing the value.
[[nodiscard]] absl::StatusOr<absl::string_view> BearerToken(
    absl::string_view authorization);

// An RFC 3339 time such as 2027-06-01T00:00:00Z; false if it is not one.
[[nodiscard]] bool ParseExpiry(absl::string_view text, absl::Time* time);

// "90d", "12h", "30m", "45s" or absl's "1h30m"; false for anything else
// or a duration that is not positive.
[[nodiscard]] bool ParseLifetime(absl::string_view text,
                                 absl::Duration* lifetime);

}  // namespace arbiter::auth

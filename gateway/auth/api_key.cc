#include "gateway/auth/api_key.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace arbiter::auth {

absl::StatusOr<std::string> NewApiKey() {
  unsigned char random[kApiKeyBytes];
  if (RAND_bytes(random, sizeof(random)) != 1) {
    return absl::InternalError("OpenSSL could not make random bytes");
  }
  std::string key =
      absl::StrCat(kApiKeyPrefix,
                   absl::WebSafeBase64Escape(absl::string_view(
                       reinterpret_cast<const char*>(random), sizeof(random))));
  OPENSSL_cleanse(random, sizeof(random));
  return key;
}

KeyDigest Sha256(absl::string_view bytes) {
  KeyDigest digest{};
  unsigned int size = 0;
  // EVP_Digest fails only without memory; the zero digest then matches no
  // configured key (ParseSha256Hex never yields it for a real hash).
  EVP_Digest(bytes.data(), bytes.size(), digest.data(), &size, EVP_sha256(),
             nullptr);
  return digest;
}

std::string Sha256Hex(absl::string_view bytes) {
  const KeyDigest digest = Sha256(bytes);
  return absl::BytesToHexString(absl::string_view(
      reinterpret_cast<const char*>(digest.data()), digest.size()));
}

bool ParseSha256Hex(absl::string_view hex, KeyDigest* digest) {
  if (hex.size() != 2 * digest->size()) return false;
  for (char c : hex) {
    if (!absl::ascii_isxdigit(c)) return false;
  }
  const std::string bytes = absl::HexStringToBytes(hex);
  std::copy(bytes.begin(), bytes.end(), digest->begin());
  return true;
}

absl::StatusOr<absl::string_view> BearerToken(absl::string_view authorization) {
  constexpr absl::string_view kScheme = "bearer";
  if (authorization.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(authorization.substr(0, kScheme.size()),
                              kScheme) ||
      authorization[kScheme.size()] != ' ') {
    return absl::UnauthenticatedError(
        "authorization: expected \"Bearer <API key>\"");
  }
  absl::string_view key =
      absl::StripAsciiWhitespace(authorization.substr(kScheme.size()));
  if (key.empty()) {
    return absl::UnauthenticatedError(
        "authorization: the API key after Bearer is missing");
  }
  return key;
}

bool ParseExpiry(absl::string_view text, absl::Time* time) {
  std::string error;
  return absl::ParseTime(absl::RFC3339_full, text, time, &error);
}

bool ParseLifetime(absl::string_view text, absl::Duration* lifetime) {
  int64_t days = 0;
  if (absl::EndsWith(text, "d") &&
      absl::SimpleAtoi(text.substr(0, text.size() - 1), &days)) {
    if (days <= 0 || days > 100 * 365) return false;
    *lifetime = absl::Hours(24 * days);
    return true;
  }
  return absl::ParseDuration(text, lifetime) &&
         *lifetime > absl::ZeroDuration() &&
         *lifetime < absl::Hours(24 * 365 * 100);
}

}  // namespace arbiter::auth
